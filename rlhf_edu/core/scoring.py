"""One number per text, measured without gradients: the loop behind every ``score``, ``perplexity`` and KL.

Perplexity, a reward model's scores, DPO's reference log-probs and the KL of a
policy's samples all run a model over many encoded rows, in eval mode and without
gradients, and keep one value per row. :func:`score_rows` is that loop, written once:

1. sort the rows by length, so each batch pads only to rows about as long as its own
   (less padding, less compute);
2. right-pad each batch (:func:`~rlhf_edu.core.collate.pad_batch`), so a row's value
   does not depend on what it is batched with;
3. run ``score_fn(model, batch)`` under ``torch.no_grad`` in eval mode, then put the
   model back in the mode it was in;
4. return the values in the rows' original order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .collate import Messages, encode_prompt_completion, pad_batch
from .runtime import SCORING_BATCH_SIZE
from .validation import check_fits_context

Row = dict[str, list[int]]  # "input_ids" and "completion_mask", as the encoders return them
ScoreFn = Callable[[PreTrainedModel, dict[str, torch.Tensor]], torch.Tensor]  # (model, batch) -> (B,)


def score_rows(
    model: PreTrainedModel,
    rows: Sequence[Row],
    pad_token_id: int,
    score_fn: ScoreFn,
    batch_size: int = SCORING_BATCH_SIZE,
) -> torch.Tensor:
    """``score_fn(model, batch)`` of every encoded row, in the order of ``rows``: a (N,) float tensor on the CPU.

    ``score_fn`` takes the model and one right-padded batch (``input_ids``,
    ``attention_mask``, ``completion_mask``, each (B, T), on the model's device) and
    returns one value per row, (B,). Rows are batched shortest first, so little of
    each batch is padding; no rows give an empty tensor.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}: try {SCORING_BATCH_SIZE}")
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # shortest first
    if rows:
        check_fits_context(len(rows[order[-1]]["input_ids"]), model, f"row {order[-1]} (prompt and completion)")
    was_training = model.training
    model.eval()  # measure the model as it stands, without dropout noise
    chunks = [torch.empty(0)]
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = pad_batch([rows[i] for i in order[start : start + batch_size]], pad_token_id)
                batch = {name: tensor.to(device) for name, tensor in batch.items()}
                chunks.append(score_fn(model, batch).float().cpu())  # (b,)
    finally:
        model.train(was_training)
    sorted_values = torch.cat(chunks)  # (N,) in length order
    values = torch.empty_like(sorted_values)
    values[torch.tensor(order, dtype=torch.long)] = sorted_values  # back to the rows' order
    return values


def score_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Messages],
    completions: Sequence[str | Messages],
    score_fn: ScoreFn,
    batch_size: int = SCORING_BATCH_SIZE,
) -> torch.Tensor:
    """:func:`score_rows` of each chat-formatted (prompt, completion), strings or message lists: (N,) on the CPU."""
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError("pass lists of prompts and completions, not a single string: one completion per prompt")
    if len(prompts) != len(completions):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(completions)} completions: pass one completion per prompt"
        )
    # a sampled answer may be empty: it is scored as the closed, empty turn the policy produced
    rows = [
        encode_prompt_completion(tokenizer, p, c, allow_empty_completion=True) for p, c in zip(prompts, completions)
    ]
    return score_rows(model, rows, tokenizer.pad_token_id, score_fn, batch_size)
