"""The toy world: a tiny language, three kinds of prompt, and a hidden gold reward.

Real preference data never tells you what people *really* wanted. This world does:
it is generated from a seed, and it has a **gold reward** g(x, y), the stand-in for
"true human preference", so the notebooks can measure what a real dataset hides
(a reward model's accuracy against its noise ceiling, over-optimization of a proxy,
reward-KL frontiers).

Prompt families (user messages, no chat markup)
-----------------------------------------------
- ``arithmetic`` (verifiable): ``"add 3 and 5"``, best answered ``"3 plus 5 is 8"``.
- ``review`` (open-ended, preference matters): ``"review the pizza"``, e.g. ``"the pizza is tasty"``.
- ``describe`` (checked against :data:`FACTS`): ``"describe the cat"``, e.g. ``"the cat is small and grey"``.

One more family is opt-in, outside :data:`FAMILIES`, so the default streams never hold it:

- ``multi_step`` (:data:`MULTI_STEP`, verifiable): ``"add 3 and 5 and 4"``, answered directly,
  ``"3 plus 5 plus 4 is 12"``, or with its steps written out, ``"3 plus 5 is 8 . 8 plus 4 is 12"``
  (:data:`MULTI_STEP_STYLES`). Every partial sum stays within :data:`NUMBERS`. Each step of an
  answer can be checked on its own (:func:`step_labels`), which a process reward model learns from.

Each prompt has other forms the world reads alike (:data:`PROMPT_FORMS`, :func:`rephrase`): ``"please add 3 and 5"``
and ``"add 3 and 5 ."`` ask what ``"add 3 and 5"`` asks, and earn the same gold reward for the same answer.
:meth:`World.prompts` writes only the plain form, so a model trained on it may answer the others worse.

Gold reward components (see :data:`GOLD_WEIGHTS`)
-------------------------------------------------
g(x, y) = Σ_k w_k · c_k(x, y), with

- ``correctness`` ∈ [0, 1]: sums (two or three numbers): the last number is the right sum; describe: the
  share of stated attributes that are true facts; review: 0 (there is no fact to get right).
- ``relevance`` ∈ {0, 1}: the answer names the prompt's subject (both operands for sums).
- ``tone`` ∈ (−1, 1): tanh(#positive − #negative words), for review and describe only.
  It saturates, so a second or third "amazing" adds almost nothing.
- ``concision`` ∈ [−1, 0]: a penalty per word beyond :data:`TARGET_WORDS`.
- ``repetition`` ∈ [−1, 0]: minus the share of words that repeat a content word
  (function words and numbers don't count: "6 plus 6 is 12" repeats nothing).

The components trade off: a fact ("small") is correct but not positive, a
compliment ("lovely") is positive but not a fact, and every extra adjective costs
concision. A learned proxy that over-rewards positive words can be gamed by
spamming them, which the gold reward punishes through repetition and concision:
that is over-optimization, visible component by component.

The **verifier** (:meth:`World.verifiable_reward`) is the part of the gold reward a
program can check: 1 for a right sum, 0 otherwise, as in RL from verifiable rewards.

Text
----
The world reads text the way its tokenizer does: lower-cased, with punctuation split
off as separate words (:func:`normalize_text`), so "3 plus 5 is 8." and "The pizza is
Tasty" score as "3 plus 5 is 8 ." and "the pizza is tasty". A word outside
:data:`VOCAB` counts as a word (it costs concision) and earns nothing; the gold reward
warns about it, and every encoder refuses it, naming the word.

Preference labels
-----------------
A Bradley-Terry annotator with noise temperature τ: P(a ≻ b) = σ((g(a) − g(b)) / τ).
Because τ is known, so is the best accuracy any reward model can reach on these
labels (:meth:`World.bayes_accuracy`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from .runtime import Preset, get_preset
from .validation import check_choice, check_int, check_number, check_same_length, check_seed, check_texts

NUMBERS = [str(n) for n in range(19)]
OPERANDS = NUMBERS[:10]  # what a sum prompt adds, so every sum is itself one of NUMBERS
OBJECTS = ["pizza", "soup", "movie", "book", "song", "game", "cafe", "hotel"]
ANIMALS = ["cat", "dog", "bird", "fish", "horse", "cow", "frog", "mouse"]
FACTS = {
    "cat": ("small", "soft", "grey"),
    "dog": ("big", "loud", "brown"),
    "bird": ("small", "fast", "loud"),
    "fish": ("small", "quiet", "green"),
    "horse": ("big", "fast", "brown"),
    "cow": ("big", "slow", "white"),
    "frog": ("small", "green", "loud"),
    "mouse": ("small", "quiet", "grey"),
}
ATTRIBUTES = sorted({a for facts in FACTS.values() for a in facts})
POSITIVE = ["great", "tasty", "lovely", "fun", "fresh", "amazing", "good", "nice"]
NEGATIVE = ["bad", "bland", "boring", "awful", "dull", "poor"]
FILLER = [
    "i",
    "think",
    "really",
    "very",
    "so",
    "we",
    "people",
    "say",
    "it",
    "was",
    "a",
    "this",
    "yesterday",
    "today",
    "like",
    "please",
    "tried",
    "saw",
    "my",
]
FUNCTION_WORDS = ["the", "is", "and", "plus", "add", "review", "describe", "."]
VOCAB = sorted(set(NUMBERS + OBJECTS + ANIMALS + ATTRIBUTES + POSITIVE + NEGATIVE + FILLER + FUNCTION_WORDS))

FAMILIES = ("arithmetic", "review", "describe")  # what World.prompts() mixes, in equal shares
MULTI_STEP = "multi_step"  # the opt-in family of three-number sums: World.prompts(n, family=MULTI_STEP)
MULTI_STEP_STYLES = ("direct", "steps")  # "3 plus 5 plus 4 is 12", or "3 plus 5 is 8 . 8 plus 4 is 12"
PROMPT_FAMILIES = (*FAMILIES, MULTI_STEP)  # every family World.prompts can draw
# The forms of one prompt that the world reads alike (rephrase): as World.prompts writes it, with a "please" in
# front, or with a closing "." (the way the pretraining corpus and the answers end a sentence).
PROMPT_FORMS = ("plain", "please", "period")
SUM_FAMILIES = ("arithmetic", MULTI_STEP)  # the families the verifier checks
STEP_SEPARATOR = "."  # the word that ends one step of an answer and opens the next
REWARD_KINDS = ("gold", "verifier")  # World.reward_function: the gold reward, or the verifier of sums
GOLD_WEIGHTS = {"correctness": 2.0, "relevance": 1.0, "tone": 1.0, "concision": 1.0, "repetition": 2.0}
TARGET_WORDS = 7  # longer answers start paying the concision penalty
_VOCAB_SET = set(VOCAB)
_NOT_CONTENT = set(FUNCTION_WORDS + NUMBERS)  # "the ... and ..." or "6 plus 6 is 12" is not repetition
_SPLITS = {"train": 0, "test": 1}
_MAX_SUM = int(NUMBERS[-1])  # 18: the largest number the world can say


_PUNCTUATION = re.compile(r"([^\w\s<>|])")  # any sign that is not part of a word or of chat markup


def normalize_text(text: str) -> str:
    """Lower-case ``text`` and split punctuation off into words of its own: ``"The cat."`` → ``"the cat ."``."""
    if not isinstance(text, str):
        raise TypeError(f"expected a text, got {text!r} ({type(text).__name__})")
    return " ".join(_PUNCTUATION.sub(r" \1 ", text.lower()).split())


def message_text(value: str | list[dict[str, str]], name: str = "text") -> str:
    """The text of a plain string, or of the last message of a conversational (message-list) value."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and isinstance(value[-1].get("content"), str):
        return value[-1]["content"]
    raise TypeError(f"{name} must be a string or a list of {{'role', 'content'}} messages, got {value!r}")


