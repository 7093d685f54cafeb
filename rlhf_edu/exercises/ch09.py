"""Notebook 09's exercises (chapter 9, instruction tuning): counting loss tokens, per-token against per-example
means, the shipped model's greedy sums, and the completion-only loss mask."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..core import zoo
from ..core.rollouts import generate_completions
from ..core.runtime import numpy_rng
from ..core.world import World, parse_prompt
from ..instruction_tuning import encode_example
from .checks import Case, Exercise, Prediction, close, equal, register

SYSTEM = {"role": "system", "content": "please say it so people like it ."}  # section 1's system prompt
TWO_ANSWERS = {  # exercise 1's conversation: a system turn, then two questions and their answers
    "messages": [
        SYSTEM,
        {"role": "user", "content": "add 3 and 5"},
        {"role": "assistant", "content": "3 plus 5 is 8"},
        {"role": "user", "content": "review the soup"},
        {"role": "assistant", "content": "the soup is great"},
    ]
}


@functools.cache
def _tokenizer() -> PreTrainedTokenizerBase:
    """The zoo's tokenizer and its chat template (the same for every checkpoint of a preset)."""
    return zoo.load("base")[1]


def _loss_token_counts() -> tuple[int, int, int]:
    """Exercise 1's conversation: tokens in the loss with every assistant turn, the final one only, every token."""
    options = [(True, "all"), (True, "last"), (False, "all")]  # (completion_only, assistant_turns)
    return tuple(sum(encode_example(_tokenizer(), TWO_ANSWERS, *option)["completion_mask"]) for option in options)


@functools.cache
def _greedy_share() -> float:
    """The share of right sums when the shipped SFT model answers the held-out sums of `test_prompts` greedily."""
    world = World(seed=0)
    sft_model, tokenizer = zoo.load("sft")
    sums = [p for p in world.prompts(300, split="test") if parse_prompt(p).family == "arithmetic"]
    answers = generate_completions(sft_model, tokenizer, sums, temperature=0)
    return float(np.mean(world.verifiable_reward(sums, answers)))


GREEDY_CHOICES = ("well below the demonstrator's 80%", "about 80%, as often as its teacher", "above 80%")


def _greedy_outcome(share: float) -> str:
    return GREEDY_CHOICES[(share > 0.7) + (share > 0.85)]


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _mask_cases() -> list[Case]:
    """One turn, a system turn, two and three turns (every turn, the final one), and a prompt that holds an answer."""
    tokenizer = _tokenizer()
    demos = World(seed=0).sft_dataset(40)  # random demonstrations of every family
    picked = numpy_rng(9).choice(len(demos), size=3, replace=False)
    three = {"messages": [SYSTEM] + [m for i in picked for m in demos[int(i)]["prompt"] + demos[int(i)]["completion"]]}
    one = {"prompt": [_turn("user", "review the hotel")], "completion": [_turn("assistant", "the hotel is great")]}
    one_messages = {"messages": one["prompt"] + one["completion"]}
    two = {
        "messages": [
            _turn("user", "describe the cat"),
            _turn("assistant", "the cat is small"),
            _turn("user", "review the pizza"),
            _turn("assistant", "the pizza is tasty"),
        ]
    }
    earlier = {"prompt": two["messages"][:3], "completion": two["messages"][3:]}  # the first answer is in the prompt
    return [
        Case("a one-turn prompt/completion row (the answer and its <|end|>)", (tokenizer, one)),
        Case("a one-turn conversation in the messages format", (tokenizer, one_messages)),
        Case(
            "a prompt/completion row behind a system turn (context, like the user's)",
            (tokenizer, {"prompt": [SYSTEM] + one["prompt"], "completion": one["completion"]}),
        ),
        Case("a two-turn conversation, every assistant turn", (tokenizer, two, "all")),
        Case('the same two-turn conversation, the final turn only (assistant_turns="last")', (tokenizer, two, "last")),
        Case(
            "a system turn and three random demonstrations as one conversation, every turn", (tokenizer, three, "all")
        ),
        Case("the same three-turn conversation, the final turn only", (tokenizer, three, "last")),
        Case(
            "a one-turn conversation, the final turn only (the same as every turn)", (tokenizer, one_messages, "last")
        ),
        Case(
            "a prompt/completion row whose prompt holds an earlier answer (only the completion is in the loss)",
            (tokenizer, earlier),
        ),
    ]


