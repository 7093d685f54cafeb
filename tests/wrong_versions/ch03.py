"""Plausible wrong answers to notebook 03's function exercise, each with the case its check must name."""

from tests.exercise_tools import WrongVersion


def _target_logps(logits, input_ids):
    """log π(token t + 1 | tokens 0..t) at each position t: (B, T − 1)."""
    return logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def _summed(logits, input_ids, completion_mask):
    return (_target_logps(logits, input_ids) * completion_mask[:, 1:]).sum(1)


WRONG = {
    "03.2": [
        WrongVersion(  # no shift by one: each token scored by the distribution computed at it, which predicts the next
            "no shift by one",
            lambda logits, input_ids, completion_mask: (
                logits.log_softmax(-1).gather(-1, input_ids[..., None]).squeeze(-1) * completion_mask
            ).sum(1),
            "one row: a three-token prompt, then a one-token completion (only its end of turn)",
        ),
        WrongVersion(  # the prompt left in: every predicted token summed, the mask forgotten
            "the prompt left in",
            lambda logits, input_ids, completion_mask: _target_logps(logits, input_ids).sum(1),
            "one row: a three-token prompt, then a one-token completion (only its end of turn)",
        ),
        WrongVersion(  # a mask off by one: the targets shifted, the mask not, so y's first token is lost
            "the mask not shifted with the targets",
            lambda logits, input_ids, completion_mask: (_target_logps(logits, input_ids) * completion_mask[:, :-1]).sum(
                1
            ),
            "one row: a three-token prompt, then a one-token completion (only its end of turn)",
        ),
        WrongVersion(  # a wrong normaliser: the per-token mean (length-normalised), not the sequence's log-probability
            "a mean for the sum",
            lambda logits, input_ids, completion_mask: (
                _summed(logits, input_ids, completion_mask) / completion_mask.sum(1)
            ),
            "one row: a three-token prompt, then a four-token completion",
        ),
        WrongVersion(  # the padding counted: every token from the completion's start to the end of the row
            "the padding counted",
            lambda logits, input_ids, completion_mask: _summed(logits, input_ids, completion_mask.cumsum(1) > 0),
            "a right-padded batch of three rows whose prompts and completions differ in length",
        ),
        WrongVersion(  # the log of a softmax: a probability that underflows to 0 gives −inf
            "the log of the softmax",
            lambda logits, input_ids, completion_mask: (
                logits[:, :-1].softmax(-1).log().gather(-1, input_ids[:, 1:, None]).squeeze(-1) * completion_mask[:, 1:]
            ).sum(1),
            "a completion token the model all but rules out (a logit 150 below the rest): it costs about 150 nats, "
            "not −inf",
        ),
    ],
}