def unknown_words(text: str) -> list[str]:
    """The words of ``text`` (after :func:`normalize_text`) that are not in the world's :data:`VOCAB`."""
    return [w for w in normalize_text(text).split() if w not in _VOCAB_SET]


@dataclass(frozen=True)
class ParsedPrompt:
    """What a prompt asks for: its family, subject words and (for sums) the true answer."""

    family: str
    subject: tuple[str, ...]
    answer: int | None = None


def rephrase(prompt: str, form: str) -> str:
    """``prompt`` in another of the :data:`PROMPT_FORMS` that ask the same thing: ``"please add 3 and 5"`` or
    ``"add 3 and 5 ."`` for ``"add 3 and 5"``. The gold reward reads them alike; a model need not (chapter 16)."""
    check_choice(form, "form", PROMPT_FORMS)
    words = _plain_words(normalize_text(message_text(prompt, "prompt")).split())
    parse_prompt(" ".join(words))  # refuses a prompt outside the world, naming it
    return " ".join({"plain": words, "please": ["please", *words], "period": [*words, "."]}[form])


def _plain_words(words: list[str]) -> list[str]:
    """A prompt's words without a leading "please" or a closing ".": the part that says what is asked."""
    if words[:1] == ["please"]:
        words = words[1:]
    return words[:-1] if words[-1:] == ["."] else words


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Read a world prompt, in any of its :data:`PROMPT_FORMS`, back into its family and subject; raise ValueError
    for anything else."""
    words = normalize_text(message_text(prompt, "prompt")).split()
    if not words:
        raise ValueError("empty prompt: pass a user message such as 'add 3 and 5' (see World.prompts)")
    words = _plain_words(words)
    if len(words) == 4 and words[0] == "add" and words[2] == "and" and {words[1], words[3]} <= set(OPERANDS):
        return ParsedPrompt("arithmetic", (words[1], words[3]), int(words[1]) + int(words[3]))
    if len(words) == 6 and words[0] == "add" and words[2] == words[4] == "and" and {*words[1::2]} <= set(OPERANDS):
        return _multi_step_prompt(prompt, tuple(words[1::2]))
    if len(words) == 3 and words[0] == "review" and words[2] in OBJECTS:
        return ParsedPrompt("review", (words[2],))
    if len(words) == 3 and words[0] == "describe" and words[2] in ANIMALS:
        return ParsedPrompt("describe", (words[2],))
    raise ValueError(
        f"{prompt!r} is not a world prompt: expected 'add A and B' (A, B from 0 to {OPERANDS[-1]}), "
        "'review the OBJECT', 'describe the ANIMAL' or 'add A and B and C' (get valid ones from World.prompts)"
    )


def _multi_step_prompt(prompt: str, operands: tuple[str, ...]) -> ParsedPrompt:
    """A three-number sum, refused when a partial sum leaves the world's numbers (it could not be written)."""
    partial = 0
    for operand in operands:
        partial += int(operand)
        if partial > _MAX_SUM:
            raise ValueError(
                f"{prompt!r} reaches the partial sum {partial}, which the world cannot say: every partial sum "
                f"must be at most {_MAX_SUM}: e.g. World.prompts(n, family='multi_step')"
            )
    return ParsedPrompt(MULTI_STEP, operands, partial)


