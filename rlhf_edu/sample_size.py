"""How many prompts an evaluation needs: standard errors, paired differences and power (chapter 16).

A model's score on an evaluation is a mean over prompts of a mean over samples per prompt. With σ_b² the variance
of the prompts' true scores and σ_w² the variance of one sample around its prompt's score,

    se² = σ_b² / n + σ_w² / (n · m)                                                    (eq:eval_se)

for n prompts and m samples each (:func:`standard_error`): more samples per prompt shrink only the second term.
Two models on the same prompts compare prompt by prompt, and the difference's spread is

    sd_d² = sd_a² + sd_b² − 2 ρ sd_a sd_b                                              (eq:paired_sd)

(:func:`difference_sd`), which a positive correlation ρ between the models' per-prompt scores shrinks; unpaired
prompts have ρ = 0. A two-sided z-test at level α resolves a true difference δ with power 1 − β when

    n ≥ ((z_{1−α/2} + z_{1−β}) · sd_d / δ)²                                             (eq:eval_power)

(:func:`prompts_needed`, :func:`power`, :func:`detectable_difference`). :func:`resampled_power` checks it by
simulation on a finished evaluation's per-prompt scores, paired or not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .core.runtime import numpy_rng
from .core.validation import check_int, check_number, check_probability

_NORMAL = NormalDist()


def standard_error(between_var: float, within_var: float, num_prompts: int, samples_per_prompt: int = 1) -> float:
    """eq:eval_se: the standard error of a mean over ``num_prompts`` prompts of ``samples_per_prompt`` samples."""
    between_var = check_number(between_var, "between_var", low=0, fix="the variance of the prompts' true scores")
    within_var = check_number(within_var, "within_var", low=0, fix="the variance of one sample around its prompt's")
    n = check_int(num_prompts, "num_prompts", fix="the number of prompts, e.g. 500")
    m = check_int(samples_per_prompt, "samples_per_prompt", fix="samples per prompt, e.g. 4")
    return math.sqrt(between_var / n + within_var / (n * m))


def variance_components(scores: np.ndarray) -> tuple[float, float]:
    """σ_b² and σ_w² of eq:eval_se from scores of shape (n prompts, m samples), m ≥ 2: the one-way ANOVA estimates.

    σ_w² is the mean within-prompt variance; σ_b² is the variance of the prompts' means less σ_w²/m (each mean
    carries that much sampling noise), and 0 if that is negative. Both are unbiased before the clip at 0.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[0] < 2 or scores.shape[1] < 2:
        raise ValueError(
            f"scores must be (prompts, samples) with at least 2 of each, got shape {scores.shape}: sample at least "
            "two answers per prompt to tell the within-prompt spread from the between-prompt one"
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores holds NaN or infinity: score every sample")
    within = float(scores.var(axis=1, ddof=1).mean())
    between = float(scores.mean(axis=1).var(ddof=1)) - within / scores.shape[1]
    return max(between, 0.0), within


def difference_sd(sd_a: float, sd_b: float, correlation: float = 0.0) -> float:
    """eq:paired_sd: the standard deviation of a per-prompt difference of two scores with this ``correlation``."""
    sd_a = check_number(sd_a, "sd_a", low=0)
    sd_b = check_number(sd_b, "sd_b", low=0)
    rho = check_number(correlation, "correlation", low=-1, high=1, fix="0 for unpaired prompts")
    return math.sqrt(max(sd_a**2 + sd_b**2 - 2 * rho * sd_a * sd_b, 0.0))


def _z_sum(power_: float, alpha: float) -> float:
    power_ = check_probability(power_, "power", "the chance to resolve a true difference, e.g. 0.8")
    alpha = check_probability(alpha, "alpha", "the test's level, e.g. 0.05")
    return _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power_)


