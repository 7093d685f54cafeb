"""The RLHF objective, from full RL to a KL-regularised bandit (Chapter 4, "Training Overview").

Chapter 4 starts from the standard RL objective, a discounted sum of rewards along a
trajectory whose states evolve with the agent's actions,

    J(π) = E_τ[Σ_t γ^t r(s_t, a_t)],                                  eq:rl_opt

and strips it down for RLHF: the state (prompt) comes from a dataset, the action is the
whole completion, and a reward model scores that completion once. No transitions, no
discount, just a bandit per prompt,

    J(π) = E_{a~π(·|s)}[r_θ(s, a)].                                   eq:rl_opt_int

To stop the policy from drifting away from the model it started from, RLHF subtracts a
KL penalty,

    J(π) = E_{a~π}[r_θ(s, a)] − β·D_KL(π^RL(·|s) ‖ π^ref(·|s)).        eq:rlhf_opt_eq

With a handful of actions everything here is exact: the expectation is a sum over
actions, the optimum has the closed form π*(a) ∝ π_ref(a)·exp(r(a)/β) (eq:dpo_opt_policy
in the Direct Alignment chapter), and β sets how much of the "KL budget" is spent.

The module holds, in the chapter's order:

- the full RL problem on a tiny MDP with transitions and discounting: :class:`Corridor`,
  :func:`value_iteration`, :func:`rollout` and :func:`discounted_return` (eq:rl_opt);
- the bandit's pieces: :func:`expected_reward` (eq:rl_opt_int), :func:`kl_divergence` and
  :func:`regularized_objective` (eq:rlhf_opt_eq);
- the closed-form optimum and what β buys: :func:`kl_regularized_optimum`,
  :func:`optimal_value`, :func:`reward_kl_frontier`, :func:`beta_for_kl_budget`,
  :func:`max_kl_budget` and :func:`best_policy_within_kl`;
- :func:`train_bandit`, a softmax policy that learns π* by exact gradients or REINFORCE;
- :func:`completion_bandit`, RLHF as a bandit over real sentences sampled from a zoo model;
- pictures for the notebook's widgets: :func:`plot_kl_regularized_optimum`,
  :func:`plot_kl_budget`, :func:`plot_arms` and :func:`plot_bandit_runs`.

Conventions: every function takes torch tensors (numpy arrays and lists are converted);
probabilities and rewards index actions along the LAST dimension, and any leading
dimensions index prompts. Results keep the floating dtype of the inputs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.logprobs import completion_logprobs
from .core.rollouts import generate_completions
from .core.world import World

TensorLike = Tensor | np.ndarray | Sequence

SUM_TOLERANCE = 1e-5  # how far from 1 a probability vector may sum: float32 softmax outputs are off by ~1e-7
LEFT, RIGHT = 0, 1  # the two actions of a Corridor


def _validated(distributions: dict[str, TensorLike], values: dict[str, TensorLike] | None = None) -> list[Tensor]:
    """Convert named inputs to floating tensors and check them; return them in the order given.

    ``distributions`` must be non-negative and sum to 1 over the last dim, ``values``
    (rewards) must be finite, and all inputs together must share the last (action) dim and
    broadcast over the leading (prompt) dims. Errors name the input and say how to fix it.
    """
    tensors = {}
    for name, value in {**distributions, **(values or {})}.items():
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name} must be a tensor, numpy array or list of numbers, "
                            f"got {type(value).__name__}") from error
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.get_default_dtype())  # integer rewards like [0, 1] are fine
        if tensor.ndim == 0:
            raise ValueError(f"{name} must be at least 1-D (its last dim indexes actions or time steps), "
                             f"got the scalar {tensor.item()}; wrap it in a list")
        tensors[name] = tensor
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    try:
        torch.broadcast_shapes(*shapes.values())
        shapes_match = len({shape[-1] for shape in shapes.values()}) == 1
    except RuntimeError:
        shapes_match = False
    if not shapes_match:
        raise ValueError(f"shapes do not match: {shapes}; inputs must have the same last (action) dim "
                         "and broadcastable leading (prompt) dims")
    for name in distributions:
        probs = tensors[name]
        if (probs < 0).any():
            raise ValueError(f"{name} has a negative entry ({probs.min().item():.3g}); probabilities must be >= 0")
        sums = probs.sum(-1)  # (...)
        if not ((sums - 1).abs() <= SUM_TOLERANCE).all():  # written so that NaN fails too
            raise ValueError(f"{name} must sum to 1 over the last (action) dim, but its sums run from "
                             f"{sums.min().item():.6g} to {sums.max().item():.6g}; normalise with "
                             "p / p.sum(-1, keepdim=True), or build it with torch.softmax(logits, -1)")
    for name in values or {}:
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"{name} must be finite, but it contains NaN or inf")
    return list(tensors.values())


def _real(value: float, name: str) -> float:
    """``value`` as a Python float, accepting ints, numpy scalars and one-element tensors."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{name} must be a real number, got {type(value).__name__}")


