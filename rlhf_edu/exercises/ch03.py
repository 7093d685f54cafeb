"""Notebook 03's exercises (chapter 3, definitions): the completion mask, log π(y | x) from one forward pass, a review
the gold reward likes, the annotator's noise τ, and which answer the base and sft models find likelier."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from ..core import zoo
from ..core.collate import collate
from ..core.logprobs import sequence_logprobs
from ..core.runtime import torch_generator
from ..core.tokenizer import build_tokenizer
from ..core.world import World
from .checks import Case, Exercise, Prediction, close, equal, register

MASK_BATCH = (["add 2 and 2", "describe the cat"], ["4", "the cat is small and grey"])  # exercise 1's two rows
PAIR = ("add 3 and 5", "3 plus 5 is 8", "8")  # exercise 5: the prompt, the full sentence, the bare sum
CHOICES = (
    "both prefer the full sentence",
    "both prefer the bare sum",
    "base the bare sum, sft the full sentence",
    "base the full sentence, sft the bare sum",
)


def _model_giving(logits: torch.Tensor) -> Callable[..., SimpleNamespace]:
    """A stand-in for a causal LM whose one forward pass gave ``logits`` (B, T, V), keeping the positions asked."""
    return lambda logits_to_keep, **inputs: SimpleNamespace(logits=logits[:, -logits_to_keep:])


def sequence_logprobs_of_logits(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """The library's log π(y | x) of each row, (B,): ``sequence_logprobs`` of the pass that gave ``logits``."""
    return sequence_logprobs(_model_giving(logits), input_ids, torch.ones_like(input_ids), completion_mask)