def prompts_needed(difference: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """eq:eval_power: the fewest prompts that resolve a true ``difference`` with the given ``power`` at level
    ``alpha``, for per-prompt differences of standard deviation ``sd``."""
    delta = check_number(difference, "difference", low=0, low_open=True, fix="the size of the difference to resolve")
    sd = check_number(sd, "sd", low=0, low_open=True, fix="the spread of the per-prompt differences")
    return math.ceil((_z_sum(power, alpha) * sd / delta) ** 2)


def power(difference: float, sd: float, num_prompts: int, alpha: float = 0.05) -> float:
    """The chance that a two-sided z-test at level ``alpha`` on ``num_prompts`` prompts finds a true ``difference``
    significant in its own direction: Φ(δ√n / sd − z_{1−α/2})."""
    delta = check_number(difference, "difference", low=0, fix="the size of the true difference")
    sd = check_number(sd, "sd", low=0, low_open=True, fix="the spread of the per-prompt differences")
    n = check_int(num_prompts, "num_prompts", fix="the number of prompts, e.g. 500")
    alpha = check_probability(alpha, "alpha", "the test's level, e.g. 0.05")
    return _NORMAL.cdf(delta * math.sqrt(n) / sd - _NORMAL.inv_cdf(1 - alpha / 2))


def detectable_difference(sd: float, num_prompts: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """eq:eval_power solved for δ: the smallest true difference ``num_prompts`` prompts resolve with this power."""
    sd = check_number(sd, "sd", low=0, low_open=True, fix="the spread of the per-prompt differences")
    n = check_int(num_prompts, "num_prompts", fix="the number of prompts, e.g. 500")
    return _z_sum(power, alpha) * sd / math.sqrt(n)


def resampled_power(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    num_prompts: int,
    paired: bool = True,
    alpha: float = 0.05,
    num_trials: int = 2000,
    seed: int = 0,
) -> float:
    """eq:eval_power checked by simulation: the share of ``num_trials`` small evaluations, each ``num_prompts``
    prompts drawn with replacement from two models' per-prompt scores (N,), whose z-test at level ``alpha`` finds
    the difference in the direction of the whole data's mean difference.

    ``paired`` draws one set of prompts for both models and tests the per-prompt differences; unpaired draws each
    model's prompts apart, as two evaluations on different prompts would, and tests the difference of the means.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            f"scores_a {a.shape} and scores_b {b.shape} must be per-prompt scores of the same N >= 2 prompts"
        )
    n = check_int(num_prompts, "num_prompts", low=2, fix="the prompts of each simulated evaluation, e.g. 200")
    trials = check_int(num_trials, "num_trials", low=2, fix="e.g. 2000 simulated evaluations")
    z_crit = _NORMAL.inv_cdf(1 - check_probability(alpha, "alpha", "the test's level, e.g. 0.05") / 2)
    rng = numpy_rng(seed)
    rows_a = rng.integers(0, len(a), size=(trials, n))  # (trials, n) prompts drawn for model a
    rows_b = rows_a if paired else rng.integers(0, len(b), size=(trials, n))  # the same prompts when paired
    if paired:
        d = a[rows_a] - b[rows_b]  # (trials, n) per-prompt differences
        z = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    else:
        se = np.sqrt(a[rows_a].var(axis=1, ddof=1) / n + b[rows_b].var(axis=1, ddof=1) / n)  # (trials,)
        z = (a[rows_a].mean(axis=1) - b[rows_b].mean(axis=1)) / se
    direction = np.sign(a.mean() - b.mean()) or 1.0
    return float(np.mean(direction * z > z_crit))


def plot_detectable(
    sds: dict[str, float], num_prompts: int, power: float = 0.8, alpha: float = 0.05, max_prompts: int = 1000
) -> Figure:
    """eq:eval_power as a curve for each labelled spread of the per-prompt differences: the smallest difference that
    n prompts resolve, n from 10 to ``max_prompts``, with ``num_prompts`` marked and read off in the legend."""
    n = check_int(num_prompts, "num_prompts", fix="the number of prompts, e.g. 300")
    grid = np.unique(np.geomspace(10, max(max_prompts, n), 60).astype(int))  # prompts, log-spaced
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, sd in sds.items():
        at_n = detectable_difference(sd, n, power, alpha)
        curve = [detectable_difference(sd, int(k), power, alpha) for k in grid]
        ax.plot(grid, curve, label=f"{label}: {at_n:.3f} at n = {n}")
        ax.plot([n], [at_n], "o", color=ax.lines[-1].get_color())
    ax.axvline(n, color="grey", linewidth=0.8)
    ax.set(xscale="log", xlabel="prompts n", ylabel="smallest difference resolved (gold)")
    ax.set_title(f"{power:.0%} power at α = {alpha}", fontsize=10)
    ax.legend(fontsize=8)
    return fig
