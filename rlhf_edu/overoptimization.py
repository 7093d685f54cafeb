r"""Over-optimization: the proxy keeps rising while the gold reward turns, measured as Gao et al. do (chapter 17).

Gao, Schulman and Hilton (2022, "Scaling Laws for Reward Model Overoptimization") measure
how far a policy moved from its start by d = √KL(π ‖ π_init), and fit the gold reward's
gain over the start, R(d) = gold(d) − gold(0), with two forms:

    R_bon(d) = d (α_bon − β_bon d)             best-of-n, with KL_bon ≤ log n − (n − 1)/n      (eq:gao_bon)
    R_RL(d)  = d (α_RL − β_RL log d)            RL against the proxy reward                     (eq:gao_rl)

Both rise from 0, peak and fall: α is how fast the gold reward first rises, β how
quickly the proxy's errors take over. Both are linear in (α, β), so a least-squares fit
with no intercept recovers them (:func:`fit_gao_form`); the peak is where dR/dd = 0
(:func:`gao_peak`). Gao et al. find that a larger reward model moves the peak out: the
policy can go further before the proxy misleads it.

Best-of-n's d here comes from the analytical log n − (n − 1)/n, exact for a continuous
reward and an upper bound where answers repeat (chapter 10), so it overstates how far
best-of-n moved on a small world, and its fitted α, β and peak scale with it.

Goodhart's law by intervention: :func:`intervention` appends words to the same answers and measures what the proxy
and the gold reward each make of it. A cure: :func:`ensemble_reward` scores answers by K reward models at once (Coste
et al., 2023). And reward hacking in the act: :func:`blind_spot_reward` plants a reward model's blind spot for a
policy to find (a word, counted by :func:`word_count`); :func:`parting_step` finds the evaluation at which the gold
reward and the proxy part ways, and :func:`drift_alarm` is a monitor that would have flagged it from a statistic of
the answers alone, with no gold reward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .core.rollouts import RewardFn
from .core.stats import RewardMatrix, best_of_n_curve, mean_and_stderr
from .core.training import History
from .core.validation import check_choice, check_number, check_same_length, check_texts
from .core.world import VOCAB, message_text, normalize_text
from .rejection_sampling import best_of_n_kl_bound

FORMS = ("bon", "rl")  # eq:gao_bon and eq:gao_rl


def _distances(d: Sequence[float] | np.ndarray, name: str = "d") -> np.ndarray:
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or not len(d) or not np.isfinite(d).all() or (d < 0).any():
        raise ValueError(f"{name} must be a non-empty 1-D array of finite distances √KL ≥ 0, got {d!r}")
    return d


def gao_features(d: Sequence[float] | np.ndarray, form: str) -> np.ndarray:
    """The two columns that R(d) is a combination of: [d, −d²] (eq:gao_bon) or [d, −d log d] (eq:gao_rl); (K, 2)."""
    check_choice(form, "form", FORMS)
    d = _distances(d)
    second = d**2 if form == "bon" else d * np.log(np.where(d > 0, d, 1.0))  # d log d → 0 as d → 0
    return np.stack([d, -second], axis=1)


def gao_form(d: Sequence[float] | np.ndarray, alpha: float, beta: float, form: str) -> np.ndarray:
    """R(d) = d(α − βd) for ``form="bon"`` (eq:gao_bon) or d(α − β log d) for ``"rl"`` (eq:gao_rl); (K,)."""
    return gao_features(d, form) @ np.array([alpha, beta], dtype=float)


def fit_gao_form(
    d: Sequence[float] | np.ndarray, gains: Sequence[float] | np.ndarray, form: str
) -> tuple[float, float]:
    """Least-squares (α, β) of :func:`gao_form` through the points (d, gains), with R(0) = 0 held fixed.

    ``gains`` are gold(d) − gold(0): the gain over the starting policy, at the same d's.
    """
    features = gao_features(d, form)  # (K, 2)
    gains = np.asarray(gains, dtype=float)
    if gains.shape != (len(features),) or not np.isfinite(gains).all():
        raise ValueError(f"gains must be {len(features)} finite numbers, one per distance, got shape {gains.shape}")
    if np.linalg.matrix_rank(features) < 2:
        raise ValueError(f"fitting α and β needs points at two or more distinct distances d > 0, got d = {d}")
    (alpha, beta), *_ = np.linalg.lstsq(features, gains, rcond=None)
    return float(alpha), float(beta)


def gao_peak(alpha: float, beta: float, form: str) -> float:
    """The distance d at which :func:`gao_form` peaks: α/(2β) for best-of-n, exp(α/β − 1) for RL; inf if β ≤ 0.

    A best-of-n curve with α ≤ 0 (it never rises) peaks at its start, d = 0.
    """
    check_choice(form, "form", FORMS)
    if beta <= 0:
        return float("inf")  # the gold reward never turns: no over-optimization within reach of this fit
    return max(alpha, 0.0) / (2 * beta) if form == "bon" else float(np.exp(alpha / beta - 1))


def best_of_n_distances(ns: Sequence[int]) -> np.ndarray:
    """d = √KL_bon for each n, with KL_bon = log n − (n − 1)/n, chapter 10's :func:`best_of_n_kl_bound` (an upper
    bound where answers repeat)."""
    return np.sqrt([best_of_n_kl_bound(n) for n in ns])


def best_of_n_overoptimization(proxy: RewardMatrix, gold: RewardMatrix, ns: Sequence[int]) -> dict[str, np.ndarray]:
    """Best-of-n by the proxy, exactly over every n-subset: ``d``, and the mean ``proxy`` and ``gold`` of its pick.

    ``proxy`` and ``gold`` (M, N) score the same N samples of each of M prompts; the pick
    maximizes the proxy, and both of its scores are reported, so the proxy curve is what
    the policy sees and the gold one what it gets.
    """
    return {
        "n": np.asarray(ns),
        "d": best_of_n_distances(ns),
        "proxy": np.array(list(best_of_n_curve(proxy, proxy, ns).values())),
        "gold": np.array(list(best_of_n_curve(proxy, gold, ns).values())),
    }


def rl_overoptimization(history: History) -> dict[str, np.ndarray]:
    """An RL run's evaluations as a curve: ``step``, ``d`` = √KL to the start, the ``proxy`` (eval/reward) and ``gold``.

    ``history`` must hold :func:`~rlhf_edu.core.evaluation.gold_eval_fn` rows with a
    proxy (``gold_reward``, ``eval/kl``, ``eval/reward``), the first at the start.
    """
    rows = [row for row in history.steps if "gold_reward" in row]
    missing = {"eval/kl", "eval/reward"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ValueError(
            f"the history holds no evaluation with gold_reward, eval/kl and eval/reward (missing "
            f"{sorted(missing) or ['gold_reward']}): train with eval_fn=gold_eval_fn(..., reward_fn)"
        )
    kl = np.array([row["eval/kl"] for row in rows])
    return {
        "step": np.array([row["step"] for row in rows]),
        "d": np.sqrt(np.clip(kl, 0, None)),  # KL ≥ 0; noise
        "proxy": np.array([row["eval/reward"] for row in rows]),
        "gold": np.array([row["gold_reward"] for row in rows]),
    }


def plot_overoptimization(
    curves: dict[str, dict[str, np.ndarray]], form: str, ax: Axes | None = None, proxy: bool = True
) -> Figure:
    """Each curve's gold gain over its start against d, its fitted :func:`gao_form` and the fit's peak (▼).

    With ``proxy``, the proxy's gain is drawn dashed on a second axis, in its own units.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    twin = ax.twinx() if proxy else None
    for index, (name, curve) in enumerate(curves.items()):
        color = f"C{index}"
        gains = curve["gold"] - curve["gold"][0]
        alpha, beta = fit_gao_form(curve["d"], gains, form)
        grid = np.linspace(0, curve["d"].max() * 1.05, 100)
        ax.plot(curve["d"], gains, "o", color=color, ms=4, label=f"{name}: gold")
        ax.plot(
            grid, gao_form(grid, alpha, beta, form), "-", color=color, lw=1.2, label=f"fit α={alpha:.2f}, β={beta:.2f}"
        )
        peak = gao_peak(alpha, beta, form)
        if peak <= grid[-1]:
            ax.plot([peak], [gao_form([peak], alpha, beta, form)[0]], "v", color=color, ms=9)
        if twin is not None:  # in order of d: an RL run's KL can step back, and its line would zig-zag
            order = np.argsort(curve["d"], kind="stable")
            twin.plot(
                curve["d"][order], (curve["proxy"] - curve["proxy"][0])[order], "--", color=color, lw=1, alpha=0.7
            )
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="d = √KL (nats^½)", ylabel="gold gain over the start")
    if twin is not None:
        twin.set_ylabel("proxy gain (dashed, RM units)")
    ax.legend(fontsize=7, loc="best")
    return ax.figure


