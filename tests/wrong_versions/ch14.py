"""Plausible wrong answers to notebook 14's function exercise, each with the case its check must name."""

import torch

from tests.exercise_tools import WrongVersion


def _ratio(logps, old_logps, mask, *, mean=True, masked=True, inverted=False):
    """The sequence ratio with one slip: the sum for the mean, the padding counted, or the ratio upside down."""
    log_ratio = (old_logps - logps) if inverted else (logps - old_logps)
    weights = mask if masked else torch.ones_like(mask)
    total = (log_ratio * weights).sum(-1, keepdim=True)
    count = weights.sum(-1, keepdim=True).clamp(min=1) if mean else 1.0
    return (total / count).exp()


WRONG = {
    "14.1": [
        WrongVersion(  # a wrong normaliser: the whole sequence's ratio, π_θ(y|x)/π_old(y|x), not its geometric mean
            "the sum of the log-ratios, not their mean",
            lambda logps, old_logps, mask: _ratio(logps, old_logps, mask, mean=False),
            "three full rows of five tokens",
        ),
        WrongVersion(  # the padding's junk log-probs averaged in
            "the mean over every column, padding included",
            lambda logps, old_logps, mask: _ratio(logps, old_logps, mask, masked=False),
            "rows padded after 5, 3 and 1 tokens, with junk log-probs at the padding",
        ),
        WrongVersion(  # a sign flip: π_old/π_θ
            "the ratio upside down",
            lambda logps, old_logps, mask: _ratio(logps, old_logps, mask, inverted=True),
            "one-token completions (the sequence ratio is the token ratio)",
        ),
        WrongVersion(  # the mean of the token ratios, an arithmetic mean where GSPO takes a geometric one
            "the mean of the per-token ratios",
            lambda logps, old_logps, mask: (
                ((logps - old_logps).exp() * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
            ),
            "three full rows of five tokens",
        ),
    ],
}
