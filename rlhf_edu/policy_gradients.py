"""Policy gradients (chapter 11): the advantage and loss functions of REINFORCE, RLOO, PPO and GRPO.

Every algorithm here climbs the same gradient, the policy-gradient theorem's

    ∇_θ J(θ) = E_{y~π_θ}[ A(x, y) · ∇_θ log π_θ(y|x) ]           (eq:policy_gradient_expectation)

and they differ in two choices only:

1. **the advantage** A: a reward minus a baseline (:func:`reinforce_advantages`,
   :func:`rloo_advantages`, :func:`grpo_advantages`), or per-token GAE on a learned value
   (:func:`gae_advantages`, PPO);
2. **the per-token loss** whose gradient is that estimate: −A·log π (:func:`policy_gradient_loss`)
   or PPO's clipped surrogate (:func:`clipped_surrogate_loss`), averaged over tokens in one
   of three ways (:func:`aggregate_token_losses`).

Rewards come shaped (P, G): P prompts with G completions each. Per-token tensors are
(B, T) with B = P·G, and a ``mask`` that is 1 on completion tokens. Every function takes
tensors, not models, so the tests can feed it hand-made numbers.
"""

from __future__ import annotations

import torch

from .core.validation import check_choice, check_number

BASELINES = ("none", "mean")
SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def _check_rewards(rewards: torch.Tensor) -> None:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a (P, G) tensor, P prompts by G completions each, got {shape}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards hold NaN or inf: check the reward function's output")


def _check_token_shapes(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"per-token tensors must share one (B, T) shape, got {shapes}")


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast (B,) advantages over each row's tokens; (B, T) ones pass through."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1): one advantage for every token of a completion
    if advantages.shape[0] != like.shape[0]:
        raise ValueError(f"advantages {tuple(advantages.shape)} and log-probs {tuple(like.shape)} must have one row "
                         "per completion")
    return advantages.expand_as(like)


