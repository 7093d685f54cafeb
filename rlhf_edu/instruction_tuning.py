"""Instruction tuning (SFT): teach a base model the chat format by imitating demonstrations (chapter 9).

SFT is pretraining's next-token loss (the book's ``eq:nll``, chapter 3) with two changes:

1. the text is a chat-formatted conversation (the tokenizer's chat template), and
2. only the assistant's tokens are predicted, including the end-of-turn token that
   closes each answer, so the model learns *when to stop* as well as what to say.

    L_SFT(θ) = − Σ_i Σ_t m_it log π_θ(y_it | x_i, y_i,<t) / Σ_i Σ_t m_it

with ``m_it`` = 1 on completion tokens. The instruction-tuning chapter states this loss
in words, without a numbered equation; the regularization chapter's ``eq:sft_forward_kl``
shows that it is the forward KL to the demonstrator, up to a constant.

Datasets come in TRL's two conversational formats: ``messages`` (multi-turn; every
assistant turn is trained on) or ``prompt``/``completion``. :func:`encode_example` turns either into ids and a loss
mask, :func:`sft_loss` is the loss above, and :func:`train_sft` is the shared
training loop with that loss.
"""

from __future__ import annotations

import copy
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
from .core.training import Batch, History, TrainingConfig, make_loader, train
from .core.validation import check_known_words, check_texts, context_length
from .core.world import GOLD_WEIGHTS, World

FORMATS = (("messages",), ("prompt", "completion"))  # TRL's conversational dataset formats


@dataclass
class SFTConfig(TrainingConfig):
    """SFT settings; ``completion_only_loss`` and ``packing`` are TRL's names.

    ``completion_only_loss=False`` trains on every token after ``<bos>`` (prompt and
    chat markup too), as pretraining does; ``packing=True`` concatenates whole
    examples into rows of up to ``max_length`` tokens to spend less compute on padding.
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


# --- data: one encoder for both dataset formats -------------------------------------------
def encode_example(tokenizer: PreTrainedTokenizerBase, example: Mapping,
                   completion_only: bool = True) -> dict[str, list[int]]:
    """Chat-template one dataset row into ``input_ids`` and a ``completion_mask`` (1 = in the loss).

    ``messages`` rows put every assistant turn in the loss (answer + ``<|end|>``);
    ``prompt``/``completion`` rows put the completion in it. With
    ``completion_only=False`` every token after ``<bos>`` is in the loss.
    """
    if "messages" in example:
        encoded = _encode_messages(tokenizer, example["messages"])
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
    as_messages(messages, "user")  # refuses empty or malformed messages
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError(
            f"the conversation {messages!r} has no assistant turn, so SFT has nothing to learn from it: "
            "drop it, or add the answer as {'role': 'assistant', 'content': ...}"
        )
    check_plain_messages(tokenizer, messages)
    for message in messages:
        check_known_words(tokenizer, message["content"], f"the {message['role']} message")
    encoded = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    return {"input_ids": encoded["input_ids"], "completion_mask": encoded["assistant_masks"]}


def encode_dataset(tokenizer: PreTrainedTokenizerBase, dataset: Dataset | Sequence[Mapping], max_length: int,
                   completion_only: bool = True, packing: bool = False) -> list[dict[str, list[int]]]:
    """Encode every row, refuse rows over ``max_length`` tokens, and pack them if asked."""
    if len(dataset) == 0:
        raise ValueError("the SFT dataset is empty: pass at least one demonstration")
    rows = [encode_example(tokenizer, example, completion_only) for example in dataset]
    check_length(rows, max_length)
    return pack_rows(rows, max_length) if packing else rows


def pack_rows(rows: Sequence[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Concatenate consecutive whole examples into rows of at most ``max_length`` tokens.

    Fewer, fuller rows waste less compute on padding. The price: attention is causal
    over the packed row, so an example can attend to the ones packed before it (each
    still starts with its own ``<bos>``); nothing is ever cut in half.
    """
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

    ``logps`` and ``mask`` are (B, L), as :func:`rlhf_edu.logprobs.token_logprobs` returns them;
    the mask holds only the answer tokens (and their ``<|end|>``). The mean is taken per
    token across the whole batch, not per example and then over examples: every answer
    token weighs the same, so a long answer is not down-weighted against a short one
    (TRL normalises the same way). That is also why it returns one number, not one per example.
    """
    check_token_logprobs(logps, mask)
    return -(logps * mask).sum() / mask.sum()


@contextmanager
def capture_logits(model: PreTrainedModel) -> Iterator[list[torch.Tensor]]:
    """Keep the output layer's logits from the next forward pass, so accuracy needs no second pass."""
    captured: list[torch.Tensor] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: captured.append(output.detach()))
    try:
        yield captured
    finally:
        hook.remove()


