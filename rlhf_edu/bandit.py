"""RLHF as a bandit you can sample and learn, from "Training Overview" (chapter 4).

:mod:`rlhf_edu.objective` solves the KL-regularised bandit of eq:rlhf_opt_eq exactly. This
module makes it concrete and then learns it, as RLHF must with a language model:

- :func:`completion_bandit` turns one world prompt into a bandit whose arms are real
  sentences sampled from a zoo model, with π_ref the model's own probabilities;
- :func:`train_bandit` learns π* with a softmax policy, by exact gradient ascent on
  :func:`~rlhf_edu.objective.regularized_objective` or by REINFORCE
  (:func:`reinforce_surrogate`), and returns a :class:`BanditRun`;
- :func:`plot_bandit_runs` draws the training curves against the closed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.logprobs import completion_logprobs
from .core.rollouts import generate_completions
from .core.runtime import MAX_NEW_TOKENS, torch_generator
from .core.validation import check_choice, check_int, check_number
from .core.world import World
from .objective import (
    TensorLike,
    as_beta,
    as_tensors,
    axes_pair,
    check_one_prompt,
    expected_reward,
    kl_divergence,
    kl_regularized_optimum,
    regularized_objective,
)

# --- RLHF as a bandit over completions ----------------------------------------------------------------------------


def completion_bandit(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    prompt: str,
    k: int = 32,
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> tuple[list[str], Tensor, Tensor]:
    """Turn one world prompt into the bandit of eq:rl_opt_int: sampled completions are the arms.

    Samples ``k`` completions of ``prompt`` from ``model`` (temperature 1, so they follow π_ref)
    and keeps each distinct non-empty sentence once: a sentence sampled twice is one arm, not
    two. π_ref over the arms is the model's probability of answering exactly that sentence and
    stopping, log π(y | x) from :func:`~rlhf_edu.core.logprobs.completion_logprobs`, renormalised
    over the arms by a softmax; the rewards are the world's gold reward. Returns ``(completions,
    ref_probs, rewards)``, arms sorted from most to least likely, with (A,) float64 tensors.
    """
    k = check_int(k, "k", low=2, fix="a bandit needs at least two arms to choose between")
    samples = generate_completions(model, tokenizer, [prompt] * k, max_new_tokens=max_new_tokens, seed=seed)
    completions = [completion for completion in dict.fromkeys(samples) if completion.strip()]
    if len(completions) < 2:
        raise ValueError(
            f"{k} samples of {prompt!r} hold {len(completions)} distinct non-empty completion(s), "
            "but a bandit needs two arms: raise k or pick a prompt the model answers in more ways"
        )
    logps = completion_logprobs(model, tokenizer, [prompt] * len(completions), completions)  # (A,)
    ref_probs = torch.softmax(logps.double(), -1)  # (A,) π(y | x, y is one of the arms)
    rewards = torch.tensor(world.gold_reward([prompt] * len(completions), completions), dtype=torch.float64)  # (A,)
    order = ref_probs.argsort(descending=True, stable=True)  # (A,)
    return [completions[i] for i in order], ref_probs[order], rewards[order]


# --- learning π* --------------------------------------------------------------------------------------------------


def reinforce_surrogate(
    logits: Tensor,
    ref_probs: TensorLike,
    rewards: TensorLike,
    beta: float,
    num_samples: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A scalar whose gradient is the score-function (REINFORCE) estimate of ∇_θ J, eq:rlhf_opt_eq.

    ``logits`` are θ of the softmax policy π_θ, shape (A,), for one prompt. Each of the
    ``num_samples`` actions drawn from π_θ earns the regularised reward
    R(a) = r(a) − β·(log π_θ(a) − log π_ref(a)). Its mean over samples estimates both terms
    of J, so the KL's gradient is estimated from samples too (as with a language model, where
    the exact KL is a sum over all texts). R is held constant: the gradient it would add,
    −β·E_π[∇ log π], is zero since Σ_a ∇π(a) = 0.

    Subtracting the mean R of the batch (a baseline) keeps the estimate unbiased, by the same
    identity, but removes the part of R that all actions share, which would otherwise scale
    the noise of ∇ log π(a). At π* every R(a) equals β·log Z, so the noise vanishes there.
    Returns a 0-dim tensor to call ``.backward()`` on; its value is not J.
    """
    logits, ref_probs, rewards = as_tensors(logits=logits, ref_probs=ref_probs, rewards=rewards)
    beta, num_samples = as_beta(beta), as_num_samples(num_samples)
    check_one_prompt("reinforce_surrogate", logits=logits, ref_probs=ref_probs, rewards=rewards)
    log_probs = torch.log_softmax(logits, -1)  # (A,)
    actions = torch.multinomial(log_probs.detach().exp(), num_samples, replacement=True, generator=generator)  # (N,)
    sampled_log_probs = log_probs[actions]  # (N,)
    regularized_rewards = rewards[actions] - beta * (sampled_log_probs.detach() - ref_probs[actions].log())  # (N,)
    advantages = regularized_rewards - regularized_rewards.mean()  # (N,)
    # Dividing by N − 1 rather than N makes the mean baseline exactly unbiased (it equals leave-one-out).
    return (advantages * sampled_log_probs).sum() / (num_samples - 1)


