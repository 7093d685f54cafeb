"""Notebook 06's exercises (chapter 6, preference data): the ordered logit of a rating, and a length-biased
annotator by hand."""

from __future__ import annotations

import math

import torch

from ..core.runtime import torch_generator
from ..preference_data import rating_probabilities
from .checks import Case, Exercise, close, register


# --------------------------------------------------------------------------------------------- 06.1 a rating
def _rating_cases() -> list[Case]:
    """A 2-point scale, the default 5-point scale, scores far outside the cuts, and unequal gaps."""
    generator = torch_generator(6)
    scores = torch.randn(6, generator=generator, dtype=torch.float64) * 2  # (N,)
    five = torch.tensor([0.5, 1.5, 2.25, 3.0], dtype=torch.float64)
    return [
        Case("a 2-point scale (one threshold at 0: P(rating 2) = σ(r))",
             (scores, torch.tensor([0.0], dtype=torch.float64))),
        Case("the default 5-point scale, thresholds 0.5, 1.5, 2.25, 3", (scores, five)),
        Case("scores far below and far above every threshold",
             (torch.tensor([-40.0, 40.0], dtype=torch.float64), five)),
        Case("a 3-point scale with unequal gaps, thresholds −1 and 2", (scores, torch.tensor([-1.0, 2.0]).double())),
    ]  # fmt: skip


def _longer_answer_wins() -> float:
    """P(longer ≻ shorter) for equal gold, 3 more words, λ = 0.4, τ = 0.5: σ(3 · 0.4 / 0.5)."""
    return 1 / (1 + math.exp(-3 * 0.4 / 0.5))


register(
    Exercise(
        "06.1",
        success="the differences of the cumulative probabilities 0, σ(t_1 − r), …, σ(t_{P−1} − r), 1: one row per "
        "score, P columns, each row summing to 1",
        hints=(
            "the ordered logit gives P(rating ≤ j) directly; how do you get P(rating = j) from the cumulative "
            "probabilities, and what are they at the two ends of the scale?",
            "`rating_probabilities`' ordered logit: P(rating ≤ j) = σ(t_j − r) for j < P, and 1 for j = P; "
            "P(rating = j) = P(rating ≤ j) − P(rating ≤ j − 1) with P(rating ≤ 0) = 0. Return (N, P) for (N,) scores "
            "and (P − 1,) thresholds",
        ),
        reference=rating_probabilities,
        cases=_rating_cases,
    ),
    Exercise(
        "06.2",
        success="σ(3 · 0.4 / 0.5) = σ(2.4) ≈ 0.917: with equal gold, three extra words win eleven times in twelve",
        hints=(
            "with equal gold reward, what is left of the utility gap u(longer) − u(shorter)?",
            "`Annotator.preference_probability` with equal gold: u = gold + λ·|y|, so the gap is λ · 3 = 1.2, and "
            "P = σ(gap / τ) with τ = 0.5",
        ),
        expected=_longer_answer_wins,
        compare=close(1e-3),
    ),
)
