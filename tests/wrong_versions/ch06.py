"""Plausible wrong answers to notebook 06's function exercise, each with the case its check must name."""

import torch

from tests.exercise_tools import WrongVersion


def _cumulative(scores, thresholds, flip=False):
    return torch.sigmoid((scores[:, None] - thresholds[None, :]) if flip else (thresholds[None, :] - scores[:, None]))


WRONG = {
    "06.1": [
        WrongVersion(  # the sign flipped: σ(r − t), so a higher score makes a low rating likelier
            "σ(r − t) for P(rating ≤ j)",
            lambda scores, thresholds: torch.diff(
                _cumulative(scores, thresholds, flip=True),
                dim=1,
                prepend=torch.zeros(len(scores), 1).double(),
                append=torch.ones(len(scores), 1).double(),
            ),
            "a 2-point scale (one threshold at 0: P(rating 2) = σ(r))",
        ),
        WrongVersion(  # the cumulative probabilities returned as they are
            "P(rating ≤ j) instead of P(rating = j)",
            lambda scores, thresholds: torch.cat(
                [_cumulative(scores, thresholds), torch.ones(len(scores), 1).double()], 1
            ),
            "a 2-point scale (one threshold at 0: P(rating 2) = σ(r))",
        ),
        WrongVersion(  # the top of the scale forgotten: P − 1 columns
            "one column short: the last rating left out",
            lambda scores, thresholds: torch.diff(
                _cumulative(scores, thresholds), dim=1, prepend=torch.zeros(len(scores), 1).double()
            ),
            "a 2-point scale (one threshold at 0: P(rating 2) = σ(r))",
        ),
    ],
}