def _beta(beta: float) -> float:
    """β as a float, or a ValueError if it cannot weight a KL penalty."""
    beta = _real(beta, "beta")
    if not 0 < beta < math.inf:
        raise ValueError(f"beta must be > 0 and finite, got {beta}; β is the KL penalty weight, try 0.1")
    return beta


def _check_one_prompt(function: str, ref_probs: Tensor, rewards: Tensor) -> None:
    """Refuse batched inputs where ``function`` solves one prompt at a time."""
    if ref_probs.ndim != 1 or rewards.ndim != 1:
        raise ValueError(f"{function} takes one prompt: 1-D ref_probs and rewards of shape (A,), got "
                         f"{tuple(ref_probs.shape)} and {tuple(rewards.shape)}; call it once per prompt")


def _gamma(gamma: float) -> float:
    """γ as a float, or a ValueError if it is not a discount factor."""
    gamma = _real(gamma, "gamma")
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}; γ is the per-step discount, try 0.99")
    return gamma


def discounted_return(rewards: TensorLike, gamma: float) -> Tensor:
    """Σ_t γ^t r_t, the quantity inside the expectation of eq:rl_opt.

    ``rewards`` holds one trajectory's per-step rewards r(s_t, a_t) along the last dim,
    (..., T). Returns the discounted return of each trajectory, shape (...).
    """
    (rewards,) = _validated({}, {"rewards": rewards})
    gamma = _gamma(gamma)
    discounts = gamma ** torch.arange(rewards.shape[-1], dtype=rewards.dtype)  # (T,); 0.0 ** 0 = 1
    return (discounts * rewards).sum(-1)  # (...)


def _kl(p: Tensor, q: Tensor) -> Tensor:
    """D_KL(p ‖ q) over the last dim for already-validated tensors, so training loops skip the checks."""
    # xlogy(0, x) = 0 is the convention 0·log 0 = 0; xlogy(p > 0, 0) = -inf makes the KL +inf.
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)  # (...)


def _objective(probs: Tensor, ref_probs: Tensor, rewards: Tensor, beta: float) -> Tensor:
    """E_π[r] − β·D_KL(π ‖ π_ref) for already-validated tensors, so training loops skip the checks."""
    return (probs * rewards).sum(-1) - beta * _kl(probs, ref_probs)  # (...)


def kl_divergence(p: TensorLike, q: TensorLike) -> Tensor:
    """Exact D_KL(p ‖ q) = Σ_a p(a) log(p(a) / q(a)) over the last dim, the penalty in eq:rlhf_opt_eq.

    This is the definition in the Regularization chapter (eq:kl_distance_regularization),
    summed over every action rather than estimated from samples. Returns the KL in nats,
    shape (...): 0 when p == q, and +inf where p puts mass on an action that q rules out.
    """
    return _kl(*_validated({"p": p, "q": q}))


def expected_reward(probs: TensorLike, rewards: TensorLike) -> Tensor:
    """E_{a~π}[r(a)] = Σ_a π(a)·r(a), the bandit objective eq:rl_opt_int. Returns shape (...)."""
    probs, rewards = _validated({"probs": probs}, {"rewards": rewards})
    return (probs * rewards).sum(-1)  # (...)


