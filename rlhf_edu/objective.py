"""The KL-regularised objective of RLHF, solved exactly on a bandit, from "Training Overview" (chapter 4).

RLHF strips the RL objective of :mod:`rlhf_edu.mdp` down to one step: the state (prompt)
comes from a dataset, the action is the whole completion, and a reward model scores that
completion once. No transitions, no discount, just a bandit per prompt,

    J(π) = E_{a~π(·|s)}[r_θ(s, a)].                                   eq:rl_opt_int

To stop the policy from drifting away from the model it started from, RLHF subtracts a
KL penalty,

    J(π) = E_{a~π}[r_θ(s, a)] − β·D_KL(π^RL(·|s) ‖ π^ref(·|s)).        eq:rlhf_opt_eq

With a handful of actions everything here is exact: the expectation is a sum over
actions, the optimum has the closed form π*(a) ∝ π_ref(a)·exp(r(a)/β) (eq:dpo_opt_policy
in the Direct Alignment chapter), and β sets how much of the "KL budget" is spent.

The module holds, in the chapter's order:

- the objective's pieces: :func:`expected_reward` (eq:rl_opt_int), :func:`kl_divergence`
  and :func:`regularized_objective` (eq:rlhf_opt_eq);
- the closed-form optimum: :func:`kl_regularized_optimum`, :func:`optimal_value`, and its
  β → 0 limit :func:`argmax_policy`;
- what β buys: :func:`reward_kl_frontier`, :func:`max_kl_budget`, :func:`beta_for_kl_budget`
  and :func:`best_policy_within_kl`;
- pictures: :func:`plot_arms`, :func:`plot_reward_kl_frontier`,
  :func:`plot_kl_regularized_optimum` and :func:`plot_kl_budget`;
- at the end, the argument checks that every function above calls in its first line
  (:func:`as_tensors`, :func:`as_beta`, :func:`as_real`, :func:`check_one_prompt`), so that
  ``rlhf_edu.show(fn)`` shows the equation, not its guard rails.

Learning π* instead of computing it, and arms that are real sentences, are in
:mod:`rlhf_edu.bandit`.

Conventions: every function takes torch tensors (numpy arrays and lists are converted);
probabilities and rewards index actions along the LAST dimension, and any leading
dimensions index prompts. Results keep the floating dtype of the inputs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from .core.validation import check_distribution, check_number

TensorLike = Tensor | np.ndarray | Sequence

VALUE_NAMES = ("rewards", "logits")  # the inputs of as_tensors that are real numbers, not probabilities
FRONTIER_BETAS = torch.logspace(-3, 3, 241, dtype=torch.float64)  # wide enough to reach both ends of the frontier


# --- the objective, eq:rl_opt_int and eq:rlhf_opt_eq ---------------------------------------------------------------


def expected_reward(probs: TensorLike, rewards: TensorLike) -> Tensor:
    """E_{a~π}[r(a)] = Σ_a π(a)·r(a), the bandit objective eq:rl_opt_int. Returns shape (...)."""
    probs, rewards = as_tensors(probs=probs, rewards=rewards)
    return (probs * rewards).sum(-1)  # (...)


def kl_divergence(p: TensorLike, q: TensorLike) -> Tensor:
    """Exact D_KL(p ‖ q) = Σ_a p(a) log(p(a) / q(a)) over the last dim, the penalty in eq:rlhf_opt_eq.

    This is the definition in the Regularization chapter (eq:kl_distance_regularization),
    summed over every action rather than estimated from samples. Returns the KL in nats,
    shape (...): 0 when p == q, and +inf where p puts mass on an action that q rules out.
    """
    p, q = as_tensors(p=p, q=q)
    # xlogy(0, x) = 0 is the convention 0·log 0 = 0; xlogy(p > 0, 0) = -inf makes the KL +inf.
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)  # (...)


def regularized_objective(probs: TensorLike, ref_probs: TensorLike, rewards: TensorLike, beta: float) -> Tensor:
    """J(π) = E_π[r] − β·D_KL(π ‖ π_ref), eq:rlhf_opt_eq, for the policy ``probs``. Returns shape (...)."""
    probs, ref_probs, rewards = as_tensors(probs=probs, ref_probs=ref_probs, rewards=rewards)
    beta = as_beta(beta)
    return expected_reward(probs, rewards) - beta * kl_divergence(probs, ref_probs)  # (...)


# --- the closed-form optimum ---------------------------------------------------------------------------------------


def max_supported_reward(ref_probs: TensorLike, rewards: TensorLike) -> Tensor:
    """The best reward among the actions π_ref can take, shape (..., 1).

    No π* of eq:rlhf_opt_eq reaches an action that π_ref rules out, so this, not max r,
    is the most reward any β can buy.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    return torch.where(ref_probs > 0, rewards, -math.inf).amax(-1, keepdim=True)  # (..., 1)


