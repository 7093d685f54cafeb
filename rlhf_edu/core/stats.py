"""Small statistics that every chapter measures with: ranks, Spearman's ρ, a running mean, standard errors,
pass@k and best-of-n."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .runtime import numpy_rng
from .validation import check_int


def running_mean(values: Sequence[float] | np.ndarray | torch.Tensor, window: int) -> np.ndarray:
    """The mean of each ``window`` consecutive values: ``len(values) − window + 1`` of them, float64.

    A window of 1, or one longer than the series, returns the values unchanged, so a
    short run is still drawn rather than vanishing from its plot.
    """
    check_int(window, "window", fix="the number of consecutive values averaged, e.g. 20")
    values = np.asarray(values, dtype=float)
    if window == 1 or len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing their average rank (float64)."""
    sorted_values, order = values.sort()
    _, run, run_length = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    positions = torch.arange(1, len(values) + 1, dtype=torch.float64)
    run_mean = torch.zeros(len(run_length), dtype=torch.float64).index_add_(0, run, positions) / run_length
    result = torch.empty(len(values), dtype=torch.float64)
    result[order] = run_mean[run]
    return result


def check_paired(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` and ``y`` are 1-D with one value each per example."""
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(
            f"x {tuple(x.shape)} and y {tuple(y.shape)} must be 1-D and of the same length: "
            "pass one value of each per example"
        )


def spearman_correlation(x: torch.Tensor | Sequence[float], y: torch.Tensor | Sequence[float]) -> float:
    """Spearman's ρ: the correlation of the ranks of x and y (1 = same order, −1 = reversed; NaN if one is constant)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    check_paired(x, y)
    if len(x) < 2:
        raise ValueError(f"x holds {len(x)} value(s): a rank correlation needs at least two pairs")
    rank_x, rank_y = ranks(x) - (len(x) + 1) / 2, ranks(y) - (len(y) + 1) / 2  # centred: mean rank is (N + 1) / 2
    return (rank_x @ rank_y / (rank_x.norm() * rank_y.norm())).item()


def mean_and_stderr(values: Sequence[float] | np.ndarray | torch.Tensor) -> tuple[float, float]:
    """The mean of ``values`` and its standard error s/√n (s the sample standard deviation, n − 1 in it).

    On a 0/1 array it is a share and its binomial standard error; on the per-sample
    differences of two evaluations on the same prompts, a paired difference and its error.
    """
    values = np.asarray(values, dtype=float).ravel()
    if values.size < 2:
        raise ValueError(f"a standard error needs at least 2 values, got {values.size}: measure more samples")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def difference_stderr(*stderrs: float) -> float:
    """The standard error of a difference (or sum) of independent estimates: √(se_a² + se_b² + …).

    Use it for two runs or two evaluations on different samples. Where the same prompts
    or samples serve both sides, take :func:`mean_and_stderr` of the per-sample differences
    instead (the paired error, usually far smaller). One side's error is never the difference's.
    """
    return math.sqrt(sum(float(se) ** 2 for se in stderrs))


CLAIM_HOLDS, CLAIM_MEASURED = "holds:", "measured, not asserted:"  # line prefixes that `rlhf-edu claims` records


def assert_beyond(difference: float, stderr: float, claim: str, k: float = 3.0) -> float:
    """Assert that ``difference`` is positive by more than ``k`` standard errors of the difference itself.

    This is a check cell's directional claim with room to spare (CONVENTIONS §6): another
    seed or other CPU kernels move a training run by about one standard error, so a claim
    that holds by 3 survives them. ``stderr`` is the *difference's* error: :func:`difference_stderr`
    for independent sides, the paired error where the same prompts serve both. Prints the
    margin (the claims harness records it) and returns it in standard errors.
    """
    if not (math.isfinite(difference) and math.isfinite(stderr) and stderr > 0):
        raise ValueError(
            f"assert_beyond needs a finite difference and a positive standard error, got "
            f"{difference!r} ± {stderr!r}: measure at least two samples per side"
        )
    z = difference / stderr
    line = f"{claim}: {difference:+.4g} ± {stderr:.2g} ({z:+.1f} s.e., asked > {k:g})"
    assert z > k, f"not resolved: {line}"
    print(f"{CLAIM_HOLDS} {line}")
    return z


def report_difference(difference: float, stderr: float, what: str) -> None:
    """Print a difference with its standard error and 95% interval, asserting nothing: what a run cannot resolve."""
    z = difference / stderr if stderr > 0 else float("nan")
    low, high = difference - 1.96 * stderr, difference + 1.96 * stderr
    print(
        f"{CLAIM_MEASURED} {what}: {difference:+.4g} ± {stderr:.2g} ({z:+.1f} s.e.; 95% interval "
        f"[{low:+.3g}, {high:+.3g}])"
    )


def bootstrap_stderr(
    statistic: Callable[..., float], *arrays: np.ndarray | torch.Tensor, num_resamples: int = 200, seed: int = 0
) -> float:
    """The standard error of ``statistic(*arrays)``: its spread over bootstrap resamples of their rows.

    Every resample draws N row indices with replacement and takes the same rows of each
    array (e.g. prompts of an (M, N) score matrix and of its gold matrix), so rows that
    belong together stay together. For the mean of one array it approaches s/√n.
    """
    check_int(num_resamples, "num_resamples", low=2, fix="the number of resamples, e.g. 200")
    if not callable(statistic):
        raise TypeError(f"statistic must be a function of the arrays, e.g. np.mean, got {type(statistic).__name__}")
    rows = {len(a) for a in arrays}
    if len(rows) != 1:
        raise ValueError(f"the arrays must have the same number of rows, got {sorted(rows)}: pass aligned arrays")
    n = rows.pop()
    if n < 2:
        raise ValueError(f"the arrays have {n} row(s): a bootstrap needs at least two rows to resample")
    rng = numpy_rng(seed)
    values = [statistic(*(a[index] for a in arrays)) for index in rng.integers(n, size=(num_resamples, n))]
    return float(np.std(values, ddof=1))


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. (2021), 1 − C(n − c, k) / C(n, k).

    It is the chance that k of ``num_samples`` answers, drawn without replacement, hold
    at least one of the ``num_correct`` right ones.
    """
    n, c, k = (
        check_int(v, name, low=0) for v, name in ((num_samples, "num_samples"), (num_correct, "num_correct"), (k, "k"))
    )
    if not c <= n or not 1 <= k <= n:
        raise ValueError(
            f"pass@k needs 0 <= num_correct <= num_samples and 1 <= k <= num_samples, got "
            f"n={n}, c={c}, k={k}: draw at least k samples per prompt"
        )
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --- best-of-n by order statistics: chapter 7 measures reward models with it, chapter 10 builds on it ---
RewardMatrix = np.ndarray | torch.Tensor


def as_reward_matrix(rewards: RewardMatrix) -> np.ndarray:
    """``rewards`` as a float64 array of shape (M prompts, N completions), or a ValueError that says why not."""
    if isinstance(rewards, torch.Tensor):
        rewards = rewards.detach().cpu().numpy()
    if not isinstance(rewards, np.ndarray | list):
        raise TypeError(f"rewards must be a numpy array or a tensor of shape (M, N), got {type(rewards).__name__}")
    try:
        rewards = np.asarray(rewards, dtype=np.float64)
    except ValueError:  # NumPy's own message speaks of "an inhomogeneous shape"
        raise ValueError(
            "rewards is ragged: every prompt needs the same number N of completions scored, (M, N)"
        ) from None
    if rewards.ndim != 2 or 0 in rewards.shape:
        raise ValueError(f"rewards must be a (M prompts, N completions) matrix, got shape {rewards.shape}")
    if not np.isfinite(rewards).all():
        raise ValueError("rewards hold NaN or inf: check the reward function's output")
    return rewards


def best_of_n_per_prompt(scores: RewardMatrix, values: RewardMatrix, n: int) -> np.ndarray:
    """Each prompt's expected ``values`` of best-of-n selected by ``scores``, from N samples per prompt: (M,).

    ``scores`` and ``values`` are (M, N): e.g. the reward model's scores (what selects) and
    the gold reward (what the selection is worth). The estimate averages over every
    n-subset of a prompt's N samples, without enumerating them: the j-th best of N by
    score (j = 0, 1, ...) is the best of a random n-subset with probability
    C(N − 1 − j, n − 1) / C(N, n). Ties on score go to the earlier sample. Unbiased for
    best-of-n from the policy, and far less noisy than one draw of n per prompt.
    """
    scores, values = as_reward_matrix(scores), as_reward_matrix(values)
    if scores.shape != values.shape:
        raise ValueError(f"scores {scores.shape} and values {values.shape} must be the same (M, N) matrix")
    N = scores.shape[1]
    n = check_int(n, "n", low=1, fix="best-of-n needs at least one sample")
    if n > N:
        raise ValueError(f"n = {n} needs at least n samples per prompt, but there are N = {N}: sample more")
    order = np.argsort(-scores, axis=1, kind="stable")  # (M, N) best first
    ranked = np.take_along_axis(values, order, axis=1)  # (M, N) values, best score first
    weights = np.array([math.comb(N - 1 - j, n - 1) for j in range(N)], dtype=np.float64) / math.comb(N, n)  # (N,)
    return ranked @ weights  # (M,)


def best_of_n_curve(scores: RewardMatrix, values: RewardMatrix, ns: Sequence[int]) -> dict[int, float]:
    """The mean ``values`` of best-of-n selected by ``scores``, for each n in ``ns``: the mean over prompts of
    :func:`best_of_n_per_prompt`, the order-statistics estimator."""
    return {n: float(best_of_n_per_prompt(scores, values, n).mean()) for n in ns}


def pass_at_k_by_prompt(correct: RewardMatrix, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """:func:`pass_at_k` of each prompt from a (M, N) matrix of right (1) and wrong (0) answers: ``{k: (M,)}``."""
    correct = as_reward_matrix(correct)
    if not np.isin(correct, (0.0, 1.0)).all():
        raise ValueError("correct must hold 1 for a right answer and 0 for a wrong one, e.g. the verifier's rewards")
    num_correct = correct.sum(axis=1).astype(int)  # (M,)
    return {k: np.array([pass_at_k(correct.shape[1], int(c), k) for c in num_correct]) for k in ks}


# --- reward models measured honestly: against chance, and within a prompt ---
def ceiling_share(accuracy: float, bayes_accuracy: float) -> float:
    """(accuracy − 0.5) / (Bayes accuracy − 0.5): how far from a coin flip toward the noise ceiling.

    0 is chance and 1 the ceiling. The plain ratio accuracy / Bayes flatters: it gives a
    coin flip 0.5 / 0.75 = 67% on pairs whose ceiling is 0.75.
    """
    if not 0.5 < bayes_accuracy <= 1:
        raise ValueError(
            f"bayes_accuracy must be in (0.5, 1], got {bayes_accuracy!r}: on pairs whose ceiling is "
            "chance there is nothing to share (check that the pairs are not all ties)"
        )
    return (accuracy - 0.5) / (bayes_accuracy - 0.5)


def within_prompt_agreement(scores: RewardMatrix, gold: RewardMatrix) -> float:
    """Share of same-prompt answer pairs, among those the gold reward does not tie, that ``scores`` order alike.

    ``scores`` and ``gold`` are (M prompts, N answers). Only answers to one prompt are
    compared, so a reward model's constant per prompt cannot help or hurt; a score tie
    counts one half. 0.5 is chance, 1 perfect.
    """
    scores, gold = as_reward_matrix(scores), as_reward_matrix(gold)
    if scores.shape != gold.shape:
        raise ValueError(f"scores {scores.shape} and gold {gold.shape} must be the same (M, N) matrix")
    score_sign = np.sign(scores[:, :, None] - scores[:, None, :])  # (M, N, N)
    gold_sign = np.sign(gold[:, :, None] - gold[:, None, :])  # (M, N, N)
    untied = gold_sign > 0  # each untied pair once, from its better answer's row
    if not untied.any():
        raise ValueError("the gold reward ties every pair of answers: sample more varied answers per prompt")
    return float(((score_sign == gold_sign) + 0.5 * (score_sign == 0))[untied].mean())


def logistic_regression(x: np.ndarray, y: Sequence[float], steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """θ̂ of P(y = 1 | x) = σ(x · θ) by Newton's method, and its covariance (XᵀWX)⁻¹: (d,) and (d, d).

    ``x`` is (N, d), with a column of ones for an intercept; ``y`` holds labels in [0, 1] (a soft label is a
    mean of several). No penalty: for data a line separates perfectly, θ̂ does not exist, and the error says so.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) <= x.shape[1]:
        raise ValueError(f"x must be (N, d) with N > d rows and y (N,), got {x.shape} and {y.shape}")
    if not np.all((0 <= y) & (y <= 1)):
        raise ValueError("y must hold labels in [0, 1]: 1 where the first answer won")
    theta = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ theta))  # (N,)
        information = x.T @ (x * (p * (1 - p))[:, None])  # (d, d) XᵀWX
        try:
            step = np.linalg.solve(information, x.T @ (y - p))
        except np.linalg.LinAlgError:  # the weights vanish where σ saturates: separated labels
            break
        theta = theta + step
        if np.max(np.abs(step)) < 1e-10:
            return theta, np.linalg.inv(information)
    raise ValueError("the fit did not converge: the features separate the labels, so θ runs off; add labels")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` is 1 (the real tokens), over ``dim`` or over everything.

    Padding counts for nothing, and a row with no real token gives 0 rather than NaN.
    """
    if values.shape != mask.shape:  # broadcasting would average over rows the mask never meant
        raise ValueError(
            f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape: one mask entry per value"
        )
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1)