def regularized_objective(probs: TensorLike, ref_probs: TensorLike, rewards: TensorLike, beta: float) -> Tensor:
    """J(π) = E_π[r] − β·D_KL(π ‖ π_ref), eq:rlhf_opt_eq, for the policy ``probs``. Returns shape (...)."""
    probs, ref_probs, rewards = _validated({"probs": probs, "ref_probs": ref_probs}, {"rewards": rewards})
    return _objective(probs, ref_probs, rewards, _beta(beta))


def _tilted_logits(ref_probs: Tensor, rewards: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """log π_ref + (r − r_max)/β, and r_max, the best reward among actions π_ref can take.

    Subtracting r_max leaves π* unchanged (softmax ignores a constant shift) but keeps r/β
    from overflowing as β → 0: the best actions keep logit log π_ref and the rest go to −inf.
    """
    max_reward = _max_supported_reward(ref_probs, rewards)  # (..., 1)
    return ref_probs.log() + (rewards - max_reward) / beta, max_reward  # (..., A), (..., 1)


def _max_supported_reward(ref_probs: Tensor, rewards: Tensor) -> Tensor:
    """The best reward among the actions π_ref can take, (..., 1): no π* reaches an action π_ref rules out."""
    return torch.where(ref_probs > 0, rewards, -math.inf).amax(-1, keepdim=True)  # (..., 1)


def _argmax_policy(ref_probs: Tensor, rewards: Tensor) -> Tensor:
    """π_ref restricted to its highest-reward actions and renormalised, (..., A): π*_β in the limit β → 0."""
    best = (ref_probs > 0) & (rewards == _max_supported_reward(ref_probs, rewards))  # (..., A)
    mass = torch.where(best, ref_probs, 0.0)  # (..., A)
    return mass / mass.sum(-1, keepdim=True)  # (..., A)


def kl_regularized_optimum(ref_probs: TensorLike, rewards: TensorLike, beta: float) -> Tensor:
    """The policy that maximises eq:rlhf_opt_eq: π*(a) = π_ref(a)·exp(r(a)/β) / Z (eq:dpo_opt_policy).

    Returns π*, shape (..., A). As β → 0 it puts all mass on the highest-reward actions
    that π_ref supports; as β → ∞ it returns π_ref itself.
    """
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    logits, _ = _tilted_logits(ref_probs, rewards, _beta(beta))  # (..., A)
    return torch.softmax(logits, -1)  # (..., A)


def optimal_value(ref_probs: TensorLike, rewards: TensorLike, beta: float) -> Tensor:
    """max_π J(π) of eq:rlhf_opt_eq in closed form: β·log Σ_a π_ref(a)·exp(r(a)/β) = β·log Z.

    It equals ``regularized_objective(kl_regularized_optimum(...), ...)``, because plugging
    π* into eq:rlhf_opt_eq makes every r(a) − β·log(π*(a)/π_ref(a)) equal β·log Z.
    Returns shape (...).
    """
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    beta = _beta(beta)
    logits, max_reward = _tilted_logits(ref_probs, rewards, beta)  # (..., A), (..., 1)
    return max_reward.squeeze(-1) + beta * torch.logsumexp(logits, -1)  # (...)


def reward_kl_frontier(ref_probs: TensorLike, rewards: TensorLike, betas: TensorLike) -> tuple[Tensor, Tensor]:
    """The reward-versus-KL trade-off that β controls in eq:rlhf_opt_eq.

    For each β in the 1-D ``betas``, takes the optimum π*_β and returns ``(kl, reward)``:
    D_KL(π*_β ‖ π_ref) and E_{π*_β}[r], each of shape (len(betas), ...). Both grow as β
    shrinks: every extra unit of reward costs KL.
    """
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    if isinstance(betas, numbers.Real):
        raise TypeError("betas must be a 1-D sequence of β values, e.g. torch.logspace(-2, 1, 20)")
    optima = [kl_regularized_optimum(ref_probs, rewards, beta) for beta in betas]  # each (..., A)
    kl = torch.stack([kl_divergence(optimum, ref_probs) for optimum in optima])  # (len(betas), ...)
    reward = torch.stack([expected_reward(optimum, rewards) for optimum in optima])  # (len(betas), ...)
    return kl, reward


def beta_for_kl_budget(ref_probs: TensorLike, rewards: TensorLike, kl_budget: float, *,
                       tol: float = 1e-12, max_iter: int = 200) -> float:
    """The β whose optimum π*_β spends exactly ``kl_budget`` nats of KL from π_ref (eq:rlhf_opt_eq).

    Takes a single prompt: 1-D ``ref_probs`` and ``rewards`` of shape (A,); loop for a batch.
    D_KL(π*_β ‖ π_ref) falls monotonically from its maximum (β → 0) to 0 (β → ∞), so
    bisection on log β finds it; the search stops once the KL is within ``tol`` of the
    budget. Returns β as a float.
    """
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    _check_one_prompt("beta_for_kl_budget", ref_probs, rewards)
    kl_budget = _real(kl_budget, "kl_budget")
    if not kl_budget > 0:
        raise ValueError(f"kl_budget must be > 0 nats, got {kl_budget}; a zero budget means π = π_ref (β → ∞)")
    ref_probs, rewards = ref_probs.double(), rewards.double()  # float32 cannot resolve the KL to tol
    max_kl = _kl(_argmax_policy(ref_probs, rewards), ref_probs).item()  # what every β → 0 approaches
    if kl_budget >= max_kl:
        raise ValueError(f"kl_budget={kl_budget:.6g} nats is out of reach: the most KL any β can spend is "
                         f"{max_kl:.6g} nats, by the argmax policy that every β → 0 approaches; "
                         f"ask for less than {max_kl:.6g}")
    # log β from about −690 to 690 spans every β float64 can hold; ~50 halvings reach float precision.
    low, high = math.log(1e-300), math.log(1e300)
    for _ in range(max_iter):
        log_beta = (low + high) / 2
        kl = _kl(kl_regularized_optimum(ref_probs, rewards, math.exp(log_beta)), ref_probs).item()
        if abs(kl - kl_budget) <= tol:
            break
        low, high = (log_beta, high) if kl > kl_budget else (low, log_beta)  # too much KL: raise β
    return math.exp(log_beta)


def max_kl_budget(ref_probs: TensorLike, rewards: TensorLike) -> Tensor:
    """The most KL any β spends in eq:rlhf_opt_eq: D_KL(π*_{β→0} ‖ π_ref) = −log π_ref(best actions).

    As β → 0 the optimum becomes π_ref restricted to its highest-reward actions: of all
    the policies with the highest reward, the one closest to π_ref, so a bigger budget
    buys nothing. Returns nats, shape (...).
    """
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    return _kl(_argmax_policy(ref_probs, rewards), ref_probs)  # (...)


def best_policy_within_kl(ref_probs: TensorLike, rewards: TensorLike, kl_budget: float) -> tuple[Tensor, float]:
    """The policy with the most reward among those within ``kl_budget`` nats of π_ref, and the β that prices it.

    The constrained problem max E_π[r] subject to D_KL(π ‖ π_ref) ≤ budget is solved by the
    optimum π*_β of eq:rlhf_opt_eq that spends the whole budget (:func:`beta_for_kl_budget`):
    any π with no more KL earns no more reward, since E_π[r] − β·KL(π) ≤ E_π*[r] − β·KL(π*).
    So the reward-KL frontier is the best reward at each KL. A zero budget leaves π_ref
    (β = inf); a budget of :func:`max_kl_budget` or more buys the argmax policy (β = 0.0).
    Takes one prompt, (A,) inputs; returns ``(policy (A,), beta)``.
    """
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    _check_one_prompt("best_policy_within_kl", ref_probs, rewards)
    kl_budget = _real(kl_budget, "kl_budget")
    if not kl_budget >= 0:
        raise ValueError(f"kl_budget must be >= 0 nats, got {kl_budget}; it is how far π may move from π_ref")
    if kl_budget == 0:
        return ref_probs, math.inf
    if kl_budget >= max_kl_budget(ref_probs.double(), rewards.double()).item():  # as beta_for_kl_budget sees it
        return _argmax_policy(ref_probs, rewards), 0.0
    beta = beta_for_kl_budget(ref_probs, rewards, kl_budget)
    return kl_regularized_optimum(ref_probs, rewards, beta), beta


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


def _bandit_record(probs: Tensor, ref_probs: Tensor, rewards: Tensor, beta: float, optimum: Tensor) -> Tensor:
    """One row of BanditRun.history: (objective, kl, expected_reward, tv_to_optimum), shape (4,)."""
    kl, reward = _kl(probs, ref_probs), (probs * rewards).sum()
    return torch.stack([reward - beta * kl, kl, reward, (probs - optimum).abs().sum() / 2])


def _reinforce_surrogate(logits: Tensor, ref_probs: Tensor, rewards: Tensor, beta: float, num_samples: int,
                         generator: torch.Generator) -> Tensor:
    """A scalar whose gradient is the score-function (REINFORCE) estimate of ∇_θ J, eq:rlhf_opt_eq.

    Each sampled action earns the regularized reward R(a) = r(a) − β·(log π_θ(a) − log π_ref(a)).
    Its mean over samples estimates both terms of J, so the KL's gradient is estimated from
    samples too (as with a language model, where the exact KL is a sum over all texts). R is
    held constant: the gradient it would add, −β·E_π[∇ log π], is zero since Σ_a ∇π(a) = 0.

    Subtracting the mean R of the batch (a baseline) keeps the estimate unbiased, by the same
    identity, but removes the part of R that all actions share, which would otherwise scale
    the noise of ∇ log π(a). At π* every R(a) equals β·log Z, so the noise vanishes there.
    """
    log_probs = torch.log_softmax(logits, -1)  # (A,)
    actions = torch.multinomial(log_probs.detach().exp(), num_samples, replacement=True,
                                generator=generator)  # (N,)
    sampled_log_probs = log_probs[actions]  # (N,)
    regularized_rewards = rewards[actions] - beta * (sampled_log_probs.detach() - ref_probs[actions].log())  # (N,)
    advantages = regularized_rewards - regularized_rewards.mean()  # (N,)
    # Dividing by N − 1 rather than N makes the mean baseline exactly unbiased (it equals leave-one-out).
    return (advantages * sampled_log_probs).sum() / (num_samples - 1)


def train_bandit(ref_probs: TensorLike, rewards: TensorLike, beta: float,
                 method: Literal["exact", "reinforce"] = "exact", *, steps: int = 2000, lr: float = 0.1,
                 num_samples: int = 256, seed: int = 0) -> BanditRun:
    """Maximise eq:rlhf_opt_eq for one prompt with a softmax policy π_θ = softmax(θ), starting at θ = log π_ref.

    ``method="exact"`` ascends the exact gradient of :func:`regularized_objective`;
    ``"reinforce"`` ascends a REINFORCE estimate from ``num_samples`` sampled actions per
    step (see :func:`_reinforce_surrogate`). Both use Adam with a step size decaying
    linearly from ``lr`` to 0, and both reach the closed-form π* for 1-D ``ref_probs`` and
    ``rewards`` (every ref prob > 0). Returns a :class:`BanditRun`.
    """
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    beta = _beta(beta)
    _check_one_prompt("train_bandit", ref_probs, rewards)
    if not (ref_probs > 0).all():
        raise ValueError("train_bandit needs ref_probs > 0 everywhere: θ starts at log π_ref, and a softmax "
                         "policy cannot hold a zero; drop the impossible actions first")
    if method not in ("exact", "reinforce"):
        raise ValueError(f"method must be 'exact' or 'reinforce', got {method!r}")
    if steps < 1 or num_samples < 2:
        raise ValueError(f"need steps >= 1 and num_samples >= 2 (the baseline needs two samples), "
                         f"got steps={steps}, num_samples={num_samples}")
    optimum = kl_regularized_optimum(ref_probs, rewards, beta)  # (A,)
    logits = ref_probs.log().requires_grad_()  # (A,) θ; RLHF starts from the reference model
    optimizer = torch.optim.Adam([logits], lr=lr, maximize=True)
    # A constant step leaves Adam hovering around π*; decaying it to 0 lets the policy settle.
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=steps)
    generator = torch.Generator().manual_seed(seed)
    records = []
    for _ in range(steps):
        probs = torch.softmax(logits, -1)  # (A,)
        records.append(_bandit_record(probs.detach(), ref_probs, rewards, beta, optimum))
        if method == "exact":
            surrogate = _objective(probs, ref_probs, rewards, beta)
        else:
            surrogate = _reinforce_surrogate(logits, ref_probs, rewards, beta, num_samples, generator)
        optimizer.zero_grad()
        surrogate.backward()
        optimizer.step()
        schedule.step()
    probs = torch.softmax(logits.detach(), -1)  # (A,)
    records.append(_bandit_record(probs, ref_probs, rewards, beta, optimum))
    history = dict(zip(("objective", "kl", "expected_reward", "tv_to_optimum"), torch.stack(records).unbind(-1)))
    return BanditRun(probs=probs, optimum=optimum, history=history)