def gold_components_one(prompt: str, completion: str) -> dict[str, float]:
    """The gold reward's components for one (prompt, completion); an empty completion scores 0 on each.

    The rule for silence: an empty answer earns nothing and pays nothing, so its gold reward
    is exactly 0. It is not paid less than every answer on topic: relevance pays 1, but a
    hostile tone (down to −1), rambling and repetition can take more than that away, and the
    world would rather give no review than "the pizza is bland and bad and awful and dull"
    (−0.43). Every family's good answers score well above 0 (a right sum 3, a kind, short
    review about 1.8), so silence is never what a policy should learn. Words outside
    :data:`VOCAB` count toward length and earn nothing (:meth:`World.gold_reward` warns).
    """
    parsed = parse_prompt(prompt)
    words = normalize_text(message_text(completion, "completion")).split()
    n = len(words)
    numbers = [int(w) for w in words if w in NUMBERS]
    stated = [w for w in words if w in ATTRIBUTES]
    if parsed.family in SUM_FAMILIES:
        correctness = float(bool(numbers) and numbers[-1] == parsed.answer)
    elif parsed.family == "describe":
        true_facts = FACTS[parsed.subject[0]]
        correctness = sum(w in true_facts for w in stated) / len(stated) if stated else 0.0
    else:
        correctness = 0.0
    relevance = float(n > 0 and all(s in words for s in parsed.subject))
    sentiment = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    tone = math.tanh(sentiment) if parsed.family not in SUM_FAMILIES else 0.0
    concision = max(-1.0, min(0.0, (TARGET_WORDS - n) / TARGET_WORDS))
    content = [w for w in words if w not in _NOT_CONTENT]
    repetition = (len(set(content)) - len(content)) / n if n else 0.0
    return {
        "correctness": correctness,
        "relevance": relevance,
        "tone": tone,
        "concision": concision,
        "repetition": repetition,
    }