def kl_regularized_optimum(ref_probs: TensorLike, rewards: TensorLike, beta: float) -> Tensor:
    """The policy that maximises eq:rlhf_opt_eq: π*(a) = π_ref(a)·exp(r(a)/β) / Z (eq:dpo_opt_policy).

    Returns π*, shape (..., A). As β → 0 it puts all mass on the highest-reward actions
    that π_ref supports; as β → ∞ it returns π_ref itself.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    beta = as_beta(beta)
    # Subtracting the best reward leaves π* unchanged (softmax ignores a constant shift) but keeps r/β
    # from overflowing as β → 0: the best actions keep logit log π_ref and the rest go to −inf.
    max_reward = max_supported_reward(ref_probs, rewards)  # (..., 1)
    # A β too small for the dtype divides 0 by 0 on the best actions: their shift is 0, not NaN.
    logits = ref_probs.log() + ((rewards - max_reward) / beta).nan_to_num(nan=0.0)  # (..., A)
    return torch.softmax(logits, -1)  # (..., A)


def optimal_value(ref_probs: TensorLike, rewards: TensorLike, beta: float) -> Tensor:
    """max_π J(π) of eq:rlhf_opt_eq in closed form: β·log Σ_a π_ref(a)·exp(r(a)/β) = β·log Z.

    It equals ``regularized_objective(kl_regularized_optimum(...), ...)``, because plugging
    π* into eq:rlhf_opt_eq makes every r(a) − β·log(π*(a)/π_ref(a)) equal β·log Z.
    Returns shape (...).
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    beta = as_beta(beta)
    max_reward = max_supported_reward(ref_probs, rewards)  # (..., 1); the same shift as in kl_regularized_optimum
    logits = ref_probs.log() + (rewards - max_reward) / beta  # (..., A)
    return max_reward.squeeze(-1) + beta * torch.logsumexp(logits, -1)  # (...)


def argmax_policy(ref_probs: TensorLike, rewards: TensorLike) -> Tensor:
    """π*_β of eq:rlhf_opt_eq in the limit β → 0: π_ref restricted to its highest-reward actions, renormalised.

    Ties split the mass in proportion to π_ref. Returns shape (..., A).
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    best = (ref_probs > 0) & (rewards == max_supported_reward(ref_probs, rewards))  # (..., A)
    mass = torch.where(best, ref_probs, 0.0)  # (..., A)
    return mass / mass.sum(-1, keepdim=True)  # (..., A)


# --- what β buys: the reward-KL frontier and the KL budget ---------------------------------------------------------


def reward_kl_frontier(ref_probs: TensorLike, rewards: TensorLike, betas: TensorLike) -> tuple[Tensor, Tensor]:
    """The reward-versus-KL trade-off that β controls in eq:rlhf_opt_eq.

    For each β in the 1-D ``betas``, takes the optimum π*_β and returns ``(kl, reward)``:
    D_KL(π*_β ‖ π_ref) and E_{π*_β}[r], each of shape (len(betas), ...). Both grow as β
    shrinks: every extra unit of reward costs KL.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    if isinstance(betas, numbers.Real) or (isinstance(betas, (Tensor, np.ndarray)) and betas.ndim != 1):
        got = f"the single number {betas}" if isinstance(betas, numbers.Real) else f"{betas!r}"
        raise TypeError(f"betas must be a 1-D sequence of β values, got {got}; try torch.logspace(-2, 1, 20)")
    optima = [kl_regularized_optimum(ref_probs, rewards, beta) for beta in betas]  # each (..., A)
    if not optima:
        raise ValueError("betas is empty: pass at least one β, e.g. torch.logspace(-2, 1, 20)")
    kl = torch.stack([kl_divergence(optimum, ref_probs) for optimum in optima])  # (len(betas), ...)
    reward = torch.stack([expected_reward(optimum, rewards) for optimum in optima])  # (len(betas), ...)
    return kl, reward