@dataclass(frozen=True)
class Corridor:
    """The smallest MDP with the parts RLHF drops: states that actions change, and delayed reward.

    ``num_cells`` cells in a row; actions LEFT and RIGHT move one cell (walls at both ends).
    Reaching the last cell (the goal) pays ``goal_reward`` and ends the episode. Unlike the
    bandit of eq:rl_opt_int, an action's worth depends on where it leads, so eq:rl_opt needs
    the discount γ and the Bellman recursion of :func:`value_iteration`.
    """

    num_cells: int = 5
    goal_reward: float = 1.0

    def __post_init__(self) -> None:
        if self.num_cells < 2:
            raise ValueError(f"a Corridor needs num_cells >= 2 (a start and a goal), got {self.num_cells}")

    @property
    def goal(self) -> int:
        return self.num_cells - 1

    def transitions(self) -> tuple[Tensor, Tensor]:
        """The deterministic dynamics s_{t+1} = next_state[s, a] and reward r(s, a), both (S, A).

        The goal is absorbing and pays nothing, the usual way an MDP encodes "the episode is over".
        """
        cells = torch.arange(self.num_cells)[:, None]  # (S, 1)
        moves = torch.tensor([-1, 1])  # (A,) indexed by LEFT, RIGHT
        next_state = (cells + moves).clamp(0, self.goal)  # (S, A)
        next_state[self.goal] = self.goal
        arrives = (next_state == self.goal) & (cells != self.goal)  # (S, A)
        return next_state, arrives.to(torch.get_default_dtype()) * self.goal_reward


