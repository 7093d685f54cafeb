"""Notebook 15's exercises (chapter 15, synthetic data and distillation): the forward KL of token-level
distillation, and the two directions of the KL by hand."""

from __future__ import annotations

import math

import torch

from ..core.runtime import torch_generator
from ..distillation import forward_kl_loss
from .checks import Case, Exercise, close, register


# ------------------------------------------------------------------------------------------------ 15.1 forward KL
def _forward_kl_cases() -> list[Case]:
    """A hand-sized pair of distributions, padding in the mask, and random logits with answers of several lengths."""
    generator = torch_generator(15)
    hand = (
        torch.log(torch.tensor([[[0.9, 0.1], [0.5, 0.5]]], dtype=torch.float64)),  # (1, 2, 2) the student
        torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]], dtype=torch.float64)),  # (1, 2, 2) the teacher
        torch.ones(1, 2),
    )
    student = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64)  # (B, T, V)
    teacher = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64) * 2  # (B, T, V)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 0], [1, 0, 0, 0, 0]])  # (B, T): 5, 2 and 1 tokens
    return [
        Case("one answer of two tokens: a student at (0.9, 0.1) then (0.5, 0.5), a teacher at (0.5, 0.5)", hand),
        Case("three answers of 5, 2 and 1 tokens, with padding", (student, teacher, mask)),
        Case("the same random logits, every position in the mask", (student, teacher, torch.ones(3, 5))),
        Case("a student equal to its teacher (every KL 0)", (teacher, teacher.clone(), mask)),
    ]


def _two_directions() -> tuple[float, float]:
    """Teacher (0.5, 0.5), student (0.9, 0.1): KL(p_T ‖ p_S) and KL(p_S ‖ p_T), in nats."""
    teacher, student = (0.5, 0.5), (0.9, 0.1)
    forward = sum(t * math.log(t / s) for t, s in zip(teacher, student))
    reverse = sum(s * math.log(s / t) for t, s in zip(teacher, student))
    return forward, reverse


register(
    Exercise(
        "15.1",
        success="Σ_v p_T(v) [log p_T(v) − log p_S(v)] at every position, then the mean over each answer's masked "
        "tokens: one value per answer",
        hints=(
            "softmax each model's logits over the vocabulary (the last dimension); whose probabilities weigh the sum?",
            "`forward_kl_loss`: the forward KL weighs by the teacher, Σ_v p_T (log p_T − log p_S), with log-softmax "
            "for the logs; then, per row, the sum over positions where mask is 1 divided by the number of them",
        ),
        reference=forward_kl_loss,
        cases=_forward_kl_cases,
    ),
    Exercise(
        "15.2",
        success="forward KL(p_T ‖ p_S) = ½ log(0.5/0.9) + ½ log(0.5/0.1) ≈ 0.511; reverse KL(p_S ‖ p_T) = "
        "0.9 log(0.9/0.5) + 0.1 log(0.1/0.5) ≈ 0.368: the forward KL charges more for the mass the student left out",
        hints=(
            "each KL is a sum over the two tokens of one distribution's probability times a log-ratio",
            "`forward_kl_loss` weighs by the teacher: Σ_v p_T (log p_T − log p_S); `reverse_kl_loss` by the student: "
            "Σ_v p_S (log p_S − log p_T)",
        ),
        expected=_two_directions,
        compare=close(1e-3),
    ),
)
