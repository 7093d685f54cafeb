"""Notebook 16's exercises (chapter 16, evaluation): how many prompts a comparison needs, and a standard error by
hand."""

from __future__ import annotations

from ..sample_size import prompts_needed, standard_error
from .checks import Case, Exercise, close, register


# ------------------------------------------------------------------------------------------------ 16.1 prompts needed
def _prompts_needed_cases() -> list[Case]:
    """Sizes whose unrounded answers fall below and above a half, at several powers and levels."""
    return [
        Case("δ = 0.1, sd = 1, 80% power at α = 0.05 (the textbook case: 785)", (0.1, 1.0, 0.8, 0.05)),
        Case("δ = 0.37, sd = 0.5, 80% power at α = 0.05 (14.3 before rounding)", (0.37, 0.5, 0.8, 0.05)),
        Case("δ = 0.5, sd = 2, 50% power at α = 0.1 (43.3 before rounding)", (0.5, 2.0, 0.5, 0.1)),
        Case("δ = 0.2, sd = 1, 90% power at α = 0.01", (0.2, 1.0, 0.9, 0.01)),
        Case("δ = 0.25, sd = 1.3, 95% power at α = 0.05", (0.25, 1.3, 0.95, 0.05)),
    ]


def _standard_errors() -> tuple[float, float]:
    """eq:eval_se at σ_b² = 0.64, σ_w² = 0.65 and 200 prompts: one sample per prompt, then four."""
    return standard_error(0.64, 0.65, 200, 1), standard_error(0.64, 0.65, 200, 4)


register(
    Exercise(
        "16.1",
        success="n = ⌈((z_{1−α/2} + z_{power}) · sd / δ)²⌉: both tails of the test, the power's quantile, the "
        "ratio squared, and rounded up, since a fraction of a prompt is one more prompt",
        hints=(
            "a two-sided test at level α puts α/2 in each tail; the power adds its own quantile of the normal",
            "`prompts_needed`, eq:eval_power: NormalDist().inv_cdf(1 − α/2) + NormalDist().inv_cdf(power), times "
            "sd / difference, squared, then math.ceil",
        ),
        reference=prompts_needed,
        cases=_prompts_needed_cases,
    ),
    Exercise(
        "16.2",
        success="√(1.29/200) ≈ 0.080 with one sample per prompt and √(0.64/200 + 0.65/800) ≈ 0.063 with four: "
        "four times the answers buy a fifth off the error, because the prompts' own spread σ_b² does not shrink",
        hints=(
            "the second term is the only one the samples per prompt divide",
            "eq:eval_se, `standard_error`: se² = σ_b²/n + σ_w²/(n·m), at n = 200 and m = 1, then m = 4",
        ),
        expected=_standard_errors,
        compare=close(1e-3),
    ),
)
