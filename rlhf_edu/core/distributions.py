"""The distribution a model samples its next token from: temperature reshapes it, entropy measures its spread.

Sampling draws y_t from softmax(z / T), where z are the model's logits and T the
temperature; the entropy H(p) = −Σ_v p_v log p_v says how many tokens, in effect,
the model is choosing between (e^H of them). Both are plain functions on tensors, so
chapter 3's plots and the RL chapters' ``entropy`` metric share one definition.
"""

from __future__ import annotations

import torch

from .validation import check_distribution, check_number


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The sampling distribution softmax(logits / T) over the last dimension, as ``generate`` uses it; same shape.

    T < 1 sharpens it towards the most likely token, T > 1 flattens it towards
    uniform, and T = 0 is greedy decoding: all mass on the arg-max.
    """
    temperature = check_number(temperature, "temperature", low=0, fix="0 means greedy, 1 samples from π")
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits / temperature, dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy H(p) = −Σ_v p_v log p_v in nats over the last dimension (0 · log 0 counts as 0): shape (...,)."""
    check_distribution(probs, "probs", tolerance=1e-4)
    return torch.special.entr(probs).sum(dim=-1)  # entr(p) = −p log p, and entr(0) = 0