def _completion_mask(tokenizer: PreTrainedTokenizerBase, example: Mapping, assistant_turns: str = "all") -> list[int]:
    """`encode_example`'s completion_mask: 1 on the tokens in the SFT loss."""
    return encode_example(tokenizer, example, assistant_turns=assistant_turns)["completion_mask"]


register(
    Exercise(
        "09.1",
        success="11, 5 and 34: each answer's words and its <|end|>; the last answer alone; every token but <bos>",
        hints=(
            "which tokens is the model asked to predict in each case? In the printed template, which tokens belong to "
            "an answer, does the token that closes an answer count, and is the system turn ever a target?",
            "eq:nll on completion tokens: m_t = 1 on an assistant answer's words and its closing <|end|>, 0 on the "
            "role tokens and on the user and system turns; with the final turn only, the earlier answer is context; "
            "the full-sequence loss predicts every token after <bos>",
        ),
        expected=_loss_token_counts,
        compare=equal,
    ),
    Exercise(
        "09.2",
        success="2 ln 2: per example, the one-token answer weighs as much as the three-token one; per token, a third",
        hints=(
            "under a per-example mean, does a three-token answer weigh more than a one-token one? What does each "
            "answer cost per token, on its own?",
            "eq:nll on completion tokens, normalised per example instead of per token (the per-sequence mean, "
            "chapter 11's eq:loss_per_sequence): (1/B) Σ_i (Σ_t m_it · (−log π_it)) / Σ_t m_it, where `sft_loss` "
            "divides Σ_i Σ_t m_it · (−log π_it) by Σ_i Σ_t m_it; a token of probability p costs −log p",
        ),
        expected=lambda: 2 * math.log(2),
        compare=close(1e-4),
    ),
    Exercise(
        "09.3",
        success="greedy decoding is right on about a third of the held-out sums, far below the demonstrator's 80%",
        hints=(
            "which of `test_prompts` are sums, and what does the model answer to each when it always takes its "
            "likeliest next token?",
            "greedy decoding is sampling at temperature T → 0 (section 7): each prompt gets the model's most likely "
            "answer (`generate_completions` at temperature=0); the verifiable reward scores a sum 1 if it is right, "
            "and the share is its mean over the arithmetic prompts only",
        ),
        expected=_greedy_share,
        compare=close(1e-4),
        prediction=Prediction(
            GREEDY_CHOICES,
            _greedy_outcome,
            "greedy decoding gives the model's most likely sum, which is right only where the model has learned the "
            "demonstrator's answer distribution; the tiny shipped model saw each sum a few times and has not, so its "
            "likeliest sum is often wrong",
        ),
    ),
    Exercise(
        "09.4",
        success="1 on every answer's tokens and its <|end|>, 0 on roles, prompts and system turns, the last turn alone "
        "when asked",
        hints=(
            "in the rendered tokens, where does an assistant answer begin and end? Is the token that closes it "
            "something the model must learn to produce, and which part of a prompt/completion row is ever a target?",
            "eq:nll on completion tokens: m_t = 1 on each assistant turn's words and its closing <|end|>, 0 on <bos>, "
            "the role tokens and the system and user turns; with assistant_turns='last' only the final assistant "
            "turn keeps its 1s, and a prompt/completion row trains on its completion alone",
        ),
        reference=_completion_mask,
        cases=_mask_cases,
    ),
)
