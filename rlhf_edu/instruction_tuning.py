"""Instruction tuning (SFT): teach a base model the chat format by imitating demonstrations (chapter 9).

SFT is pretraining's next-token loss (the book's ``eq:nll``, chapter 3) with two changes:

1. the text is a chat-formatted conversation (the tokenizer's chat template), and
2. only the assistant's tokens are predicted, including the end-of-turn token that
   closes each answer, so the model learns *when to stop* as well as what to say.

    L_SFT(θ) = − Σ_i Σ_t m_it log π_θ(y_it | x_i, y_i,<t) / Σ_i Σ_t m_it

with ``m_it`` = 1 on completion tokens. The instruction-tuning chapter states this loss
in words, without a numbered equation; the regularization chapter's ``eq:sft_forward_kl``
shows that it is the forward KL to the demonstrator, up to a constant.

Datasets come in TRL's two conversational formats: ``messages`` (multi-turn) or
``prompt``/``completion``. A multi-turn row trains on every assistant turn by default (the
user turns masked), or on its final turn only (``assistant_turns="last"``): the book names
both as the common multi-turn choices. :func:`unroll_conversation` splits one into a row
per answer, as the book describes.
:func:`encode_example` turns a row into ids and a loss mask, :func:`pack_rows` packs
encoded rows, :func:`sft_loss` is the loss above, and :func:`train_sft` is the shared
training loop with that loss.

What SFT changes is measured on two separate axes (:func:`format_report`): *format*,
i.e. whether an answer closed its turn and has the shape of an answer to its kind of
question (:func:`well_formed`), whatever it says; and *content*, i.e. whether it names
the asked subject, and the gold reward with each of its components.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from datasets import Dataset
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.collate import as_messages, check_length, check_plain_messages, encode_prompt_completion, pad_batch
from .core.logprobs import check_language_model, check_token_logprobs, token_logprobs
from .core.plotting import plot_tokens
from .core.rollouts import generate_completions
from .core.runtime import MAX_NEW_TOKENS
from .core.stats import masked_mean
from .core.training import Batch, History, TrainingConfig, make_loader, train
from .core.validation import check_choice, check_flag, check_known_words, check_same_length, check_texts, context_length
from .core.world import (
    ANIMALS,
    ATTRIBUTES,
    GOLD_WEIGHTS,
    NEGATIVE,
    NUMBERS,
    OBJECTS,
    POSITIVE,
    World,
    message_text,
    normalize_text,
    parse_prompt,
)

FORMATS = (("messages",), ("prompt", "completion"))  # TRL's conversational dataset formats
ASSISTANT_TURNS = ("all", "last")  # which assistant turns of a multi-turn row are in the loss


@dataclass
class SFTConfig(TrainingConfig):
    """SFT settings; ``completion_only_loss`` and ``packing`` are TRL's names.

    ``completion_only_loss=False`` trains on every token after ``<bos>`` (prompt and
    chat markup too), as pretraining does; ``packing=True`` concatenates whole
    examples into rows of up to ``max_length`` tokens to spend less compute on padding.
    ``assistant_turns`` (this package's name) chooses which assistant turns of a
    ``messages`` row are trained on: ``"all"`` (only the user turns masked), or ``"last"``
    for the final turn only: the two common multi-turn choices the book names.
    The defaults are the zoo's ``sft`` recipe. They make many passes over few
    demonstrations: the world asks only about a hundred distinct questions, so
    imitating its demonstrator closely costs no generality.
    """

    learning_rate: float = 3e-3
    batch_size: int = 32
    num_epochs: int = 20
    warmup_ratio: float = 0.1
    completion_only_loss: bool = True
    packing: bool = False
    assistant_turns: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_flag(self.completion_only_loss, "completion_only_loss")
        check_flag(self.packing, "packing")
        check_loss_tokens(self.completion_only_loss, self.assistant_turns)


# --- data: one encoder for both dataset formats -------------------------------------------
def check_loss_tokens(completion_only: bool, assistant_turns: str) -> None:
    """Refuse an unknown ``assistant_turns``, and ``"last"`` with a full-sequence loss, which ignores it."""
    check_choice(assistant_turns, "assistant_turns", ASSISTANT_TURNS)
    if assistant_turns == "last" and not completion_only:
        raise ValueError(
            "assistant_turns='last' chooses among the assistant turns, but completion_only_loss=False "
            "trains on every token anyway: keep assistant_turns='all', or set completion_only_loss=True"
        )


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: Mapping, completion_only: bool = True, assistant_turns: str = "all"
) -> dict[str, list[int]]:
    """Chat-template one dataset row into ``input_ids`` and a ``completion_mask`` (1 = in the loss).

    ``messages`` rows put every assistant turn in the loss (answer + ``<|end|>``), or,
    with ``assistant_turns="last"``, only the final one, the earlier answers becoming
    context. System and user turns are never in it. ``prompt``/``completion`` rows put
    the completion in it (it is the final turn either way). With
    ``completion_only=False`` every token after ``<bos>`` is in the loss.
    """
    check_loss_tokens(completion_only, assistant_turns)
    if "messages" in example:
        encoded = _encode_messages(tokenizer, example["messages"])
        if assistant_turns == "last":
            encoded["completion_mask"] = last_turn_only(encoded["completion_mask"])
    elif "prompt" in example and "completion" in example:
        encoded = encode_prompt_completion(tokenizer, example["prompt"], example["completion"])
    else:
        expected = " or ".join("/".join(columns) for columns in FORMATS)
        raise ValueError(
            f"an SFT dataset needs the columns {expected} (TRL's conversational formats), but this one has "
            f"{', '.join(example) or 'none'}: rename its columns, e.g. dataset.rename_column('answer', 'completion')"
        )
    if not completion_only:
        encoded["completion_mask"] = [0] + [1] * (len(encoded["input_ids"]) - 1)  # <bos> is never predicted
    return encoded


def _encode_messages(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    messages = as_messages(messages, "user")  # refuses empty or malformed messages; a string is one user turn
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError(
            f"the conversation {messages!r} has no assistant turn, so SFT has nothing to learn from it: "
            "drop it, or add the answer as {'role': 'assistant', 'content': ...}"
        )
    check_plain_messages(tokenizer, messages)
    for message in messages:
        check_known_words(tokenizer, message["content"], f"the {message['role']} message")
    encoded = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True)  # a dict, in transformers 5
    return {"input_ids": encoded["input_ids"], "completion_mask": list(encoded["assistant_masks"])}


def last_turn_only(mask: Sequence[int]) -> list[int]:
    """``mask`` with only its last run of 1s kept: the final assistant turn (its answer and ``<|end|>``).

    Each assistant turn is one run of 1s, and runs are separated by at least the
    ``<|assistant|>`` token, so the last run is the last turn.
    """
    if isinstance(mask, (str, bytes)) or any(m not in (0, 1) for m in mask):
        raise TypeError(f"mask must be a list of 0s and 1s (a row's completion_mask), got {mask!r:.60}")
    end = max((i + 1 for i, m in enumerate(mask) if m), default=0)  # one past the last 1
    if end == 0:
        raise ValueError("the mask has no 1s, so there is no assistant turn to keep: encode a row with an answer")
    start = max((i + 1 for i in range(end) if not mask[i]), default=0)  # one past the last 0 before it
    return [int(start <= i < end) for i in range(len(mask))]


def unroll_conversation(example: Mapping) -> list[dict[str, list[dict[str, str]]]]:
    """The book's unrolling: one ``messages`` row per assistant turn, ending at that turn.

    Encoded with ``assistant_turns="last"``, the k-th row trains on the k-th answer,
    with every turn before it as context and none after it.
    """
    if "messages" not in example:
        raise ValueError(
            f"only a 'messages' row has turns to unroll, but this one has {', '.join(example) or 'none'}"
            ": pass {'messages': [...]} (a prompt/completion row is already one answer)"
        )
    messages = as_messages(example["messages"], "user")
    return [{"messages": messages[: i + 1]} for i, message in enumerate(messages) if message["role"] == "assistant"]


def encode_dataset(
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset | Sequence[Mapping],
    max_length: int,
    completion_only: bool = True,
    packing: bool = False,
    assistant_turns: str = "all",
) -> list[dict[str, list[int]]]:
    """Encode every row, refuse rows over ``max_length`` tokens, and pack them if asked."""
    if len(dataset) == 0:
        raise ValueError("the SFT dataset is empty: pass at least one demonstration")
    rows = [encode_example(tokenizer, example, completion_only, assistant_turns) for example in dataset]
    check_length(rows, max_length)
    return pack_rows(rows, max_length) if packing else rows


def pack_rows(rows: Sequence[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Concatenate consecutive whole examples into rows of at most ``max_length`` tokens.

    Greedy and in order: a row joins the last packed row if it still fits, else it
    starts a new one. Fewer, fuller rows waste less compute on padding. The price:
    attention is causal over the packed row and positions run on, so an example can
    attend to the ones packed before it (each still starts with its own ``<bos>``), and
    its log-probs are not those it has alone. Nothing is ever cut in half: a row longer
    than ``max_length`` is refused.
    """
    check_length(rows, max_length)
    packed: list[dict[str, list[int]]] = []
    for row in rows:
        if packed and len(packed[-1]["input_ids"]) + len(row["input_ids"]) <= max_length:
            packed[-1] = {key: packed[-1][key] + row[key] for key in ("input_ids", "completion_mask")}
        else:
            packed.append({key: list(row[key]) for key in ("input_ids", "completion_mask")})
    return packed


# --- the loss -------------------------------------------------------------------------------
def sft_loss(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_SFT: pretraining's :func:`~rlhf_edu.pretraining.mean_token_nll` (``eq:nll``), over completion tokens only.

    ``logps`` and ``mask`` are (B, L), as :func:`rlhf_edu.core.logprobs.token_logprobs` returns them;
    the mask holds only the answer tokens (and their ``<|end|>``). The mean is taken per
    token across the whole batch, not per example and then over examples: every answer
    token weighs the same, so a long answer is not down-weighted against a short one
    (TRL normalises the same way). That is also why it returns one number, not one per example.
    """
    check_token_logprobs(logps, mask)
    return -masked_mean(logps, mask)


@contextmanager
def capture_logits(model: PreTrainedModel) -> Iterator[list[torch.Tensor]]:
    """Keep the output layer's logits from the next forward pass, so accuracy needs no second pass."""
    captured: list[torch.Tensor] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: captured.append(output.detach())
    )
    try:
        yield captured
    finally:
        hook.remove()


def sft_step_loss(model: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`sft_loss` on one batch, plus TRL's ``mean_token_accuracy`` (greedy next token is right)."""
    with capture_logits(model) as captured:
        logps, mask = token_logprobs(
            model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        )  # (B, L)
    L = logps.shape[1]
    predictions = captured[0][:, :-1].argmax(dim=-1)  # (B, L): the output layer saw L + 1 positions, the last one idle
    hits = (predictions == batch["input_ids"][:, -L:]).float() * mask  # (B, L)
    return sft_loss(logps, mask), {"mean_token_accuracy": masked_mean(hits, mask).item()}


def train_sft(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset | Sequence[Mapping], config: SFTConfig
) -> History:
    """Instruction-tune ``model`` on a TRL-format dataset; return the :class:`History`.

    Logs ``loss``, ``mean_token_accuracy`` and ``num_tokens`` (non-padding tokens
    seen so far, as TRL counts them) on top of the loop's own metrics.
    """
    check_language_model(model, tokenizer)
    max_length = context_length(model, config.max_length)
    rows = encode_dataset(
        tokenizer, dataset, max_length, config.completion_only_loss, config.packing, config.assistant_turns
    )
    loader = make_loader(rows, partial(pad_batch, pad_token_id=tokenizer.pad_token_id), config)
    num_tokens = 0

    def loss_fn(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        nonlocal num_tokens
        num_tokens += int(batch["attention_mask"].sum())
        loss, metrics = sft_step_loss(model, batch)
        return loss, {**metrics, "num_tokens": num_tokens}

    return train(model, loss_fn, loader, config, desc="SFT")


# --- what SFT changes, measured -------------------------------------------------------------
def _any_of(words: Sequence[str]) -> str:
    return "(?:" + "|".join(map(re.escape, words)) + ")"


_ADJECTIVE = _any_of(ATTRIBUTES + POSITIVE + NEGATIVE)
ANSWER_SHAPES = {  # the demonstrator's answer shapes, with any number, noun or adjective in their slots
    "arithmetic": re.compile(f"{_any_of(NUMBERS)} plus {_any_of(NUMBERS)} is {_any_of(NUMBERS)}"),
    "sentence": re.compile(f"(?:i think )?the {_any_of(OBJECTS + ANIMALS)} is {_ADJECTIVE}(?: and {_ADJECTIVE})*"),
}


def well_formed(prompt: str | list[dict[str, str]], completion: str | list[dict[str, str]]) -> bool:
    """Whether ``completion`` has the shape of an answer to ``prompt``'s kind of question, whatever it says.

    A sum is answered "A plus B is C", a review or description "[i think] the NOUN is
    ADJ [and ADJ ...]", exactly as the demonstrator answers (:data:`ANSWER_SHAPES`; no
    closing "." as in the pretraining corpus). Form only: "add 3 and 5" → "1 plus 1 is 3"
    and "describe the cat" → "the pizza is tasty" are well formed (and wrong).
    """
    family = parse_prompt(prompt).family
    shape = ANSWER_SHAPES["arithmetic" if family == "arithmetic" else "sentence"]
    return shape.fullmatch(normalize_text(message_text(completion, "completion"))) is not None


def format_report(world: World, prompts: list[str], completions: list[str], finished: list[bool]) -> dict[str, float]:
    """Shares of answers in the chat format and on the asked subject, mean gold reward and its components.

    Format, whatever the answer says: ``closed_turn`` (it emitted ``<|end|>``, i.e.
    ``finished``), ``well_formed`` (:func:`well_formed`) and ``format_rate`` (both).
    Content: ``answers_task`` (it names the prompt's subject, i.e. the gold
    ``relevance`` component is 1: "describe the cat" → mentions "cat"; "add 3 and 5"
    → mentions 3 and 5), ``gold`` and ``gold/<component>``.
    """
    check_texts(prompts, "prompts")  # a report on no answers has no means
    check_same_length(prompts, completions, "prompts", "completions")
    check_same_length(prompts, finished, "prompts", "finished flags")
    components = world.gold_components(prompts, completions)
    shaped = [well_formed(prompt, completion) for prompt, completion in zip(prompts, completions)]
    report = {
        "closed_turn": _mean(finished),
        "well_formed": _mean(shaped),
        "format_rate": _mean([f and w for f, w in zip(finished, shaped)]),
        "answers_task": _mean([relevance == 1.0 for relevance in components["relevance"]]),
        "gold": _mean(world.gold_reward(prompts, completions)),
    }
    return report | {f"gold/{name}": _mean(components[name]) for name in GOLD_WEIGHTS}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def share_stderr(share: float, n: int) -> float:
    """The standard error of a share of ``n`` answers (a ``format_report`` rate), never zero.

    Agresti-Coull: two hits and two misses are added before √(p(1 − p) / n), so a share of
    0 or 1 (every answer closed its turn) still gets an honest error instead of 0, which a
    check cell could not measure a margin in.
    """
    if not 0 <= share <= 1 or n < 1:
        raise ValueError(f"share must be in [0, 1] and n >= 1, got share={share!r}, n={n!r}: pass a rate and a count")
    adjusted = (share * n + 2) / (n + 4)
    return math.sqrt(adjusted * (1 - adjusted) / (n + 4))


def sample_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    prompts: list[str],
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> tuple[list[str], dict[str, float]]:
    """Sample one answer per prompt and return ``(completions, format_report(...))``."""
    completions, finished = generate_completions(
        model, tokenizer, prompts, max_new_tokens, temperature, seed=seed, return_finished=True
    )
    return completions, format_report(world, prompts, completions, finished)


def data_size_curve(
    base_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    sizes: Sequence[int],
    prompts: list[str],
    config: SFTConfig | None = None,
    seed: int = 0,
    return_completions: bool = False,
) -> list[dict[str, float]] | tuple[list[dict[str, float]], list[list[str]]]:
    """Instruction-tune a copy of ``base_model`` on the first n demonstrations for each n in ``sizes``.

    Returns one report per n: :func:`format_report` of samples on ``prompts`` plus
    ``num_demonstrations``. Every run uses the same ``config``, so as in practice more
    demonstrations also mean more optimiser steps; n = 0 is the base model itself.
    ``base_model`` is left as it was. With ``return_completions=True`` it returns
    ``(reports, completions)``, the sampled answers of each n too, so that per-answer
    measurements (a standard error, a paired difference) need no second training run.
    """
    config = config or SFTConfig(progress=False)
    reports, completions = [], []
    for n in sizes:
        model = copy.deepcopy(base_model)
        if n > 0:
            train_sft(model, tokenizer, world.sft_dataset(n), config)
        answers, report = sample_report(model, tokenizer, world, prompts, seed=seed)
        reports.append({"num_demonstrations": n} | report)
        completions.append(answers)
    return (reports, completions) if return_completions else reports


# --- pictures ---------------------------------------------------------------------------------
def token_table(
    tokenizer: PreTrainedTokenizerBase, example: Mapping, completion_only: bool = True, assistant_turns: str = "all"
) -> list[tuple[str, int, bool]]:
    """``(token, id, in_loss)`` for each token of the chat-formatted example, in order (see :func:`encode_example`)."""
    encoded = encode_example(tokenizer, example, completion_only, assistant_turns)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    return [(token, i, bool(m)) for token, i, m in zip(tokens, encoded["input_ids"], encoded["completion_mask"])]


def plot_loss_mask(
    tokenizer: PreTrainedTokenizerBase,
    example: Mapping,
    completion_only: bool = True,
    ax: Axes | None = None,
    assistant_turns: str = "all",
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """The example's tokens as boxes with their ids: blue tokens are predicted in the loss, grey ones are context.

    ``completion_only`` and ``assistant_turns`` choose the loss tokens, as in :func:`encode_example`.
    """
    encoded = encode_example(tokenizer, example, completion_only, assistant_turns)
    return plot_tokens(tokenizer, encoded["input_ids"], encoded["completion_mask"], ax=ax)
