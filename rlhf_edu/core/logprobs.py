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

from .collate import Messages, collate


def check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ValueError when the tokenizer can emit ids the model has no embedding for."""
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only embeds {n_embeddings}: "
            "load the tokenizer that belongs to this model (zoo.load returns both), or call "
            "model.resize_token_embeddings(len(tokenizer)) before training"
        )


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each token's position counted over real tokens only, (B, T): padding on either side changes nothing."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def token_logprobs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log π(y_t | x, y_<t) over the span that holds completion tokens.

    Returns ``(logps, mask)``, both (B, L): ``logps[b, j]`` is the log-probability of
    target token ``input_ids[b, s + 1 + j]`` and ``mask`` is 1 where that token is a
    completion token (``s`` is one before the earliest completion token in the batch).

    Only the last L + 1 positions go through the output layer and log-softmax
    (``logits_to_keep``): the prompt's logits would be thrown away anyway.
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != completion_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and "
            f"completion_mask {tuple(completion_mask.shape)} must have the same (B, T) shape"
        )
    if not completion_mask.any(dim=1).all():
        raise ValueError("a row has no completion tokens: every example needs a non-empty completion")
    T = input_ids.shape[1]
    # The logits at `start` predict the earliest completion token; the very first token is never predicted.
    start = max(int(completion_mask.float().argmax(dim=1).min()) - 1, 0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask),
                   logits_to_keep=T - start).logits[:, :-1]  # (B, L, V)
    targets = input_ids[:, start + 1:]  # (B, L)
    # cross_entropy is a fused, memory-light log_softmax + gather.
    logps = -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, L)
    mask = completion_mask[:, start + 1:].to(logps.dtype)  # (B, L)
    return logps * mask, mask


def sequence_logprobs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log π(y | x) = Σ_t log π(y_t | x, y_<t) over completion tokens, one number per row: (B,).

    With ``average=True`` it returns the per-token mean instead (SimPO and
    length-normalised variants use it); the plain sum is the true log-probability.
    """
    logps, mask = token_logprobs(model, input_ids, attention_mask, completion_mask)  # (B, L)
    total = logps.sum(dim=1)  # (B,)
    return total / mask.sum(dim=1) if average else total


@torch.no_grad()
def completion_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str | Messages],
                        completions: Sequence[str | Messages], batch_size: int = 256) -> torch.Tensor:
    """:func:`sequence_logprobs` of each (prompt, completion), strings or message lists: a (N,) tensor on the CPU.

    For measuring, not training: no gradients, batches of ``batch_size`` right-padded by
    :func:`rlhf_edu.collate.collate`, so a row's value does not depend on its batch.
    """
    device = next(model.parameters()).device
    logps = [torch.empty(0)]  # no pairs, no values: an empty tensor rather than an error
    for start in range(0, len(prompts), batch_size):
        batch = collate(tokenizer, prompts[start:start + batch_size], completions[start:start + batch_size])
        logps.append(sequence_logprobs(model, **{name: ids.to(device) for name, ids in batch.items()}).cpu())
    return torch.cat(logps)
