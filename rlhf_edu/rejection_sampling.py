"""Rejection sampling (chapter 10): sample many answers, keep the ones a reward likes best.

For M prompts the policy samples N completions each, the completion matrix Y
(eq:rs_completion_matrix), and a reward scores every one of them, the reward matrix R of
shape (M, N) (eq:rs_reward_matrix). The book's two selection rules keep

- the best completion of each prompt, argmax_j R[i, j] (eq:rs_selection_per_prompt):
  :func:`select_top_per_prompt`;
- the k best completions overall, whatever their prompts (eq:rs_topk_selection):
  :func:`select_top_k_overall`;

and the kept completions become an SFT dataset (:func:`rejection_sampling_dataset`) for
chapter 9's ``train_sft``. Made at inference time instead, the same selection is best-of-n
(:func:`best_of_n`; :func:`best_of_n_curve` averages it over every n-subset, and lives in
the core so that chapter 7 can measure reward models with it; :func:`best_of_n_stderr` and
:func:`best_of_n_gain` give its noise over prompts), whose distance from the
policy has a famous bound, KL(π_BoN ‖ π) ≤ log n − (n − 1)/n (:func:`best_of_n_kl_bound`), and an exact value on any
finite set of outcomes (:func:`exact_best_of_n`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from datasets import Dataset
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.rollouts import RewardFn, rollout_rewards, sample_rollouts
from .core.runtime import MAX_NEW_TOKENS, numpy_rng
from .core.stats import RewardMatrix, as_reward_matrix, best_of_n_curve, bootstrap_stderr
from .core.validation import check_distribution, check_int, check_texts
from .core.world import World


def check_k(k: int, size: int) -> int:
    """``k`` as an int between 1 and the M × N completions there are to keep, or an error that says so."""
    k = check_int(k, "k", fix=f"keep between 1 and M × N = {size} completions")
    if k > size:
        raise ValueError(f"k = {k} is more than the M × N = {size} completions there are: keep at most {size}")
    return k


# --- the book's selection rules ---------------------------------------------------------------------------------
def select_top_per_prompt(rewards: RewardMatrix) -> list[int]:
    """The best completion of each prompt, argmax_j R[i, j] (eq:rs_selection_per_prompt): M column indices.

    Zero-based; a tie goes to the lower index (the first completion sampled).
    """
    return as_reward_matrix(rewards).argmax(axis=1).tolist()  # argmax returns the first of equal maxima


def select_top_k_overall(rewards: RewardMatrix, k: int) -> list[int]:
    """The k largest rewards of the whole matrix (eq:rs_topk_selection): flat indices i·N + j, largest first.

    Zero-based; among equal rewards the lower flat index comes first. A prompt may get
    several completions, or none.
    """
    flat = as_reward_matrix(rewards).ravel()
    k = check_k(k, flat.size)
    return np.argsort(-flat, stable=True)[:k].tolist()  # stable: equal rewards keep their order


def select_random_per_prompt(rewards: RewardMatrix, rng: np.random.Generator | int) -> list[int]:
    """The matched control of :func:`select_top_per_prompt`: one completion per prompt, at random."""
    M, N = as_reward_matrix(rewards).shape
    return numpy_rng(rng, "rng").integers(N, size=M).tolist()


def select_random_k_overall(rewards: RewardMatrix, k: int, rng: np.random.Generator | int) -> list[int]:
    """The matched control of :func:`select_top_k_overall`: k flat indices drawn at random, without replacement."""
    flat = as_reward_matrix(rewards).ravel()
    k = check_k(k, flat.size)
    generator = numpy_rng(rng, "rng")
    return generator.choice(flat.size, size=k, replace=False).tolist()  # pragma: no mutate (None reads as False)


# --- sampling, scoring and the dataset of the kept completions ----------------------------------------------------
def sample_and_score(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    n: int,
    reward_fn: RewardFn,
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 1.0,
    seed: int = 0,
) -> tuple[list[list[str]], np.ndarray]:
    """Sample ``n`` completions per prompt and score them: ``(Y, R)``.

    These are the completion matrix (eq:rs_completion_matrix) and the reward matrix
    (eq:rs_reward_matrix): ``Y[i][j]`` is prompt i's j-th completion and ``R[i, j]`` its
    reward, R of shape (M, n).
    """
    prompts = check_texts(prompts, "prompts")
    n = check_int(n, "n", fix="the number of completions per prompt, e.g. 8")
    rollout = sample_rollouts(policy, tokenizer, prompts, n, max_new_tokens, temperature, seed=seed)
    rewards = as_reward_matrix(rollout_rewards(reward_fn, rollout).double().view(len(prompts), n))  # (M, n)
    completions = [rollout.completions[i * n : (i + 1) * n] for i in range(len(prompts))]
    return completions, rewards


BEST_OF_N_SEED = 1  # the sampling seed of the held-out best-of-n measurement that chapters 8 and 10 share


def held_out_best_of_n(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    reward_fn: RewardFn,
    num_prompts: int = 64,
    n: int = 64,
    seed: int = BEST_OF_N_SEED,
) -> tuple[list[str], list[list[str]], np.ndarray, np.ndarray]:
    """``n`` samples for each of the world's first ``num_prompts`` test prompts, scored: ``(prompts, Y, R, G)``.

    R is ``reward_fn``'s (M, n) score matrix and G the gold reward of the same completions.
    Chapters 8 and 10 both measure best-of-n of ``sft`` with ``rm`` on it, so that one fact
    has one number.
    """
    prompts = world.prompts(num_prompts, split="test")
    Y, R = sample_and_score(policy, tokenizer, prompts, n, reward_fn, seed=seed)
    G = as_reward_matrix(np.array([world.gold_reward([p] * len(row), row) for p, row in zip(prompts, Y)]))
    return prompts, Y, R, G


def rejection_sampling_dataset(
    prompts: Sequence[str],
    completions: Sequence[Sequence[str]],
    rewards: RewardMatrix,
    selected: Sequence[int],
    per_prompt: bool = True,
) -> Dataset:
    """The selected completions as a conversational prompt/completion ``Dataset``, ready for ``train_sft``.

    ``selected`` is what a selection rule returned: one column per prompt (``per_prompt=True``)
    or flat indices i·N + j. A ``reward`` column keeps each kept completion's score.
    """
    rewards = as_reward_matrix(rewards)
    M, N = rewards.shape
    if len(prompts) != M or len(completions) != M or any(len(row) != N for row in completions):
        raise ValueError(
            f"prompts ({len(prompts)}), completions and rewards {rewards.shape} must describe the same "
            "M prompts × N completions: pass what sample_and_score returned"
        )
    cells = [(i, j) for i, j in enumerate(selected)] if per_prompt else [divmod(int(f), N) for f in selected]
    if not all(0 <= i < M and 0 <= j < N for i, j in cells):
        raise ValueError(
            f"selected holds an index outside the {M} × {N} matrix: pass a selection rule's output "
            f"(per_prompt={per_prompt})"
        )
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": prompts[i]}] for i, _ in cells],
            "completion": [[{"role": "assistant", "content": completions[i][j]}] for i, j in cells],
            "reward": [float(rewards[i, j]) for i, j in cells],
        }
    )


def best_of_n(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    n: int,
    reward_fn: RewardFn,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = 0,
) -> list[str]:
    """Best-of-n at inference: for each prompt, the one of ``n`` sampled completions ``reward_fn`` scores highest."""
    completions, rewards = sample_and_score(policy, tokenizer, prompts, n, reward_fn, max_new_tokens, seed=seed)
    return [row[j] for row, j in zip(completions, select_top_per_prompt(rewards))]


def picks_table(
    prompts: Sequence[str],
    completions: Sequence[Sequence[str]],
    scores: RewardMatrix,
    values: RewardMatrix,
    n: int,
    rows: int = 6,
) -> str:
    """The pick by ``scores`` among each prompt's first ``n`` completions, with its score and value, as plain text."""
    scores, values = as_reward_matrix(scores), as_reward_matrix(values)
    n = check_int(n, "n", fix="best-of-n needs at least one sample")
    lines = []
    for i in range(min(rows, len(prompts))):
        j = int(np.argmax(scores[i, :n]))
        lines.append(f"{prompts[i]:<20} score {scores[i, j]:+.2f}  gold {values[i, j]:+.2f}   {completions[i][j]}")
    return "\n".join(lines)


