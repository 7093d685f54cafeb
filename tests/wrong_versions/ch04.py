"""Plausible wrong answers to notebook 04's function exercise, each with the case its check must name."""

import torch

from tests.exercise_tools import WrongVersion

BY_HAND = "a three-arm bandit worked by hand: π_ref = (0.5, 0.3, 0.2), r = (0, 1, 2), β = 1"


def _normalised(weights):
    return weights / weights.sum(-1, keepdim=True)


WRONG = {
    "04.2": [
        WrongVersion(  # a sign flip: the tilt towards low reward
            "the tilt upside down",
            lambda ref_probs, rewards, beta: torch.softmax(ref_probs.log() - rewards / beta, -1),
            BY_HAND,
        ),
        WrongVersion(  # β read as a weight on the reward (it weighs the KL, so it divides the reward)
            "β multiplying the reward",
            lambda ref_probs, rewards, beta: torch.softmax(ref_probs.log() + beta * rewards, -1),
            "a random six-arm bandit at β = 0.5",
        ),
        WrongVersion(  # forgetting the reference: a Boltzmann policy over the rewards alone
            "the reference forgotten",
            lambda ref_probs, rewards, beta: torch.softmax(rewards / beta, -1),
            BY_HAND,
        ),
        WrongVersion(  # a missing normaliser: π_ref·exp(r/β) without the Z
            "no normaliser Z",
            lambda ref_probs, rewards, beta: ref_probs * torch.exp(rewards / beta),
            BY_HAND,
        ),
        WrongVersion(  # the softmax over the wrong dimension: over the bandits of a batch, not over the arms
            "a softmax over the first dimension",
            lambda ref_probs, rewards, beta: torch.softmax(ref_probs.log() + rewards / beta, 0),
            "a batch of four random bandits, one per row (the arms along the last dimension), at β = 0.7",
        ),
        WrongVersion(  # the closed form as written, in linear space: exp(r/β) overflows for a small β
            "exp(r/β) without a shift",
            lambda ref_probs, rewards, beta: _normalised(ref_probs * torch.exp(rewards / beta)),
            "a small β (0.001), where exp(r/β) overflows unless the rewards are shifted first",
        ),
        WrongVersion(  # shifted by the best reward of every arm, including one that π_ref rules out
            "the shift by the best reward of all arms",
            lambda ref_probs, rewards, beta: _normalised(
                ref_probs * torch.exp((rewards - rewards.max(-1, keepdim=True).values) / beta)
            ),
            "the same arm π_ref rules out, at β = 0.001: only the arms π_ref can say may set the shift",
        ),
    ],
}
