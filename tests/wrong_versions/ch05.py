"""Plausible wrong answers to notebook 05's function exercise, each with the case its check must name."""

import torch

from tests.exercise_tools import WrongVersion

WRONG = {
    "05.1": [
        WrongVersion(  # the representative annotator: σ of the share-weighted mean gap
            "σ of the average gap, one 'average person' instead of a population",
            lambda gaps, taus, shares: torch.sigmoid((shares[:, None] * gaps / taus[:, None]).sum(dim=0)),
            "a strong minority: gaps of 1 for 80% of the annotators, −4 for 20%",
        ),
        WrongVersion(  # the shares forgotten: every group counts the same
            "the plain mean over groups, shares ignored",
            lambda gaps, taus, shares: torch.sigmoid(gaps / taus[:, None]).mean(dim=0),
            "a strong minority: gaps of 1 for 80% of the annotators, −4 for 20%",
        ),
        WrongVersion(  # the temperatures forgotten
            "σ(Δ) without dividing by τ",
            lambda gaps, taus, shares: (shares[:, None] * torch.sigmoid(gaps)).sum(dim=0),
            "one group with share 1 (its own Bradley-Terry probability)",
        ),
    ],
}