@dataclass(frozen=True)
class BanditRun:
    """What :func:`train_bandit` learned, and how it got there.

    ``probs`` is the final policy π_θ and ``optimum`` the closed-form π* it should reach,
    both (A,). ``history`` maps "objective" (eq:rlhf_opt_eq), "kl", "expected_reward" and
    "tv_to_optimum" (total variation ½·Σ|π_θ − π*|) to (steps + 1,) tensors: one entry
    before each update, starting at π_ref, and one for the final policy.
    """

    probs: Tensor
    optimum: Tensor
    history: dict[str, Tensor]


def train_bandit(
    ref_probs: TensorLike,
    rewards: TensorLike,
    beta: float,
    method: Literal["exact", "reinforce"] = "exact",
    *,
    steps: int = 2000,
    lr: float = 0.1,
    num_samples: int = 256,
    seed: int = 0,
) -> BanditRun:
    """Maximise eq:rlhf_opt_eq for one prompt with a softmax policy π_θ = softmax(θ), starting at θ = log π_ref.

    ``method="exact"`` ascends the exact gradient of :func:`~rlhf_edu.objective.regularized_objective`;
    ``"reinforce"`` ascends a REINFORCE estimate from ``num_samples`` sampled actions per
    step (see :func:`reinforce_surrogate`). Both use Adam with a step size decaying
    linearly from ``lr`` to 0, and both reach the closed-form π* for 1-D ``ref_probs`` and
    ``rewards`` (every ref prob > 0). Returns a :class:`BanditRun`.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    beta, num_samples = as_beta(beta), as_num_samples(num_samples)
    check_one_prompt("train_bandit", ref_probs=ref_probs, rewards=rewards)
    if not (ref_probs > 0).all():
        raise ValueError(
            "train_bandit needs ref_probs > 0 everywhere: θ starts at log π_ref, and a softmax "
            "policy cannot hold a zero; drop the impossible actions first"
        )
    check_choice(method, "method", ("exact", "reinforce"))
    steps = check_int(steps, "steps", low=1, fix="try the default 2000")
    lr = check_number(lr, "lr", low=0, low_open=True, high=10, fix="Adam's step size on the logits, try 0.1")
    optimum = kl_regularized_optimum(ref_probs, rewards, beta)  # (A,)
    logits = ref_probs.log().requires_grad_()  # (A,) θ; RLHF starts from the reference model
    optimizer = torch.optim.Adam([logits], lr=lr, maximize=True)
    # A constant step leaves Adam hovering around π*; decaying it to 0 lets the policy settle.
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=steps)
    generator = torch_generator(seed)
    records = []
    for _ in range(steps):
        probs = torch.softmax(logits, -1)  # (A,)
        records.append(bandit_record(probs.detach(), ref_probs, rewards, beta, optimum))
        if method == "exact":
            surrogate = regularized_objective(probs, ref_probs, rewards, beta)
        else:
            surrogate = reinforce_surrogate(logits, ref_probs, rewards, beta, num_samples, generator)
        optimizer.zero_grad()
        surrogate.backward()
        optimizer.step()
        schedule.step()
        if not torch.isfinite(logits).all():
            raise FloatingPointError(f"the logits became {logits.tolist()}: lower lr (now {lr:g})")
    probs = torch.softmax(logits.detach(), -1)  # (A,)
    records.append(bandit_record(probs, ref_probs, rewards, beta, optimum))
    history = dict(zip(("objective", "kl", "expected_reward", "tv_to_optimum"), torch.stack(records).unbind(-1)))
    return BanditRun(probs=probs, optimum=optimum, history=history)


def bandit_record(probs: Tensor, ref_probs: Tensor, rewards: Tensor, beta: float, optimum: Tensor) -> Tensor:
    """One row of :attr:`BanditRun.history`: (objective, kl, expected_reward, tv_to_optimum), shape (4,)."""
    kl, reward = kl_divergence(probs, ref_probs), expected_reward(probs, rewards)
    return torch.stack([reward - beta * kl, kl, reward, (probs - optimum).abs().sum() / 2])


def as_num_samples(num_samples: int) -> int:
    """``num_samples`` as an int, or an error if the mean baseline of :func:`reinforce_surrogate` cannot use it."""
    return check_int(num_samples, "num_samples", low=2, fix="the mean baseline needs two samples; try 256")


# --- pictures -----------------------------------------------------------------------------------------------------


def plot_bandit_runs(
    runs: dict[str, BanditRun], optimal: float | None = None, axes: Sequence[Axes] | None = None
) -> Figure:
    """Training curves of :func:`train_bandit` runs: total variation to π* (log scale) and J(π_θ) per step.

    ``optimal`` (e.g. :func:`~rlhf_edu.objective.optimal_value`) draws max_π J as a dashed line.
    J is drawn against a log-scaled step count, since it climbs within the first few dozen
    steps. Draws on the pair ``axes`` when given, else on a new figure; returns the figure.
    """
    distance, objective = axes_pair(axes, "plot_bandit_runs", figsize=(9, 3.2))
    for name, run in runs.items():
        distance.semilogy(run.history["tv_to_optimum"], label=name)
        objective.semilogx(range(1, len(run.history["objective"]) + 1), run.history["objective"], label=name)
    if optimal is not None:
        objective.axhline(optimal, color="black", ls="--", lw=1, label="max J (closed form)")
    distance.set(xlabel="step", ylabel="TV(π_θ, π*)", title="distance to the closed-form optimum")
    objective.set(xlabel="step + 1", ylabel="J(π_θ)", title="regularised objective eq:rlhf_opt_eq")
    distance.legend(fontsize=10)
    objective.legend(fontsize=10)
    if axes is None:  # a caller's own axes keep the caller's layout
        distance.figure.tight_layout()
    return distance.figure
