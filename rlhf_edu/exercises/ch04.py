"""Notebook 04's exercises (chapter 4, training overview): discounting on the corridor, the KL-regularised optimum,
the whole KL budget of a bandit with a tie, and how the KL grows as β falls."""

from __future__ import annotations

import torch

from ..core.runtime import torch_generator
from ..core.world import World
from ..mdp import Corridor, value_iteration
from ..objective import kl_divergence, kl_regularized_optimum, max_kl_budget
from .checks import Case, Exercise, Prediction, close, register

CAT_ARMS = ("the cat is lovely", "the cat is big", "the cat is small and grey", "the cat is soft")  # exercises 3, 4
CAT_REF = (0.6, 0.25, 0.1, 0.05)  # π_ref over CAT_ARMS, given by hand in the notebook


def _cat_bandit() -> tuple[torch.Tensor, torch.Tensor]:
    """π_ref and the gold rewards of the notebook's four answers to `describe the cat`: (4,) each."""
    rewards = World(seed=0).gold_reward(["describe the cat"] * len(CAT_ARMS), list(CAT_ARMS))
    return torch.tensor(CAT_REF, dtype=torch.float64), torch.tensor(rewards, dtype=torch.float64)


def _kl_ratio(beta: float) -> float:
    """KL(π*_β ‖ π_ref) / KL(π*_2β ‖ π_ref) on the cat bandit: what halving β from 2β does to the KL spent."""
    ref_probs, rewards = _cat_bandit()
    kl = [kl_divergence(kl_regularized_optimum(ref_probs, rewards, b), ref_probs).item() for b in (beta, 2 * beta)]
    return kl[0] / kl[1]


def _bandit(generator: torch.Generator, *shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random π_ref (every arm possible) and random rewards, ``shape`` = (..., A), float64."""
    ref_probs = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.05
    return ref_probs / ref_probs.sum(-1, keepdim=True), 2 * torch.randn(shape, generator=generator, dtype=torch.float64)


def _optimum_cases() -> list[Case]:
    """A bandit by hand, random ones (one and a batch), both ends of β, a tie, an arm π_ref rules out."""
    generator = torch_generator(4)
    as_tensors = lambda *values: tuple(torch.tensor(v, dtype=torch.float64) for v in values)
    hand = as_tensors([0.5, 0.3, 0.2], [0.0, 1.0, 2.0])
    tie = as_tensors([0.4, 0.1, 0.3, 0.2], [1.0, 2.0, 0.0, 2.0])
    ruled_out = as_tensors([0.5, 0.0, 0.5], [1.0, 3.0, 0.0])  # the best reward sits on an arm π_ref never says
    return [
        Case("a three-arm bandit worked by hand: π_ref = (0.5, 0.3, 0.2), r = (0, 1, 2), β = 1", (*hand, 1.0)),
        Case("a random six-arm bandit at β = 0.5", (*_bandit(generator, 6), 0.5)),
        Case(
            "a batch of four random bandits, one per row (the arms along the last dimension), at β = 0.7",
            (*_bandit(generator, 4, 5), 0.7),
        ),
        Case("a large β (1000): π* stays next to π_ref", (*_bandit(generator, 5), 1000.0)),
        Case("two arms tied for the best reward, at β = 0.05: they keep their π_ref ratio", (*tie, 0.05)),
        Case(
            "a small β (0.001), where exp(r/β) overflows unless the rewards are shifted first",
            (*_bandit(generator, 5), 0.001),
        ),
        Case(
            "an arm π_ref rules out (π_ref = 0) with the best reward, at β = 1: π* gives it nothing", (*ruled_out, 1.0)
        ),
        Case(
            "the same arm π_ref rules out, at β = 0.001: only the arms π_ref can say may set the shift",
            (*ruled_out, 0.001),
        ),
    ]


def _doubling(ratio: float) -> str:
    """How halving β changed the KL, in the words of the prediction's choices."""
    return "more than double" if ratio > 2.1 else "less than double" if ratio < 1.9 else "double"


register(
    Exercise(
        "04.1",
        success="six steps to the goal, and the reward comes with the last, at t = 5: V*(0) = γ⁵",
        hints=(
            "the reward arrives only on the step into the goal: how many steps from cell 0 to cell 6, and at which t "
            "is the last one taken?",
            "eq:rl_opt: the return is Σ_t γ^t r_t with r_t = 0 until the step into the goal, where r_t = 1; V*(0) is "
            "that return along the shortest path, which the greedy policy takes",
        ),
        expected=lambda: value_iteration(Corridor(num_cells=7), 0.8)[0][0].item(),
        compare=close(1e-6),
    ),
    Exercise(
        "04.2",
        success="π* = softmax(log π_ref + r/β) over the arms: the reference tilted by exp(r/β), renormalised",
        hints=(
            "π* reweights each arm's π_ref by exp(r/β) and renormalises: what becomes of exp(r/β) at β = 0.001, and "
            "what could you take off every reward first without changing π*?",
            "eq:rlhf_opt_eq's optimum (section 3, eq:dpo_opt_policy): π*(y) = π_ref(y)·exp(r(y)/β) / Z with "
            "Z = Σ_y π_ref(y)·exp(r(y)/β), summed over one bandit's arms. A constant c taken off every r(y) "
            "multiplies numerator and Z alike by exp(−c/β), so it cancels; an arm with π_ref(y) = 0 gets nothing, "
            "whatever its reward",
        ),
        reference=kl_regularized_optimum,
        cases=_optimum_cases,
    ),
    Exercise(
        "04.3",
        success="as β → 0, π* splits its mass over the tied best answers as π_ref does: KL = −log π_ref(best answers)",
        hints=(
            "as β → 0, π* keeps only the answers with the highest reward, and splits the mass among tied ones in "
            "proportion to π_ref: which answers are they here?",
            "eq:kl_distance_regularization summed over the arms, with π*(y) = π_ref(y) / π_ref(B) on the best "
            "answers B and 0 elsewhere: every term has the same log",
        ),
        expected=lambda: max_kl_budget(*_cat_bandit()).item(),
        compare=close(1e-6),
    ),
    Exercise(
        "04.4",
        success="halving β multiplied the KL by more than four: near π_ref the KL goes like 1/β², not 1/β",
        hints=(
            "for the prediction: when β is large, how far does the tilt exp(r/β) move π_ref, and how does a small "
            "move change log(π*/π_ref) and the weight π* puts on it?",
            "eq:rlhf_opt_eq's optimum π* ∝ π_ref·exp(r/β) at β = 1 and at β = 2; for a large β, a second-order "
            "expansion of eq:kl_distance_regularization gives KL(π* ‖ π_ref) ≈ Var_π_ref(r) / (2β²)",
        ),
        expected=lambda: _kl_ratio(1.0),
        compare=close(1e-6),
        prediction=Prediction(
            ("less than double", "double", "more than double"),
            _doubling,
            "for a large β the KL falls like Var(r) / (2β²), with the square of β, so halving β about quadruples "
            "it; as β shrinks further it levels off at the whole budget of exercise 3",
        ),
    ),
)
