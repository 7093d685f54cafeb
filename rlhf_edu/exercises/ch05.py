"""Notebook 05's exercises (chapter 5, the nature of preferences): the label probability of a pooled population, and
what the Bradley-Terry fit does to a Condorcet cycle whose majorities are uneven."""

from __future__ import annotations

import torch

from ..core.runtime import torch_generator
from ..preference_data import (
    CONDORCET_ANSWERS,
    CONDORCET_GROUPS,
    CONDORCET_PROMPT,
    Population,
    bradley_terry_scores,
    broken_majorities,
    preference_matrix,
)
from .checks import Case, Exercise, Prediction, equal, register


# ------------------------------------------------------------------------------------- 05.1 a population's label
def pooled_probability(gaps: torch.Tensor, taus: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """P(a ≻ b) = Σ_g s_g · σ(Δ_g / τ_g) for (G, N) gaps: a member drawn by share, then that member's label. (N,)

    The reference of exercise 05.1; :meth:`~rlhf_edu.preference_data.Population.preference_probability` computes
    the same from texts.
    """
    return (shares[:, None] * torch.sigmoid(gaps / taus[:, None])).sum(dim=0)


def _pooled_cases() -> list[Case]:
    """One group; two groups that disagree; unequal shares and temperatures; a pair both groups find equal."""
    generator = torch_generator(5)
    gaps = torch.randn(3, 6, generator=generator, dtype=torch.float64) * 2  # (G, N)
    return [
        Case("one group with share 1 (its own Bradley-Terry probability)",
             (gaps[:1], torch.tensor([0.5], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))),
        Case("two equal groups whose gaps are opposite (every pair is a coin flip)",
             (torch.stack([gaps[0], -gaps[0]]), torch.tensor([0.5, 0.5], dtype=torch.float64),
              torch.tensor([0.5, 0.5], dtype=torch.float64))),
        Case("a strong minority: gaps of 1 for 80% of the annotators, −4 for 20%",
             (torch.tensor([[1.0], [-4.0]], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64),
              torch.tensor([0.8, 0.2], dtype=torch.float64))),
        Case("three groups in shares 0.6, 0.3, 0.1 with temperatures 0.25, 0.5, 1",
             (gaps, torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64),
              torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))),
    ]  # fmt: skip


# ------------------------------------------------------------------- 05.2 Bradley-Terry on an uneven cycle
UNEVEN_SHARES = {"fact-checkers": 0.2, "skimmers": 0.4, "enthusiasts": 0.4}  # exercise 05.2's population


def _majorities_broken_at_uneven_shares() -> int:
    """How many majorities the Bradley-Terry fit breaks on notebook 05's cycle with the fact-checkers at 20%."""
    population = Population(CONDORCET_GROUPS, UNEVEN_SHARES)
    preferences = preference_matrix(population, CONDORCET_PROMPT, list(CONDORCET_ANSWERS.values()))
    return len(broken_majorities(preferences, bradley_terry_scores(preferences)))


register(
    Exercise(
        "05.1",
        success="Σ_g s_g · σ(Δ_g / τ_g): each group's own Bradley-Terry probability, averaged by share. It is not "
        "σ of the average gap: a minority that feels strongly moves the probability less than its gap suggests",
        hints=(
            "a label comes from one annotator: first draw who (by share), then that person's Bradley-Terry coin. "
            "What is the probability of 'a wins' over both draws?",
            "P(a ≻ b) = Σ_g s_g · σ(Δ_g / τ_g) (eq:bradterry, per group), with gaps (G, N), taus (G,) and shares "
            "(G,): divide each row of gaps by its τ, take the sigmoid, weight the rows by the shares and sum over "
            "groups, giving (N,)",
        ),
        reference=pooled_probability,
        cases=_pooled_cases,
    ),
    Exercise(
        "05.2",
        success="two: with the fact-checkers at 20% the cycle remains, but the majorities are no longer equal, and "
        "the fit breaks the two weaker ones to keep the strongest (friendly ≻ thorough, 80%) close to the labels",
        hints=(
            "the fit cannot keep all three majorities. Which is the strongest now, and what does keeping it close "
            "cost the other two?",
            "build `Population(CONDORCET_GROUPS, shares)` with the shares given, its `preference_matrix` over the "
            "three answers, `bradley_terry_scores` of it, and count `broken_majorities(P, scores)`",
        ),
        expected=_majorities_broken_at_uneven_shares,
        compare=equal,
        prediction=Prediction(
            ("none: the cycle is gone", "one, the weakest", "two"),
            lambda count: {0: "none: the cycle is gone", 1: "one, the weakest"}.get(count, "two"),
            "the cycle survives (each majority still holds), but a fit that keeps the 80% majority nearly intact "
            "must order the three so that the two weaker majorities, about 59% and 60%, both go the other way",
        ),
    ),
)
