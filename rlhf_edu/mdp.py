"""The full RL objective on the smallest MDP with transitions and discounting, from "Training Overview" (chapter 4).

Chapter 4 starts from the standard RL objective, a discounted sum of rewards along a
trajectory whose states evolve with the agent's actions,

    J(π) = E_τ[Σ_t γ^t r(s_t, a_t)].                                  eq:rl_opt

This module makes it runnable on a :class:`Corridor`: :func:`value_iteration` finds the
optimal values by the Bellman recursion, :func:`run_episode` follows a policy and records
its rewards, and :func:`discounted_return` adds them up as eq:rl_opt does. RLHF then drops
the transitions and the discount, which leaves the bandit of :mod:`rlhf_edu.objective`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .core.validation import check_int
from .objective import TensorLike, as_real, as_tensors

LEFT, RIGHT = 0, 1  # the two actions of a Corridor


def discounted_return(rewards: TensorLike, gamma: float) -> Tensor:
    """Σ_t γ^t r_t, the quantity inside the expectation of eq:rl_opt.

    ``rewards`` holds one trajectory's per-step rewards r(s_t, a_t) along the last dim,
    (..., T). Returns the discounted return of each trajectory, shape (...).
    """
    (rewards,) = as_tensors(rewards=rewards)
    gamma = as_gamma(gamma)
    discounts = gamma ** torch.arange(rewards.shape[-1], dtype=rewards.dtype)  # (T,); 0.0 ** 0 = 1
    return (discounts * rewards).sum(-1)  # (...)


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
        check_int(self.num_cells, "num_cells", low=2, fix="a Corridor needs a start and a goal")

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


def value_iteration(
    corridor: Corridor, gamma: float, *, tol: float = 1e-10, max_sweeps: int = 10_000
) -> tuple[Tensor, Tensor]:
    """The optimal values of eq:rl_opt on a Corridor, by the Bellman backup V(s) = max_a [r(s, a) + γ·V(s')].

    Returns ``(values, policy)``, both (S,): V*(s), the best discounted return from s (0 at
    the goal, where the episode has ended), and a greedy action per state. With γ = 1 every
    path to the goal is worth the same, so ties make the greedy policy arbitrary: γ < 1 is
    what makes reaching the reward sooner better.
    """
    gamma = as_gamma(gamma)
    next_state, reward = corridor.transitions()  # (S, A), (S, A)
    values = torch.zeros(corridor.num_cells, dtype=reward.dtype)  # (S,)
    for _ in range(max_sweeps):
        q_values = reward + gamma * values[next_state]  # (S, A)
        values, previous = q_values.max(-1).values, values  # (S,)
        if (values - previous).abs().max() <= tol:
            break
    return values, q_values.argmax(-1)


def run_episode(corridor: Corridor, policy: TensorLike, start: int = 0, max_steps: int = 100) -> Tensor:
    """Follow ``policy`` (one action per state, (S,)) from ``start``; return the rewards r_t, shape (T,).

    The episode ends at the goal or after ``max_steps``. ``discounted_return(run_episode(...), γ)``
    of the greedy policy from :func:`value_iteration` reproduces V*(start).
    """
    if not 0 <= start < corridor.goal:
        raise ValueError(f"start must be a cell in [0, {corridor.goal}), got {start}; the goal ends the episode")
    check_int(max_steps, "max_steps", low=1, fix="an episode takes at least one step")
    policy = torch.as_tensor(policy)
    if tuple(policy.shape) != (corridor.num_cells,):
        raise ValueError(f"policy needs one action per cell, shape ({corridor.num_cells},), got {tuple(policy.shape)}")
    next_state, reward = corridor.transitions()  # (S, A), (S, A)
    state, rewards = start, []
    for _ in range(max_steps):
        action = policy[state]
        rewards.append(reward[state, action])
        state = next_state[state, action].item()
        if state == corridor.goal:
            break
    return torch.stack(rewards)  # (T,)


def as_gamma(gamma: float) -> float:
    """γ as a float, or an error if it is not a discount factor in [0, 1]."""
    return as_real(gamma, "gamma", low=0, high=1, fix="γ is the per-step discount, try 0.99")