def plot_best_of_n_curves(
    curves: dict[str, dict[int, float]],
    highlight: int | None = None,
    ax: Axes | None = None,
    stderrs: dict[str, dict[int, float]] | None = None,
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """Curves from :func:`best_of_n_curve` against n (log scale), each named; a dot at n = ``highlight``.

    ``stderrs`` (e.g. from :func:`best_of_n_stderr`, by the same names) draws a ±1 s.e. band.
    """
    ax = ax if ax is not None else plt.subplots(figsize=(5.5, 3.2))[1]
    for i, (name, curve) in enumerate(curves.items()):
        ax.plot(list(curve), list(curve.values()), "o-", color=f"C{i}", label=name)
        if stderrs is not None and name in stderrs:
            means, errors = np.array(list(curve.values())), np.array([stderrs[name][n] for n in curve])
            ax.fill_between(list(curve), means - errors, means + errors, color=f"C{i}", alpha=0.2, lw=0)
        if highlight in curve:
            ax.scatter([highlight], [curve[highlight]], s=110, color="black", zorder=3)
    ns = sorted({n for curve in curves.values() for n in curve})
    ax.set(xscale="log", xticks=ns, xticklabels=ns, xlabel="n")
    ax.minorticks_off()
    ax.legend(fontsize=8)
    return ax.figure


# --- how noisy a best-of-n curve is: a bootstrap over prompts -----------------------------------------------------
def best_of_n_stderr(
    scores: RewardMatrix, values: RewardMatrix, ns: Sequence[int], num_resamples: int = 200, seed: int = 0
) -> dict[int, float]:
    """The standard error of each point of :func:`best_of_n_curve`, from a bootstrap over prompts (rows).

    The curve averages every n-subset of each prompt's samples, so its noise is that of
    the prompts and of their N samples; resampling prompts counts both (a little generously:
    it also counts how the prompts differ, which another sampling seed would not change).
    """
    return {
        n: bootstrap_stderr(
            lambda s, v, n=n: best_of_n_curve(s, v, [n])[n], scores, values, num_resamples=num_resamples, seed=seed
        )
        for n in ns
    }


def best_of_n_gain(
    scores: RewardMatrix,
    values: RewardMatrix,
    n_from: int,
    n_to: int,
    oracle: RewardMatrix | None = None,
    num_resamples: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """How much best-of-``n_to`` beats best-of-``n_from`` on ``values``, and the paired standard error of that gain.

    Both points come from the same samples, so the gain's error is the bootstrap's spread
    of the gain itself (prompts resampled with both points together), usually far below
    either point's. With ``oracle`` (an (M, N) matrix of other selecting scores, e.g. the
    gold reward), it is instead how much selecting by ``oracle`` beats selecting by
    ``scores``, both at n = ``n_to`` (``n_from`` is then ignored).
    """

    def gain(s: np.ndarray, v: np.ndarray, o: np.ndarray) -> float:
        if oracle is not None:
            return best_of_n_curve(o, v, [n_to])[n_to] - best_of_n_curve(s, v, [n_to])[n_to]
        curve = best_of_n_curve(s, v, [n_from, n_to])
        return curve[n_to] - curve[n_from]

    arrays = (
        as_reward_matrix(scores),
        as_reward_matrix(values),
        as_reward_matrix(oracle if oracle is not None else scores),
    )
    return gain(*arrays), bootstrap_stderr(gain, *arrays, num_resamples=num_resamples, seed=seed)


# --- how far best-of-n moves from the policy ---------------------------------------------------------------------
def best_of_n_kl_bound(n: int) -> float:
    """The analytical KL(π_BoN ‖ π) = log n − (n − 1)/n of best-of-n, in nats: 0 for n = 1.

    It is exact for a continuous reward with no ties, and only an upper bound for a finite
    set of outcomes, where ties and repeats make the KL smaller (Beirami et al., 2024;
    see :func:`exact_best_of_n`).
    """
    n = check_int(n, "n", fix="best-of-n needs at least one sample")
    return math.log(n) - (n - 1) / n


def exact_best_of_n(
    probs: Sequence[float] | np.ndarray | torch.Tensor, rewards: Sequence[float] | np.ndarray, n: int
) -> tuple[np.ndarray, float]:
    """The exact best-of-n distribution over a finite set of outcomes, and its KL to ``probs``: ``(probs_bon, kl)``.

    With the outcomes ordered by reward, F(y) the probability of a reward ≤ r(y) and F⁻(y)
    of a reward < r(y), the best of n independent samples has a reward in y's tier with
    probability F(y)ⁿ − F⁻(y)ⁿ. Outcomes that tie on reward share their tier's mass in
    proportion to ``probs`` (a tie is broken at random among the samples). Returns
    π_BoN as float64 (A,) and KL(π_BoN ‖ π) in nats.
    """
    probs = torch.as_tensor(probs, dtype=torch.float64)
    check_distribution(probs, "probs")
    probs = probs.numpy()
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != probs.shape or probs.ndim != 1:
        raise ValueError(f"probs {probs.shape} and rewards {rewards.shape} must be 1-D with one entry per outcome")
    if not np.isfinite(rewards).all():
        raise ValueError("rewards hold NaN or inf")
    n = check_int(n, "n", fix="best-of-n needs at least one sample")
    at_most = np.array([probs[rewards <= r].sum() for r in rewards])  # F(y)
    below = np.array([probs[rewards < r].sum() for r in rewards])  # F⁻(y)
    tier = np.array([probs[rewards == r].sum() for r in rewards])  # the mass of y's tie group
    probs_bon = np.zeros_like(probs)
    taken = probs > 0  # an outcome π never samples is never the best of n samples; where π takes one, tier > 0
    probs_bon[taken] = probs[taken] * (at_most[taken] ** n - below[taken] ** n) / tier[taken]
    support = probs_bon > 0
    kl = float((probs_bon[support] * np.log(probs_bon[support] / probs[support])).sum())
    return probs_bon, kl
