"""Notebook 12's exercises (chapter 12, direct alignment): the DPO loss, a sharper annotator, where IPO lands, the
implicit reward as a ranker, and a pair of identical answers."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.runtime import numpy_rng, torch_generator
from ..direct_alignment import dpo_loss
from ..reward_modeling import within_prompt_agreement
from .checks import Case, Exercise, Prediction, close, register


def _dpo_losses(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float,
) -> torch.Tensor:
    """The per-pair losses of ``dpo_loss`` (its first output): DPO's at ε = 0, cDPO's above it; (B,)."""
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return dpo_loss(*logps, beta=beta, label_smoothing=label_smoothing)[0]


def _far_ordered(beta_h: list[float]) -> tuple[torch.Tensor, ...]:
    """float32 log-probs of pairs with the margins ``beta_h`` at β = 1, far beyond where σ(βh) rounds to 0 or 1."""
    chosen = torch.tensor(beta_h) - 10.0  # (B,) log π(y_c); the three other log-probs are all −10
    return chosen, *(torch.full_like(chosen, -10.0) for _ in range(3))


def _dpo_cases() -> list[Case]:
    """A policy equal to its reference, random log-probs, identical answers, far-ordered pairs, and cDPO."""
    generator = torch_generator(12)
    logps = [-torch.rand(6, generator=generator, dtype=torch.float64) * 20 for _ in range(4)]  # four (B,) summed
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = logps
    return [
        Case(
            "a policy equal to its reference (h = 0: log 2 on every pair), β = 0.1",
            (ref_chosen, ref_rejected, ref_chosen.clone(), ref_rejected.clone(), 0.1, 0.0),
        ),
        Case("random log-probs, β = 0.1", (*logps, 0.1, 0.0)),
        Case("random log-probs, β = 1", (*logps, 1.0, 0.0)),
        Case(
            "the same answer on both sides of each pair, β = 0.5",
            (policy_chosen, policy_chosen.clone(), ref_chosen, ref_chosen.clone(), 0.5, 0.0),
        ),
        Case(
            "pairs ordered far the wrong way (βh = −200, float32): a loss of 200, not inf",
            (*_far_ordered([-200.0, -150.0]), 1.0, 0.0),
        ),
        Case(
            "pairs ordered far the right way (βh = +200, float32): a loss of about 0",
            (*_far_ordered([200.0, 150.0]), 1.0, 0.0),
        ),
        Case("cDPO: random log-probs, β = 0.1, label smoothing ε = 0.1", (*logps, 0.1, 0.1)),
        Case(
            "cDPO on pairs ordered far either way (βh = ±200, float32), ε = 0.2",
            (*_far_ordered([200.0, -200.0]), 1.0, 0.2),
        ),
        Case("a single pair (B = 1), β = 2", (*(x[:1] for x in logps), 2.0, 0.0)),
    ]


def _gold_agreement(chosen_rewards: np.ndarray, rejected_rewards: np.ndarray, gold_gap: np.ndarray) -> float:
    """``within_prompt_agreement``, each pair a prompt of two answers: only the gold gap g(y_c) − g(y_r) counts."""
    scores = np.stack([np.asarray(chosen_rewards), np.asarray(rejected_rewards)], axis=1)  # (B, 2)
    gold = np.stack([np.asarray(gold_gap), np.zeros(len(gold_gap))], axis=1)  # (B, 2): the same gaps
    return within_prompt_agreement(scores, gold)


def _agreement_cases() -> list[Case]:
    """Random pairs, gold ties, a reward tie, and pairs all ordered one way or the other."""
    rng = numpy_rng(12)
    chosen, rejected = rng.normal(size=10), rng.normal(size=10)  # (B,) rewards, no two equal
    gap = rng.normal(size=10)  # (B,) g(y_c) − g(y_r): of both signs, none 0
    tied_gap = np.where(np.arange(10) % 3 == 0, 0.0, gap)  # four pairs of equal gold reward
    tied_rewards = np.where(np.arange(10) < 3, rejected, chosen)  # the first three pairs: equal rewards
    return [
        Case(
            "random rewards, gold gaps of both signs (labels that disagree with the gold reward)",
            (chosen, rejected, gap),
        ),
        Case("pairs whose gold rewards tie (left out)", (chosen, rejected, tied_gap)),
        Case("pairs whose two rewards tie (each counts one half)", (tied_rewards, rejected, gap)),
        Case("rewards that order every pair like the gold reward (a share of 1)", (gap, np.zeros(10), gap)),
        Case("rewards that order every pair against it (a share of 0)", (-gap, np.zeros(10), gap)),
    ]


def _identical_pair_gradient() -> float:
    """∂loss/∂z for a pair whose chosen and rejected answers are one text, log π(y|x) = z = −5, log π_ref = −4."""
    z, ref = torch.tensor([-5.0], requires_grad=True), torch.tensor([-4.0])
    (gradient,) = torch.autograd.grad(dpo_loss(z, z, ref, ref, beta=0.1)[0].sum(), z)
    return gradient.item()


def _pull(gradient: float) -> str:
    """Which way a gradient step on the loss moves log π(y): against the gradient."""
    if abs(gradient) < 1e-9:
        return "it does not pull at all"
    return "it pulls log π(y) up" if gradient < 0 else "it pushes log π(y) down"


register(
    Exercise(
        "12.1",
        success="−(1−ε)·log σ(βh) − ε·log σ(−βh) per pair, log σ taken in one step: at βh = −200 the loss is 200, "
        "not inf",
        hints=(
            "which one number per pair does the loss depend on, and what does σ(βh) round to in float32 at "
            "βh = −200? What is the log of that?",
            "eq:dpo_core: loss = −log σ(βh), h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r)); cDPO: "
            "−(1−ε)·log σ(βh) − ε·log σ(−βh); `torch.nn.functional.logsigmoid` is log σ without the underflow",
        ),
        reference=_dpo_losses,
        cases=_dpo_cases,
    ),
    Exercise(
        "12.2",
        success="β' = β·τ: DPO fits the reward the labels imply, r/τ, so π ∝ π_ref·exp(r/(βτ)): a sharper annotator "
        "acts like a smaller β",
        hints=(
            "what do labels drawn with τ = 0.5 say about the reward gap of a pair, next to labels drawn with τ = 1? "
            "Which reward would a τ = 1 annotator need to give the same labels?",
            "eq:bradley_terry_dpo with a temperature: P(i ≻ j) = σ((r_i − r_j)/τ), and DPO fits its implicit reward "
            "gap β·h_ij to the labels' log-odds; eq:dpo_opt_policy's optimum for a coefficient β' has the log-ratio "
            "gaps h_ij = (r_i − r_j)/β'",
        ),
        expected=lambda: 0.5 * 0.5,  # β·τ
        compare=close(1e-6),
    ),
    Exercise(
        "12.3",
        success="h = (2p − 1)/(2β) ≈ 0.46: a fixed point of the label odds, not DPO's h = (r_1 − r_0)/β = 2",
        hints=(
            "a pair of the two arms is labelled one way or the other: what is its margin in each case, written with "
            "h = log π(1)/π(0), and which target does IPO pull that margin to?",
            '`dpo_loss(..., loss_type="ipo")`: (margin − 1/(2β))² per pair, its expectation over the labels, '
            "(1 ≻ 0) with probability p = σ(1) and (0 ≻ 1) with 1 − p; IPO's optimum minimises that expectation in h",
        ),
        expected=lambda: (2 / (1 + math.exp(-1)) - 1) / (2 * 0.5),  # (2p − 1)/(2β), p = σ(1)
        compare=close(1e-3),
    ),
    Exercise(
        "12.4",
        success="sign(r_c − r_r) against sign(g_c − g_r) on the untied pairs only, a reward tie counting ½: the cell "
        "below now scores the DPO policy with it",
        hints=(
            "when does a reward order a pair like the gold reward? Which pairs belong in the denominator, and what is "
            "a coin flip's chance on a pair whose rewards tie?",
            "chapter 7's agreement with the gold reward (notebook 07), each pair a prompt of two answers: among the "
            "pairs with g_c ≠ g_r, those where r_c − r_r has the sign of g_c − g_r; a pair with r_c = r_r counts ½. "
            "Section 3 counts `agree` on the same footing",
        ),
        reference=_gold_agreement,
        cases=_agreement_cases,
    ),
    Exercise(
        "12.5",
        success="no gradient: with one text on both sides h = 0 for every policy, so such a pair costs a forward pass "
        "and teaches nothing, which is why the dataset drops it",
        hints=(
            "with the same answer on both sides, what is h, whatever the policy? What does the loss then depend on?",
            "eq:dpo_gradient: the pull β·σ(−βh) times (∇ log π(y_c|x) − ∇ log π(y_r|x)), the push up on the chosen "
            "answer less the push down on the rejected one; what is that difference when y_c and y_r are one text?",
        ),
        expected=_identical_pair_gradient,
        compare=close(1e-6),
        prediction=Prediction(
            ("it pulls log π(y) up", "it pushes log π(y) down", "it does not pull at all"),
            _pull,
            "h = 0 for every policy, so the loss is log 2 whatever the policy does: the push up (as the chosen "
            "answer) and the push down (as the rejected one) cancel exactly",
        ),
    ),
)
