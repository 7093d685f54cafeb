"""Regularization (chapter 8): what keeps an RL-trained policy near the model it started from.

RLHF pays for reward with distance from the reference model,

    r = r_θ − β · D_KL(π(y|x) ‖ π_ref(y|x))                          (eq:kl_standard)

where the KL divergence is an expectation over completions sampled from π,

    D_KL(π ‖ π_ref) = E_{y~π}[log π(y|x) − log π_ref(y|x)]          (eq:kl_expectation)

Over a language model's texts the expectation cannot be summed, so it is estimated from
tokens sampled from π, one log-ratio at a time: :func:`kl_estimate` holds the three
estimators of Schulman's note "Approximating KL divergence" (k1, k2, k3), per token, and
:func:`reversed_k3` the k3 with its ratio the wrong way round. When the logits are at
hand, :func:`exact_token_kl` sums each position's KL over the whole vocabulary instead,
and :func:`rollout_exact_kl` does so for a :class:`~rlhf_edu.core.rollouts.Rollout`.

β itself can be held fixed (:class:`FixedKLController`) or steered toward a target KL
(:class:`AdaptiveKLController`, Ziegler et al. 2019). The chapter's other regularizers
live beside the losses they modify: InstructGPT's pretraining term (eq:objective_pretraining)
is ``ptx_coef`` of :class:`~rlhf_edu.policy_gradients.PolicyGradientConfig`, DPO's NLL term
(eq:dpo_nll) is ``rpo_alpha`` of :class:`~rlhf_edu.direct_alignment.DPOConfig`, and Llama 2's
margin loss for reward models (eq:rewardmodelingmargin) is the ``margin`` of chapter 7's
:func:`~rlhf_edu.reward_modeling.bradley_terry_loss`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from transformers import PreTrainedModel

from .core.logprobs import position_ids_from_mask, token_logprobs
from .core.rollouts import Rollout
from .core.runtime import torch_generator
from .core.validation import check_causal_lm, check_choice, check_int, check_number
from .objective import TensorLike, as_beta, as_tensors, max_supported_reward

KL_ESTIMATORS = ("k1", "k2", "k3")


# --- estimates from sampled tokens -----------------------------------------------------------------
def _check_same_shape(logps: torch.Tensor, ref_logps: torch.Tensor) -> None:
    if logps.shape != ref_logps.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and ref_logps {tuple(ref_logps.shape)} must have one shape")


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """A per-token estimate of KL(π‖π_ref) from tokens sampled from π; same shape as ``logps``.

    The penalty of eq:kl_standard is the KL of whole completions; written as an expectation
    over samples of π (eq:kl_expectation), it can be estimated from the log-probs of the
    sampled tokens alone. With log r = log π_ref(y_t) − log π(y_t) for a token y_t ~ π, the
    three estimators of Schulman's note "Approximating KL divergence" are:

    - ``"k1"`` = −log r = log π − log π_ref: unbiased, but a single sample can be negative
      and its variance is large;
    - ``"k2"`` = ½ (log r)²: always ≥ 0 and low-variance, but biased (its mean is close to the
      KL only when π is near π_ref);
    - ``"k3"`` = r − 1 − log r: k1 plus r − 1, whose mean under π is 0 (E_π[r] = 1), so still
      unbiased, and always ≥ 0 (log r ≤ r − 1), with a low variance.

    The ratio in k3 is π_ref/π, taken on samples from π. Code that writes it with π/π_ref
    estimates a different quantity (:func:`reversed_k3`). With the full logits at hand,
    :func:`exact_token_kl` needs no estimate at all.
    """
    check_choice(estimator, "estimator", KL_ESTIMATORS)
    _check_same_shape(logps, ref_logps)
    log_ratio = ref_logps - logps  # log r = log π_ref − log π
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    return log_ratio.exp() - 1 - log_ratio


def reversed_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 with its ratio inverted, ρ − 1 − log ρ with ρ = π/π_ref, per token; same shape as ``logps``.

    This is what code computes when it writes k3's ratio the other way round. On tokens
    sampled from π its mean is not KL(π‖π_ref) but

        E_π[ρ − 1 − log ρ] = Σ π²/π_ref − 1 − KL(π‖π_ref) = χ²(π‖π_ref) − KL(π‖π_ref),

    with χ²(π‖π_ref) = Σ (π − π_ref)²/π_ref, Pearson's divergence. The mean is ≥ 0 (KL ≤
    log(1 + χ²) ≤ χ²) and matches the KL to second order as π → π_ref (both are ½χ² there),
    but further away it is neither an upper nor a lower bound: it exceeds the KL when π puts
    mass where π_ref has little (χ² grows without limit there), and falls short of it when π
    drops mass that π_ref holds. It is an unbiased k3 only for the other direction,
    KL(π_ref‖π), and only on tokens sampled from π_ref.
    """
    _check_same_shape(logps, ref_logps)
    log_ratio = logps - ref_logps  # log ρ = log π − log π_ref
    return log_ratio.exp() - 1 - log_ratio


