"""Notebook 14's exercises (chapter 14, reasoning): GSPO's sequence-level ratio, Dr. GRPO's difficulty bias by
hand, and whether DeepSeek-V3.2's importance weight removes the bias of k3 in the loss."""

from __future__ import annotations

import math

import torch

from ..core.runtime import torch_generator
from ..policy_gradients import importance_ratio
from .checks import Case, Exercise, Prediction, close, register


# ------------------------------------------------------------------------------------------- 14.1 GSPO's ratio
def sequence_ratio(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The library's sequence-level importance ratio (B, 1): the reference of exercise 14.1."""
    return importance_ratio(logps, old_logps, mask, "sequence")


def _ratio_cases() -> list[Case]:
    """Equal log-probs, one token, full rows, padded rows with junk at the padding, and an empty row."""
    generator = torch_generator(14)
    logps, old_logps = -torch.rand(2, 3, 5, generator=generator, dtype=torch.float64) * 3  # (B, T) each
    full = torch.ones(3, 5, dtype=torch.float64)  # (B, T)
    padded = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [1.0] + [0.0] * 4], dtype=torch.float64)
    empty = torch.tensor([[1.0] * 5, [0.0] * 5], dtype=torch.float64)
    return [
        Case("π_θ = π_old on every token (the ratio is 1)", (logps, logps.clone(), full)),
        Case("one-token completions (the sequence ratio is the token ratio)",
             (logps[:, :1], old_logps[:, :1], full[:, :1])),
        Case("three full rows of five tokens", (logps, old_logps, full)),
        Case("rows padded after 5, 3 and 1 tokens, with junk log-probs at the padding", (logps, old_logps, padded)),
        Case("a row with no real token (its ratio is 1)", (logps[:2], old_logps[:2], empty)),
    ]  # fmt: skip


# -------------------------------------------------------------------------------------------------- 14.2 by hand
def _weight_of_one_right_in_six() -> float:
    """Σ_i |A_i| of a group of 6 binary rewards with one right, advantages scaled by the group's std (+ 1e-4)."""
    rewards = [1.0] + [0.0] * 5
    mean = sum(rewards) / 6
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 5)  # Bessel, as TRL computes it
    return sum(abs(r - mean) for r in rewards) / (std + 1e-4)


register(
    Exercise(
        "14.1",
        success="exp of the mean log-ratio over the row's real tokens: GSPO's (π_θ(y|x)/π_old(y|x))^(1/|y|), one "
        "ratio per completion, which a row of padding leaves at 1",
        hints=(
            "a sequence's ratio is a product of its tokens' ratios: what turns a product into something a mask can "
            "average, and which tokens' log-ratios may enter?",
            'GSPO\'s sequence ratio, `importance_sampling_level="sequence"`: s_i(θ) = exp((1/|y_i|) Σ_t '
            "[log π_θ(y_t) − log π_old(y_t)]), the sum over the real tokens only (mask 1) and |y_i| their count, at "
            "least 1; returned as (B, 1), one per row",
        ),
        reference=sequence_ratio,
        cases=_ratio_cases,
    ),
    Exercise(
        "14.2",
        success="about 4.08: five answers at −⅙ and one at +⅚, divided by the group's std √(1/6) ≈ 0.408; without "
        "the std the same group weighs 5/3, so the std lifts it 2.4-fold, a half-solved group only 1.8-fold",
        hints=(
            "what are the group's mean and its std (with G − 1 below the line), and what is each answer's advantage?",
            "eq:GRPO_ADV: A_i = (r_i − mean(r)) / (std(r) + ε) with the Bessel-corrected std and ε = 1e-4; the "
            "answer is Σ_i |A_i| over the 6 answers",
        ),
        expected=_weight_of_one_right_in_six,
        compare=close(1e-3),
    ),
    Exercise(
        "14.3",
        success="0, to rounding: with the ratio ρ in front, ∂(ρ·k3)/∂log π = k3 + 1 − π_ref/π = log(π/π_ref) = k1, "
        "so the corrected placement's gradient is k1's, the exact gradient of KL(π‖π_ref)",
        hints=(
            "on-policy ρ = 1 in value, but what does its gradient add to k3's own slope 1 − π_ref/π?",
            'the weight w = k3 + 1 − π_ref/π of `kl_gradient_placements`\' "k3 × ratio in the loss": per prefix, '
            "ĝ = π ⊙ w − π·Σ_y π(y)w(y) over the vocabulary, then ‖ĝ − exact‖ / ‖exact‖ over all prefixes at once",
        ),
        expected=lambda: 0.0,
        compare=close(1e-6),
        prediction=Prediction(
            ("it removes the bias exactly", "it shrinks the bias but leaves some", "it leaves the bias as it was"),
            lambda bias: "it removes the bias exactly" if bias < 1e-6 else "it shrinks the bias but leaves some",
            "the ratio is 1 in value on-policy, but its gradient is not 0: it adds k3 to the slope, and "
            "k3 + 1 − π_ref/π is exactly log(π/π_ref), the weight that k1 in the reward and k2 in the loss give",
        ),
    ),
)
