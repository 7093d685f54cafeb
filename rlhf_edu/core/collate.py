"""From prompt/completion strings to padded ids and masks.

Every trainer in the package (pretraining, SFT, reward model, DPO, policy
gradients) feeds the model through these two steps:

1. :func:`encode_prompt_completion` renders the chat template and marks which
   tokens belong to the completion (including its end-of-turn token, so the model
   learns to stop).
2. :func:`pad_batch` right-pads a list of encoded rows into tensors.

Why right padding for training: every row keeps its tokens at positions 0..n−1,
exactly as when it is run alone, so a sequence's log-probability does not depend
on what it was batched with. Generation is the opposite case: it pads on the
*left* so that every row's next token is appended at the same last position (see
:func:`rlhf_edu.core.rollouts.sample_rollouts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from .validation import check_int, check_known_words, check_no_markup

Messages = list[dict[str, str]]


def as_messages(text_or_messages: str | Messages, role: str, allow_empty: bool = False) -> Messages:
    """Wrap a plain string as a one-message conversation; pass message lists through unchanged.

    An empty message is refused, unless ``allow_empty``: a sampled answer may be empty (the
    policy closed its turn at once), and a scorer must still score it.
    """
    if isinstance(text_or_messages, str):
        text_or_messages = [{"role": role, "content": text_or_messages}]
    messages = text_or_messages
    if not isinstance(messages, list) or not messages:
        raise TypeError(f"expected a string or a non-empty list of {{'role', 'content'}} dicts, got {messages!r}")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise TypeError(f"each message must be a {{'role': ..., 'content': str}} dict, got {message!r}")
        if not isinstance(message.get("role"), str):
            raise ValueError(
                f"the message {message!r} has no role: add one, e.g. {{'role': {role!r}, 'content': ...}}, "
                "so the chat template knows whose turn it is"
            )
        if not message["content"].strip() and not allow_empty:
            raise ValueError(
                f"empty {message['role']} message in {messages!r}: every prompt and completion "
                "needs some text (drop or fix that example)"
            )
    return messages


def check_plain_messages(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> None:
    """Refuse messages whose text holds chat markup: typed into a prompt, it would forge a turn."""
    for message in messages:
        check_no_markup(tokenizer, message["content"], f"the {message['role']} message")


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, add_generation_prompt: bool = False, tokenize: bool = True
) -> list[int] | str:
    """The chat template applied to ``messages``: token ids, or the text with ``tokenize=False``.

    A template that refuses the conversation (an unknown role, say) raises a ValueError with its message.
    """
    try:
        return tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=add_generation_prompt,
            tokenize=tokenize,
            return_dict=False,  # pragma: no mutate (None reads as False too: the ids, not a dict)
        )
    except TemplateError as error:
        raise ValueError(f"the chat template refused {messages!r}: {error}") from None


def encode_prompt_completion(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | Messages,
    completion: str | Messages,
    allow_empty_completion: bool = False,
) -> dict[str, list[int]]:
    """Token ids of the chat-formatted prompt + completion, with a mask that is 1 on completion tokens.

    The prompt is rendered with the generation prompt (``<|assistant|>``), exactly as
    at sampling time, so training and generation see the same tokens. An empty completion
    is refused as training data, and encoded (a closed, empty turn) with
    ``allow_empty_completion``, as scorers need.
    """
    prompt_messages = as_messages(prompt, "user")
    completion_messages = as_messages(completion, "assistant", allow_empty=allow_empty_completion)
    check_plain_messages(tokenizer, prompt_messages + completion_messages)
    prompt_ids = render_chat(tokenizer, prompt_messages, add_generation_prompt=True)
    full_ids = render_chat(tokenizer, prompt_messages + completion_messages)
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in full_ids:  # pragma: no mutate (or: slower)
        for message in prompt_messages + completion_messages:  # find the words, to name them
            check_known_words(tokenizer, message["content"], f"the {message['role']} message")
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(
            "this tokenizer's chat template renders the prompt differently with and without the "
            "answer, so the completion cannot be located: use a template whose generation prompt "
            "is a prefix of the full conversation"
        )
    n_completion = len(full_ids) - len(prompt_ids)
    return {"input_ids": full_ids, "completion_mask": [0] * len(prompt_ids) + [1] * n_completion}


def check_length(rows: Sequence[dict[str, list[int]]], max_length: int) -> None:
    """Refuse rows longer than ``max_length``: silently cutting an answer would train on half of it."""
    check_int(max_length, "max_length", fix="it is the longest example in tokens, e.g. the model's context")
    for i, row in enumerate(rows):
        if len(row["input_ids"]) > max_length:
            raise ValueError(
                f"example {i} is {len(row['input_ids'])} tokens long but max_length is {max_length}: "
                "raise max_length (up to the model's max_position_embeddings) or shorten that example"
            )


def pad_batch(rows: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded rows into ``input_ids``, ``attention_mask`` and ``completion_mask``, each (B, T).

    Any other numeric field of the rows (e.g. a label or a gold reward) is stacked into a (B,) tensor;
    text fields are left out.
    """
    if pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token = tokenizer.eos_token")
    if not rows:
        raise ValueError("no rows to pad: pass at least one encoded example")
    T = max(len(row["input_ids"]) for row in rows)
    batch = {  # each (B, T)
        "input_ids": torch.full((len(rows), T), pad_token_id, dtype=torch.long),  # pragma: no mutate (int64 anyway)
        "attention_mask": torch.zeros(len(rows), T, dtype=torch.long),  # (B, T)
        "completion_mask": torch.zeros(len(rows), T, dtype=torch.long),  # (B, T)
    }
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(row["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["completion_mask"][i, :n] = torch.tensor(row["completion_mask"])
    for key, value in rows[0].items():
        if key not in batch and isinstance(value, (int, float)):
            batch[key] = torch.tensor([row[key] for row in rows])
    return batch


def collate(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Messages],
    completions: Sequence[str | Messages],
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Encode and right-pad prompt/completion pairs in one call (see the module docstring for why right)."""
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError("pass lists of prompts and completions, not a single string")
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions: pass one per prompt")
    rows = [encode_prompt_completion(tokenizer, p, c) for p, c in zip(prompts, completions)]
    if max_length is not None:
        check_length(rows, max_length)
    return pad_batch(rows, tokenizer.pad_token_id)
