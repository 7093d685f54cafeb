"""Notebook 13's exercises (chapter 13, AI feedback): a judge's position consistency, and a position pull by hand."""

from __future__ import annotations

import math

from ..ai_feedback import position_consistency
from ..core.runtime import numpy_rng
from .checks import Case, Exercise, close, register


# --------------------------------------------------------------------------------------------- 13.1 consistency
def _consistency_cases() -> list[Case]:
    """Hand-sized verdicts, a judge that always writes "1", one that never changes its mind, and random verdicts."""
    rng = numpy_rng(13)
    return [
        Case("five pairs: [1, 1, 0, 1, 0] shown a first, [0, 1, 1, 1, 0] shown b first",
             ([1, 1, 0, 1, 0], [0, 1, 1, 1, 0])),
        Case("a judge that always writes '1' (it names the first answer in both orders)", ([1] * 6, [1] * 6)),
        Case("a judge that names the same answer in every order", ([1, 0, 1, 1], [0, 1, 0, 0])),
        Case("200 random verdicts", (rng.integers(0, 2, 200).tolist(), rng.integers(0, 2, 200).tolist())),
    ]  # fmt: skip


def _debiased_probability() -> float:
    """m_ab = d + s = 1.5 and m_ba = −d + s = 0.5: the debiased margin (1.5 − 0.5) / 2 = 0.5, so P = σ(0.5)."""
    return 1 / (1 + math.exp(-0.5))


register(
    Exercise(
        "13.1",
        success="the share of pairs whose two verdicts differ: naming a means writing '1' when a is shown first and "
        "'2' when b is, so the same answer is named exactly when the two verdict words differ",
        hints=(
            "shown a then b, the verdict '1' names a; shown b then a, which verdict names a?",
            "`position_consistency`: the same answer is named exactly when first_wins_ab ≠ first_wins_ba; return "
            "the mean of that comparison as a float",
        ),
        reference=position_consistency,
        cases=_consistency_cases,
    ),
    Exercise(
        "13.2",
        success="(1.5 − 0.5) / 2 = 0.5 and σ(0.5) ≈ 0.622: the pull of 1.0 toward the first position cancels, "
        "whatever its size",
        hints=(
            "write each order's margin as the judge's real preference d plus a pull s toward the first position",
            "`debiased_margins`: (m_ab − m_ba) / 2 = ((d + s) − (−d + s)) / 2 = d; then P = σ(d)",
        ),
        expected=_debiased_probability,
        compare=close(1e-3),
    ),
)
