"""log π(y | x): the one place where logits become log-probabilities.

SFT, reward modeling, DPO and policy gradients all need the log-probability that
a model assigns to a completion y given its prompt x,

    log π(y | x) = Σ_t log π(y_t | x, y_<t),

summed over completion tokens only (the prompt is given, not generated). They all
call :func:`sequence_logprobs` (or :func:`token_logprobs` when they need each token,
as PPO does), so a fix or a speed-up here serves every chapter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .collate import Messages
from .runtime import SCORING_BATCH_SIZE
from .scoring import score_completions
from .validation import check_causal_lm


def check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ValueError when the tokenizer is not the model's: ids it has no embedding for, or far fewer tokens.

    Models often pad their vocabulary a little past the tokenizer's (to a multiple of 64,
    say); a model that embeds thousands more tokens than the tokenizer knows was trained
    with another tokenizer, and would sample ids that decode to nothing.
    """
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only embeds {n_embeddings}: "
            "load the tokenizer that belongs to this model (zoo.load returns both), or call "
            "model.resize_token_embeddings(len(tokenizer)) before training"
        )
    if n_embeddings - len(tokenizer) > max(1024, len(tokenizer) // 10):  # pragma: no mutate (/: n > ⌊x⌋ iff n > x)
        raise ValueError(
            f"the model embeds {n_embeddings} tokens but the tokenizer has only {len(tokenizer)}: they do not "
            "belong together. Load the tokenizer that belongs to this model (zoo.load returns both)"
        )


def check_language_model(model: object, tokenizer: PreTrainedTokenizerBase, name: str = "model") -> None:
    """Refuse anything but a causal LM whose vocabulary matches ``tokenizer`` (a reward model, say)."""
    check_causal_lm(model, name)
    check_tokenizer_fits(model, tokenizer)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each token's position counted over real tokens only, (B, T): padding on either side changes nothing."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def check_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> None:
    """Raise ValueError unless the three tensors share one (B, T) shape and every row has a completion token."""
    if input_ids.shape != attention_mask.shape or input_ids.shape != completion_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and "
            f"completion_mask {tuple(completion_mask.shape)} must have the same (B, T) shape"
        )
    if not completion_mask.any(dim=1).all():
        raise ValueError("a row has no completion tokens: every example needs a non-empty completion")


def token_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log π(y_t | x, y_<t) over the span that holds completion tokens.

    Returns ``(logps, mask)``, both (B, L): ``logps[b, j]`` is the log-probability of
    target token ``input_ids[b, s + 1 + j]`` and ``mask`` is 1 where that token is a
    completion token (``s`` is one before the earliest completion token in the batch).

    Only the last L + 1 positions go through the output layer and log-softmax
    (``logits_to_keep``): the prompt's logits would be thrown away anyway.
    """
    check_batch(input_ids, attention_mask, completion_mask)
    T = input_ids.shape[1]
    # The logits at `start` predict the earliest completion token; the very first token is never predicted.
    start = max(int(completion_mask.float().argmax(dim=1).min()) - 1, 0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=T - start,
    ).logits[:, :-1]  # (B, L, V)
    targets = input_ids[:, start + 1 :]  # (B, L)
    # cross_entropy is a fused, memory-light log_softmax + gather.
    logps = -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, L)
    mask = completion_mask[:, start + 1 :].to(logps.dtype)  # (B, L)
    return logps * mask, mask


def sequence_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    average: bool = False,
) -> torch.Tensor:
    """log π(y | x) = Σ_t log π(y_t | x, y_<t) over completion tokens, one number per row: (B,).

    With ``average=True`` it returns the per-token mean instead (SimPO and
    length-normalised variants use it); the plain sum is the true log-probability.
    """
    logps, mask = token_logprobs(model, input_ids, attention_mask, completion_mask)  # (B, L)
    total = logps.sum(dim=1)  # (B,)
    return total / mask.sum(dim=1) if average else total


def batch_sequence_logprobs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`sequence_logprobs` of a padded batch dict (``input_ids``, ``attention_mask``, ``completion_mask``): (B,).

    The ``score_fn`` that :func:`~rlhf_edu.core.scoring.score_rows` takes, for log π(y | x).
    """
    return sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])


def completion_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Messages],
    completions: Sequence[str | Messages],
    batch_size: int = SCORING_BATCH_SIZE,
) -> torch.Tensor:
    """:func:`sequence_logprobs` of each (prompt, completion), strings or message lists: a (N,) tensor on the CPU.

    For measuring, not training: :func:`~rlhf_edu.core.scoring.score_rows` runs it without
    gradients, in eval mode, on length-sorted right-padded batches, so a row's value does
    not depend on its batch.
    """
    check_language_model(model, tokenizer)
    return score_completions(model, tokenizer, prompts, completions, batch_sequence_logprobs, batch_size)


def check_token_logprobs(logps: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise ValueError unless ``logps`` and ``mask`` match as :func:`token_logprobs` returns them, one token kept."""
    if logps.shape != mask.shape:
        raise ValueError(
            f"logps {tuple(logps.shape)} and mask {tuple(mask.shape)} must have the same (B, L) shape: "
            "pass both outputs of token_logprobs"
        )
    if not mask.any():
        raise ValueError("the mask selects no token: every example needs a non-empty completion")
