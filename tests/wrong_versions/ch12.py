"""Plausible wrong answers to notebook 12's function exercises, each with the case its check must name."""

import numpy as np
import torch
import torch.nn.functional as F

from tests.exercise_tools import WrongVersion


def _margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)  # (B,) h


def _cdpo(h, beta, eps, chosen_weight=None):
    chosen_weight = 1 - eps if chosen_weight is None else chosen_weight
    return -chosen_weight * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


def _untied_share(right, gold_gap):
    return float(np.mean(right[np.asarray(gold_gap) != 0]))


WRONG = {
    "12.1": [
        WrongVersion(  # forgetting a term: no reference, so h is the policy's own gap
            "the reference left out",
            lambda pc, pr, rc, rr, beta, eps: _cdpo(pc - pr, beta, eps),
            "a policy equal to its reference (h = 0: log 2 on every pair), β = 0.1",
        ),
        WrongVersion(  # a sign flip: h as the rejected log-ratio minus the chosen one
            "the margin upside down",
            lambda pc, pr, rc, rr, beta, eps: _cdpo(-_margin(pc, pr, rc, rr), beta, eps),
            "random log-probs, β = 0.1",
        ),
        WrongVersion(  # forgetting a term: σ(h) without β
            "β left out",
            lambda pc, pr, rc, rr, beta, eps: _cdpo(_margin(pc, pr, rc, rr), 1.0, eps),
            "random log-probs, β = 0.1",
        ),
        WrongVersion(  # log of σ in two steps: σ(−200) rounds to 0 in float32, and its log is −inf
            "log of the sigmoid",
            lambda pc, pr, rc, rr, beta, eps: (
                -(1 - eps) * torch.log(torch.sigmoid(beta * _margin(pc, pr, rc, rr)))
                - eps * torch.log(torch.sigmoid(-beta * _margin(pc, pr, rc, rr)))
            ),
            "pairs ordered far the wrong way (βh = −200, float32): a loss of 200, not inf",
        ),
        WrongVersion(  # cDPO with the labelled term's weight left at 1 instead of 1 − ε
            "cDPO without the 1 − ε",
            lambda pc, pr, rc, rr, beta, eps: _cdpo(_margin(pc, pr, rc, rr), beta, eps, chosen_weight=1.0),
            "cDPO: random log-probs, β = 0.1, label smoothing ε = 0.1",
        ),
        WrongVersion(  # a wrong normaliser: the batch's mean loss, where one loss per pair is asked
            "the batch mean",
            lambda pc, pr, rc, rr, beta, eps: _cdpo(_margin(pc, pr, rc, rr), beta, eps).mean(),
            "a policy equal to its reference (h = 0: log 2 on every pair), β = 0.1",
        ),
    ],
    "12.4": [
        WrongVersion(  # agreement with the labels (chosen over rejected), not with the gold reward
            "agreement with the labels",
            lambda c, r, gap: _untied_share(np.asarray(c) > np.asarray(r), gap),
            "random rewards, gold gaps of both signs (labels that disagree with the gold reward)",
        ),
        WrongVersion(  # a wrong normaliser: the gold ties kept in the denominator, as disagreements
            "gold ties counted as pairs",
            lambda c, r, gap: float(np.mean(np.sign(np.subtract(c, r)) == np.sign(gap))),
            "pairs whose gold rewards tie (left out)",
        ),
        WrongVersion(  # a reward tie counted as wrong (a strict >), as a pairwise accuracy counts it
            "a reward tie counted as wrong",
            lambda c, r, gap: _untied_share((np.subtract(c, r) > 0) == (np.asarray(gap) > 0), gap),
            "pairs whose two rewards tie (each counts one half)",
        ),
        WrongVersion(  # a reward tie left out of the denominator too, as if it were a gold tie
            "reward ties left out",
            lambda c, r, gap: _untied_share(np.sign(np.subtract(c, r)) == np.sign(gap), np.subtract(c, r) * gap),
            "pairs whose two rewards tie (each counts one half)",
        ),
    ],
}
