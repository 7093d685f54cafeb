"""Notebook 17's exercises (chapter 17, over-optimization): Gao's best-of-n law fitted by hand, and its peak in n."""

from __future__ import annotations

import itertools

import numpy as np

from ..core.runtime import numpy_rng
from ..core.training import load_histories
from ..experiments.recipes import SWEEPS
from ..overoptimization import best_of_n_distances, fit_gao_form, gao_peak
from ..rejection_sampling import best_of_n_kl_bound
from .checks import Case, Exercise, Prediction, equal, register

NS = [1, 2, 4, 8, 16, 32, 64]  # the pipeline sweep's best-of-n sizes; n = 1 is the policy itself


def _gao_bon_fit(ns: list[int], gold: np.ndarray) -> tuple[float, float]:
    """eq:gao_bon's (α, β) from best-of-n's gold at each n: d = √KL_bon, the gain over n = 1, no intercept."""
    return fit_gao_form(best_of_n_distances(ns), gold - gold[0], "bon")


def _shipped_curve(key: str) -> tuple[list[int], np.ndarray]:
    """The shipped best-of-n curve ``key`` ("bon_rm" or "bon_rm_few"): its n's as ints, and its pick's gold."""
    run = load_histories(SWEEPS / "pipeline_rl.json")[0][key]
    return [int(n) for n in run["n"]], np.array(run["gold"])


def _fit_cases() -> list[Case]:
    """Curves on the law itself, off it, never turning, flat, short and irregular in n, and a shipped one."""
    d = best_of_n_distances(NS)
    noise = numpy_rng(4).normal(0, 0.05, len(NS))  # (K,) a measured curve's scatter
    return [
        Case("a curve exactly on d(α − βd) with α = 0.5, β = 0.25, starting at gold 0", (NS, d * (0.5 - 0.25 * d))),
        Case("the same curve starting at gold 2: only the gain over n = 1 counts", (NS, 2 + d * (0.5 - 0.25 * d))),
        Case("a noisy curve off the law, starting at gold 1.7", (NS, 1.7 + d * (0.4 - 0.2 * d) + noise)),
        Case("a curve that never turns (the gain grows faster than d): β < 0", (NS, d * (0.1 + 0.2 * d))),
        Case("a flat curve: best-of-n buys nothing, α = β = 0", (NS, np.full(len(NS), 1.3))),
        Case("the fewest sizes that fit two numbers, n = 1, 2, 4", ([1, 2, 4], np.array([0.4, 0.7, 0.8]))),
        Case("sizes that are not powers of two, n = 1, 3, 10, 100", ([1, 3, 10, 100], np.array([1.0, 1.2, 1.25, 1.1]))),
        Case("the shipped curve of best-of-n by rm (all pairs)", _shipped_curve("bon_rm")),
    ]


def _samples_to_peak() -> int:
    """The smallest n whose best-of-n KL reaches d*², d* the peak of eq:gao_bon fitted to rm_few's shipped curve."""
    d_peak = gao_peak(*_gao_bon_fit(*_shipped_curve("bon_rm_few")), "bon")  # finite: the shipped fit turns
    return next(n for n in itertools.count(1) if best_of_n_kl_bound(n) >= d_peak**2)


register(
    Exercise(
        "17.1",
        success="α and β by least squares on the columns d and −d², with d = √(log n − (n − 1)/n) and no intercept",
        hints=(
            "R(d) = d(α − βd) is linear in α and β: what does each n give you to fit it with, and what does "
            "R(0) = 0 say about an intercept?",
            "eq:gao_bon: R_bon(d) = d(α − βd), with d = √KL_bon, KL_bon = log n − (n − 1)/n (chapter 10), and R "
            "the gold reward's gain over the policy itself (n = 1); α and β are the linear least-squares "
            "coefficients of R on the law's two terms in d, with no constant term",
        ),
        reference=_gao_bon_fit,
        cases=_fit_cases,
    ),
    Exercise(
        "17.2",
        success="the fit of rm_few's curve turns near d = 1.41, and best-of-n's KL reaches d*² ≈ 1.99 nats at n = 19",
        hints=(
            "how far from the policy, in nats of KL, does the fitted curve peak, and does best-of-n's KL ever fall "
            'as n grows? Take α and β unrounded from fits["bon", "rm_few (1/8)"]: n is sensitive to their third '
            "digit",
            "eq:gao_bon, R(d) = d(α − βd), peaks where its slope α − 2βd is zero, at d* = α/(2β); best-of-n has "
            "moved d = √KL_bon with KL_bon = log n − (n − 1)/n (chapter 10), so the answer is the first n whose "
            "KL_bon reaches d*²",
        ),
        expected=_samples_to_peak,
        compare=equal,
        prediction=Prediction(
            ("before n = 64", "after n = 64", "never: the fit does not turn"),
            lambda n: "before n = 64" if n < 64 else "after n = 64",
            "the fit turns at d* ≈ 1.41, inside the measured range (n = 64 is d = 1.78) and near rm_few's highest "
            "measured gold (d = 1.35); best-of-n's KL grows like log n, so each further nat costs e times the samples",
        ),
    ),
)