def sft_step_loss(model: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`sft_loss` on one batch, plus TRL's ``mean_token_accuracy`` (greedy next token is right)."""
    with capture_logits(model) as captured:
        logps, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                     batch["completion_mask"])  # (B, L)
    L = logps.shape[1]
    predictions = captured[0][:, -L - 1:-1].argmax(dim=-1)  # (B, L): the logits before each target token
    hits = (predictions == batch["input_ids"][:, -L:]).float() * mask  # (B, L)
    return sft_loss(logps, mask), {"mean_token_accuracy": (hits.sum() / mask.sum()).item()}


def train_sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset | Sequence[Mapping],
              config: SFTConfig) -> History:
    """Instruction-tune ``model`` on a TRL-format dataset; return the :class:`History`.

    Logs ``loss``, ``mean_token_accuracy`` and ``num_tokens`` (non-padding tokens
    seen so far, as TRL counts them) on top of the loop's own metrics.
    """
    check_language_model(model, tokenizer)
    max_length = context_length(model, config.max_length)
    rows = encode_dataset(tokenizer, dataset, max_length, config.completion_only_loss, config.packing)
    loader = make_loader(rows, partial(pad_batch, pad_token_id=tokenizer.pad_token_id), config)
    num_tokens = 0

    def loss_fn(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        nonlocal num_tokens
        num_tokens += int(batch["attention_mask"].sum())
        loss, metrics = sft_step_loss(model, batch)
        return loss, {**metrics, "num_tokens": num_tokens}

    return train(model, loss_fn, loader, config, desc="SFT")


# --- what SFT changes, measured -------------------------------------------------------------
def format_report(world: World, prompts: list[str], completions: list[str], finished: list[bool]) -> dict[str, float]:
    """Share of well-formed answers, mean gold reward and each gold component's mean.

    An answer is in the right format when it closed its turn (``finished``) AND
    answers the asked task, i.e. names the prompt's subject (the gold ``relevance``
    component is 1: "describe the cat" → mentions "cat"; "add 3 and 5" → mentions 3 and 5).
    Keys: ``format_rate``, ``closed_turn``, ``answers_task``, ``gold`` and ``gold/<component>``.
    """
    if not len(prompts) == len(completions) == len(finished):
        raise ValueError(f"got {len(prompts)} prompts, {len(completions)} completions and {len(finished)} "
                         "finished flags: pass one of each per prompt")
    check_texts(prompts, "prompts")  # a report on no answers has no means
    components = world.gold_components(prompts, completions)
    answers_task = [relevance == 1.0 for relevance in components["relevance"]]
    report = {
        "format_rate": _mean([f and a for f, a in zip(finished, answers_task)]),
        "closed_turn": _mean(finished),
        "answers_task": _mean(answers_task),
        "gold": _mean(world.gold_reward(prompts, completions)),
    }
    return report | {f"gold/{name}": _mean(components[name]) for name in GOLD_WEIGHTS}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def sample_report(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, prompts: list[str],
                  temperature: float = 1.0, seed: int = 0,
                  max_new_tokens: int = MAX_NEW_TOKENS) -> tuple[list[str], dict[str, float]]:
    """Sample one answer per prompt and return ``(completions, format_report(...))``."""
    completions, finished = generate_completions(model, tokenizer, prompts, max_new_tokens, temperature, seed=seed,
                                                 return_finished=True)
    return completions, format_report(world, prompts, completions, finished)


def data_size_curve(base_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World,
                    sizes: Sequence[int], prompts: list[str], config: SFTConfig | None = None,
                    seed: int = 0) -> list[dict[str, float]]:
    """Instruction-tune a copy of ``base_model`` on the first n demonstrations for each n in ``sizes``.

    Returns one report per n: :func:`format_report` of samples on ``prompts`` plus
    ``num_demonstrations``. Every run uses the same ``config``, so as in practice more
    demonstrations also mean more optimiser steps; n = 0 is the base model itself.
    ``base_model`` is left as it was.
    """
    config = config or SFTConfig(progress=False)
    reports = []
    for n in sizes:
        model = copy.deepcopy(base_model)
        if n > 0:
            train_sft(model, tokenizer, world.sft_dataset(n), config)
        _, report = sample_report(model, tokenizer, world, prompts, seed=seed)
        reports.append({"num_demonstrations": n} | report)
    return reports


# --- pictures ---------------------------------------------------------------------------------
def token_table(tokenizer: PreTrainedTokenizerBase, example: Mapping,
                completion_only: bool = True) -> list[tuple[str, int, bool]]:
    """``(token, id, in_loss)`` for each token of the chat-formatted example, in order."""
    encoded = encode_example(tokenizer, example, completion_only)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    return [(token, i, bool(m)) for token, i, m in zip(tokens, encoded["input_ids"], encoded["completion_mask"])]


def plot_loss_mask(tokenizer: PreTrainedTokenizerBase, example: Mapping, completion_only: bool = True,
                   ax: Axes | None = None) -> Figure:
    """The example's tokens as boxes with their ids: blue tokens are predicted in the loss, grey ones are context."""
    encoded = encode_example(tokenizer, example, completion_only)
    return plot_tokens(tokenizer, encoded["input_ids"], encoded["completion_mask"], ax=ax)