def _row(
    prompt_length: int, completion_length: int, padding: int, vocab: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (1 .. vocab − 1, then 0 for padding) and the completion mask of one right-padded row."""
    real = torch.randint(1, vocab, (prompt_length + completion_length,), generator=generator)
    ids = torch.cat([real, torch.zeros(padding, dtype=torch.long)])
    mask = torch.tensor([0] * prompt_length + [1] * completion_length + [0] * padding)
    return ids, mask


def _batch(rows: list[tuple[int, int, int]], vocab: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random logits (B, T, V), ids (B, T) and completion mask (B, T) for rows of (prompt, completion, padding)."""
    ids, masks = zip(*(_row(*row, vocab, generator) for row in rows))
    ids, masks = torch.stack(ids), torch.stack(masks)
    return torch.randn(*ids.shape, vocab, generator=generator), ids, masks


def _logprob_cases() -> list[Case]:
    """One-token and longer completions, a right-padded batch, a one-token prompt, a token all but ruled out."""
    generator = torch_generator(3)
    logits, ids, mask = _batch([(2, 3, 0)], 6, generator)
    logits[0, 2, ids[0, 3]] = -150.0  # the logits at position 2 all but rule out token 3, a completion token
    return [
        Case(
            "one row: a three-token prompt, then a one-token completion (only its end of turn)",
            _batch([(3, 1, 0)], 7, generator),
        ),
        Case("one row: a three-token prompt, then a four-token completion", _batch([(3, 4, 0)], 7, generator)),
        Case(
            "a right-padded batch of three rows whose prompts and completions differ in length",
            _batch([(3, 2, 4), (5, 4, 0), (2, 5, 2)], 11, generator),
        ),
        Case(
            "a one-token prompt: its first completion token is predicted at position 0",
            _batch([(1, 4, 0), (1, 2, 2)], 7, generator),
        ),
        Case(
            "a completion token the model all but rules out (a logit 150 below the rest): it costs about 150 nats, "
            "not −inf",
            (logits, ids, mask),
        ),
    ]


def _review_gold() -> Callable[[str], float]:
    """The gold reward of a review of the pizza (the world's, whatever its seed)."""
    world = World(seed=0)
    return lambda review: world.gold_reward(["review the pizza"], [review])[0]


def _is_great(answer: object, gold: Callable[[str], float]) -> str | None:
    """None for a review whose gold reward is 1.9 or more; else what is short, in words."""
    if not isinstance(answer, str):
        return f"`answer` is {type(answer).__name__!r}, where the review itself, a string, is wanted"
    score = gold(answer)
    return None if score >= 1.9 else f"its gold reward is {score:.3f}, short of 1.9"


def _tau_for(p: float) -> float:
    """The τ at which the annotator prefers `the pizza is tasty` to `the pizza is bland` with probability ``p``."""
    tasty, bland = World(seed=0).gold_reward(["review the pizza"] * 2, ["the pizza is tasty", "the pizza is bland"])
    return (tasty - bland) / math.log(p / (1 - p))  # eq:bradterryrm: p = σ(gap / τ), so gap / τ = logit(p)


def _full_minus_bare() -> tuple[float, float]:
    """log π(full) − log π(bare) of exercise 5's pair under the zoo's base and sft models, in that order."""
    prompt, full, bare = PAIR
    differences = []
    for name in ("base", "sft"):
        model, tokenizer = zoo.load(name, device="cpu")
        with torch.no_grad():
            logps = sequence_logprobs(model, **collate(tokenizer, [prompt] * 2, [full, bare]))  # (2,)
        differences.append((logps[0] - logps[1]).item())
    return differences[0], differences[1]


def _preferences(differences: tuple[float, float]) -> str:
    """Which answer each model finds likelier, as one of CHOICES."""
    base_full, sft_full = (d > 0 for d in differences)
    return CHOICES[{(True, True): 0, (False, False): 1, (False, True): 2, (True, False): 3}[(base_full, sft_full)]]


register(
    Exercise(
        "03.1",
        success="the answer and its <|end|> count; the prompt, <|assistant|> and the padding do not",
        hints=(
            "which tokens of each row does the model have to produce, and how long is the shorter row once it is "
            "padded to the longer one's length?",
            "section 1's completion mask: 1 on the completion y and its `<|end|>`, 0 on the prompt x (everything up "
            "to and including `<|assistant|>`), and 0 on every `<pad>` that section 6's right padding adds: a pad "
            "is no part of any answer",
        ),
        expected=lambda: collate(build_tokenizer(), *MASK_BATCH)["completion_mask"].tolist(),
        compare=equal,
    ),
    Exercise(
        "03.2",
        success="one pass gives every next-token distribution: the logits at position t score token t + 1, and the "
        "completion mask, shifted with the targets, keeps y's tokens",
        hints=(
            "at position t the model has seen tokens 0..t: which token do its logits score, and so which position's "
            "logits score the completion's first token?",
            "eq:llming: log π(y | x) = Σ_t log π(y_t | x, y_<t), summed over y's tokens only. Each term is a "
            "normalised log-probability over the vocabulary, read at the target token and computed stably (a "
            "probability that underflows must not turn into −inf); the mask has to mark the same tokens as the "
            "targets it weighs",
        ),
        reference=sequence_logprobs_of_logits,
        cases=_logprob_cases,
    ),
    Exercise(
        "03.3",
        success="a relevant, positive, short review without repeats",
        hints=(
            "read section 3's table: which components can a review earn, and what does each extra or repeated word "
            "cost?",
            "the gold reward g = Σ_k w_k·c_k (`World.gold_components`): name the pizza (relevance), use different "
            "positive words (tone = tanh(#positive − #negative)), stay within 7 words, repeat no content word",
        ),
        expected=_review_gold,
        compare=_is_great,
    ),
    Exercise(
        "03.4",
        success="τ = gap / log 9: at that noise the annotator picks the plain review nine times in ten",
        hints=(
            "the annotator's probability depends only on the gold gap divided by τ; which gap/τ gives 0.9?",
            "eq:bradterryrm with the world's temperature: P = σ(gap / τ); invert the sigmoid, σ⁻¹(p) = "
            "log(p / (1 − p)), then solve for τ",
        ),
        expected=lambda: _tau_for(0.9),
        compare=close(1e-3),
    ),
    Exercise(
        "03.5",
        success="the two models disagree: a likelihood says what a model expects, not which answer is better",
        hints=(
            "log π(y | x) adds one log-probability, each ≤ 0, per completion token, and the full sentence has four "
            "more tokens to pay for: which of the two models has been taught to expect them after <|assistant|>?",
            "eq:llming: log π(y | x) = Σ_t log π(y_t | x, y_<t) over the completion's tokens, `<|end|>` included "
            "(section 6 computes it for a batch of pairs in one pass); each model's answer is the difference of two "
            "such sums for the same prompt, in nats",
        ),
        expected=_full_minus_bare,
        compare=close(1e-3),
        prediction=Prediction(
            CHOICES,
            _preferences,
            "likelihood follows what a model was trained on: the base model never saw an assistant turn, so after "
            "<|assistant|> nothing makes the sentence's extra words likely, and each costs it nats; the sft model "
            "learned the demonstrations' full sentences",
        ),
    ),
)
