"""Policy gradients (chapter 11): the advantage and loss functions of REINFORCE, RLOO, PPO and GRPO.

Every algorithm here climbs the same gradient, the policy-gradient theorem's

    ∇_θ J(θ) = E_{y~π_θ}[ A(x, y) · ∇_θ log π_θ(y|x) ]           (eq:policy_gradient_expectation)

and they differ in two choices only:

1. **the advantage** A: a reward minus a baseline (:func:`reinforce_advantages`,
   :func:`rloo_advantages`, :func:`grpo_advantages`), or per-token GAE on a learned value
   (:func:`gae_advantages`, PPO);
2. **the per-token loss** whose gradient is that estimate: −A·log π (:func:`policy_gradient_loss`)
   or a weighted ratio, averaged over tokens in one of the ways :func:`aggregate_token_losses`
   knows. PPO and the GRPO family share one seam, :func:`token_policy_loss`: the ratio per
   token or per sequence (:func:`importance_ratio`), then PPO's clipped surrogate
   (:func:`clipped_token_loss`, with INTELLECT-2's δ), CISPO's clipped weight
   (:func:`cispo_token_loss`) or SAPO's soft gate (:func:`sapo_token_loss`), as TRL's
   ``GRPOTrainer`` computes them.

Rewards come shaped (P, G): P prompts with G completions each. Per-token tensors are
(B, T) with B = P·G, and a ``mask`` that is 1 on completion tokens. Every function takes
tensors, not models, so the tests can feed it hand-made numbers.

:func:`train_policy_gradient` is the one trainer of the four on a language model, one loop
that reads top to bottom: rollout → :func:`compute_advantages` → epochs × minibatches →
:func:`rl_loss` → optimizer step. Those two functions hold each algorithm's whole advantage
and whole loss. Chapter 8's regularizers are options: β fixed or steered toward a target KL
(``kl_target``), and InstructGPT's pretraining term (``ptx_coef``).
:func:`train_tabular_policy_gradient` runs the same advantage and loss functions on
chapter 4's bandit, where the optimum is known; :func:`beta_sweep` repeats a run per β.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from transformers import AutoModelForTokenClassification, PreTrainedModel, PreTrainedTokenizerBase

from .bandit import BanditRun, bandit_record
from .core.collate import check_length, pad_batch
from .core.evaluation import PolicyEvaluation
from .core.logprobs import check_language_model, position_ids_from_mask, token_logprobs
from .core.rollouts import TENSOR_FIELDS, RewardFn, Rollout, _join, rollout_rewards, sample_rollouts
from .core.runtime import MAX_NEW_TOKENS, torch_generator
from .core.stats import masked_mean, mean_and_stderr, pass_at_k_by_prompt
from .core.training import Batch, History, Trainer, TrainingConfig, load_histories, make_loader, save_histories
from .core.validation import (
    check_causal_lm,
    check_choice,
    check_flag,
    check_int,
    check_number,
    check_texts,
    context_length,
)
from .core.world import FAMILIES, parse_prompt
from .objective import as_beta, as_tensors, check_one_prompt, kl_regularized_optimum, regularized_objective
from .pretraining import encode_document, language_modeling_loss
from .regularization import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    KLController,
    kl_estimate,
)

BASELINES = ("none", "mean")
SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")  # TRL's GRPOTrainer names
CLIPPED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")  # PPO's clipped surrogate, each with its own normaliser
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


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


def _per_row(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) advantages as a (B, 1) column that broadcasts over each row's tokens; (B, T) ones pass through."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1): one advantage for every token of a completion
    if advantages.shape[0] != like.shape[0]:
        raise ValueError(
            f"advantages {tuple(advantages.shape)} and log-probs {tuple(like.shape)} must have one row per completion"
        )
    return advantages


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast (B,) advantages over each row's tokens; (B, T) ones pass through."""
    return _per_row(advantages, like).expand_as(like)


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


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
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
    mask = mask.to(values.dtype)  # pragma: no mutate (a float mask already is; a bool one is promoted below)
    rewards, values = rewards * mask, values * mask  # padding holds no reward and no value
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = torch.zeros_like(values[:, 0])  # (B,) V past the last token
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t]  # (B,) zero on padding (masked above): a padded position passes on nothing
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


def clipped_surrogate_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's per-token loss −min(ρA, clip(ρ, 1−ε, 1+ε_high)·A), with ρ = π/π_old (eq:PPO_EQN); ``(losses, metrics)``.

    ``losses`` is (B, T), zero on padding. The clip takes away the incentive to move a
    token's probability further once ρ has left [1−ε, 1+ε_high] in the direction the
    advantage favours; ``epsilon_high`` (DAPO's "clip higher") defaults to ``epsilon``.
    The metrics are TRL's ``clip_ratio/low_mean``, ``clip_ratio/high_mean`` and
    ``clip_ratio/region_mean``: the share of tokens whose gradient the clip removed.
    It is :func:`token_policy_loss`'s per-token step for the clipped loss types, per token and without δ.
    """
    _check_token_shapes(logps=logps, old_logps=old_logps, mask=mask)
    epsilon = check_number(epsilon, "epsilon", low=0, low_open=True, fix="PPO's clip range, try 0.2")
    epsilon_high = epsilon if epsilon_high is None else check_number(epsilon_high, "epsilon_high", low=0, low_open=True)
    advantages = _per_row(advantages.detach(), logps)  # (B, 1), or (B, T) per-token advantages
    ratio = importance_ratio(logps, old_logps, mask)  # (B, T) ρ
    losses = clipped_token_loss(ratio, advantages, epsilon, epsilon_high) * mask  # (B, T)
    return losses, clip_shares(ratio, advantages, mask, "grpo", epsilon, epsilon_high)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> torch.Tensor:
    """PPO's clipped value loss per token, ½·max((V − R)², (clip(V, V_old ± c) − R)²), (B, T), zero on padding."""
    _check_token_shapes(values=values, old_values=old_values, returns=returns, mask=mask)
    check_number(cliprange_value, "cliprange_value", low=0, low_open=True)
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)  # (B, T)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2) * mask