# --- advantages --------------------------------------------------------------------------------
def reinforce_advantages(rewards: torch.Tensor, baseline: str = "mean") -> torch.Tensor:
    """REINFORCE's advantage r − b, (P, G): ``"none"`` uses the reward itself, ``"mean"`` the batch's mean reward.

    Any baseline that does not depend on the completion keeps the gradient unbiased,
    because E_π[∇ log π] = 0; subtracting the mean removes what every sample shares,
    which would otherwise only add noise.
    """
    _check_rewards(rewards)
    check_choice(baseline, "baseline", BASELINES)
    return rewards - rewards.mean() if baseline == "mean" else rewards.clone()


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO's advantage, (P, G): each reward minus the mean of the other G − 1 in its group (eq:RLOO_advantage).

    A_i = r_i − (Σ_j r_j − r_i) / (G − 1). The baseline never sees the sample it is
    subtracted from, so it is unbiased without a learned value.
    """
    _check_rewards(rewards)
    G = rewards.shape[1]
    if G < 2:
        raise ValueError(f"RLOO needs num_generations >= 2 per prompt (the others are the baseline), got {G}")
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)  # (P, G)
    return rewards - others_mean


def grpo_advantages(rewards: torch.Tensor, scale_rewards: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-normalised advantage, (P, G): (r − mean of the group) / (std + eps) (eq:GRPO_ADV).

    ``scale_rewards`` picks the std: ``"group"`` (each prompt's own, Bessel-corrected as
    TRL computes it), ``"batch"`` (one std over all rewards), or ``"none"`` (no scaling:
    Dr. GRPO's r − mean, eq:DrGRPO_ADV). A group whose rewards are all equal gets zeros.
    """
    _check_rewards(rewards)
    check_choice(scale_rewards, "scale_rewards", SCALE_REWARDS)
    check_number(eps, "eps", low=0, low_open=True)
    if rewards.shape[1] < 2:
        raise ValueError(f"GRPO needs num_generations >= 2 completions per prompt, got {rewards.shape[1]}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)
    if scale_rewards == "none":
        return centred
    std = rewards.std(dim=1, keepdim=True) if scale_rewards == "group" else rewards.std()  # Bessel: divides by n − 1
    return centred / (std + eps)


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation on per-token rewards and values, all (B, T): ``(advantages, returns)``.

    δ_t = r_t + γ·V(s_{t+1}) − V(s_t)                                  (eq:TD_RESIDUAL)
    A_t = Σ_l (γλ)^l · δ_{t+l}                                          (eq:GAE_DFN)

    The value past a completion's last token is 0 (the episode is over), padding
    (``mask`` = 0) contributes nothing and gets zeros, and returns = advantages + values
    are the value head's regression targets.
    """
    _check_token_shapes(rewards=rewards, values=values, mask=mask)
    check_number(gamma, "gamma", low=0, high=1)
    check_number(lam, "lam", low=0, high=1)
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask  # padding holds no reward and no value
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = torch.zeros_like(values[:, 0])  # (B,) V past the last token
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        # A padded position passes on nothing: the sequence ended before it.
        next_value = torch.where(mask[:, t] > 0, values[:, t], torch.zeros_like(next_value))
        next_advantage = advantages[:, t]
    return advantages, (advantages + values) * mask


# --- per-token losses ---------------------------------------------------------------------------
def policy_gradient_loss(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The per-token loss −A·log π(y_t | x, y_<t), (B, T), zero on padding: REINFORCE and RLOO.

    Its gradient is the policy-gradient estimate (eq:policy_gradient_expectation): the
    advantage is a constant (detached), and log π carries the gradient.
    """
    _check_token_shapes(logps=logps, mask=mask)
    return -_per_token(advantages.detach(), logps) * logps * mask


def clipped_surrogate_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                           mask: torch.Tensor, epsilon: float = 0.2, epsilon_high: float | None = None
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's per-token loss −min(ρA, clip(ρ, 1−ε, 1+ε_high)·A), with ρ = π/π_old (eq:PPO_EQN); ``(losses, metrics)``.

    ``losses`` is (B, T), zero on padding. The clip takes away the incentive to move a
    token's probability further once ρ has left [1−ε, 1+ε_high] in the direction the
    advantage favours; ``epsilon_high`` (DAPO's "clip higher") defaults to ``epsilon``.
    The metrics are TRL's ``clip_ratio/low_mean``, ``clip_ratio/high_mean`` and
    ``clip_ratio/region_mean``: the share of tokens whose gradient the clip removed.
    """
    _check_token_shapes(logps=logps, old_logps=old_logps, mask=mask)
    epsilon = check_number(epsilon, "epsilon", low=0, low_open=True, fix="PPO's clip range, try 0.2")
    epsilon_high = epsilon if epsilon_high is None else check_number(epsilon_high, "epsilon_high", low=0,
                                                                     low_open=True)
    advantages = _per_token(advantages.detach(), logps)  # (B, T)
    ratio = (logps - old_logps.detach()).exp()  # (B, T) ρ
    clipped_ratio = ratio.clamp(1 - epsilon, 1 + epsilon_high)  # (B, T)
    losses = -torch.min(ratio * advantages, clipped_ratio * advantages) * mask  # (B, T)
    n = mask.sum().clamp(min=1)
    low = ((ratio < 1 - epsilon) & (advantages < 0)).to(mask.dtype) * mask  # clipped below: no push further down
    high = ((ratio > 1 + epsilon_high) & (advantages > 0)).to(mask.dtype) * mask  # clipped above: no push further up
    metrics = {"clip_ratio/low_mean": (low.sum() / n).item(), "clip_ratio/high_mean": (high.sum() / n).item(),
               "clip_ratio/region_mean": ((low + high).sum() / n).item()}
    return losses, metrics


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float = 0.2) -> torch.Tensor:
    """PPO's clipped value loss per token, ½·max((V − R)², (clip(V, V_old ± c) − R)²), (B, T), zero on padding."""
    _check_token_shapes(values=values, old_values=old_values, returns=returns, mask=mask)
    check_number(cliprange_value, "cliprange_value", low=0, low_open=True)
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)  # (B, T)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2) * mask


def aggregate_token_losses(losses: torch.Tensor, mask: torch.Tensor, loss_type: str = "grpo",
                           max_completion_length: int | None = None) -> torch.Tensor:
    """One scalar from per-token losses (B, T), in one of the three ways the book compares.

    - ``"grpo"``: the mean over each sequence's tokens, then over sequences (eq:loss_per_sequence);
      a token of a short answer weighs more than one of a long answer;
    - ``"dapo"``: the mean over all tokens of the batch (eq:loss_per_token); every token weighs the same;
    - ``"dr_grpo"``: the sum over tokens divided by B × ``max_completion_length`` (eq:loss_fixed_length),
      a constant, so no length bias enters through the normaliser.
    """
    check_choice(loss_type, "loss_type", LOSS_TYPES)
    _check_token_shapes(losses=losses, mask=mask)
    mask = mask.to(losses.dtype)
    if loss_type == "grpo":
        return ((losses * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    if loss_type == "dapo":
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    if max_completion_length is None:
        raise ValueError("loss_type 'dr_grpo' divides by B × max_completion_length: pass max_completion_length")
    return (losses * mask).sum() / (losses.shape[0] * max_completion_length)