def split_steps(completion: str | list[dict[str, str]]) -> list[str]:
    """The steps of an answer: its words (after :func:`normalize_text`) cut at every :data:`STEP_SEPARATOR`.

    ``"3 plus 5 is 8 . 8 plus 4 is 12"`` → ``["3 plus 5 is 8", "8 plus 4 is 12"]``. A final
    "." closes the last step rather than opening an empty one; an empty answer is one
    empty step (it states nothing, so :func:`step_labels` marks it wrong).
    """
    steps: list[list[str]] = [[]]
    for word in normalize_text(message_text(completion, "completion")).split():
        if word == STEP_SEPARATOR:
            steps.append([])
        else:
            steps[-1].append(word)
    if len(steps) > 1 and not steps[-1]:
        steps.pop()  # "... is 12 ." ends a step; it does not start one
    return [" ".join(step) for step in steps]


def step_labels(prompt: str, completion: str | list[dict[str, str]]) -> list[bool]:
    """Whether each step of ``completion`` (:func:`split_steps`) is right, as a verifier checks a step: one per step.

    The rule. A sum's answer is a chain: it starts at the first operand, and each step
    adds the next operand(s) to where the chain stands. A step is right iff it reads
    "X plus Y (plus ...) is Z" in world numbers and

    1. it starts where the chain stands: X is the first operand in the first step, and
       the true partial sum so far in a later step (the previous step's result, when
       that step was right);
    2. it adds the next operands in the prompt's order: Y, ... are exactly those;
    3. its arithmetic is right: Z = X + Y + ....

    Any well-formed step moves the chain on by the operands it added, right or wrong,
    so a later step is judged from the true partial sum at that point: after
    "3 plus 5 is 9", the step "8 plus 4 is 12" is right and "9 plus 4 is 13" is not (it
    builds on the error). So the last step is right exactly when it ends on the true
    total having added every operand. A direct answer, "3 plus 5 plus 4 is 12", is one step
    that adds all of them. Anything else (words that are not a sum, an empty answer) is
    a wrong step that moves nothing. A chain that stops early can have only right
    steps and still not reach the total: the steps are right, the outcome is not.
    """
    parsed = parse_prompt(prompt)
    if parsed.family not in SUM_FAMILIES:
        raise ValueError(
            f"steps can only be checked on sums, got {prompt!r}: use sum prompts "
            "(World.prompts(n, family='multi_step') or family='arithmetic')"
        )
    operands = [int(o) for o in parsed.subject]
    used, labels = 1, []  # the chain starts at the first operand
    for step in split_steps(completion):
        numbers = _sum_step(step)
        if numbers is None:
            labels.append(False)
            continue
        *terms, result = numbers
        added = operands[used : used + len(terms) - 1]
        labels.append(terms[0] == sum(operands[:used]) and terms[1:] == added and result == sum(terms))
        used = min(len(operands), used + len(terms) - 1)
    return labels


def _sum_step(step: str) -> list[int] | None:
    """``[X, Y, ..., Z]`` of a step that reads "X plus Y ... is Z" in world numbers, else None."""
    words = step.split()
    if len(words) < 5 or words[-2] != "is" or any(w not in NUMBERS for w in words[0:-2:2] + words[-1:]):
        return None
    if any(w != "plus" for w in words[1:-2:2]) or len(words) % 2 == 0:
        return None
    return [int(w) for w in words[0:-2:2]] + [int(words[-1])]


def fact_pairs() -> tuple[list[str], list[str], list[str]]:
    """The same describe question answered with a true fact and with a false attribute, every such way.

    Returns ``(prompts, true_answers, false_answers)``, aligned lists with one row per
    animal, true fact and false attribute: ``("describe the dog", "the dog is brown",
    "the dog is soft")`` and so on. The two answers differ in one word, so they differ
    in the gold reward only through ``correctness``.
    """
    rows = [
        (f"describe the {animal}", f"the {animal} is {fact}", f"the {animal} is {other}")
        for animal, facts in FACTS.items()
        for fact in facts
        for other in ATTRIBUTES
        if other not in facts
    ]
    prompts, true_answers, false_answers = map(list, zip(*rows))
    return prompts, true_answers, false_answers