# --- a cure: an ensemble of reward models ---------------------------------------------------------------------------
ENSEMBLE_RULES = ("mean", "min", "mean_minus_std")  # how K reward models' scores become one reward


def ensemble_reward(scores: np.ndarray, rule: str = "mean", lam: float = 0.0) -> np.ndarray:
    """One reward per answer from K reward models' scores (K, N), by ``rule`` (Coste et al., 2023): (N,).

        mean:            r̄ = (1/K) Σ_k r_k
        min:             min_k r_k                       (worst-case optimization)
        mean_minus_std:  r̄ − λ · s,  s² = Σ_k (r_k − r̄)² / (K − 1)      (eq:ensemble_uwo)

    The last pays less where the models disagree, which is where a policy is most likely exploiting one model's
    error. Coste et al.'s uncertainty-weighted optimization subtracts λ times the variance; the standard deviation
    used here keeps the penalty in the reward's own units. It needs K ≥ 2 models, and λ ≥ 0.
    """
    check_choice(rule, "rule", ENSEMBLE_RULES)
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or not scores.size or not np.isfinite(scores).all():
        raise ValueError(
            f"scores must be a finite (K models, N answers) array, got shape {scores.shape}: stack each reward "
            "model's scores of the same answers as one row"
        )
    lam = check_number(lam, "lam", low=0, fix="λ ≥ 0 penalizes disagreement; λ = 0 is the plain mean")
    if rule == "min":
        return scores.min(axis=0)
    if rule == "mean_minus_std":
        if scores.shape[0] < 2:
            raise ValueError(
                f"scores holds K = {scores.shape[0]} reward model: a standard deviation across models needs K >= 2; "
                "train more reward models with other seeds, or use rule='mean'"
            )
        return scores.mean(axis=0) - lam * scores.std(axis=0, ddof=1)
    return scores.mean(axis=0)