# --- the exact KL, from full logits ---------------------------------------------------------------------
def _check_logits(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(
            f"logits must be (B, T, V), one distribution per position, got shape {tuple(logits.shape)}: "
            "pass the model's logits at the completion positions"
        )
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"ref_logits {tuple(ref_logits.shape)} must have the shape of logits "
            f"{tuple(logits.shape)}: score the same tokens with a model of the same vocabulary"
        )
    if mask.shape != logits.shape[:2]:
        raise ValueError(
            f"mask {tuple(mask.shape)} must be (B, T) = {tuple(logits.shape[:2])}, one entry per "
            "position of logits: pass the completion mask of the same tokens"
        )


def exact_token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The KL of the two next-token distributions at each position, over the whole vocabulary; (B, T).

    KL(π(·|x, y_<t) ‖ π_ref(·|x, y_<t)) = Σ_v π(v)·(log π(v) − log π_ref(v))
    (eq:kl_distance_regularization, with P and Q the two next-token distributions), from
    each model's logits (B, T, V) through a log-softmax; 0 where ``mask`` is 0. Unlike
    :func:`kl_estimate` it is no estimate: it does not depend on which token was sampled
    at the position, only on the prefix before it, and it is ≥ 0 (up to float rounding).
    """
    _check_logits(logits, ref_logits, mask)
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half-precision logits are summed in float32
    logps = torch.log_softmax(logits.to(dtype), dim=-1)  # (B, T, V) log π
    ref_logps = torch.log_softmax(ref_logits.to(dtype), dim=-1)  # (B, T, V) log π_ref
    kl = (logps.exp() * (logps - ref_logps)).sum(dim=-1)  # (B, T)
    return kl * mask.to(dtype)


def sequence_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t of :func:`exact_token_kl` over each completion's positions: (B,).

    For logits read along a completion sampled from π, this is an unbiased estimate of
    the sequence-level KL(π(y|x) ‖ π_ref(y|x)) (see :func:`rollout_exact_kl`).
    """
    return exact_token_kl(logits, ref_logits, mask).sum(dim=1)


@contextlib.contextmanager
def _measuring(*models: PreTrainedModel) -> Iterator[None]:
    """Eval mode and no gradients for a measurement; each model goes back to the mode it was in."""
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)


