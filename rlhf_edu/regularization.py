"""Regularization (chapter 8): what keeps an RL-trained policy near the model it started from.

RLHF pays for reward with distance from the reference model, measured by the KL divergence

    D_KL(π ‖ π_ref) = E_{y~π}[log π(y|x) − log π_ref(y|x)]          (eq:kl_expectation)

Over a language model's texts the expectation cannot be summed, so it is estimated from
tokens sampled from π, one log-ratio at a time. :func:`kl_estimate` holds the three
estimators of Schulman's note "Approximating KL divergence" (k1, k2, k3), per token.
"""

from __future__ import annotations

import torch

from .core.validation import check_choice
from .objective import TensorLike, as_beta, as_tensors, max_supported_reward

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """A per-token estimate of KL(π‖π_ref) from tokens sampled from π; same shape as ``logps``.

    With log r = log π_ref(y_t) − log π(y_t) for a token y_t ~ π:

    - ``"k1"`` = −log r = log π − log π_ref: unbiased, but a single sample can be negative
      and its variance is large;
    - ``"k2"`` = ½ (log r)²: always ≥ 0 and low-variance, but biased (its mean is close to the
      KL only when π is near π_ref);
    - ``"k3"`` = r − 1 − log r: unbiased (E_π[r] = 1) and always ≥ 0, with a low variance.

    The ratio in k3 is π_ref/π, taken on samples from π. Code that writes it with π/π_ref
    estimates a different quantity, and is biased as an estimate of KL(π‖π_ref).
    """
    check_choice(estimator, "estimator", KL_ESTIMATORS)
    if logps.shape != ref_logps.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and ref_logps {tuple(ref_logps.shape)} must have one shape")
    log_ratio = ref_logps - logps  # log r = log π_ref − log π
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return log_ratio.exp() - 1 - log_ratio


def forward_kl_regularized_optimum(ref_probs: TensorLike, rewards: TensorLike, beta: float) -> torch.Tensor:
    """The policy that maximises E_π[r] − β·KL(π_ref ‖ π), the KL's other direction; shape (..., A).

    Setting the gradient to zero gives π(a) = β·π_ref(a) / (λ − r(a)), with λ > max r the
    one number that makes π sum to 1, found here by bisection. It is where a policy lands
    when k3 is minimised in the loss (GRPO as TRL runs it): on samples from π, the gradient
    of k3 is (1 − π_ref/π)·∇log π, whose mean is ∇KL(π_ref‖π), not ∇KL(π‖π_ref).
    Compare :func:`~rlhf_edu.objective.kl_regularized_optimum`.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    beta = as_beta(beta)
    ref_probs, rewards = ref_probs.double(), rewards.double()
    low = max_supported_reward(ref_probs, rewards)  # (..., 1) λ above it: every π(a) > 0
    high = low + beta  # (..., 1) there λ − r ≥ β on every action, so Σ π ≤ Σ π_ref = 1
    for _ in range(200):  # halves the bracket each time: far below float64's resolution
        middle = (low + high) / 2
        total = (beta * ref_probs / (middle - rewards)).where(ref_probs > 0, 0.0).sum(-1, keepdim=True)
        low, high = torch.where(total > 1, middle, low), torch.where(total > 1, high, middle)
    probs = (beta * ref_probs / (high - rewards)).where(ref_probs > 0, 0.0)  # (..., A)
    return probs / probs.sum(-1, keepdim=True)
