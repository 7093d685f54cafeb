"""Language modeling as next-token prediction: how the zoo's ``base`` model is made (chapter 3).

Pretraining maximises the log-likelihood of plain text,

    L(θ) = −(1/N) Σ_t log π_θ(w_t | w_<t),

averaged over every token after ``<bos>``. It is the same log-probability that the
later chapters compute for completions, with every token counting as "completion":
so it is :func:`rlhf_edu.core.logprobs.token_logprobs` plus a mean, trained with the
shared loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.collate import check_length, pad_batch
from .core.logprobs import batch_sequence_logprobs, check_language_model, check_token_logprobs, token_logprobs
from .core.runtime import SCORING_BATCH_SIZE
from .core.scoring import score_rows
from .core.stats import masked_mean
from .core.tokenizer import EOS
from .core.training import History, TrainingConfig, make_loader, train
from .core.validation import check_known_words, check_texts, context_length


@dataclass
class PretrainingConfig(TrainingConfig):
    learning_rate: float = 3e-3
    batch_size: int = 64
    num_epochs: int = 2
    warmup_ratio: float = 0.05


def encode_document(tokenizer: PreTrainedTokenizerBase, text: str) -> dict[str, list[int]]:
    """``<bos> text <eos>`` as ids; every token but ``<bos>`` is a prediction target."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"document {text!r} is empty or not a text: drop it before pretraining")
    check_known_words(tokenizer, text, "document")
    ids = [
        tokenizer.bos_token_id,
        *tokenizer(text, add_special_tokens=False)["input_ids"],
        tokenizer.convert_tokens_to_ids(EOS),
    ]
    return {"input_ids": ids, "completion_mask": [0] + [1] * (len(ids) - 1)}


def mean_token_nll(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−Σ_t m_t log π(w_t | w_<t) / Σ_t m_t (``eq:nll``): the mean negative log-likelihood per target token; a scalar.

    ``logps`` and ``mask`` are (B, L), as :func:`rlhf_edu.core.logprobs.token_logprobs` returns them.
    The mean is over every target token of the batch, not per example: each token
    weighs the same, so a long text is not down-weighted against a short one.
    """
    check_token_logprobs(logps, mask)
    return -masked_mean(logps, mask)


def language_modeling_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """:func:`mean_token_nll` of one batch, and its perplexity."""
    logps, mask = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    nll = mean_token_nll(logps, mask)
    return nll, {"perplexity": nll.exp().item()}


def perplexity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int = SCORING_BATCH_SIZE
) -> float:
    """exp(−Σ_docs log π(doc) / Σ_docs n_targets): exp of the mean per-token NLL (``eq:nll``) of ``texts``.

    Lower means the model knows the language; a uniform guess over V tokens scores V.
    Each document's log π sums over its target tokens, every token after ``<bos>``.
    """
    check_language_model(model, tokenizer)
    rows = [encode_document(tokenizer, t) for t in check_texts(texts, "texts")]
    logps = score_rows(model, rows, tokenizer.pad_token_id, batch_sequence_logprobs, batch_size)  # (N,)
    num_targets = sum(sum(row["completion_mask"]) for row in rows)
    return math.exp(-logps.double().sum().item() / num_targets)


def pretrain(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, corpus: list[str], config: PretrainingConfig
) -> History:
    """Train ``model`` on plain-text ``corpus`` by next-token prediction; return the :class:`History`."""
    check_language_model(model, tokenizer)
    rows = [encode_document(tokenizer, text) for text in corpus]
    check_length(rows, context_length(model, config.max_length))
    loader = make_loader(rows, partial(pad_batch, pad_token_id=tokenizer.pad_token_id), config)
    return train(model, partial(language_modeling_loss, model), loader, config, desc="pretraining")
