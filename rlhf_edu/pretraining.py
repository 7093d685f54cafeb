"""Language modeling as next-token prediction: how the zoo's ``base`` model is made (chapter 3).

Pretraining maximises the log-likelihood of plain text,

    L(θ) = −(1/N) Σ_t log π_θ(w_t | w_<t),

averaged over every token after ``<bos>``. It is the same log-probability that the
later chapters compute for completions, with every token counting as "completion":
so it is :func:`rlhf_edu.logprobs.token_logprobs` plus a mean, trained with the
shared loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.collate import check_length, pad_batch
from .core.logprobs import check_tokenizer_fits, token_logprobs
from .core.tokenizer import EOS
from .core.training import History, TrainingConfig, make_loader, train


@dataclass
class PretrainingConfig(TrainingConfig):
    learning_rate: float = 3e-3
    batch_size: int = 64
    num_epochs: int = 2
    warmup_ratio: float = 0.05


def encode_document(tokenizer: PreTrainedTokenizerBase, text: str) -> dict[str, list[int]]:
    """``<bos> text <eos>`` as ids; every token but ``<bos>`` is a prediction target."""
    if not text.strip():
        raise ValueError("empty document in the corpus: drop empty strings before pretraining")
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"],
           tokenizer.convert_tokens_to_ids(EOS)]
    return {"input_ids": ids, "completion_mask": [0] + [1] * (len(ids) - 1)}


def mean_token_nll(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−Σ_t m_t log π(w_t | w_<t) / Σ_t m_t (``eq:nll``): the mean negative log-likelihood per target token; a scalar.

    ``logps`` and ``mask`` are (B, L), as :func:`rlhf_edu.logprobs.token_logprobs` returns them.
    The mean is over every target token of the batch, not per example: each token
    weighs the same, so a long text is not down-weighted against a short one.
    """
    if logps.shape != mask.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and mask {tuple(mask.shape)} must have the same (B, L) shape")
    if not mask.any():
        raise ValueError("the mask selects no token: every example needs a non-empty completion")
    return -(logps * mask).sum() / mask.sum()


def language_modeling_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """:func:`mean_token_nll` of one batch, and its perplexity."""
    logps, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    nll = mean_token_nll(logps, mask)
    return nll, {"perplexity": nll.exp().item()}


def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str],
               batch_size: int = 256) -> float:
    """exp of the mean per-token negative log-likelihood of ``texts``: lower means the model knows the language."""
    rows = [encode_document(tokenizer, t) for t in texts]
    device = next(model.parameters()).device
    total_logp, total_tokens = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in pad_batch(rows[i:i + batch_size], tokenizer.pad_token_id).items()}
            logps, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
            total_logp += logps.sum().item()
            total_tokens += mask.sum().item()
    return float(torch.tensor(-total_logp / total_tokens).exp())


def pretrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, corpus: list[str],
             config: PretrainingConfig) -> History:
    """Train ``model`` on plain-text ``corpus`` by next-token prediction; return the :class:`History`."""
    check_tokenizer_fits(model, tokenizer)
    rows = [encode_document(tokenizer, text) for text in corpus]
    check_length(rows, config.max_length or model.config.max_position_embeddings)
    loader = make_loader(rows, partial(pad_batch, pad_token_id=tokenizer.pad_token_id), config)
    return train(model, partial(language_modeling_loss, model), loader, config, desc="pretraining")


