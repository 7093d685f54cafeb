"""Plausible wrong answers to notebook 07's function exercise, each with the case its check must name."""

import torch
import torch.nn.functional as F

from tests.exercise_tools import WrongVersion


def _gaps(chosen_rewards, rejected_rewards, margin, sign=1.0):
    """r_c − r_r, with the margin taken off (sign 1) or, by mistake, added (sign −1)."""
    return chosen_rewards - rejected_rewards - (0.0 if margin is None else sign * margin)


WRONG = {
    "07.1": [
        WrongVersion(  # a sign flip: the rejected answer's reward first
            "the gap the wrong way round",
            lambda c, r, margin=None: -F.logsigmoid(_gaps(r, c, margin)),
            "8 random pairs, without a margin",
        ),
        WrongVersion(  # the book's formula written out: log of an underflowed σ is −inf
            "log of sigmoid, written out",
            lambda c, r, margin=None: -torch.log(torch.sigmoid(_gaps(c, r, margin))),
            "reward gaps of ±200 and ±1000, where log σ written out overflows",
        ),
        WrongVersion(  # eq:rewardmodeling2 written out: exp of a large negative gap is inf
            "log(1 + exp(−gap)), written out",
            lambda c, r, margin=None: torch.log(1 + torch.exp(-_gaps(c, r, margin))),
            "reward gaps of ±200 and ±1000, where log σ written out overflows",
        ),
        WrongVersion(  # the margin added: it then lets the loss go before the chosen answer wins
            "the margin with the wrong sign",
            lambda c, r, margin=None: -F.logsigmoid(_gaps(c, r, margin, sign=-1.0)),
            "8 random pairs with a margin of 1 for every pair",
        ),
        WrongVersion(  # forgetting a term: the margin is accepted and never used
            "the margin ignored",
            lambda c, r, margin=None: -F.logsigmoid(c - r),
            "8 random pairs with a margin of 1 for every pair",
        ),
        WrongVersion(  # the training loss's mean over the batch, where one loss per pair is asked for
            "the mean over the pairs",
            lambda c, r, margin=None: -F.logsigmoid(_gaps(c, r, margin)).mean(),
            "8 random pairs, without a margin",
        ),
    ],
}
