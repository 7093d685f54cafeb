"""Notebook 04b's exercises (the pipeline, run end to end): who buys the gold, and what a stage buys over seeds."""

from __future__ import annotations

import numpy as np

from ..core.stats import mean_and_stderr
from ..experiments.pipeline import PipelineReport, load_reports
from ..experiments.recipes import SWEEPS
from .checks import Case, Exercise, close, register


def _sft_share() -> float:
    """The share of the gold gained from base to the RL stage that SFT alone bought, on the shipped report card."""
    report = PipelineReport.load(SWEEPS / "three_stage.json")
    base, sft, rl = (report.stage(name).gold_reward for name in ("base", "sft", "rl"))
    return (sft - base) / (rl - base)


def _gain_over_seeds(gold_before: list[float], gold_after: list[float]) -> tuple[float, float]:
    """The mean over seeds of each seed's gain, gold_after − gold_before, and its standard error s/√S (paired)."""
    return mean_and_stderr(np.subtract(gold_after, gold_before))


def _shipped_golds(stage: str, before: str) -> tuple[list[float], list[float]]:
    """The five shipped seeds' gold reward at ``before`` and at ``stage``."""
    reports = load_reports(SWEEPS / "three_stage_seeds.json")
    return [r.stage(before).gold_reward for r in reports], [r.stage(stage).gold_reward for r in reports]


def _gain_cases() -> list[Case]:
    """A hand-sized set of seeds, two seeds, a loss, the same gain at every seed, and the shipped seeds."""
    return [
        Case("three seeds, before [1.0, 1.2, 0.9] and after [1.5, 1.4, 1.6]", ([1.0, 1.2, 0.9], [1.5, 1.4, 1.6])),
        Case("the fewest seeds that have a spread, two", ([0.3, 0.5], [0.2, 0.9])),
        Case("a stage that loses gold at every seed", ([2.0, 2.1, 1.9, 2.2], [1.7, 1.9, 1.2, 2.0])),
        Case("the same gain at every seed: no spread, a standard error of 0", ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])),
        Case("the five shipped seeds, sft over base", _shipped_golds("sft", "base")),
        Case("the five shipped seeds, rl over sft", _shipped_golds("rl", "sft")),
    ]


register(
    Exercise(
        "04b.1",
        success="SFT bought nearly nine tenths of the gold that the whole pipeline gained over base",
        hints=(
            "which gain is the whole to be shared out, and which step of the pipeline is SFT's part of it?",
            '`full.stage(name).gold_reward` is a stage\'s mean gold reward ("base", "sft", "rl"), unrounded; a '
            "share is a part over the whole, both measured from the same starting stage",
        ),
        expected=_sft_share,
        compare=close(1e-3),  # the report card's rounded numbers give the share to within a few 1e-4
    ),
    Exercise(
        "04b.2",
        success="each seed's own gain, then their mean and s/√S: the seeds are the units, paired before and after",
        hints=(
            "what varies from seed to seed is the whole pipeline: what is one measurement here, and how many are "
            "there?",
            "the gain of seed s is g_s = after_s − before_s; return the mean of the g_s and its standard error "
            "s/√S, with s the sample standard deviation of the g_s (S − 1 in it), as `mean_and_stderr` computes it",
        ),
        reference=_gain_over_seeds,
        cases=_gain_cases,
    ),
)