def max_kl_budget(ref_probs: TensorLike, rewards: TensorLike) -> Tensor:
    """The most KL any β spends in eq:rlhf_opt_eq: D_KL(π*_{β→0} ‖ π_ref) = −log π_ref(best actions).

    As β → 0 the optimum becomes :func:`argmax_policy`: of all the policies with the highest
    reward, the one closest to π_ref, so a bigger budget buys nothing. Returns nats, shape (...).
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    return kl_divergence(argmax_policy(ref_probs, rewards), ref_probs)  # (...)


def beta_for_kl_budget(
    ref_probs: TensorLike, rewards: TensorLike, kl_budget: float, *, tol: float = 1e-12, max_iter: int = 200
) -> float:
    """The β whose optimum π*_β spends exactly ``kl_budget`` nats of KL from π_ref (eq:rlhf_opt_eq).

    Takes a single prompt: 1-D ``ref_probs`` and ``rewards`` of shape (A,); loop for a batch.
    D_KL(π*_β ‖ π_ref) falls monotonically from its maximum (β → 0) to 0 (β → ∞), so
    bisection on log β finds it; the search stops once the KL is within ``tol`` of the
    budget. Returns β as a float.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    check_one_prompt("beta_for_kl_budget", ref_probs=ref_probs, rewards=rewards)
    kl_budget = as_real(
        kl_budget,
        "kl_budget",
        low=0,
        low_open=True,
        allow_inf=True,
        fix="it is in nats, and a zero budget means π = π_ref (β → ∞)",
    )
    ref_probs, rewards = ref_probs.double(), rewards.double()  # float32 cannot resolve the KL to tol
    max_kl = max_kl_budget(ref_probs, rewards).item()  # what every β → 0 approaches
    if kl_budget >= max_kl:
        raise ValueError(
            f"kl_budget={kl_budget:.6g} nats is out of reach: the most KL any β can spend is "
            f"{max_kl:.6g} nats, by the argmax policy that every β → 0 approaches; "
            f"ask for less than {max_kl:.6g}"
        )
    # log β from about −690 to 690 spans every β float64 can hold; ~50 halvings reach float precision.
    low, high = math.log(1e-300), math.log(1e300)
    for _ in range(max_iter):
        log_beta = (low + high) / 2
        kl = kl_divergence(kl_regularized_optimum(ref_probs, rewards, math.exp(log_beta)), ref_probs).item()
        if abs(kl - kl_budget) <= tol:
            break
        low, high = (log_beta, high) if kl > kl_budget else (low, log_beta)  # too much KL: raise β
    return math.exp(log_beta)