def value_iteration(corridor: Corridor, gamma: float, *, tol: float = 1e-10,
                    max_sweeps: int = 10_000) -> tuple[Tensor, Tensor]:
    """The optimal values of eq:rl_opt on a Corridor, by the Bellman backup V(s) = max_a [r(s, a) + γ·V(s')].

    Returns ``(values, policy)``, both (S,): V*(s), the best discounted return from s (0 at
    the goal, where the episode has ended), and a greedy action per state. With γ = 1 every
    path to the goal is worth the same, so ties make the greedy policy arbitrary: γ < 1 is
    what makes reaching the reward sooner better.
    """
    gamma = _gamma(gamma)
    next_state, reward = corridor.transitions()  # (S, A), (S, A)
    values = torch.zeros(corridor.num_cells, dtype=reward.dtype)  # (S,)
    for _ in range(max_sweeps):
        q_values = reward + gamma * values[next_state]  # (S, A)
        values, previous = q_values.max(-1).values, values  # (S,)
        if (values - previous).abs().max() <= tol:
            break
    return values, q_values.argmax(-1)


def rollout(corridor: Corridor, policy: TensorLike, start: int = 0, max_steps: int = 100) -> Tensor:
    """Follow ``policy`` (one action per state, (S,)) from ``start``; return the rewards r_t, shape (T,).

    The episode ends at the goal or after ``max_steps``. ``discounted_return(rollout(...), γ)``
    of the greedy policy from :func:`value_iteration` reproduces V*(start).
    """
    if not 0 <= start < corridor.goal:
        raise ValueError(f"start must be a cell in [0, {corridor.goal}), got {start}; the goal ends the episode")
    policy = torch.as_tensor(policy)
    if tuple(policy.shape) != (corridor.num_cells,):
        raise ValueError(f"policy needs one action per cell, shape ({corridor.num_cells},), "
                         f"got {tuple(policy.shape)}")
    next_state, reward = corridor.transitions()  # (S, A), (S, A)
    state, rewards = start, []
    for _ in range(max_steps):
        action = policy[state]
        rewards.append(reward[state, action])
        state = next_state[state, action].item()
        if state == corridor.goal:
            break
    return torch.stack(rewards)  # (T,)