class World:
    """A seeded toy world: prompts, a pretraining corpus, demonstrations and a gold reward.

    Every method is deterministic given the world's ``seed`` and its arguments, so
    ``World(seed=0).prompts(100)`` is the same list on every machine. ``split="test"``
    draws an independent sample from the same prompt distribution.
    """

    def __init__(self, seed: int = 0, preset: str | Preset | None = None, tau: float = 0.5):
        check_number(tau, "tau", low=0, low_open=True, fix="it is the annotator's noise temperature (try 0.5)")
        self.seed = check_seed(seed)
        self.preset = get_preset(preset)
        self.tau = tau

    def _rng(self, purpose: int, split: str = "train") -> np.random.Generator:
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
        return np.random.default_rng([self.seed, purpose, _SPLITS[split]])

    # --- prompts and demonstrations -------------------------------------------------
    def prompts(self, n: int, split: str = "train", family: str | None = None) -> list[str]:
        """``n`` user-message strings, families in equal proportion, with no chat markup.

        ``family`` ("arithmetic", "review" or "describe") keeps that family's prompts of
        the same stream, so they are the ones the mixed list holds, in the same order.
        ``family="multi_step"`` draws the opt-in three-number sums from a stream of their
        own, so asking for them moves no other prompt.
        """
        check_int(n, "n", low=0, fix="the number of prompts, e.g. 100")
        if family is not None:
            check_choice(family, "family", PROMPT_FAMILIES)
        if family == MULTI_STEP:
            rng = self._rng(4, split)  # its own stream: the mixed one (purpose 1) stays as it was
            return [_sample_multi_step_prompt(rng) for _ in range(n)]
        rng = self._rng(1, split)
        prompts = []
        while len(prompts) < n:
            prompt = _sample_prompt(rng)
            if family is None or parse_prompt(prompt).family == family:
                prompts.append(prompt)
        return prompts

    def demonstration(self, prompt: str, rng: np.random.Generator) -> str:
        """One answer from the world's demonstrator: good on average, but not perfect."""
        parsed = parse_prompt(prompt)
        if parsed.family == MULTI_STEP:  # refused before any draw, so no default stream moves
            raise ValueError(
                f"{prompt!r} is a multi-step sum, which the demonstrator does not answer: "
                "use World.multi_step_demonstration(prompt, style)"
            )
        if parsed.family == "arithmetic":
            a, b = parsed.subject
            total = parsed.answer if rng.random() < 0.8 else _off_by(parsed.answer, rng.choice([-2, -1, 1, 2]))
            return f"{a} plus {b} is {total}"
        subject = parsed.subject[0]
        if parsed.family == "describe":
            facts = list(FACTS[subject])
            words = [
                rng.choice(facts) if rng.random() < 0.8 else rng.choice(ATTRIBUTES) for _ in range(rng.integers(1, 3))
            ]
            if rng.random() < 0.3:
                words.append(rng.choice(POSITIVE))
        else:
            pool = POSITIVE if rng.random() < 0.7 else NEGATIVE
            words = list(rng.choice(pool, size=rng.integers(1, 3), replace=False))
        opener = "i think " if rng.random() < 0.2 else ""
        return f"{opener}the {subject} is " + " and ".join(str(w) for w in words)

    def multi_step_demonstration(self, prompt: str, style: str = "steps") -> str:
        """The right answer to a three-number sum, in ``style``: ``"direct"`` or with its ``"steps"`` written out.

        ``"add 3 and 5 and 4"`` → ``"3 plus 5 plus 4 is 12"`` (7 words) or
        ``"3 plus 5 is 8 . 8 plus 4 is 12"`` (11 words). Both are always right: the styles
        differ in format only, so what a model trained on each gets right is down to the
        format (the compute it spends per answer), not to the data's quality.
        """
        check_choice(style, "style", MULTI_STEP_STYLES)
        parsed = parse_prompt(prompt)
        if parsed.family != MULTI_STEP:
            raise ValueError(
                f"{prompt!r} is not a multi-step sum: pass 'add A and B and C' "
                "(get valid ones from World.prompts(n, family='multi_step'))"
            )
        a, b, c = parsed.subject
        if style == "direct":
            return f"{a} plus {b} plus {c} is {parsed.answer}"
        partial = int(a) + int(b)
        return f"{a} plus {b} is {partial} {STEP_SEPARATOR} {partial} plus {c} is {parsed.answer}"

    def multi_step_sft_dataset(self, n: int, style: str = "steps", split: str = "train") -> Dataset:
        """``n`` multi-step demonstrations in ``style``, in TRL's conversational prompt/completion format.

        The prompts are :meth:`prompts` ``(n, split, family="multi_step")``, so the two styles'
        datasets hold the same questions in the same order.
        """
        check_choice(style, "style", MULTI_STEP_STYLES)
        prompts = self.prompts(n, split=split, family=MULTI_STEP)
        return Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": p}] for p in prompts],
                "completion": [
                    [{"role": "assistant", "content": self.multi_step_demonstration(p, style)}] for p in prompts
                ],
            }
        )

    def pretraining_corpus(self, n: int | None = None) -> list[str]:
        """``n`` plain-text sentences in the world's language, with no chat format.

        The base model learns the language (and half-right arithmetic) from these,
        but never sees a user turn, so it does not yet follow instructions.
        """
        rng = self._rng(2)
        n = self.preset.num_pretrain if n is None else check_int(n, "n", low=0, fix="the number of sentences")
        return [_corpus_sentence(self, rng) for _ in range(n)]

    def sft_dataset(self, n: int | None = None, split: str = "train") -> Dataset:
        """``n`` demonstrations in TRL's conversational prompt/completion format."""
        n = self.preset.num_sft if n is None else n
        rng = self._rng(3, split)
        prompts = self.prompts(n, split=split)
        return Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": p}] for p in prompts],
                "completion": [[{"role": "assistant", "content": self.demonstration(p, rng)}] for p in prompts],
            }
        )

    def rl_dataset(self, n: int | None = None, split: str = "train", family: str | None = None) -> Dataset:
        """``n`` RL prompts (default: the preset's ``num_rl_prompts``) as a ``Dataset`` with a conversational
        ``prompt`` column, the format TRL's ``GRPOTrainer`` and ``RLOOTrainer`` read; ``family`` keeps one family."""
        n = self.preset.num_rl_prompts if n is None else n
        return Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in self.prompts(n, split, family)]})

    def reward_function(self, kind: str = "gold") -> Callable[..., list[float]]:
        """The world's reward as a TRL ``reward_funcs`` entry: ``f(prompts, completions, **kwargs) -> list[float]``.

        ``kind="gold"`` is :meth:`gold_reward`, ``"verifier"`` is :meth:`verifiable_reward`
        (sums only). Prompts and completions may be strings or message lists (the last
        message is read); the keyword arguments a trainer adds (dataset columns,
        ``completion_ids``, ``trainer_state``) are accepted and ignored. The function's
        ``__name__`` is what TRL logs it under (``rewards/gold_reward/mean``).
        """
        check_choice(kind, "kind", REWARD_KINDS)
        score = self.gold_reward if kind == "gold" else self.verifiable_reward

        def reward(prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
            return [float(r) for r in score(list(prompts), list(completions))]

        reward.__name__ = reward.__qualname__ = f"{kind}_reward"
        return reward

    # --- the hidden gold reward ----------------------------------------------------------
    def gold_components(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, list[float]]:
        """Each component c_k(x, y) of the gold reward, one list per component.

        Prompts and completions may be strings or message lists (TRL's conversational
        format: the last message is read). Words outside the world's vocabulary are
        scored as plain words that earn nothing, with a warning that names them.
        """
        _check_pairs(prompts, completions)
        rows = [gold_components_one(p, c) for p, c in zip(prompts, completions)]
        _warn_unknown_words(completions)
        return {k: [row[k] for row in rows] for k in GOLD_WEIGHTS}

    def gold_reward(self, prompts: list[str], completions: list[str]) -> list[float]:
        """The gold reward g(x, y) = Σ_k w_k · c_k(x, y), one float per completion.

        An empty answer scores exactly 0 (the rule is in :func:`gold_components_one`), and
        unknown words earn nothing, with a warning that names them.
        """
        components = self.gold_components(prompts, completions)
        return [sum(GOLD_WEIGHTS[k] * components[k][i] for k in GOLD_WEIGHTS) for i in range(len(prompts))]

    def verifiable_reward(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """The verifier of RLVR: 1.0 where an answer's last number is the prompt's sum, else 0.0; one per completion.

        It checks what can be checked, and only that: the gold ``correctness`` of a sum
        (of two numbers, or of three in the ``multi_step`` family), blind to relevance,
        tone, concision, repetition and the steps on the way (:func:`step_labels` checks
        those). Review and describe prompts have no single right answer to check, so
        they are refused with a ValueError: score them with :meth:`gold_reward` or a reward model.
        """
        _check_pairs(prompts, completions)
        others = [p for p in prompts if parse_prompt(p).family not in SUM_FAMILIES]
        if others:
            raise ValueError(
                f"the verifier checks sums only, got {others[0]!r}: keep the sum prompts "
                "(World.prompts(n, family='arithmetic') or family='multi_step') or score the others with gold_reward"
            )
        _warn_unknown_words(completions)
        return [gold_components_one(p, c)["correctness"] for p, c in zip(prompts, completions)]

    # --- the Bradley-Terry annotator ---------------------------------------------------
    def preference_probability(
        self, prompts: list[str], completions_a: list[str], completions_b: list[str]
    ) -> np.ndarray:
        """P(a ≻ b) = σ((g(a) − g(b)) / τ) for each pair."""
        _check_pairs(completions_a, completions_b)
        gap = np.subtract(self.gold_reward(prompts, completions_a), self.gold_reward(prompts, completions_b))
        return 1.0 / (1.0 + np.exp(-gap / self.tau))

    def label_pairs(
        self, prompts: list[str], completions_a: list[str], completions_b: list[str], rng: np.random.Generator | int
    ) -> list[int]:
        """Noisy human-like labels: 1 where ``a`` is preferred, drawn from the Bradley-Terry model.

        ``rng`` is a NumPy generator or a seed; a seed is used as it is, not moved by the seed offset,
        because the labels belong to the world.
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(check_seed(rng, "rng"))
        p = self.preference_probability(prompts, completions_a, completions_b)
        return (rng.random(len(p)) < p).astype(int).tolist()

    def bayes_accuracy(self, prompts: list[str], completions_a: list[str], completions_b: list[str]) -> float:
        """Expected accuracy of the gold reward itself on the noisy labels: mean of max(p, 1 − p).

        No reward model can beat this on average; it is the noise ceiling.
        """
        p = self.preference_probability(prompts, completions_a, completions_b)
        if len(p) == 0:
            raise ValueError("prompts is empty: the noise ceiling is a mean over pairs, so pass at least one")
        return float(np.maximum(p, 1 - p).mean())


def _check_pairs(first: Sequence[str], second: Sequence[str]) -> None:
    check_texts(first, "prompts", allow_empty=True)
    check_texts(second, "completions", allow_empty=True)
    check_same_length(first, second, "prompts", "completions")


def _warn_unknown_words(completions: Sequence[str]) -> None:
    unknown = sorted({w for c in completions for w in unknown_words(message_text(c, "completion"))})
    if unknown:
        warnings.warn(
            f"the world does not know the words {', '.join(map(repr, unknown[:10]))}: the gold reward "
            "counts them as words (for concision) and they earn nothing",
            stacklevel=3,
        )


def _off_by(answer: int, error: int) -> int:
    """A wrong sum near ``answer`` that is still a world number (0 to 18): the error flips sign at the top."""
    total = answer + error if answer + error <= int(NUMBERS[-1]) else answer - error
    return max(0, total)


def _sample_prompt(rng: np.random.Generator) -> str:
    family = FAMILIES[rng.integers(len(FAMILIES))]
    if family == "arithmetic":
        return f"add {rng.integers(len(OPERANDS))} and {rng.integers(len(OPERANDS))}"
    if family == "review":
        return f"review the {rng.choice(OBJECTS)}"
    return f"describe the {rng.choice(ANIMALS)}"


def _sample_multi_step_prompt(rng: np.random.Generator) -> str:
    """A three-number sum, uniform over those whose total (so every partial sum) is at most 18."""
    while True:
        a, b, c = rng.integers(len(OPERANDS), size=3)
        if a + b + c <= _MAX_SUM:
            return f"add {a} and {b} and {c}"


def _corpus_sentence(world: World, rng: np.random.Generator) -> str:
    """A plain sentence: a demonstrator-style statement, often wrong, sometimes with filler."""
    prompt = _sample_prompt(rng)
    statement = world.demonstration(prompt, rng)
    if parse_prompt(prompt).family == "arithmetic" and rng.random() < 0.4:
        statement = statement.rsplit(" ", 1)[0] + f" {rng.integers(19)}"  # the web is often wrong
    # Six equally likely openers (a repeat weighs one double); every word is in the vocabulary.
    prefix = rng.choice(["", "", "yesterday ", "people say ", "people say ", f"please {prompt} . "])
    return f"{prefix}{statement} ."