def best_policy_within_kl(ref_probs: TensorLike, rewards: TensorLike, kl_budget: float) -> tuple[Tensor, float]:
    """The policy with the most reward among those within ``kl_budget`` nats of π_ref, and the β that prices it.

    The constrained problem max E_π[r] subject to D_KL(π ‖ π_ref) ≤ budget is solved by the
    optimum π*_β of eq:rlhf_opt_eq that spends the whole budget (:func:`beta_for_kl_budget`):
    any π with no more KL earns no more reward, since E_π[r] − β·KL(π) ≤ E_π*[r] − β·KL(π*).
    So the reward-KL frontier is the best reward at each KL. A zero budget leaves π_ref
    (β = inf); a budget of :func:`max_kl_budget` or more buys the argmax policy (β = 0.0).
    Takes one prompt, (A,) inputs; returns ``(policy (A,), beta)``.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    check_one_prompt("best_policy_within_kl", ref_probs=ref_probs, rewards=rewards)
    kl_budget = as_real(kl_budget, "kl_budget", low=0, allow_inf=True, fix="it is how many nats π may move from π_ref")
    if kl_budget == 0:
        return ref_probs, math.inf
    if kl_budget >= max_kl_budget(ref_probs.double(), rewards.double()).item():  # as beta_for_kl_budget sees it
        return argmax_policy(ref_probs, rewards), 0.0
    beta = beta_for_kl_budget(ref_probs, rewards, kl_budget)
    return kl_regularized_optimum(ref_probs, rewards, beta), beta


# --- pictures -----------------------------------------------------------------------------------------------------


def plot_arms(
    labels: Sequence[str], policies: dict[str, TensorLike], rewards: TensorLike, ax: Axes | None = None
) -> Figure:
    """Grouped horizontal bars: each policy's probability of each arm, one row per arm, the first on top.

    ``policies`` maps a legend name to (A,) probabilities; each row is labelled with its arm
    and reward, so the bars show where a policy moves mass. Draws on ``ax`` when given, else
    on a new figure; returns the figure.
    """
    rewards = torch.as_tensor(rewards).tolist()
    if any(len(torch.as_tensor(probs)) != len(labels) for probs in policies.values()) or len(rewards) != len(labels):
        raise ValueError(
            f"give one label, one reward and one probability per policy for each of the {len(labels)} "
            "arms: every policy and the rewards must be as long as labels"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.12 * len(labels) * (len(policies) + 1) + 1.2))
    rows = torch.arange(len(labels) - 1, -1, -1)  # (A,) the first arm on top
    height = 0.8 / len(policies)
    for i, (name, probs) in enumerate(policies.items()):
        ax.barh(rows + 0.4 - height * (i + 0.5), torch.as_tensor(probs).tolist(), height=height, label=name)
    ax.set_yticks(
        rows,
        [f"{label}  (r = {reward:.2f})" for label, reward in zip(labels, rewards)],
        fontsize=10,
        family="monospace",
    )
    ax.set(xlabel="probability", xlim=(0, 1))
    ax.legend(fontsize=10, loc="lower right")
    return ax.figure


def plot_reward_kl_frontier(
    ref_probs: TensorLike, rewards: TensorLike, betas: TensorLike | None = None, ax: Axes | None = None
) -> Figure:
    """The reward-KL frontier of π*_β (:func:`reward_kl_frontier`), with E_π_ref[r] and the best arm's reward.

    ``betas`` sets the β grid (default :data:`FRONTIER_BETAS`). Draws on ``ax`` when given,
    else on a new figure; returns the figure.
    """
    ref_probs, rewards = as_tensors(ref_probs=ref_probs, rewards=rewards)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    kl, reward = reward_kl_frontier(ref_probs, rewards, FRONTIER_BETAS if betas is None else betas)  # (N,), (N,)
    ax.plot(kl, reward, color="C7", label="frontier: π*_β over β")
    ax.axhline(expected_reward(ref_probs, rewards).item(), color="C0", ls=":", lw=1, label="E[r] under π_ref")
    ax.axhline(max_supported_reward(ref_probs, rewards).max().item(), color="C2", ls="--", lw=1, label="best arm")
    ax.set(xlabel="KL(π* ‖ π_ref)  (nats)", ylabel="E_π*[r]")
    return ax.figure


def plot_kl_regularized_optimum(
    labels: Sequence[str],
    ref_probs: TensorLike,
    rewards: TensorLike,
    beta: float,
    betas: TensorLike | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """π_ref against π*_β arm by arm (left), and where π*_β sits on the reward-KL frontier (right).

    The title gives E_π*[r], D_KL(π* ‖ π_ref) and J(π*) of eq:rlhf_opt_eq; ``betas`` sets the
    frontier's β grid (default :data:`FRONTIER_BETAS`). Draws on the pair ``axes`` (bars,
    frontier) when given, else on a new figure; returns the figure.
    """
    optimum = kl_regularized_optimum(ref_probs, rewards, beta)  # (A,)
    kl, reward = kl_divergence(optimum, ref_probs).item(), expected_reward(optimum, rewards).item()
    bars, frontier = axes_pair(
        axes, "plot_kl_regularized_optimum", figsize=(9, 0.5 * len(labels) + 2), gridspec_kw={"width_ratios": (3, 2)}
    )
    plot_arms(labels, {"π_ref": ref_probs, f"π* (β = {beta:.3g})": optimum}, rewards, ax=bars)
    bars.set_title(f"β = {beta:.3g}:  E[r] = {reward:.3f},  KL = {kl:.3f} nats,  J = {reward - beta * kl:.3f}")
    plot_reward_kl_frontier(ref_probs, rewards, betas, ax=frontier)
    frontier.plot([kl], [reward], "o", color="C3", label=f"π* at β = {beta:.3g}")
    frontier.legend(fontsize=10, loc="lower right")
    if axes is None:  # a caller's own axes keep the caller's layout
        bars.figure.tight_layout()
    return bars.figure


def plot_kl_budget(
    ref_probs: TensorLike,
    rewards: TensorLike,
    kl_budget: float,
    betas: TensorLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The reward-KL frontier with a KL budget shaded, and the best reward within it (:func:`best_policy_within_kl`).

    The title names the β whose optimum spends the budget. Draws on ``ax`` when given, else
    on a new figure; returns the figure.
    """
    policy, beta = best_policy_within_kl(ref_probs, rewards, kl_budget)  # (A,), float
    kl, reward = kl_divergence(policy, ref_probs).item(), expected_reward(policy, rewards).item()
    owns_figure = ax is None  # a caller's own axes keep the caller's layout
    fig = plot_reward_kl_frontier(ref_probs, rewards, betas, ax=ax)
    ax = fig.axes[0] if owns_figure else ax
    ax.axvspan(0, kl_budget, color="C1", alpha=0.15, label=f"budget: KL ≤ {kl_budget:.2f} nats")
    ax.plot([kl], [reward], "o", color="C3", label="best policy within budget")
    ax.set_xlim(0, 1.05 * max(kl_budget, max_kl_budget(ref_probs, rewards).item()))
    ax.set_title(f"budget {kl_budget:.2f} nats: best E[r] = {reward:.3f}, reached by β = {beta:.3g}")
    ax.legend(fontsize=10, loc="lower right")
    if owns_figure:
        fig.tight_layout()
    return fig