# --- Goodhart's law, by intervention ---------------------------------------------------------------------------------
def intervention(
    proxy_fn: RewardFn, gold_fn: RewardFn, prompts: Sequence[str], completions: Sequence[str], words: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """What appending ``words`` to every answer does to the proxy and to the gold reward: each one's mean change and
    its paired standard error, ``{"proxy": (Δ, se), "gold": (Δ, se)}``. The same answers before and after, so the
    change is the words' effect and nothing else (an intervention, not a correlation)."""
    if isinstance(words, str) or not words or not all(isinstance(w, str) and w in VOCAB for w in words):
        raise ValueError(f"words={words!r} must be a non-empty list of the world's words, e.g. ['great', 'tasty']")
    prompts, completions = check_texts(prompts, "prompts"), check_texts(completions, "completions")
    check_same_length(prompts, completions, "prompts", "completions")
    changed = [f"{message_text(c, 'completion')} {' '.join(words)}" for c in completions]
    return {
        name: mean_and_stderr(np.subtract(fn(prompts, changed), fn(prompts, completions)))  # (N,) paired
        for name, fn in (("proxy", proxy_fn), ("gold", gold_fn))
    }


# --- reward hacking, caught in the act -------------------------------------------------------------------------------
def blind_spot_reward(reward_fn: RewardFn, word: str, bonus: float) -> RewardFn:
    """``reward_fn`` with a planted blind spot: ``bonus`` more for every time ``word`` appears in an answer, whatever
    the answer says. A reward model that learned a spurious feature pays like this; the gold reward does not."""
    check_word(word)
    bonus = check_number(bonus, "bonus", low=0, low_open=True, fix="the reward per occurrence, e.g. 0.5")

    def reward(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        counts = word_count(completions, word)  # (N,)
        return [float(r) + bonus * n for r, n in zip(reward_fn(prompts, completions), counts)]

    return reward


def check_word(word: object) -> str:
    """``word`` if it is one of the world's words, as the gold reward reads them (lower case, one word)."""
    if not isinstance(word, str) or word not in VOCAB:
        raise ValueError(f"word={word!r} is not a word of the world's vocabulary: pick one from VOCAB, e.g. 'think'")
    return word


def word_count(completions: Sequence[str], word: str) -> np.ndarray:
    """How many times ``word`` appears in each answer, counted as the gold reward reads words: (N,). The statistic
    a monitor of a planted blind spot watches, and the one :func:`blind_spot_reward` pays for."""
    word = check_word(word)
    completions = check_texts(completions, "completions", allow_empty=True)
    return np.array([normalize_text(message_text(c, "completion")).split().count(word) for c in completions], float)


def parting_step(curve: dict[str, np.ndarray], gold_se: float, k: float = 3.0) -> float | None:
    """The first evaluation at which the gold reward and the proxy part ways: the gold is below its best so far by
    more than ``k`` standard errors of a difference of two evaluations (√2 · ``gold_se``), while the proxy is above
    its value at that best. ``curve`` holds ``step``, ``proxy`` and ``gold`` (:func:`rl_overoptimization`); returns
    the step, or None if they never part."""
    gold_se = check_number(gold_se, "gold_se", low=0, low_open=True, fix="one evaluation's standard error")
    best = 0  # index of the best gold so far
    for i in range(1, len(curve["gold"])):
        if curve["gold"][i] > curve["gold"][best]:
            best = i
        fallen = curve["gold"][best] - curve["gold"][i] > k * math.sqrt(2) * gold_se
        if fallen and curve["proxy"][i] > curve["proxy"][best]:
            return float(curve["step"][i])
    return None


def drift_alarm(steps: Sequence[float], values: Sequence[float], stderr: float, k: float = 3.0) -> float | None:
    """A monitor that needs no gold reward: the first step at which a statistic of the policy's answers (a word's
    rate, the length, the share of repeated words) has moved from its value at the start by more than ``k``
    standard errors of a difference (√2 · ``stderr``); None if it never does."""
    stderr = check_number(stderr, "stderr", low=0, low_open=True, fix="one measurement's standard error")
    values = np.asarray(values, dtype=float)  # (E,) one per evaluation
    moved = np.abs(values - values[0]) > k * math.sqrt(2) * stderr
    return float(np.asarray(steps)[np.argmax(moved)]) if moved.any() else None
