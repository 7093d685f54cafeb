"""Argument checks, one line at each call site, so that bad input never passes silently.

Each check raises a ``TypeError`` (wrong kind of thing) or a ``ValueError`` (right kind,
wrong value) whose message names the argument, the value it got and how to fix it.
They sit at the top of public functions as one-line calls, so ``rlhf_edu.show(fn)``
still shows the equation underneath.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    fix: str = "",
) -> float:
    """Return ``value`` as a float after checking that it is a real number in the given range, finite by default.

    ``low``/``high`` are inclusive bounds unless ``low_open``/``high_open``; ``fix`` is appended
    to the message (e.g. "try 1e-3"). Strings such as ``"1e-3"`` get a TypeError, not a
    comparison error from deep inside Python.
    """
    hint = f": {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}){hint}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} is NaN{hint}")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value}{hint}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}{hint}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {value:g}{hint}")
    return value


def check_probability(value: object, name: str, fix: str = "") -> float:
    """Return ``value`` as a float strictly between 0 and 1: a power, a test's level α, an interval's coverage."""
    return check_number(value, name, low=0, high=1, low_open=True, high_open=True, fix=fix)


def check_int(value: object, name: str, *, low: int = 1, fix: str = "") -> int:
    """Return ``value`` after checking that it is an integer (not a bool or a float) and at least ``low``."""
    hint = f": {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}){hint}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}{hint}")
    return int(value)


MAX_SEED = 2**32 - 1  # NumPy's legacy seeding takes 0 ..= 2**32 - 1; every seed the library takes fits it


def check_seed(value: object, name: str = "seed") -> int:
    """Return ``value`` after checking that it is an integer seed from 0 to :data:`MAX_SEED`."""
    seed = check_int(value, name, low=0, fix="a seed is a whole number, e.g. 0 or 1234")
    if seed > MAX_SEED:
        raise ValueError(f"{name} must be <= 2**32 - 1, got {seed}: use a smaller seed, e.g. {seed % 2**32}")
    return seed


def check_flag(value: object, name: str) -> bool:
    """Return ``value`` after checking that it is True or False: ``"False"`` or ``0`` would read as a choice made."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` after checking that it is one of ``choices``; the message lists them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: use one of {', '.join(map(repr, choices))}")
    return value


def check_texts(values: object, name: str, *, allow_empty: bool = False) -> list:
    """Return ``values`` as a list after checking that it is a sequence of texts, not one string."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of texts, got the single string {values!r}: pass [{values!r}]")
    if not isinstance(values, Sequence) and not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list of texts, got {type(values).__name__}")
    values = list(values)
    if not values and not allow_empty:
        raise ValueError(f"{name} is empty: pass at least one")
    return values


def check_same_length(first: Sequence, second: Sequence, first_name: str, second_name: str) -> None:
    """Raise ValueError unless two aligned lists have one entry each per example."""
    if len(first) != len(second):
        raise ValueError(f"got {len(first)} {first_name} but {len(second)} {second_name}: pass one per example")


def check_distribution(probs: torch.Tensor, name: str, tolerance: float = 1e-5) -> None:
    """Refuse ``probs`` unless it is non-negative and sums to 1 (within ``tolerance``) over its last dim.

    float32 softmax outputs sum to 1 within about 1e-7, so the default tolerance admits them.
    """
    if (probs < 0).any():
        raise ValueError(f"{name} has a negative entry ({probs.min().item():.3g}); probabilities must be >= 0")
    sums = probs.sum(-1)  # (...)
    if not ((sums - 1).abs() <= tolerance).all():  # written so that NaN fails too
        raise ValueError(
            f"{name} must sum to 1 over the last dim, but its sums run from "
            f"{sums.min().item():.6g} to {sums.max().item():.6g}; normalise with "
            "p / p.sum(-1, keepdim=True), or build it with torch.softmax(logits, -1)"
        )


def check_causal_lm(model: object, name: str = "model") -> None:
    """Raise TypeError unless ``model`` is a language model with an output layer over the vocabulary.

    A reward model (``...ForSequenceClassification``) scores a whole text with one number;
    it has no next-token distribution to sample from or to take log π(y|x) of.
    """
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            f"{name} must be a Hugging Face model, got {type(model).__name__}: "
            "load one with zoo.load('sft') or AutoModelForCausalLM.from_pretrained"
        )
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise TypeError(
            f"{name} is a {type(model).__name__}, which has no language-model head: pass a causal LM "
            "(e.g. zoo.load('sft')) here, and a reward model only where a reward is asked for"
        )


def check_fits_context(length: int, model: PreTrainedModel, name: str) -> None:
    """Raise ValueError when a sequence of ``length`` tokens is longer than the model's context."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ValueError(
            f"{name} is {length} tokens long but the model's context is {limit} tokens "
            "(config.max_position_embeddings): shorten it, or ask for fewer new tokens"
        )


def context_length(model: PreTrainedModel, max_length: int | None = None) -> int:
    """The longest sequence a trainer may feed ``model``: ``max_length`` if given, else the model's context.

    A ``max_length`` beyond the context is refused: the model has no position for those tokens.
    """
    limit = model.config.max_position_embeddings
    if max_length is None:
        return limit
    check_int(max_length, "max_length", fix=f"a length in tokens, at most the model's context of {limit}")
    if max_length > limit:
        raise ValueError(
            f"max_length is {max_length} but the model's context is {limit} tokens "
            f"(config.max_position_embeddings): use max_length <= {limit}, or None"
        )
    return max_length


def check_known_words(tokenizer: PreTrainedTokenizerBase, text: str, name: str) -> None:
    """Raise ValueError when ``text`` holds words the tokenizer would turn into its unknown token.

    An unknown word silently becoming ``<unk>`` makes two different answers look the same
    to every model ("délicieux" and "dégoûtant" would get one score).
    """
    unk_id = tokenizer.unk_token_id
    if unk_id is None:
        return  # a byte-level tokenizer can spell any text
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    unknown = [
        text[start:end]
        for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"])
        if token == unk_id
    ]
    if unknown:
        raise ValueError(
            f"{name} {text!r} holds words the tokenizer does not know: {', '.join(map(repr, unknown))}. "
            "Use the world's words (rlhf_edu.core.world.VOCAB), with '.' as the only punctuation"
        )


def check_no_markup(tokenizer: PreTrainedTokenizerBase, text: str, name: str) -> None:
    """Raise ValueError when a message's text contains a special token, which would forge a turn of the chat."""
    found = [token for token in tokenizer.all_special_tokens if token and token in text]
    if found:
        raise ValueError(
            f"{name} {text!r} contains the special token(s) {', '.join(map(repr, found))}: "
            "pass plain text, and let the chat template add the markup"
        )
