"""Notebook 07's exercises (chapter 7, reward modeling): the Bradley-Terry loss, reading σ, Plackett-Luce by hand,
and the policy's own likelihood as a judge of sums."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..core import zoo
from ..core.logprobs import completion_logprobs
from ..core.runtime import torch_generator
from ..core.world import World
from ..reward_modeling import bradley_terry_loss, orm_dataset, plackett_luce_loss, within_prompt_agreement
from .checks import Case, Exercise, Prediction, close, register


def _loss_cases() -> list[Case]:
    """Random pairs, ties, gaps where a naive log σ overflows, and margins: one for all pairs, and one per pair."""
    generator = torch_generator(7)
    chosen = torch.randn(8, generator=generator, dtype=torch.float64) * 2  # (B,) r_θ(y_c | x)
    rejected = torch.randn(8, generator=generator, dtype=torch.float64) * 2  # (B,) r_θ(y_r | x)
    extreme = torch.tensor([-1000.0, -200.0, 200.0, 1000.0])  # float32 gaps: σ underflows to 0 at the first two
    short_wins = torch.tensor([0.5, 1.0, 3.0]), torch.zeros(3)  # the chosen answer wins by 0.5, 1 and 3
    return [
        Case("8 random pairs, without a margin", (chosen, rejected)),
        Case("pairs whose two rewards are equal (a tie: every loss is ln 2)", (chosen, chosen.clone())),
        Case(
            "reward gaps of ±200 and ±1000, where log σ written out overflows",
            (extreme, torch.zeros_like(extreme)),
        ),
        Case("8 random pairs with a margin of 1 for every pair", (chosen, rejected, 1.0)),
        Case(
            "8 random pairs with a margin per pair, as a tensor (a rating's margin)",
            (chosen, rejected, torch.linspace(0.0, 3.0, 8, dtype=torch.float64)),
        ),
        Case("chosen answers that win by less than the margin of 1, by it, and by more", (*short_wins, 1.0)),
    ]


@functools.cache
def _judge_agreement() -> float:
    """The SFT model's log π(y | x) as a judge of section 10's 400 held-out sums: right above wrong, within a prompt.

    The same seeded answers as the notebook's ``orm_test`` (the zoo's SFT model, seed 5), on the same device.
    """
    world = World(seed=0)
    sft_model, tokenizer = zoo.load("sft")
    sums = orm_dataset(world, sft_model, tokenizer, n=400, num_generations=4, split="test", seed=5)
    prompts = [row[0]["content"] for row in sums["prompt"]]
    answers = [row[0]["content"] for row in sums["completion"]]
    right = np.array(sums["label"], dtype=float).reshape(400, 4)  # (M, 4) 1 where the sum is right
    mixed = right.max(1) > right.min(1)  # only these prompts have a right and a wrong answer to order
    judge = completion_logprobs(sft_model, tokenizer, prompts, answers).numpy().reshape(400, 4)  # (M, 4)
    return float(within_prompt_agreement(judge[mixed], right[mixed]))


JUDGE_CHOICES = ("below chance", "near chance", "well above chance")  # under 0.5, 0.5 to 0.6, 0.6 or more


def _judge_outcome(agreement: float) -> str:
    return JUDGE_CHOICES[(agreement >= 0.5) + (agreement >= 0.6)]


register(
    Exercise(
        "07.1",
        success="−log σ(r_c − r_r − m) per pair, finite at any gap, with the margin inside σ",
        hints=(
            "what does log σ(Δ) come to at a gap Δ = −1000 if σ is computed first, in floating point? Which way of "
            "writing the loss never forms σ at all?",
            "eq:rewardmodeling1 with eq:rewardmodelingmargin: L = −log σ(r_c − r_r − m), per pair (m = 0 when margin "
            "is None, a float or one value per pair); `torch.nn.functional.logsigmoid` is log σ without forming σ",
        ),
        reference=bradley_terry_loss,
        cases=_loss_cases,
    ),
    Exercise(
        "07.2",
        success="σ(Δ) = 0.9 ⇔ e^Δ = 9 ⇔ Δ = ln 9: each further 'nine' of confidence costs about ln 10 more reward",
        hints=(
            "for which gap Δ is σ(Δ) = 1 / (1 + e^(−Δ)) equal to 0.9? Can you undo the sigmoid one step at a time?",
            "eq:bradterry_unbounded: P(y_c > y_r) = σ(Δ) = 1 / (1 + e^(−Δ)) with Δ = r_c − r_r; isolate e^(−Δ), "
            "then take the log",
        ),
        expected=lambda: math.log(9),
        compare=close(1e-4),
    ),
    Exercise(
        "07.3",
        success="P = e²/(e² + e + 1) · e/(e + 1): the best of three, then the better of two, then a sure pick",
        hints=(
            "a ranking is a sequence of picks, best first: how likely is each pick, given the answers still left to "
            "choose from?",
            "eq:kwise_rm: P = Π_k exp(r_σ(k)) / Σ_{j ≥ k} exp(r_σ(j)), one factor per place k of the ranking: the "
            "answer placed k-th against every answer not placed before it; the factor of the last place is 1",
        ),
        expected=lambda: math.exp(-plackett_luce_loss(torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)).item()),
        compare=close(1e-6),
    ),
    Exercise(
        "07.4",
        success="the likelihood judge orders right and wrong sums far better than chance, and than either reward model",
        hints=(
            "section 10 already measures two scorers on these very answers, within a prompt: what changes if an "
            "answer's score is how likely the SFT model itself finds it?",
            "the judge's score is the sequence log-likelihood log π(y | x) = Σ_t log π(y_t | x, y_<t), one number per "
            "answer (`completion_logprobs`); the agreement is the share of (right, wrong) pairs of answers to one "
            "prompt in which the right answer scores higher, over the prompts that have both, as in section 10",
        ),
        expected=_judge_agreement,
        compare=close(1e-4),
        prediction=Prediction(
            JUDGE_CHOICES,
            _judge_outcome,
            "the backbone's prediction after '3 plus 5 is' puts more probability on the right sum than on a typical "
            "wrong one, even where the right sum is not its single likeliest answer (section 7: its likeliest sum is "
            "right for only about 4 prompts in 10); the judge reads that prediction, which no reward head was "
            "trained to read",
        ),
    ),
)