# --- RLHF as a bandit over completions ----------------------------------------------------------------------------


def completion_bandit(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, prompt: str,
                      k: int = 32, seed: int = 0, max_new_tokens: int = 24) -> tuple[list[str], Tensor, Tensor]:
    """Turn one world prompt into the bandit of eq:rl_opt_int: sampled completions are the arms.

    Samples ``k`` completions of ``prompt`` from ``model`` (temperature 1, so they follow π_ref)
    and keeps each distinct non-empty sentence once: a sentence sampled twice is one arm, not
    two. π_ref over the arms is the model's probability of answering exactly that sentence and
    stopping, log π(y | x) from :func:`~rlhf_edu.logprobs.sequence_logprobs`, renormalised over
    the arms by a softmax; the rewards are the world's gold reward. Returns ``(completions,
    ref_probs, rewards)``, arms sorted from most to least likely, with (A,) float64 tensors.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}: a bandit needs at least two arms to choose between")
    samples = generate_completions(model, tokenizer, [prompt] * k, max_new_tokens=max_new_tokens, seed=seed)
    completions = [completion for completion in dict.fromkeys(samples) if completion.strip()]
    if len(completions) < 2:
        raise ValueError(f"{k} samples of {prompt!r} hold {len(completions)} distinct non-empty completion(s), "
                         "but a bandit needs two arms: raise k or pick a prompt the model answers in more ways")
    logps = completion_logprobs(model, tokenizer, [prompt] * len(completions), completions)  # (A,)
    ref_probs = torch.softmax(logps.double(), -1)  # (A,) π(y | x, y is one of the arms)
    rewards = torch.tensor(world.gold_reward([prompt] * len(completions), completions), dtype=torch.float64)  # (A,)
    order = ref_probs.argsort(descending=True, stable=True)  # (A,)
    return [completions[i] for i in order], ref_probs[order], rewards[order]


# --- pictures -----------------------------------------------------------------------------------------------------

FRONTIER_BETAS = torch.logspace(-3, 3, 241, dtype=torch.float64)  # wide enough to reach both ends of the frontier


def plot_arms(labels: Sequence[str], policies: dict[str, TensorLike], rewards: TensorLike,
              ax: Axes | None = None) -> Figure:
    """Grouped horizontal bars: each policy's probability of each arm, one row per arm, the first on top.

    ``policies`` maps a legend name to (A,) probabilities; each row is labelled with its arm
    and reward, so the bars show where a policy moves mass. Returns the figure.
    """
    rewards = torch.as_tensor(rewards).tolist()
    if any(len(torch.as_tensor(probs)) != len(labels) for probs in policies.values()) or len(rewards) != len(labels):
        raise ValueError(f"give one label, one reward and one probability per policy for each of the {len(labels)} "
                         "arms: every policy and the rewards must be as long as labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.12 * len(labels) * (len(policies) + 1) + 1.2))
    rows = torch.arange(len(labels) - 1, -1, -1)  # (A,) the first arm on top
    height = 0.8 / len(policies)
    for i, (name, probs) in enumerate(policies.items()):
        ax.barh(rows + 0.4 - height * (i + 0.5), torch.as_tensor(probs).tolist(), height=height, label=name)
    ax.set_yticks(rows, [f"{label}  (r = {reward:.2f})" for label, reward in zip(labels, rewards)],
                  fontsize=8, family="monospace")
    ax.set(xlabel="probability", xlim=(0, 1))
    ax.legend(fontsize=8, loc="lower right")
    return ax.figure


def _draw_frontier(ax: Axes, ref_probs: TensorLike, rewards: TensorLike, betas: TensorLike | None) -> None:
    """The reward-KL frontier of π*_β on ``ax``, with the rewards of π_ref and of the best arm as references."""
    ref_probs, rewards = _validated({"ref_probs": ref_probs}, {"rewards": rewards})
    kl, reward = reward_kl_frontier(ref_probs, rewards, FRONTIER_BETAS if betas is None else betas)  # (N,), (N,)
    ax.plot(kl, reward, color="C7", label="frontier: π*_β over β")
    ax.axhline(expected_reward(ref_probs, rewards).item(), color="C0", ls=":", lw=1, label="E[r] under π_ref")
    ax.axhline(_max_supported_reward(ref_probs, rewards).max().item(), color="C2", ls="--", lw=1, label="best arm")
    ax.set(xlabel="KL(π* ‖ π_ref)  (nats)", ylabel="E_π*[r]")


def plot_kl_regularized_optimum(labels: Sequence[str], ref_probs: TensorLike, rewards: TensorLike, beta: float,
                                betas: TensorLike | None = None) -> Figure:
    """π_ref against π*_β arm by arm (left), and where π*_β sits on the reward-KL frontier (right).

    The title gives E_π*[r], D_KL(π* ‖ π_ref) and J(π*) of eq:rlhf_opt_eq; ``betas`` sets the
    frontier's β grid (default :data:`FRONTIER_BETAS`). Returns the figure.
    """
    optimum = kl_regularized_optimum(ref_probs, rewards, beta)  # (A,)
    kl, reward = kl_divergence(optimum, ref_probs).item(), expected_reward(optimum, rewards).item()
    fig, (bars, frontier) = plt.subplots(1, 2, figsize=(13, 0.5 * len(labels) + 2),
                                         gridspec_kw={"width_ratios": (3, 2)})
    plot_arms(labels, {"π_ref": ref_probs, f"π* (β = {beta:.3g})": optimum}, rewards, ax=bars)
    bars.set_title(f"β = {beta:.3g}:  E[r] = {reward:.3f},  KL = {kl:.3f} nats,  J = {reward - beta * kl:.3f}")
    _draw_frontier(frontier, ref_probs, rewards, betas)
    frontier.plot([kl], [reward], "o", color="C3", label=f"π* at β = {beta:.3g}")
    frontier.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_kl_budget(ref_probs: TensorLike, rewards: TensorLike, kl_budget: float,
                   betas: TensorLike | None = None) -> Figure:
    """The reward-KL frontier with a KL budget shaded, and the best reward within it (:func:`best_policy_within_kl`).

    The title names the β whose optimum spends the budget. Returns the figure.
    """
    policy, beta = best_policy_within_kl(ref_probs, rewards, kl_budget)  # (A,), float
    kl, reward = kl_divergence(policy, ref_probs).item(), expected_reward(policy, rewards).item()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    _draw_frontier(ax, ref_probs, rewards, betas)
    ax.axvspan(0, kl_budget, color="C1", alpha=0.15, label=f"budget: KL ≤ {kl_budget:.2f} nats")
    ax.plot([kl], [reward], "o", color="C3", label="best policy within budget")
    ax.set_xlim(0, 1.05 * max(kl_budget, max_kl_budget(ref_probs, rewards).item()))
    ax.set_title(f"budget {kl_budget:.2f} nats: best E[r] = {reward:.3f}, reached by β = {beta:.3g}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_bandit_runs(runs: dict[str, BanditRun], optimal: float | None = None) -> Figure:
    """Training curves of :func:`train_bandit` runs: total variation to π* (log scale) and J(π_θ) per step.

    ``optimal`` (e.g. :func:`optimal_value`) draws max_π J as a dashed line. J is drawn against
    a log-scaled step count, since it climbs within the first few dozen steps. Returns the figure.
    """
    fig, (distance, objective) = plt.subplots(1, 2, figsize=(11, 3.2))
    for name, run in runs.items():
        distance.semilogy(run.history["tv_to_optimum"], label=name)
        objective.semilogx(range(1, len(run.history["objective"]) + 1), run.history["objective"], label=name)
    if optimal is not None:
        objective.axhline(optimal, color="black", ls="--", lw=1, label="max J (closed form)")
    distance.set(xlabel="step", ylabel="TV(π_θ, π*)", title="distance to the closed-form optimum")
    objective.set(xlabel="step + 1", ylabel="J(π_θ)", title="regularised objective eq:rlhf_opt_eq")
    distance.legend(fontsize=8)
    objective.legend(fontsize=8)
    fig.tight_layout()
    return fig
