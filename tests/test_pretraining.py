import math

import pytest
import torch

from rlhf_edu.core.collate import pad_batch
from rlhf_edu.core.world import World
from rlhf_edu.pretraining import PretrainingConfig, encode_document, language_modeling_loss, perplexity, pretrain
from tests.conftest import random_model


def test_every_token_after_bos_is_a_target(tokenizer):
    row = encode_document(tokenizer, "the cat is small .")
    assert tokenizer.convert_ids_to_tokens(row["input_ids"]) == ["<bos>", "the", "cat", "is", "small", ".", "<eos>"]
    assert row["completion_mask"] == [0, 1, 1, 1, 1, 1, 1]


def test_loss_is_mean_token_cross_entropy(tokenizer):
    model = random_model("gpt2", len(tokenizer))
    rows = [encode_document(tokenizer, t) for t in ["the cat is small .", "3 plus 5 is 8 ."]]
    batch = pad_batch(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        nll, metrics = language_modeling_loss(model, batch)
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100)
    assert nll.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected.item()), rel=1e-4)


def test_uniform_model_has_perplexity_of_the_vocabulary(tokenizer):
    model = random_model("llama", len(tokenizer))
    torch.nn.init.zeros_(model.lm_head.weight)  # every logit 0: a uniform next-token guess
    assert perplexity(model, tokenizer, ["the cat is small ."]) == pytest.approx(len(tokenizer), rel=1e-4)


def test_short_pretraining_lowers_perplexity(tokenizer):
    model = random_model("llama", len(tokenizer))
    corpus = World(seed=0).pretraining_corpus(256)
    before = perplexity(model, tokenizer, corpus[:64])
    pretrain(
        model, tokenizer, corpus, PretrainingConfig(batch_size=32, num_epochs=2, learning_rate=1e-2, progress=False)
    )
    assert perplexity(model, tokenizer, corpus[:64]) < 0.5 * before


def test_empty_document_is_refused(tokenizer):
    with pytest.raises(ValueError, match="document '  ' is empty or not a text"):
        encode_document(tokenizer, "  ")
    with pytest.raises(
        ValueError, match="document 'we saw that the cat is small' holds words the tokenizer does not know: 'that'"
    ):
        encode_document(tokenizer, "we saw that the cat is small")


def test_tokenizer_that_does_not_fit_is_refused(tokenizer):
    with pytest.raises(ValueError, match="only embeds 20"):
        pretrain(random_model("llama", 20), tokenizer, ["the cat ."], PretrainingConfig(progress=False))


def test_mean_token_nll_weighs_every_target_token_equally():
    from rlhf_edu.pretraining import mean_token_nll

    logps = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert mean_token_nll(logps, mask).item() == pytest.approx((1 + 3 + 2) / 3)  # not ((1+3)/2 + 2)/2
    with pytest.raises(ValueError, match="selects no token"):
        mean_token_nll(logps, torch.zeros_like(mask))