def axes_pair(axes: Sequence[Axes] | None, function: str, **subplots_kw) -> tuple[Axes, Axes]:
    """``axes`` as a (left, right) pair, or the two panels of a new 1×2 figure made with ``subplots_kw``."""
    if axes is None:
        _, axes = plt.subplots(1, 2, **subplots_kw)
    if len(axes) != 2:
        raise ValueError(
            f"{function} draws two panels: pass axes as a pair, e.g. plt.subplots(1, 2)[1], got {len(axes)} axes"
        )
    return axes[0], axes[1]


# --- argument checks: each function above calls these in its first lines ---------------------------------------------


def as_tensors(**inputs: TensorLike) -> list[Tensor]:
    """Each keyword as a floating tensor, checked; returns them in the order given.

    ``rewards`` and ``logits`` must be finite; every other keyword is a probability vector:
    non-negative and summing to 1 over the last dim. All inputs must share the last (action
    or time) dim and broadcast over the leading (prompt) dims. Errors name the input and say
    how to fix it.
    """
    tensors = {name: as_tensor(value, name) for name, value in inputs.items()}
    check_shapes(tensors)
    for name, tensor in tensors.items():
        if name in VALUE_NAMES:
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} must be finite, but it contains NaN or inf")
        else:
            check_distribution(tensor, name)
    return list(tensors.values())


def as_tensor(value: TensorLike, name: str) -> Tensor:
    """``value`` as a floating tensor of at least one dim; integer inputs like rewards [0, 1] become floats."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a tensor, numpy array or list of numbers, got {type(value).__name__}"
        ) from error
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    if tensor.ndim == 0:
        raise ValueError(
            f"{name} must be at least 1-D (its last dim indexes actions or time steps), "
            f"got the scalar {tensor.item()}; wrap it in a list"
        )
    return tensor


def check_shapes(tensors: dict[str, Tensor]) -> None:
    """Refuse inputs that differ in their last (action) dim or whose leading (prompt) dims do not broadcast."""
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) == 1:  # the common case, and a training loop calls this every step
        return
    try:
        torch.broadcast_shapes(*shapes.values())
        shapes_match = len({shape[-1] for shape in shapes.values()}) == 1
    except RuntimeError:
        shapes_match = False
    if not shapes_match:
        raise ValueError(
            f"shapes do not match: {shapes}; inputs must have the same last (action) dim "
            "and broadcastable leading (prompt) dims"
        )


def as_real(value: float, name: str, **bounds) -> float:
    """``value`` as a float checked by :func:`~rlhf_edu.core.validation.check_number` with ``bounds``.

    A one-element tensor counts as its number, so that ``for beta in torch.logspace(...)`` works.
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    return check_number(value, name, **bounds)


def as_beta(beta: float) -> float:
    """β as a float, or an error if it cannot weight a KL penalty (it must be > 0 and finite)."""
    return as_real(beta, "beta", low=0, low_open=True, fix="β is the KL penalty weight, try 0.1")


def check_one_prompt(function: str, **tensors: Tensor) -> None:
    """Refuse batched inputs where ``function`` solves one prompt at a time: each tensor must be 1-D, (A,)."""
    if any(tensor.ndim != 1 for tensor in tensors.values()):
        shapes = ", ".join(f"{name} {tuple(tensor.shape)}" for name, tensor in tensors.items())
        raise ValueError(
            f"{function} takes one prompt: 1-D inputs of shape (A,), got {shapes}; call it once per prompt"
        )
