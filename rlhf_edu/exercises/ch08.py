"""Notebook 08's exercises (chapter 8, regularization): the KL estimators, k2's bias, the adaptive controller."""

from __future__ import annotations

import torch

from ..core.runtime import torch_generator
from ..regularization import AdaptiveKLController, kl_estimate
from .checks import Case, Exercise, Prediction, close, equal, register


def _estimator_cases() -> list[Case]:
    """Every estimator on random log-probs, on a policy equal to its reference, and on a token π makes rarer."""
    generator = torch_generator(8)
    logps = -torch.rand(3, 5, generator=generator, dtype=torch.float64) * 4  # (B, T) log π of sampled tokens
    ref_logps = -torch.rand(3, 5, generator=generator, dtype=torch.float64) * 4  # (B, T) log π_ref
    rarer = torch.tensor([[-3.0, -0.2]]), torch.tensor([[-0.5, -0.2]])  # π gives the first token far less than π_ref
    cases = []
    for estimator in ("k1", "k2", "k3"):
        cases += [
            Case(f'random log-probs, estimator "{estimator}"', (logps, ref_logps, estimator)),
            Case(
                f'a policy equal to its reference (every estimate 0), estimator "{estimator}"',
                (logps, logps.clone(), estimator),
            ),
            Case(
                f'a token the policy makes far rarer than its reference does, estimator "{estimator}"',
                (*rarer, estimator),
            ),
        ]
    return cases


def _updates_until(beta: float) -> int:
    """How many rollouts of 64 completions at a KL of 4 nats take the adaptive controller from 0.01 to ``beta``."""
    controller, updates = AdaptiveKLController(init_kl_coef=0.01, target=3.0, horizon=64), 0
    while controller.value < beta:
        controller.update(4.0, n_steps=64)
        updates += 1
    return updates


BIAS_CHOICES = ("smaller than the KL", "about the KL", "far more than the KL")  # under ½ the KL, ½ to 2 times, over 2


def _bias_outcome(bias_over_kl: float) -> str:
    return BIAS_CHOICES[(bias_over_kl >= 0.5) + (bias_over_kl > 2.0)]


register(
    Exercise(
        "08.1",
        success="k1 = −log r, k2 = ½(log r)², k3 = (r − 1) − log r with r = π_ref/π, token by token",
        hints=(
            "every estimator is a function of one number per token, the log-ratio log r; which way round is r?",
            "eq:kl_approx (Schulman's k1, k2, k3 of section 2): with r = π_ref(y)/π(y) on a token y sampled from π, "
            "k1 = −log r, k2 = ½(log r)², k3 = (r − 1) − log r, one value per token; the inputs are log-probabilities, "
            "so log r is a difference of two of them",
        ),
        reference=kl_estimate,
        cases=_estimator_cases,
    ),
    Exercise(
        "08.2",
        success="k2's mean is ½(μ² + μ⁴/4), the KL μ²/2 plus μ⁴/8: the bias is μ²/4 of the KL, all of it at μ = 2",
        hints=(
            "k2 is half a square: which moments of x ∼ N(0, 1) does the mean of ½(μx − μ²/2)² need, and how does it "
            "compare with the true KL, μ²/2?",
            "eq:kl_approx's k2 = ½(log r)² with log r = μx − μ²/2; for x ~ N(0, 1), E[x] = 0 and E[x²] = 1; the "
            "bias is E[k2] − KL, then divide by the KL",
        ),
        expected=lambda: 2.0**2 / 4,  # (E[k2] − KL) / KL = (μ²/2 + μ⁴/8 − μ²/2) / (μ²/2) = μ²/4, at μ = 2
        compare=close(0.02),
        prediction=Prediction(
            BIAS_CHOICES,
            _bias_outcome,
            "½(log r)² matches the KL only while log r is small; its mean is the KL plus μ⁴/8, so the bias grows as "
            "μ²/4 of the KL: a quarter at μ = 1 (section 2's table), the whole KL at μ = 2, where k2 reads twice it",
        ),
    ),
    Exercise(
        "08.3",
        success="13 rollouts: above 1.2 × target the error is clipped at 0.2, so β grows by exactly ×1.2 each time",
        hints=(
            "by how much can one update multiply β at most, and is a KL of 4 nats already past the point where that "
            "limit applies?",
            "Ziegler et al.'s update rule of section 5, which `AdaptiveKLController` implements: "
            "e = clip(KL/target − 1, −0.2, 0.2), then β ← β·(1 + e·n_steps/horizon), once per rollout",
        ),
        expected=lambda: _updates_until(0.1),
        compare=equal,
    ),
)
