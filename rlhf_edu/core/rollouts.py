"""Sampling completions: the one helper every chapter uses to ask a model for answers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .collate import as_messages
from .logprobs import check_tokenizer_fits


def generate_completions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                         max_new_tokens: int = 24, temperature: float = 1.0, seed: int | None = None,
                         batch_size: int = 256, return_finished: bool = False
                         ) -> list[str] | tuple[list[str], list[bool]]:
    """Sample y ~ π(· | x) for each user-message prompt x and return only the decoded completions.

    Each prompt is wrapped in the chat template with the generation prompt, batches
    are left-padded (so every row's next token lands at the same last position), and
    sampling is pure: no top-k or top-p truncation, so the samples follow π exactly.
    ``temperature=0`` is greedy decoding. A ``seed`` makes the samples repeatable.

    With ``return_finished=True`` it also returns, per completion, whether the model
    closed its turn (emitted the end-of-turn token) within ``max_new_tokens``.
    """
    if isinstance(prompts, str):
        raise TypeError("pass a list of prompts, e.g. [prompt], not a single string")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    check_tokenizer_fits(model, tokenizer)
    texts = [tokenizer.apply_chat_template(as_messages(p, "user"), add_generation_prompt=True, tokenize=False)
             for p in prompts]
    device = next(model.parameters()).device
    completions, finished = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        for i in range(0, len(texts), batch_size):
            new_tokens = _generate_batch(model, tokenizer, texts[i:i + batch_size], max_new_tokens, temperature)
            finished += (new_tokens == tokenizer.eos_token_id).any(dim=1).tolist()
            completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return (completions, finished) if return_finished else completions


def _generate_batch(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                    max_new_tokens: int, temperature: float) -> torch.Tensor:
    """The new token ids for one left-padded batch: (B, max_new_tokens) or shorter."""
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = padding_side
    inputs = inputs.to(next(model.parameters()).device)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
        else {"do_sample": False}
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id, **sampling)  # (B, T + new)
    return output[:, inputs["input_ids"].shape[1]:]  # (B, new)


class Rollout:  # placeholder until sample_rollouts lands
    pass


def sample_rollouts(*args, **kwargs):
    raise NotImplementedError