def _sequence_mean(losses: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    """The mean over each sequence's tokens, then over sequences (eq:loss_per_sequence): GRPO's and SAPO's."""
    return masked_mean(losses, mask, dim=1).mean()


def _token_mean(losses: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    """The mean over the batch's tokens (eq:loss_per_token): BNPO's; every token weighs the same."""
    return masked_mean(losses, mask)


def _per_item(losses: torch.Tensor, mask: torch.Tensor, num_items_in_batch=None, **_) -> torch.Tensor:
    """The sum over tokens / the tokens of the whole generation batch (DAPO's and CISPO's in TRL).

    Without ``num_items_in_batch`` the minibatch is the batch, and this is :func:`_token_mean`.
    """
    if num_items_in_batch is None:
        return masked_mean(losses, mask)
    return (losses * mask).sum() / torch.as_tensor(num_items_in_batch, dtype=losses.dtype).clamp(min=1)


def _fixed_length(losses: torch.Tensor, mask: torch.Tensor, max_completion_length=None, **_) -> torch.Tensor:
    """The sum over tokens / (B × ``max_completion_length``) (eq:loss_fixed_length): Dr. GRPO's constant."""
    if max_completion_length is None:
        raise ValueError("loss_type 'dr_grpo' divides by B × max_completion_length: pass max_completion_length")
    return (losses * mask).sum() / (losses.shape[0] * max_completion_length)


NORMALISERS = {
    "grpo": _sequence_mean,
    "sapo": _sequence_mean,
    "bnpo": _token_mean,
    "dr_grpo": _fixed_length,
    "dapo": _per_item,
    "cispo": _per_item,
}


def aggregate_token_losses(
    losses: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """One scalar from per-token losses (B, T), in ``loss_type``'s way, as TRL's ``GRPOTrainer`` normalises.

    - ``"grpo"``, ``"sapo"``: the mean over each sequence's tokens, then over sequences (eq:loss_per_sequence);
      a token of a short answer weighs more than one of a long answer;
    - ``"bnpo"``: the mean over all tokens of the batch (eq:loss_per_token); every token weighs the same;
    - ``"dapo"``, ``"cispo"``: the sum over tokens divided by ``num_items_in_batch``, the tokens of the whole
      generation batch (DAPO's token-level loss, arXiv 2503.14476 §3.3); without it, the mean over this
      batch's tokens, as ``"bnpo"``;
    - ``"dr_grpo"``: the sum over tokens divided by B × ``max_completion_length`` (eq:loss_fixed_length,
      Dr. GRPO, arXiv 2503.20783), a constant, so no length bias enters through the normaliser.

    A row with no real token counts as length 1, as in TRL, so it adds 0 rather than NaN.
    """
    check_choice(loss_type, "loss_type", LOSS_TYPES)
    _check_token_shapes(losses=losses, mask=mask)
    mask = mask.to(losses.dtype)  # pragma: no mutate (a float mask already is; a bool one is promoted)
    return NORMALISERS[loss_type](
        losses, mask, max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch
    )


# --- the GRPO family: one importance ratio, three per-token weights, six normalisers ------------------
def importance_ratio(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """ρ = π_θ/π_old, per token (B, T) or per sequence (B, 1); the old log-probs carry no gradient.

    ``"sequence"`` is GSPO's s_i(θ) = (π_θ(y_i|x) / π_old(y_i|x))^{1/|y_i|} (arXiv 2507.18071):
    the exp of the mean log-ratio over the row's real tokens, a row with none counting as length 1.
    """
    log_ratio = logps - old_logps.detach()  # (B, T)
    if level == "sequence":
        log_ratio = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    return log_ratio.exp()


def clipped_token_loss(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float,
    epsilon_high: float,
    delta: float | None = None,
) -> torch.Tensor:
    """PPO's −min(ρA, clip(ρ, 1−ε, 1+ε_high)·A) (eq:PPO_EQN), with ρ capped at δ in the unclipped term.

    ``epsilon_high`` > ``epsilon`` is DAPO's clip-higher (arXiv 2503.14476 §3.1). ``delta`` is
    INTELLECT-2's two-sided clip (arXiv 2505.07291): min(min(ρ, δ)·A, clip(ρ)·A), so a token with
    A < 0 and a huge ρ no longer gets an unbounded push. Shapes broadcast: ρ (B, T) or (B, 1),
    A (B, 1) or (B, T). Returns the per-token loss, not yet masked.
    """
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon_high)  # (B, T) or (B, 1)
    if delta is not None:
        ratio = ratio.clamp(max=delta)  # after the clip is taken: δ caps only the unclipped ratio
    return -torch.min(ratio * advantages, clipped * advantages)


def cispo_token_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, logps: torch.Tensor, epsilon_high: float
) -> torch.Tensor:
    """CISPO's −sg(min(ρ, ε_max))·A·log π (MiniMax-M1, arXiv 2506.13585, its clipped IS-weight objective); (B, T).

    The importance weight is capped (at the absolute ``epsilon_high``, not 1 + ε) and
    detached, so every token keeps a REINFORCE gradient A·∇log π, only reweighted: no token's
    gradient is clipped to zero, as PPO's clip does to those outside its range.
    """
    return -ratio.clamp(max=epsilon_high).detach() * advantages * logps  # (B, T)


def sapo_token_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, temperature_pos: float, temperature_neg: float
) -> torch.Tensor:
    """SAPO's −σ(τ(ρ − 1))·(4/τ)·A, τ = ``temperature_pos`` where A > 0, else ``temperature_neg`` (arXiv 2511.20347).

    A soft gate in place of the hard clip: at ρ = 1 its slope is 1 (the plain policy gradient),
    and it flattens smoothly as ρ leaves 1, faster for negative advantages (τ_neg > τ_pos).
    Returns the per-token loss, not yet masked, shaped as ρ·A broadcasts.
    """
    tau = torch.where(advantages > 0, ratio.new_tensor(temperature_pos), ratio.new_tensor(temperature_neg))
    return -(torch.sigmoid(tau * (ratio - 1)) * 4 / tau) * advantages


def _share(flags: torch.Tensor, mask: torch.Tensor) -> float:
    """The share of true ``flags``: over the real tokens when (B, T), over the rows when (B, 1), as TRL logs it."""
    flags = flags.to(mask.dtype)
    return flags.mean().item() if flags.shape[1] == 1 else masked_mean(flags, mask).item()


def clip_shares(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    epsilon: float,
    epsilon_high: float,
) -> dict[str, float]:
    """The share of tokens (of sequences, at the sequence level) whose weight a clip capped; TRL's names.

    ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean`` for the clipped
    loss types, ``cispo_clip_ratio`` (ρ above ε_max with A > 0) for CISPO, none for SAPO's soft gate.
    """
    if loss_type == "sapo":
        return {}
    if loss_type == "cispo":
        return {"cispo_clip_ratio": _share((ratio > epsilon_high) & (advantages > 0), mask)}
    # A ratio exactly at 1 ± ε has no clipped gradient either way: < and ≤ agree but on a set of measure zero.
    low = (ratio < 1 - epsilon) & (advantages < 0)  # pragma: no mutate (clipped below)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)  # pragma: no mutate (clipped above)
    return {
        "clip_ratio/low_mean": _share(low, mask),
        "clip_ratio/high_mean": _share(high, mask),
        "clip_ratio/region_mean": _share(low | high, mask),
    }


def per_token_policy_loss(
    ratio: torch.Tensor, advantages: torch.Tensor, logps: torch.Tensor, config: PolicyGradientConfig
) -> torch.Tensor:
    """``config.loss_type``'s per-token loss from the ratio, before the mask: CISPO's, SAPO's, or the clipped one."""
    epsilon_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    if config.loss_type == "cispo":
        return cispo_token_loss(ratio, advantages, logps, epsilon_high)
    if config.loss_type == "sapo":
        return sapo_token_loss(ratio, advantages, config.sapo_temperature_pos, config.sapo_temperature_neg)
    return clipped_token_loss(ratio, advantages, config.epsilon, epsilon_high, config.delta)


def token_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: PolicyGradientConfig,
    ref_logps: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The PPO and GRPO-family loss on (B, T) log-probs, as TRL's ``GRPOTrainer._compute_loss``: ``(loss, metrics)``.

    1. ρ = π_θ/π_old per token, or GSPO's per sequence (``importance_sampling_level``, :func:`importance_ratio`);
    2. the per-token loss of ``loss_type`` (:func:`per_token_policy_loss`): the clipped surrogate
       (with ``epsilon_high`` and ``delta``), CISPO's clipped weight, or SAPO's soft gate;
    3. + β·k per token where the KL goes in the loss (``kl_in="loss"``, eq:GRPO), k from
       ``kl_estimator`` (k3 is TRL's); with ``use_bias_correction_kl`` it is weighted by ρ,
       DeepSeek-V3.2's unbiased KL estimate (arXiv 2512.02556), so its gradient is that of
       KL(π_θ‖π_ref) although the tokens came from π_old;
    4. one scalar in ``loss_type``'s way (:func:`aggregate_token_losses`; ``num_items_in_batch``
       is DAPO's and CISPO's normaliser, the minibatch's tokens when None).

    ``advantages`` are (B,) or (B, T); ``ref_logps`` (B, T) are needed where the KL is in the
    loss. The metrics are TRL's clip shares (:func:`clip_shares`).
    """
    _check_token_shapes(logps=logps, old_logps=old_logps, mask=mask)
    if config.kl_in == "loss" and config.beta > 0 and ref_logps is None:
        raise ValueError(f"beta={config.beta:g} puts β·KL in the loss: pass ref_logps, or set beta=0")
    advantages = _per_row(advantages.detach(), logps)  # (B, 1), or (B, T) per-token advantages
    ratio = importance_ratio(logps, old_logps, mask, config.importance_sampling_level)  # (B, T) or (B, 1)
    losses = per_token_policy_loss(ratio, advantages, logps, config) * mask  # (B, T)
    if config.kl_in == "loss" and ref_logps is not None:  # at β = 0 the term is 0
        kl = kl_estimate(logps, ref_logps, config.kl_estimator)  # (B, T)
        kl = kl * ratio if config.use_bias_correction_kl else kl  # (B, T) ρ keeps its gradient, as in TRL
        losses = losses + config.beta * kl * mask
    loss = aggregate_token_losses(losses, mask, config.loss_type, config.max_completion_length, num_items_in_batch)
    epsilon_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    return loss, clip_shares(ratio, advantages, mask, config.loss_type, config.epsilon, epsilon_high)


# --- one trainer for the four algorithms -------------------------------------------------------------
ALGORITHMS = ("reinforce", "rloo", "ppo", "grpo")
# Where each algorithm puts β·KL by default: GRPO adds β·k per token to its loss; the others take −β·k1 per token off
# the reward, as the literature and TRL do. PolicyGradientConfig(kl_in=...) moves it.
KL_IN = {"reinforce": "reward", "rloo": "reward", "ppo": "reward", "grpo": "loss"}
LOGGED_SHARES = ("clip_ratio/region_mean", "cispo_clip_ratio")  # the clip shares a training step logs


@dataclass
class PolicyGradientConfig(TrainingConfig):
    """Settings of :func:`train_policy_gradient`; field names are TRL's where TRL has one.

    ``batch_size`` is the number of prompts per step, each answered ``num_generations``
    times; ``num_iterations`` is how many passes the updates make over one rollout (PPO's
    epochs, GRPO's μ), each pass split at random into ``num_mini_batches`` minibatches.
    A run is ``num_steps`` rollouts, so ``num_epochs`` (a pass over a fixed dataset) has
    no meaning here and is refused.

    ``kl_in`` moves the KL penalty: ``"reward"`` subtracts β·Σ_t k1 from each completion's
    score (per token for PPO), ``"loss"`` adds β·k (``kl_estimator``) per token to the loss;
    left at None it becomes the algorithm's own place, ``KL_IN[algorithm]``.

    ``kl_target`` (nats per completion) switches β from fixed to Ziegler et al.'s adaptive
    controller (:class:`~rlhf_edu.regularization.AdaptiveKLController`), which starts at
    ``beta`` and moves it by about 20% per ``kl_horizon`` sampled completions to hold the
    KL near the target. ``ptx_coef`` is InstructGPT's γ (eq:objective_pretraining): each
    update adds γ × the mean token NLL of ``ptx_batch_size`` pretraining texts to the loss.

    The GRPO family's settings are TRL's (``GRPOConfig``), read by :func:`token_policy_loss`:
    ``loss_type`` (:data:`LOSS_TYPES`); ``importance_sampling_level`` ``"token"`` or GSPO's
    ``"sequence"``; ``epsilon_high``, the upper clip (CISPO: the absolute cap ε_max on its weight,
    e.g. 5.0); ``delta``, INTELLECT-2's cap on the unclipped ratio (above 1 + ε_high); SAPO's two
    temperatures; ``mask_truncated_completions``, which drops the completions cut at
    ``max_completion_length`` from the loss; and ``use_bias_correction_kl``, which weights the KL
    in the loss by ρ. TRL 1.16 defaults that one to True; it is False here so that a run
    reproduces the numbers of the runs made before it existed (:func:`trl_grpo_config
    <rlhf_edu.experiments.graduate.trl_grpo_config>` passes it explicitly). ``dynamic_sampling``
    is DAPO's (TRL has none): groups whose G rewards are all equal are dropped and further prompts
    drawn, up to ``max_sampling_rounds`` rollouts a step (:func:`draw_groups`).
    """

    learning_rate: float = 1e-4
    batch_size: int = 16
    algorithm: str = "grpo"
    baseline: str = "mean"  # REINFORCE's: "mean" of the batch, or "none"
    num_generations: int = 4
    num_iterations: int = 1
    num_mini_batches: int = 1
    num_steps: int = 50
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    kl_estimator: str = "k3"
    scale_rewards: str = "group"
    loss_type: str = "grpo"
    max_completion_length: int = MAX_NEW_TOKENS
    temperature: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    vf_coef: float = 0.1
    cliprange_value: float = 0.2
    eval_steps: int = 10
    kl_in: str | None = None  # where β·KL goes, "reward" or "loss"; None: the algorithm's own place, KL_IN[algorithm]
    kl_target: float | None = None  # None: β stays fixed
    kl_horizon: int = 10_000
    ptx_coef: float = 0.0  # 0: no pretraining term, and no corpus batch is built or run
    ptx_batch_size: int = 16
    importance_sampling_level: str = "token"  # "token", or GSPO's "sequence"
    delta: float | None = None  # INTELLECT-2's two-sided clip: caps the unclipped ratio; None: no cap
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    mask_truncated_completions: bool = False
    use_bias_correction_kl: bool = False  # TRL 1.16 defaults to True; off keeps earlier runs' numbers
    dynamic_sampling: bool = False  # DAPO's: train only on groups whose rewards differ
    max_sampling_rounds: int = 4  # dynamic sampling's rollouts per step, at most

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.algorithm, "algorithm", ALGORITHMS)
        if self.num_epochs != 1:
            raise ValueError(
                f"num_epochs={self.num_epochs} has no meaning for an RL run, which samples its own data: set "
                "num_steps (rollouts) and num_iterations (passes over each rollout, PPO's epochs) instead"
            )
        check_choice(self.baseline, "baseline", BASELINES)
        check_choice(self.loss_type, "loss_type", LOSS_TYPES)
        check_choice(self.importance_sampling_level, "importance_sampling_level", IMPORTANCE_SAMPLING_LEVELS)
        check_choice(self.scale_rewards, "scale_rewards", SCALE_REWARDS)
        check_choice(self.kl_estimator, "kl_estimator", KL_ESTIMATORS)
        self.kl_in = (
            KL_IN[self.algorithm] if self.kl_in is None else check_choice(self.kl_in, "kl_in", ("reward", "loss"))
        )
        low = 2 if self.algorithm in ("rloo", "grpo") else 1
        check_int(
            self.num_generations,
            "num_generations",
            low=low,
            fix=f"{self.algorithm} compares each answer with the others to its prompt",
        )
        for name in (
            "num_iterations",
            "num_mini_batches",
            "num_steps",
            "max_completion_length",
            "eval_steps",
            "kl_horizon",
            "ptx_batch_size",
            "max_sampling_rounds",
        ):
            check_int(getattr(self, name), name)
        check_number(self.epsilon, "epsilon", low=0, low_open=True, fix="PPO's clip range, try 0.2")
        if self.epsilon_high is not None:
            check_number(self.epsilon_high, "epsilon_high", low=0, low_open=True)
        self._check_grpo_family()
        check_number(self.beta, "beta", low=0, fix="the KL penalty's weight; 0 switches it off")
        if self.kl_target is not None:
            check_number(
                self.kl_target,
                "kl_target",
                low=0,
                low_open=True,
                fix="the KL in nats per completion to hold, or None for a fixed β",
            )
            check_number(
                self.beta,
                "beta",
                low=0,
                low_open=True,
                fix="the adaptive β starts here and moves by factors, so it must start above 0",
            )
        check_number(self.gamma, "gamma", low=0, high=1, fix="GAE's discount γ in [0, 1]; 1.0 for a single reward")
        check_number(self.lam, "lam", low=0, high=1, fix="GAE's λ in [0, 1], e.g. 0.95")
        check_number(self.vf_coef, "vf_coef", low=0, fix="the value loss's weight, e.g. 0.1")
        check_number(self.cliprange_value, "cliprange_value", low=0, low_open=True, fix="the value clip, e.g. 0.2")
        check_number(self.ptx_coef, "ptx_coef", low=0, fix="the pretraining term's weight γ; 0 switches it off")
        check_number(self.temperature, "temperature", low=0, low_open=True, fix="sample at 1.0 to learn from π")
        if (self.batch_size * self.num_generations) % self.num_mini_batches:
            raise ValueError(
                f"num_mini_batches={self.num_mini_batches} does not divide the "
                f"{self.batch_size * self.num_generations} rows of a step: pick a divisor"
            )

    def _check_grpo_family(self) -> None:
        """The GRPO family's settings: clip-higher at least ε, δ above the upper clip, positive SAPO temperatures."""
        epsilon_high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        if self.loss_type in CLIPPED_LOSS_TYPES and epsilon_high < self.epsilon:
            raise ValueError(
                f"epsilon_high={self.epsilon_high:g} is below epsilon={self.epsilon:g}: the upper clip "
                "1 + epsilon_high is clip-higher's, at least epsilon (DAPO uses 0.28 with 0.2), or None for epsilon"
            )
        if self.delta is not None:
            if self.loss_type not in CLIPPED_LOSS_TYPES:
                raise ValueError(
                    f"delta={self.delta!r} caps the clipped surrogate's ratio, and loss_type={self.loss_type!r} has "
                    f"none: use one of {', '.join(map(repr, CLIPPED_LOSS_TYPES))}, or delta=None"
                )
            check_number(
                self.delta,
                "delta",
                low=1 + epsilon_high,
                low_open=True,
                fix=f"INTELLECT-2's cap on ρ, above the upper clip 1 + epsilon_high = {1 + epsilon_high:g}, e.g. 4.0",
            )
        for name in ("sapo_temperature_pos", "sapo_temperature_neg"):
            check_number(getattr(self, name), name, low=0, low_open=True, fix="SAPO's gate temperature, e.g. 1.0")
        for name in ("mask_truncated_completions", "use_bias_correction_kl", "dynamic_sampling"):
            check_flag(getattr(self, name), name)
        if self.dynamic_sampling and self.num_generations < 2:
            raise ValueError(
                "dynamic_sampling=True keeps the groups whose rewards differ, and a group of num_generations=1 "
                "never does: set num_generations >= 2, or dynamic_sampling=False"
            )


@dataclass
class Experience:
    """One scored rollout, as every update that reuses it sees it; ``experience[rows]`` is a minibatch.

    All per-token tensors are (B, N), one row per completion. ``rollout`` holds the
    sampled token ids (None on chapter 4's bandit, whose samples are single actions).
    """

    mask: torch.Tensor  # (B, N) 1 on completion tokens
    old_logps: torch.Tensor  # (B, N) log π_old(y_t): the policy that sampled, the denominator of PPO's ratio
    ref_logps: torch.Tensor  # (B, N) log π_ref(y_t): what the KL is measured against
    advantages: torch.Tensor  # (B,) one per completion, or (B, N) one per token (PPO's GAE)
    returns: torch.Tensor | None = None  # (B, N) PPO's value targets
    old_values: torch.Tensor | None = None  # (B, N) PPO's V_old, the centre of its value clip
    rollout: Rollout | None = None

    def __getitem__(self, rows: torch.Tensor) -> Experience:
        """The experience of the rows ``rows`` (a (b,) tensor of row numbers)."""
        take = lambda value: None if value is None else value[rows]
        return Experience(*(take(getattr(self, f.name)) for f in dataclasses.fields(self)))


def train_policy_gradient(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    reward_fn: RewardFn,
    config: PolicyGradientConfig,
    ref_model: PreTrainedModel | None = None,
    eval_fn: Callable[[PreTrainedModel], dict[str, float]] | None = None,
    ptx_texts: Sequence[str] | None = None,
) -> History:
    """REINFORCE, RLOO, PPO or GRPO on ``prompts``, in one loop; returns the run's History.

    Each step: (1) sample a rollout and score it, (2) compute the algorithm's advantages
    (:func:`compute_advantages`), (3) pass over it ``num_iterations`` times in
    ``num_mini_batches`` shuffled minibatches, each an optimizer step on (4) the
    algorithm's loss (:func:`rl_loss`). ``reward_fn(prompts, completions)`` is any scorer
    (the world's gold reward or verifier, or a reward model's
    :func:`~rlhf_edu.reward_modeling.reward_function`). ``ref_model`` defaults to a
    frozen copy of the policy as it starts; with ``beta=0`` and no ``ref_model`` there is
    no reference at all (nothing in the loss needs it, as in TRL), so no copy, no reference
    pass and no ``kl`` in the log: pass ``ref_model`` to log how far the policy moved.
    ``eval_fn(policy)`` runs every ``eval_steps`` steps and its metrics (e.g.
    ``gold_reward``) join the log.

    Each rollout uses the β of :func:`kl_controller` (logged as ``beta``); an adaptive
    controller is then updated with that rollout's ``kl`` (the mean summed k1) over its B
    rows. With ``config.ptx_coef`` > 0, ``ptx_texts`` (plain texts, e.g.
    ``World().pretraining_corpus(2000)``) feed the pretraining term, logged as ``loss/ptx``.

    With ``config.dynamic_sampling`` a step trains on the prompt groups whose rewards differ
    (:func:`draw_groups`), logged as ``dynamic_sampling/kept_groups`` and
    ``dynamic_sampling/sampled_groups``, and the rollout metrics describe the kept groups; a step
    that keeps none makes no update and logs one row of those counts and ``beta``. With
    ``config.mask_truncated_completions`` the completions cut at ``max_completion_length``
    weigh nothing in the loss.
    """
    check_language_model(policy, tokenizer, "policy")
    prompts = check_texts(prompts, "prompts")
    if not callable(reward_fn):
        raise TypeError(
            f"reward_fn must be a function (prompts, completions) -> scores, got {type(reward_fn).__name__}"
        )
    if config.ptx_coef > 0 and ptx_texts is None:
        raise ValueError(
            f"ptx_coef={config.ptx_coef:g} weighs a pretraining term, but no ptx_texts were passed: pass "
            "the corpus (e.g. World().pretraining_corpus(2000)), or set ptx_coef=0"
        )
    if ref_model is None and config.beta > 0:
        ref_model = copy.deepcopy(policy).eval()
    if ref_model is not None:
        check_language_model(ref_model, tokenizer, "ref_model")
    value_model = value_model_from(policy) if config.algorithm == "ppo" else None
    updates = config.num_iterations * config.num_mini_batches  # optimizer steps per rollout
    trainer = Trainer(
        [policy] + ([value_model] if value_model is not None else []),
        config,
        config.num_steps * updates,  # the bar counts updates, and says so
        desc=f"RL ({config.algorithm})" + (f", updates ({updates} a step)" if updates > 1 else ""),
    )
    generator = torch_generator(config.seed)  # the prompts' order, then every pass's minibatches
    order = torch.randperm(len(prompts), generator=generator).tolist()
    drawn = 0  # prompts taken so far in that order: batch_size a rollout
    controller = kl_controller(config)
    ptx = ptx_batches(policy, tokenizer, ptx_texts, config) if config.ptx_coef > 0 else None

    def draw(step: int, round_: int) -> tuple[Rollout, torch.Tensor]:
        """The next ``batch_size`` prompts in the run's order, answered ``num_generations`` times and scored."""
        nonlocal drawn
        batch = [prompts[order[(drawn + i) % len(prompts)]] for i in range(config.batch_size)]
        drawn += config.batch_size
        rollout = sample_rollouts(
            policy,
            tokenizer,
            batch,
            config.num_generations,
            config.max_completion_length,
            config.temperature,
            seed=config.seed * 100_003 + step + round_ * config.num_steps,  # a step's further rounds: unused seeds
        )
        return rollout, rollout_rewards(reward_fn, rollout).to(rollout.logps.device)  # pragma: no mutate (B,)

    def loss_fn(minibatch: Experience, config: PolicyGradientConfig) -> tuple[torch.Tensor, dict[str, float]]:
        """The forward passes of one update, then its loss."""
        logps = rollout_logps(policy, minibatch.rollout)  # (b, N), with the gradient
        values = token_values(value_model, minibatch.rollout) if value_model is not None else None  # (b, N)
        ptx_nll = language_modeling_loss(policy, next(ptx))[0] if ptx is not None else None
        return rl_loss(logps, minibatch, config, values, ptx_nll)

    try:
        for step in range(config.num_steps):
            step_config = dataclasses.replace(config, beta=controller.value)  # this rollout's β, in reward or loss
            # 1. Rollout: sample, score, and keep the log-probs (and PPO's values) that the updates compare against.
            rollout, rewards, sampling = draw_groups(partial(draw, step), tokenizer, config)
            if rollout is None:  # every group's rewards were equal: no advantage anywhere, so no update
                trainer.history.log(step=len(trainer.history.steps), beta=step_config.beta, **sampling)
                trainer.progress.update(updates)
                continue
            old_logps, ref_logps, values = score_rollout(policy, ref_model, value_model, rollout, config)  # (B, N)
            kl = kl_estimate(old_logps, ref_logps, "k1") * rollout.mask  # (B, N), zero without a reference
            # 2. Advantages: each algorithm's own, with −β·k1 in the reward where its KL goes there.
            advantages, returns = compute_advantages(rewards, kl, rollout.mask, step_config, values)
            experience = Experience(
                loss_mask(rollout, config), old_logps, ref_logps, advantages, returns, values, rollout
            )
            metrics = rollout_metrics(rollout, rewards, kl if ref_model is not None else None, config)
            metrics["beta"] = step_config.beta
            metrics |= sampling
            if eval_fn is not None and step % config.eval_steps == 0:
                metrics |= eval_fn(policy)
            # 3. Epochs × minibatches, each one optimizer step on 4. the algorithm's loss.
            for _ in range(config.num_iterations):
                for rows in minibatches(len(rollout), config.num_mini_batches, generator):
                    trainer.step(partial(loss_fn, config=step_config), experience[rows], **metrics)
            if "kl" in metrics:  # no reference, no KL to steer by (β is 0 then, and fixed)
                controller.update(metrics["kl"], len(rollout))
    finally:
        trainer.close()
    return trainer.history


def compute_advantages(
    rewards: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    config: PolicyGradientConfig,
    values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each algorithm's advantage from a rollout's rewards (B,) and per-token k1 (B, N): ``(advantages, returns)``.

    Where the KL goes in the reward (``kl_in="reward"``), β·k1 is taken off first.

    - REINFORCE, RLOO, GRPO: one advantage per completion, (B,), from its score
      r − β·Σ_t k1, with the prompt's G completions as one group (P, G):
      :func:`reinforce_advantages`, :func:`rloo_advantages` (eq:RLOO_advantage),
      :func:`grpo_advantages` (eq:GRPO_ADV); ``returns`` is None.
    - PPO: per-token GAE (eq:GAE_DFN) on the learned ``values`` (B, N), with −β·k1 on every
      token and the score on the last (:func:`shaped_rewards`), then whitened over the
      batch's tokens (:func:`whiten`), as PPO implementations do; ``returns`` = GAE +
      values are the value head's targets.
    """
    beta = 0.0 if config.kl_in == "loss" else config.beta  # the KL's weight in the reward
    if config.algorithm == "ppo":
        per_token = shaped_rewards(rewards, kl, mask, beta)  # (B, N)
        advantages, returns = gae_advantages(per_token, values, mask, config.gamma, config.lam)  # (B, N) each
        return whiten(advantages, mask), returns
    scores = (rewards - beta * kl.sum(dim=1)).view(-1, config.num_generations)  # (P, G)
    if config.algorithm == "grpo":
        advantages = grpo_advantages(scores, config.scale_rewards)
    elif config.algorithm == "rloo":
        advantages = rloo_advantages(scores)
    else:
        advantages = reinforce_advantages(scores, config.baseline)
    return advantages.flatten(), None  # (B,)


def rl_loss(
    logps: torch.Tensor,
    experience: Experience,
    config: PolicyGradientConfig,
    values: torch.Tensor | None = None,
    ptx_nll: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One update's loss on a minibatch of ``experience``, from the policy's log-probs ``logps`` (B, N); and metrics.

    Every algorithm's whole loss, in order:

    1. the per-token policy loss: −A·log π for REINFORCE and RLOO (:func:`policy_gradient_loss`,
       eq:policy_gradient_expectation), or, for PPO and GRPO, ``loss_type``'s weighted ratio
       ρ = π/π_old (:func:`token_policy_loss`: −min(ρA, clip(ρ, 1−ε, 1+ε_high)·A), eq:PPO_EQN,
       by default);
    2. + β·k per token (:func:`~rlhf_edu.regularization.kl_estimate`) where the KL goes in
       the loss (GRPO's way, eq:GRPO);
    3. one scalar from the tokens, in ``loss_type``'s way (:func:`aggregate_token_losses`);
    4. PPO: + ``vf_coef`` × the clipped value loss of ``values`` (B, N) (:func:`value_loss`);
    5. with a pretraining term: + γ × ``ptx_nll``, the mean token NLL of a batch of
       pretraining texts (eq:objective_pretraining; per token, so γ does not scale with
       the texts' length).

    The metrics are TRL's: the clip's share (``clip_ratio/region_mean``, or ``cispo_clip_ratio``)
    and ``policy/approxkl`` (½·E[(log ρ)²]) for PPO and GRPO, ``loss/value``, ``policy/clipfrac``,
    ``loss/ptx``.
    """
    mask = experience.mask  # (B, N)
    if config.algorithm in ("reinforce", "rloo"):
        losses = policy_gradient_loss(logps, experience.advantages, mask)  # (B, N)
        if config.kl_in == "loss":  # at β = 0 the term is 0
            losses = losses + config.beta * kl_estimate(logps, experience.ref_logps, config.kl_estimator) * mask
        loss, metrics = aggregate_token_losses(losses, mask, config.loss_type, config.max_completion_length), {}
    else:
        loss, shares = token_policy_loss(
            logps, experience.old_logps, experience.advantages, mask, config, experience.ref_logps
        )
        approx_kl = 0.5 * masked_mean((logps - experience.old_logps) ** 2, mask)
        # One share a step in the log (low and high are in ``shares`` too): History.plot draws every logged metric.
        metrics = {name: shares[name] for name in LOGGED_SHARES if name in shares}
        metrics["policy/approxkl"] = approx_kl.item()
    if values is not None:
        v_losses = value_loss(values, experience.old_values, experience.returns, mask, config.cliprange_value)
        v_loss = aggregate_token_losses(v_losses, mask, "dapo")
        loss = loss + config.vf_coef * v_loss
        metrics["loss/value"] = v_loss.item()
        if "clip_ratio/region_mean" in metrics:  # SAPO's soft gate clips nothing
            metrics["policy/clipfrac"] = metrics["clip_ratio/region_mean"]
    if ptx_nll is not None:
        loss = loss + config.ptx_coef * ptx_nll
        metrics["loss/ptx"] = ptx_nll.item()
    return loss, metrics


# --- the loop's parts ---------------------------------------------------------------------------------
def loss_mask(rollout: Rollout, config: PolicyGradientConfig) -> torch.Tensor:
    """The (B, N) mask the loss reads: the completion tokens, less unfinished rows' (``mask_truncated_completions``).

    A completion cut at ``max_completion_length`` has no reward for its end, so TRL lets
    ``mask_truncated_completions`` drop it from the loss (``completion_mask * ~is_truncated``).
    """
    if not config.mask_truncated_completions:
        return rollout.mask
    return rollout.mask * rollout.finished.unsqueeze(1).to(rollout.mask.dtype)  # (B, N)


def informative_rows(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(B,) bool, True on the rows of groups whose G rewards are not all equal: DAPO's 0 < |correct| < G.

    A group whose answers all score the same has advantage 0 everywhere (eq:GRPO_ADV), so it
    adds no gradient and only shrinks the batch (DAPO, arXiv 2503.14476 §3.2, dynamic sampling).
    """
    grouped = rewards.view(-1, num_generations)  # (P, G)
    return (grouped != grouped[:, :1]).any(dim=1).repeat_interleave(num_generations)  # (B,)


def join_rollouts(parts: Sequence[Rollout], tokenizer: PreTrainedTokenizerBase) -> Rollout:
    """One Rollout of the rows of ``parts``, in order, each padded to the widest prompt and completion."""
    tensors = [{name: getattr(part, name) for name in TENSOR_FIELDS} for part in parts]
    return _join(tensors, [prompt for part in parts for prompt in part.prompts], tokenizer)


def draw_groups(
    draw: Callable[[int], tuple[Rollout, torch.Tensor]],
    tokenizer: PreTrainedTokenizerBase,
    config: PolicyGradientConfig,
) -> tuple[Rollout | None, torch.Tensor | None, dict[str, float]]:
    """One step's rollout and rewards (B,), and the dynamic-sampling metrics: ``(rollout, rewards, metrics)``.

    ``draw(round)`` samples and scores the next ``batch_size`` prompts. Without
    ``config.dynamic_sampling`` that is the step's rollout. With it, DAPO's dynamic sampling
    (arXiv 2503.14476 §3.2): the groups whose rewards are all equal are dropped
    (:func:`informative_rows`), and rounds are drawn until ``batch_size`` groups are kept or
    ``max_sampling_rounds`` were drawn. The first ``batch_size`` kept groups are returned (fewer if
    fewer were found, down to a count whose rows ``num_mini_batches`` divides); none gives
    ``(None, None, metrics)``. The metrics are ``dynamic_sampling/kept_groups`` (the groups returned)
    and ``dynamic_sampling/sampled_groups`` (all drawn).
    """
    if not config.dynamic_sampling:
        return *draw(0), {}
    G, wanted = config.num_generations, config.batch_size
    kept, sampled = [], 0
    for round_ in range(config.max_sampling_rounds):
        rollout, rewards = draw(round_)
        rows = informative_rows(rewards, G)  # (B,)
        kept.append((rollout[rows], rewards[rows]))
        sampled += len(rollout) // G
        if sum(len(part) for part, _ in kept) >= wanted * G:
            break
    groups = min(sum(len(part) for part, _ in kept) // G, wanted)
    groups -= groups % (config.num_mini_batches // math.gcd(config.num_mini_batches, G))  # minibatches of equal size
    metrics = {"dynamic_sampling/kept_groups": float(groups), "dynamic_sampling/sampled_groups": float(sampled)}
    if groups == 0:
        return None, None, metrics
    rollout = join_rollouts([part for part, _ in kept if len(part)], tokenizer)[: groups * G]
    return rollout, torch.cat([rewards for _, rewards in kept])[: groups * G], metrics


def minibatches(num_rows: int, num_mini_batches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One pass's minibatches: the rows 0..num_rows−1 in a seeded random order, cut into equal parts.

    A new order on every pass, as CleanRL and TRL shuffle: fixed slices would always
    pair the same prompts' answers in one update, and always update on them in the same
    order. One minibatch is the whole rollout, in its own order: nothing to shuffle.
    """
    if num_rows % num_mini_batches:  # unequal parts would weigh some rows' updates more than others
        raise ValueError(f"num_mini_batches={num_mini_batches} does not divide the {num_rows} rows: pick a divisor")
    if num_mini_batches == 1:
        return [torch.arange(num_rows)]
    return list(torch.randperm(num_rows, generator=generator).chunk(num_mini_batches))


def rollout_logps(model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """log π(y_t | x, y_<t) of a rollout's completion tokens under ``model``, at temperature 1: (B, N)."""
    logps, _ = token_logprobs(model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask)
    return logps


@torch.no_grad()
def score_rollout(
    policy: PreTrainedModel,
    ref_model: PreTrainedModel | None,
    value_model: PreTrainedModel | None,
    rollout: Rollout,
    config: PolicyGradientConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What every update of one rollout compares against, without gradients: ``(old_logps, ref_logps, values)``.

    ``old_logps`` (B, N) are log π_old at temperature 1, the temperature the loss scores
    at, so that the first update's ratio is exactly 1: the sampling log-probs when the
    rollout was sampled at 1, else the tokens re-scored. ``ref_logps`` (B, N) are the
    reference's (``old_logps`` stand in without one, so the KL is 0); ``values`` (B, N)
    PPO's V_old, or None.
    """
    old_logps = rollout.logps if config.temperature == 1.0 else rollout_logps(policy, rollout)
    ref_logps = rollout_logps(ref_model, rollout) if ref_model is not None else old_logps
    values = token_values(value_model, rollout) if value_model is not None else None
    return old_logps, ref_logps, values


def rollout_metrics(
    rollout: Rollout, rewards: torch.Tensor, kl: torch.Tensor | None, config: PolicyGradientConfig
) -> dict[str, float]:
    """A rollout's metrics, with TRL's names: the reward and its spread, ``kl`` (mean Σ_t k1), ``entropy``, lengths.

    ``entropy`` is the mean entropy of the distributions the tokens were sampled from;
    ``kl`` is left out when ``kl`` is None (no reference).
    """
    mask = rollout.mask  # (B, N)
    grouped = rewards.view(-1, config.num_generations)  # (P, G)
    spread = grouped.std(dim=1) if config.num_generations > 1 else torch.zeros(len(grouped))  # (P,)
    return {
        "reward": rewards.mean().item(),
        "reward_std": spread.mean().item(),
        "frac_reward_zero_std": (spread == 0).float().mean().item(),
        **({"kl": kl.sum(dim=1).mean().item()} if kl is not None else {}),
        "entropy": masked_mean(rollout.entropies, mask).item(),
        "completions/mean_length": mask.sum(dim=1).mean().item(),
        "completions/clipped_ratio": (~rollout.finished).float().mean().item(),
    }


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(values − mean) / std over the real tokens, (B, N), zero on padding: how PPO implementations normalise GAE."""
    mean = masked_mean(values, mask)
    std = masked_mean((values - mean) ** 2, mask).sqrt()
    return (values - mean) / (std + 1e-8) * mask  # pragma: no mutate (±1e-8: only keeps a zero std from 0/0)


def shaped_rewards(rewards: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards with the KL in them: −β·k1 on every token, plus the score on the last one; (B, T)."""
    check_number(beta, "beta", low=0, fix="the KL penalty's weight; 0 switches it off")
    last = mask.cumsum(dim=1) == mask.sum(dim=1, keepdim=True)  # (B, T) True from the last real token on
    return (-beta * kl + rewards.unsqueeze(1) * last) * mask  # and the mask keeps the last real one


def value_model_from(policy: PreTrainedModel) -> PreTrainedModel:
    """PPO's critic: a copy of the policy's backbone with a new scalar head on every token.

    It is a ``...ForTokenClassification`` with one label, so it works with any reward
    function (a verifier has no backbone to start a critic from), and it starts from
    what the policy knows about the text.
    """
    check_causal_lm(policy, "policy")  # a reward model's backbone would start the critic from another task
    config = copy.deepcopy(policy.config)  # pragma: no mutate (a shallow copy serves too: num_labels makes new maps)
    config.num_labels = 1
    model = AutoModelForTokenClassification.from_config(config)
    model.base_model.load_state_dict(policy.base_model.state_dict())
    return model.to(policy.device).eval()  # pragma: no mutate (on one device, .to is the identity)


def token_values(value_model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """V(x, y_<t) for each completion token of a rollout: (B, N), zero on padding.

    The value of token t is read where the policy predicts it, at the position before it
    (column P + t − 1), so the critic has not yet seen the token it values.
    """
    width = rollout.prompt_width  # the column where every completion starts
    values = value_model(
        input_ids=rollout.input_ids,
        attention_mask=rollout.attention_mask,
        position_ids=position_ids_from_mask(rollout.attention_mask),
    ).logits[..., 0]  # (B, T)
    return values[:, width - 1 : -1] * rollout.mask  # (B, N)


def kl_controller(config: PolicyGradientConfig) -> KLController:
    """β's controller for a run: adaptive from ``config.beta`` toward ``config.kl_target`` if one is set, else fixed."""
    if config.kl_target is None:
        return FixedKLController(config.beta)
    return AdaptiveKLController(config.beta, config.kl_target, config.kl_horizon)


def ptx_batches(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], config: PolicyGradientConfig
) -> Iterator[Batch]:
    """Endless batches of ``config.ptx_batch_size`` pretraining texts, on the policy's device, for the ptx term.

    Each text is encoded as pretraining encodes it (:func:`~rlhf_edu.pretraining.encode_document`:
    every token after ``<bos>`` is a target), and the order is seeded and reshuffled on every pass.
    """
    rows = [encode_document(tokenizer, text) for text in check_texts(texts, "ptx_texts")]
    check_length(rows, context_length(policy, config.max_length))
    loader = make_loader(
        rows,
        partial(pad_batch, pad_token_id=tokenizer.pad_token_id),
        TrainingConfig(batch_size=config.ptx_batch_size, seed=config.seed),
    )
    device = next(policy.parameters()).device  # pragma: no mutate (on one device, .to is the identity)
    while True:
        for batch in loader:
            yield {name: tensor.to(device) for name, tensor in batch.items()}  # pragma: no mutate


def beta_sweep(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    reward_fn: RewardFn,
    betas: Sequence[float],
    config: PolicyGradientConfig,
    eval_fn: Callable[[PreTrainedModel], dict[str, float]] | None = None,
    ptx_texts: Sequence[str] | None = None,
) -> dict[float, History]:
    """One :func:`train_policy_gradient` run per β, each on a fresh copy of ``policy``; ``{β: History}``.

    ``policy`` itself stays as it is and is every run's reference model, so all runs
    pay their KL to the same π_ref and differ only in β (the starting β, with a ``kl_target``).
    """
    runs = {}
    for beta in betas:
        model = copy.deepcopy(policy)
        runs[float(beta)] = train_policy_gradient(
            model,
            tokenizer,
            prompts,
            reward_fn,
            dataclasses.replace(config, beta=float(beta)),
            ref_model=policy,
            eval_fn=eval_fn,
            ptx_texts=ptx_texts,
        )
    return runs


def save_sweep(runs: dict[float, History], path: str | Path, **settings) -> Path:
    """Write a :func:`beta_sweep` to JSON: its ``settings`` and every run's per-step metrics."""
    return save_histories({repr(beta): history for beta, history in runs.items()}, path, **settings)


def load_sweep(path: str | Path) -> tuple[dict[float, History], dict]:
    """Read a file written by :func:`save_sweep`: ``({β: History}, settings)``."""
    runs, settings = load_histories(path)
    return {float(beta): history for beta, history in runs.items()}, settings


# --- two policies on the same prompts, compared prompt by prompt (notebook 11's check cells) ------------------
def pass_at_k_per_prompt(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    verifier: RewardFn,
    num_samples: int = 16,
    ks: Sequence[int] = (1, 2, 4, 8, 16),
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[int, np.ndarray]:
    """pass@k of each prompt, ``{k: (len(prompts),) array}``, for each k in ``ks``.

    The values that :func:`~rlhf_edu.core.evaluation.pass_at_k_curve` averages (the same
    samples for the same seed), kept per prompt: for two policies on the same prompts,
    ``mean_and_stderr(after[k] - before[k])`` is the change and its paired standard error.
    """
    prompts = check_texts(prompts, "prompts")
    rollout = sample_rollouts(policy, tokenizer, prompts, num_samples, max_new_tokens, seed=seed)
    correct = np.asarray(verifier(rollout.prompts, rollout.completions)).reshape(len(prompts), num_samples) > 0.5
    return pass_at_k_by_prompt(correct.astype(np.float64), ks)


def paired_difference(
    first: PolicyEvaluation, second: PolicyEvaluation, component: str = "gold", family: str | None = None
) -> tuple[float, float]:
    """``first``'s mean ``component`` minus ``second``'s, with the paired standard error of that difference.

    ``component`` is a gold component's name, or ``"gold"`` for the gold reward; ``family``
    keeps that family's prompts only. Both evaluations must hold the same prompts in the
    same order, so each prompt's difference is one sample and what the prompts share cancels.
    """
    if first.prompts != second.prompts:
        raise ValueError("a paired difference compares prompt by prompt: evaluate both policies on the same prompts")
    if family is not None:
        check_choice(family, "family", FAMILIES)
    values = [np.asarray(e.gold_rewards if component == "gold" else e.components[component]) for e in (first, second)]
    keep = np.array([family is None or parse_prompt(p).family == family for p in first.prompts])
    return mean_and_stderr((values[0] - values[1])[keep])


# --- pictures ---------------------------------------------------------------------------------------------
def plot_clipped_objective(
    epsilon: float = 0.2, epsilon_high: float | None = None, ax: Axes | None = None
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """PPO's per-token objective min(ρA, clip(ρ)·A) against ρ, for A = ±1; returns the figure.

    It is −:func:`clipped_surrogate_loss` on a grid of ratios. Where a curve is flat the
    clip has removed the gradient: above 1 + ε_high when A > 0, below 1 − ε when A < 0.
    Draws on ``ax`` when given.
    """
    ratio = torch.linspace(0.2, 2.0, 361)  # (R,) ρ
    ax = ax if ax is not None else plt.subplots(figsize=(5.5, 3.4))[1]
    for advantage, color in ((1.0, "C0"), (-1.0, "C3")):
        losses, _ = clipped_surrogate_loss(
            ratio.log().unsqueeze(1),
            torch.zeros(len(ratio), 1),
            torch.full((len(ratio),), advantage),
            torch.ones(len(ratio), 1),
            epsilon,
            epsilon_high,
        )
        ax.plot(ratio, -losses[:, 0], color=color, label=f"A = {advantage:+g}")
        ax.plot(ratio, ratio * advantage, color=color, ls=":", lw=1)  # the unclipped ρA
    high = epsilon if epsilon_high is None else epsilon_high
    ax.axvspan(1 - epsilon, 1 + high, color="grey", alpha=0.12, label="[1 − ε, 1 + ε_high]")
    ax.set(xlabel="ρ = π_θ / π_old", ylabel="objective (−loss)", title=f"PPO's clipped objective, ε = {epsilon:g}")
    ax.legend(fontsize=8, loc="lower left")
    return ax.figure


def plot_sweep(
    runs: dict[float, History],
    metrics: Sequence[str] = ("eval/reward", "gold_reward", "eval/kl"),
    highlight: float | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """One panel per metric of a :func:`beta_sweep`, one line per β against the step; ``highlight`` one β in bold.

    A row's ``step`` is its x (a trainer's own log numbers its rows so); rows without one are drawn at their index.
    """
    if axes is None:
        axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)[1][0]
    for i, (beta, history) in enumerate(sorted(runs.items())):
        bold = highlight is None or beta == highlight
        for ax, name in zip(axes, metrics):
            steps = [step.get("step", j) for j, step in enumerate(history.steps) if name in step]
            ax.plot(
                steps,
                history[name],
                color=f"C{i}",
                lw=2.2 if bold else 1,
                alpha=1 if bold else 0.35,
                label=f"β = {beta:g}",
            )
    for ax, name in zip(axes, metrics):
        ax.set(xlabel="step", title=name)
    axes[0].legend(fontsize=8)
    axes[0].figure.tight_layout()
    return axes[0].figure


# --- the same functions on chapter 4's bandit ------------------------------------------------------
TABULAR_DEFAULTS = {"kl_estimator": "k2", "scale_rewards": "none"}  # GRPO's settings whose fixed point is π*


class TabularPolicy(torch.nn.Module):
    """A softmax policy over A actions, π_θ = softmax(θ), starting at θ = log π_ref, and PPO's one-state value V."""

    def __init__(self, ref_probs: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(ref_probs.log().clone())  # (A,) θ: RLHF starts from the reference model
        self.value = torch.nn.Parameter(torch.zeros(()))  # V: the critic of a bandit has one state to value


def tabular_config(algorithm: str, beta: float, **overrides) -> PolicyGradientConfig:
    """The :class:`PolicyGradientConfig` of a bandit run: one prompt, one-token completions, no progress bar.

    GRPO gets ``kl_estimator="k2"`` and ``scale_rewards="none"`` unless overridden: then,
    like the other three, its fixed point is π* of eq:rlhf_opt_eq. TRL's defaults ("k3" in
    the loss, rewards scaled by the group's std) land elsewhere: the pathwise gradient of
    k3 is that of KL(π_ref‖π), not KL(π‖π_ref), and the std rescales β as it changes.
    """
    # pragma: no mutate start, sizes chosen for speed: nearby values land on the same optimum
    settings = {
        "batch_size": 1,
        "num_generations": 64,
        "num_steps": 600,
        "learning_rate": 0.05,
        "max_completion_length": 1,
        "vf_coef": 1.0,
        "progress": False,
        "lr_scheduler_type": "linear",
        "num_iterations": 4 if algorithm == "ppo" else 1,
    } | TABULAR_DEFAULTS
    # pragma: no mutate end
    config = PolicyGradientConfig(algorithm=algorithm, beta=beta, **(settings | overrides))
    if config.kl_target is not None or config.ptx_coef > 0:
        raise ValueError(
            "a bandit run keeps β fixed, so its optimum is π*, and has no text to pretrain on: "
            "drop kl_target and ptx_coef"
        )
    return config


def tabular_loss(
    policy: TabularPolicy, actions: torch.Tensor, experience: Experience, config: PolicyGradientConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one bandit update: :func:`rl_loss` on the sampled actions' (G, 1) log-probs, V for PPO."""
    logps = torch.log_softmax(policy.logits, -1)[actions].unsqueeze(1)  # (G, 1): each completion is one token
    values = policy.value.expand_as(logps) if experience.returns is not None else None  # (G, 1)
    return rl_loss(logps, experience, config, values)


def tabular_rollout(
    policy: TabularPolicy,
    ref_probs: torch.Tensor,
    rewards: torch.Tensor,
    config: PolicyGradientConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, Experience]:
    """Sample G actions from π_θ and score them: ``(actions (G,), experience)``, as the language-model loop does.

    The same :func:`compute_advantages` as :func:`train_policy_gradient`, with the KL
    where each algorithm puts it.
    """
    with torch.no_grad():
        log_probs = torch.log_softmax(policy.logits, -1)  # (A,)
        actions = torch.multinomial(
            log_probs.exp(), config.num_generations, replacement=True, generator=generator
        )  # (G,)
        old_logps = log_probs[actions].unsqueeze(1)  # (G, 1)
        ref_logps = ref_probs.log()[actions].unsqueeze(1)  # (G, 1)
        kl = kl_estimate(old_logps, ref_logps, "k1")  # (G, 1)
        mask = torch.ones_like(kl)  # (G, 1)
        values = policy.value.expand_as(old_logps).clone() if config.algorithm == "ppo" else None  # (G, 1) V_old
        advantages, returns = compute_advantages(rewards[actions], kl, mask, config, values)
    return actions, Experience(mask, old_logps, ref_logps, advantages, returns, values)


def train_tabular_policy_gradient(
    ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float, algorithm: str = "grpo", **config_overrides
) -> BanditRun:
    """REINFORCE, RLOO, PPO or GRPO on chapter 4's bandit, with the functions of the language-model trainer.

    A softmax policy starts at π_ref and learns from ``num_generations`` sampled actions
    per step through :class:`~rlhf_edu.core.training.Trainer`, with the advantage and the
    per-token loss of :func:`train_policy_gradient`. Its fixed point is π* =
    :func:`~rlhf_edu.objective.kl_regularized_optimum` (see :func:`tabular_config` for
    GRPO's settings). ``config_overrides`` are :class:`PolicyGradientConfig` fields.
    Returns a :class:`~rlhf_edu.bandit.BanditRun` whose history has one entry per step.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    check_one_prompt("train_tabular_policy_gradient", ref_probs=ref_probs, rewards=rewards)
    if not (ref_probs > 0).all():
        raise ValueError("ref_probs must be > 0 everywhere: θ starts at log π_ref; drop the impossible actions first")
    config = tabular_config(algorithm, as_beta(beta), **config_overrides)
    ref_probs, rewards = ref_probs.float(), rewards.float()
    policy = TabularPolicy(ref_probs)
    trainer = Trainer(policy, config, config.num_steps * config.num_iterations, desc=f"bandit ({algorithm})")
    generator = torch_generator(config.seed)
    optimum = kl_regularized_optimum(ref_probs, rewards, config.beta)  # (A,)
    records = []
    for _ in range(config.num_steps):
        records.append(
            bandit_record(torch.softmax(policy.logits.detach(), -1), ref_probs, rewards, config.beta, optimum)
        )
        rollout = tabular_rollout(policy, ref_probs, rewards, config, generator)
        for _ in range(config.num_iterations):
            trainer.step(lambda batch: tabular_loss(policy, *batch, config), rollout)
    probs = torch.softmax(policy.logits.detach(), -1)  # (A,)
    records.append(bandit_record(probs, ref_probs, rewards, config.beta, optimum))
    history = dict(zip(("objective", "kl", "expected_reward", "tv_to_optimum"), torch.stack(records).unbind(1)))
    return BanditRun(probs=probs, optimum=optimum, history=history)


def tabular_gradient_estimates(
    ref_probs: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    algorithm: str,
    num_trials: int = 500,
    probs: torch.Tensor | None = None,
    **config_overrides,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_trials`` independent one-step gradient estimates of J at π_θ = ``probs`` (default π_ref), and ∇J.

    Each estimate is −∇θ of one update's loss, from a fresh sample of ``num_generations``
    actions; the exact gradient is autograd's of
    :func:`~rlhf_edu.objective.regularized_objective`. Returns ``(estimates (num_trials, A), exact (A,))``.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    config = tabular_config(algorithm, as_beta(beta), **config_overrides)
    check_int(num_trials, "num_trials", low=2, fix="the spread of an estimate needs at least two trials")
    ref_probs, rewards = ref_probs.float(), rewards.float()
    policy = TabularPolicy(ref_probs)
    if probs is not None:
        policy.logits.data = as_tensors(probs=probs)[0].float().log()
    generator = torch_generator(config.seed)
    estimates = []
    for _ in range(num_trials):
        policy.zero_grad()
        rollout = tabular_rollout(policy, ref_probs, rewards, config, generator)
        tabular_loss(policy, *rollout, config)[0].backward()
        estimates.append(-policy.logits.grad.clone())
    logits = policy.logits.detach().clone().requires_grad_()
    regularized_objective(torch.softmax(logits, -1), ref_probs, rewards, config.beta).backward()
    return torch.stack(estimates), logits.grad