def completion_logits(model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """The logits that predict each completion token of a rollout, (B, N, V): the positions ``token_logprobs`` reads.

    Every completion starts at column W (``rollout.prompt_width``), so the logits at
    W − 1 + t predict token t; positions are counted over real tokens only
    (:func:`~rlhf_edu.core.logprobs.position_ids_from_mask`), and only the last N + 1
    positions go through the output layer.
    """
    N = rollout.logps.shape[1]
    logits = model(
        input_ids=rollout.input_ids,
        attention_mask=rollout.attention_mask,
        position_ids=position_ids_from_mask(rollout.attention_mask),
        logits_to_keep=N + 1,
    ).logits
    return logits[:, :-1]  # (B, N, V): the last position predicts nothing that was sampled


def rollout_exact_kl(policy: PreTrainedModel, ref_model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """Σ_t KL(π(·|x, y_<t) ‖ π_ref(·|x, y_<t)) along each sampled completion: (B,), measured in eval mode, no grad.

    By the chain rule, KL(π(y|x) ‖ π_ref(y|x)) = E_{y~π}[Σ_t KL(π(·|x, y_<t) ‖ π_ref(·|x, y_<t))],
    so on completions sampled from ``policy`` at temperature 1 each row is an unbiased
    estimate of its prompt's sequence KL, as the summed k1 (log π(y|x) − log π_ref(y|x)) is.
    Each term is exact, conditioned on the sampled prefix: it is the mean of that token's
    k1 over every token π could have drawn there, so the noise of drawing the token is
    gone and only the noise of which prefixes were drawn remains. Its variance is
    typically much lower than that of the summed k1, and it is never negative (k1 can be). On a
    rollout sampled at another temperature it is still the KL of the two models'
    temperature-1 distributions at each visited prefix, but the prefixes are not π's.
    """
    check_causal_lm(policy, "policy")
    check_causal_lm(ref_model, "ref_model")
    if not isinstance(rollout, Rollout):
        raise TypeError(f"rollout must be a Rollout (from sample_rollouts), got {type(rollout).__name__}")
    with _measuring(policy, ref_model):
        logits = completion_logits(policy, rollout)  # (B, N, V)
        moved = rollout.to(next(ref_model.parameters()).device)  # pragma: no mutate (one device: .to is the identity)
        ref_logits = completion_logits(ref_model, moved).to(logits.device)  # pragma: no mutate (.to: as above)
        return sequence_kl(logits, ref_logits, rollout.mask)


# --- the estimators against the truth ------------------------------------------------------------------
ESTIMATOR_NAMES = (*KL_ESTIMATORS, "reversed k3")


def estimator_values(logps: torch.Tensor, ref_logps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every estimator on the same samples: ``{name: values}`` in :data:`ESTIMATOR_NAMES` order, shaped as ``logps``."""
    values = {name: kl_estimate(logps, ref_logps, name) for name in KL_ESTIMATORS}
    return values | {"reversed k3": reversed_k3(logps, ref_logps)}


def gaussian_estimator_table(
    shifts: Sequence[float] = (0.1, 1.0), num_samples: int = 1_000_000, seed: int = 0
) -> list[dict[str, float]]:
    """Schulman's table: q = N(0, 1) against p = N(μ, 1), from x ~ q; one row per μ in ``shifts``.

    q plays π (the sampler) and p plays π_ref, so the target is KL(q‖p) = μ²/2 in closed
    form. Each row holds ``mu``, ``kl`` and, per estimator, ``<name>/bias`` and ``<name>/std``:
    the sample mean's error and the standard deviation of one sample, both divided by the
    true KL, as in the note.
    """
    generator = torch_generator(seed)
    rows = []
    for mu in shifts:
        mu = check_number(mu, "shifts", fix="each shift μ is a real number")
        x = torch.randn(check_int(num_samples, "num_samples"), generator=generator, dtype=torch.float64)  # (S,)
        logps, ref_logps = -0.5 * x**2, -0.5 * (x - mu) ** 2  # (S,) log q, log p; the shared constant cancels
        kl = mu**2 / 2
        row = {"mu": mu, "kl": kl}
        for name, values in estimator_values(logps, ref_logps).items():
            row |= {f"{name}/bias": (values.mean().item() - kl) / kl, f"{name}/std": values.std().item() / kl}
        rows.append(row)
    return rows


def estimator_comparison(
    policy: PreTrainedModel, ref_model: PreTrainedModel, rollout: Rollout
) -> dict[str, dict[str, float]]:
    """Each estimator summed over a completion, against :func:`rollout_exact_kl` on the same sampled rows.

    ``rollout`` must be sampled from ``policy`` at temperature 1. Returns ``{name: stats}``
    for ``"exact"`` and every name in :data:`ESTIMATOR_NAMES`: ``mean`` and ``std`` of the
    per-completion values, their ``median`` and the ``values`` themselves (float64 numpy, (B,)),
    and (for the estimators) ``bias``, the mean of (estimate − exact), with ``se``, its
    standard error. Both sides are unbiased for the sequence KL when the estimator is, and
    they are paired row by row, so ``bias``/``se`` beyond ±3 is a bias, for an estimator
    whose values are not heavy-tailed; judge one that is (the reversed k3) on a robust scale
    instead: its median, or the mean of log(estimate / exact) over the rows.
    """
    exact = rollout_exact_kl(policy, ref_model, rollout)  # (B,)
    with _measuring(ref_model):
        ref_logps, _ = token_logprobs(ref_model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask)
    ref_logps = ref_logps.to(rollout.logps.device)  # pragma: no mutate (one device: .to is the identity)
    mask = rollout.mask  # (B, N)
    stats = {"exact": _summary(exact)}
    for name, values in estimator_values(rollout.logps, ref_logps).items():
        per_completion = (values * mask).sum(dim=1)  # (B,)
        error = per_completion - exact  # (B,)
        stats[name] = _summary(per_completion) | {
            "bias": error.mean().item(),
            "se": error.std().item() / len(error) ** 0.5,
        }
    return stats


def _summary(per_completion: torch.Tensor) -> dict:
    """Mean, std, median and the values (float64 numpy) of one KL estimate per completion."""
    values = per_completion.detach().double().cpu().numpy()
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)),
        "median": float(np.median(values)),
        "values": values,
    }


# --- the coefficient β: fixed, or steered toward a target KL --------------------------------------------
class FixedKLController:
    """A constant KL coefficient β, with :class:`AdaptiveKLController`'s interface: ``update`` leaves it as it is."""

    def __init__(self, kl_coef: float):
        self.value = check_number(kl_coef, "kl_coef", low=0, fix="the KL penalty's weight β; 0 switches it off")

    def update(self, current_kl: float, n_steps: int) -> float:
        """Nothing to adapt; returns β."""
        return self.value

    def __repr__(self) -> str:
        return f"FixedKLController(kl_coef={self.value:g})"


class AdaptiveKLController:
    """Ziegler et al. (2019)'s adaptive β: it grows while the KL runs above ``target`` and shrinks while it runs below.

    After a batch of ``n_steps`` samples whose mean KL (nats per completion) was KL_t,

        e_t = clip(KL_t / target − 1, −0.2, 0.2)
        β_{t+1} = β_t · (1 + e_t · n_steps / horizon)

    so β moves by at most a factor of about e^{±0.2} per ``horizon`` samples: a
    proportional controller on the log of β whose error is clipped, so that one noisy
    batch cannot swing it. The names are those of TRL's former ``PPOTrainer``
    (``init_kl_coef``, ``target``, ``horizon``; ``adap_kl_ctrl=True`` chose this
    controller), where ``n_steps`` is the batch size. ``value`` is the current β.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = check_number(
            init_kl_coef,
            "init_kl_coef",
            low=0,
            low_open=True,
            fix="β is scaled by factors, so one that starts at 0 stays there: start above 0",
        )
        self.target = check_number(
            target,
            "target",
            low=0,
            low_open=True,
            fix="the KL in nats per completion to hold, e.g. 6 as in Ziegler et al.",
        )
        self.horizon = check_number(
            horizon,
            "horizon",
            low=0,
            low_open=True,
            fix="the number of samples over which β may change by about 20%, e.g. 10000",
        )

    def update(self, current_kl: float, n_steps: int) -> float:
        """Scale β by 1 + e·n_steps/horizon after a batch whose mean KL was ``current_kl``; returns the new β."""
        current_kl = check_number(current_kl, "current_kl", fix="the mean KL of the batch just sampled")
        n_steps = check_int(n_steps, "n_steps", fix="the number of samples the KL was measured on (the batch size)")
        if 0.2 * n_steps >= self.horizon:
            raise ValueError(
                f"n_steps={n_steps} is at least 5 × horizon={self.horizon:g}, so one update could scale "
                "β to 0 or below: use a horizon well above the batch size"
            )
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)  # clipped, so one noisy batch moves β little
        self.value *= 1 + error * n_steps / self.horizon
        return self.value

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value:g}, target={self.target:g}, horizon={self.horizon:g})"


KLController = FixedKLController | AdaptiveKLController


# --- the other direction ------------------------------------------------------------------------------
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
    for _ in range(2100):  # pragma: no mutate (a cap never reached: float64 spans 2^2098 spacings)
        middle = (low + high) / 2
        total = (beta * ref_probs / (middle - rewards)).where(ref_probs > 0, 0.0).sum(-1, keepdim=True)
        above = total > 1  # (..., 1) where λ lies above middle
        new_low, new_high = torch.where(above, middle, low), torch.where(above, high, middle)
        if torch.equal(new_low, low) and torch.equal(new_high, high):
            break  # each bracket is two neighbouring floats: λ is found to float64's resolution
        low, high = new_low, new_high
    probs = (beta * ref_probs / (high - rewards)).where(ref_probs > 0, 0.0)  # (..., A)
    return probs / probs.sum(-1, keepdim=True)


# --- pictures ---------------------------------------------------------------------------------------------
def plot_estimator_comparison(
    comparisons: dict[int, dict[str, dict[str, float]]], axes: Sequence[Axes] | None = None
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """Each estimator's mean (±2 standard errors of its bias) and spread against the exact KL; returns the figure.

    ``comparisons`` maps a label (e.g. an RL step) to an :func:`estimator_comparison`. Left:
    the mean of each estimator against the exact KL, on log axes, with the diagonal where
    an unbiased estimator sits. Right: the standard deviation of one completion's estimate.
    """
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(10, 3.6))[1]
    rows = sorted(comparisons.values(), key=lambda stats: stats["exact"]["mean"])
    exact = [stats["exact"]["mean"] for stats in rows]
    for i, name in enumerate(("exact", *ESTIMATOR_NAMES)):
        means, stds = [s[name]["mean"] for s in rows], [s[name]["std"] for s in rows]
        errors = [2 * s[name].get("se", 0.0) for s in rows]
        style = {"color": "black", "ls": "--"} if name == "exact" else {"color": f"C{i - 1}", "marker": "o"}
        axes[0].errorbar(exact, means, yerr=errors, label=name, capsize=3, **style)
        axes[1].plot(exact, stds, label=name, **style)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="exact KL(π ‖ π_ref) per completion (nats)",
        ylabel="estimate's mean (nats)",
        title="bias: on the dashed line is unbiased",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="exact KL(π ‖ π_ref) per completion (nats)",
        ylabel="std of one completion's estimate",
        title="spread",
    )
    axes[0].legend(fontsize=8)
    axes[0].figure.tight_layout()
    return axes[0].figure


def plot_frontier_of_runs(
    series: dict[str, dict[float, tuple[float, float]]],
    start: tuple[float, float],
    highlight: float | None = None,
    ax: Axes | None = None,
    gold_stderr: dict[str, float | dict[float, float]] | None = None,
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """Gold reward against KL for several methods, one line of points per method; returns the figure.

    ``series`` maps a method's name to ``{knob: (kl, gold)}`` (the knob is β, or n for
    best-of-n); ``start`` is the starting model's (0, gold). ``highlight`` circles every
    point whose knob equals it, e.g. one β across RL and DPO. ``gold_stderr`` maps a
    method's name to the standard error of its gold (one number, or one per knob), drawn
    as error bars, so that a one-s.e. step between points reads as one.
    """
    ax = ax if ax is not None else plt.subplots(figsize=(6.4, 4.2))[1]
    ax.scatter(*start, color="black", marker="s", zorder=4, label="start (sft)")
    for i, (name, points) in enumerate(series.items()):
        knobs = sorted(points, key=lambda knob: points[knob][0])
        kls, golds = [points[k][0] for k in knobs], [points[k][1] for k in knobs]
        errors = (gold_stderr or {}).get(name)
        errors = None if errors is None else [errors[k] if isinstance(errors, dict) else errors for k in knobs]
        ax.errorbar(kls, golds, yerr=errors, marker="o", color=f"C{i}", label=name, zorder=3, capsize=3)
        for knob, kl, gold in zip(knobs, kls, golds):
            if highlight is not None and math.isclose(knob, highlight):
                ax.scatter([kl], [gold], s=240, facecolors="none", edgecolors="black", linewidths=1.5, zorder=5)
    ax.axhline(start[1], color="grey", lw=0.8, ls=":")
    ax.set(
        xlabel="KL to sft (nats per completion)",
        ylabel="mean gold reward (64 held-out prompts)",
        title="reward–KL frontier: every point a real run" + (" (bars: ±1 s.e.)" if gold_stderr else ""),
    )
    ax.legend(fontsize=8)
    return ax.figure


# --- several runs judged together --------------------------------------------------------------------------
def runs_mean_and_stderr(values: Sequence[float], evaluation_stderr: float) -> tuple[float, float]:
    """The mean of k runs' final evaluations and its standard error: the larger of s/√k and ``evaluation_stderr``/√k.

    s/√k, from the spread between the runs, counts what moves a training run (its seed, its
    kernels) as well as the evaluation's noise, but from a few runs it can come out small
    by chance; one evaluation's standard error over √k is the floor it cannot go below.
    """
    values = np.asarray(values, dtype=float)
    check_int(values.size, "len(values)", low=2, fix="judge at least two runs together")
    spread = values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean()), float(max(spread, evaluation_stderr / math.sqrt(values.size)))
