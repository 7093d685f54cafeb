"""Plausible wrong answers to notebook 15's function exercise, each with the case its check must name."""

import torch

from tests.exercise_tools import WrongVersion


def _token_kl(p_logits, q_logits):  # Σ_v p (log p − log q), (B, T)
    log_p, log_q = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


WRONG = {
    "15.1": [
        WrongVersion(  # the reverse KL: weighed by the student
            "the KL the other way round, KL(p_S ‖ p_T)",
            lambda s, t, m: (_token_kl(s, t) * m).sum(1) / m.sum(1),
            "one answer of two tokens: a student at (0.9, 0.1) then (0.5, 0.5), a teacher at (0.5, 0.5)",
        ),
        WrongVersion(  # the sum over an answer's tokens, not their mean
            "the sum over each answer's tokens",
            lambda s, t, m: (_token_kl(t, s) * m).sum(1),
            "one answer of two tokens: a student at (0.9, 0.1) then (0.5, 0.5), a teacher at (0.5, 0.5)",
        ),
        WrongVersion(  # the padding averaged in
            "the mean over every position, padding included",
            lambda s, t, m: _token_kl(t, s).mean(1),
            "three answers of 5, 2 and 1 tokens, with padding",
        ),
    ],
}
