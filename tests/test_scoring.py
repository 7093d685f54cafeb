import inspect
import math

import pytest
import torch

from rlhf_edu import reward_modeling as rm
from rlhf_edu.core.collate import encode_prompt_completion
from rlhf_edu.core.logprobs import batch_sequence_logprobs, completion_logprobs
from rlhf_edu.core.runtime import SCORING_BATCH_SIZE
from rlhf_edu.core.scoring import score_completions, score_rows
from rlhf_edu.direct_alignment import precompute_ref_logps, reference_logprobs
from rlhf_edu.pretraining import encode_document, perplexity
from tests.conftest import logprob_alone, random_model

# Lengths differ on purpose, and the longest is not last: sorting must be undone.
PROMPTS = ["review the soup", "add 3 and 5", "describe the cat", "add 1 and 1", "review the pizza"]
COMPLETIONS = ["the soup is tasty and fresh and good", "3 plus 5 is 8", "the cat is small", "2", "the pizza is great"]
TEXTS = ["the cat is small .", "3 plus 5 is 8 .", "the soup is tasty and fresh and good .", "the dog ."]
BATCH_SIZES = (1, 3, 256)


def rows_of(tokenizer, prompts=PROMPTS, completions=COMPLETIONS):
    return [encode_prompt_completion(tokenizer, p, c) for p, c in zip(prompts, completions)]


# --- the loop itself ---------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_score_rows_gives_each_row_its_unbatched_value_in_the_original_order(model, tokenizer, batch_size):
    rows = rows_of(tokenizer)
    expected = [logprob_alone(model, row) for row in rows]
    got = score_rows(model, rows, tokenizer.pad_token_id, batch_sequence_logprobs, batch_size)
    assert got.shape == (len(rows),) and got.device.type == "cpu"
    assert got.tolist() == pytest.approx(expected, abs=1e-4)


def test_score_rows_sorts_by_length_runs_in_eval_mode_without_grad_and_restores_the_mode(tokenizer):
    model = random_model("llama", len(tokenizer)).train()
    seen = []

    def record(model, batch):
        seen.append((batch["attention_mask"].sum(dim=1).tolist(), model.training, torch.is_grad_enabled()))
        return batch["attention_mask"].sum(dim=1)  # (B,) each row's length

    rows = rows_of(tokenizer)
    lengths = score_rows(model, rows, tokenizer.pad_token_id, record, batch_size=2)
    assert lengths.tolist() == [len(row["input_ids"]) for row in rows]  # back in the rows' order
    batched_lengths = [n for lengths_in_batch, _, _ in seen for n in lengths_in_batch]
    assert batched_lengths == sorted(len(row["input_ids"]) for row in rows)  # shortest first
    assert all(not training and not grad for _, training, grad in seen)
    assert model.training  # handed back as it came
    assert score_rows(model.eval(), rows, tokenizer.pad_token_id, record).shape == (5,) and not model.training


def test_score_rows_restores_the_mode_when_the_score_fails(tokenizer):
    model = random_model("llama", len(tokenizer)).train()

    def broken(model, batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        score_rows(model, rows_of(tokenizer), tokenizer.pad_token_id, broken)
    assert model.training


def test_score_rows_of_no_rows_is_empty_and_a_bad_batch_size_is_refused(tokenizer):
    model = random_model("llama", len(tokenizer))
    assert score_rows(model, [], tokenizer.pad_token_id, batch_sequence_logprobs).shape == (0,)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0: try 64"):
        score_rows(model, rows_of(tokenizer), tokenizer.pad_token_id, batch_sequence_logprobs, batch_size=0)


def test_score_rows_runs_each_batch_on_the_models_device(tokenizer):
    model = random_model("llama", len(tokenizer)).to("meta")  # a device every machine has
    devices = []

    def record(model, batch):
        devices.append({tensor.device.type for tensor in batch.values()})
        return torch.zeros(len(batch["input_ids"]))

    values = score_rows(model, rows_of(tokenizer), tokenizer.pad_token_id, record, batch_size=2)
    assert values.tolist() == [0.0] * 5 and devices == [{"meta"}] * 3


def test_score_rows_names_the_row_too_long_for_the_context(tokenizer):
    model = random_model("llama", len(tokenizer))  # a context of 128 tokens
    rows = rows_of(tokenizer)
    rows[2] = {"input_ids": [5] * 130, "completion_mask": [0] * 129 + [1]}
    with pytest.raises(
        ValueError, match=r"^row 2 \(prompt and completion\) is 130 tokens long but the model's context is 128 tokens"
    ):
        score_rows(model, rows, tokenizer.pad_token_id, batch_sequence_logprobs)


@pytest.mark.parametrize(
    "prompts, completions", [("add 1 and 2", ["1 plus 2 is 3"]), (["add 1 and 2"], "1 plus 2 is 3")]
)
def test_score_completions_refuses_a_single_string_on_either_side(tokenizer, prompts, completions):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(
        TypeError, match="^pass lists of prompts and completions, not a single string: one completion per prompt$"
    ):
        score_completions(model, tokenizer, prompts, completions, batch_sequence_logprobs)


# --- each caller: a row's value does not depend on its batch ------------------------------------------
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_completion_logprobs_match_one_row_at_a_time(tokenizer, batch_size):
    model = random_model("qwen2", len(tokenizer))
    expected = [logprob_alone(model, row) for row in rows_of(tokenizer)]
    got = completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size)
    assert got.tolist() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_perplexity_matches_one_document_at_a_time(tokenizer, batch_size):
    model = random_model("gpt2", len(tokenizer))
    rows = [encode_document(tokenizer, text) for text in TEXTS]
    total_logp = sum(logprob_alone(model, row) for row in rows)
    num_targets = sum(len(row["input_ids"]) - 1 for row in rows)  # every token after <bos>
    expected = math.exp(-total_logp / num_targets)
    assert perplexity(model, tokenizer, TEXTS, batch_size=batch_size) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_reward_scores_match_one_completion_at_a_time(tokenizer, batch_size):
    causal_lm = random_model("llama", len(tokenizer))
    model = rm.reward_model_from(causal_lm)
    model.config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():  # alone, unpadded: the score head at the very last token
        expected = [
            model(input_ids=torch.tensor([row["input_ids"]])).logits[0, -1].item() for row in rows_of(tokenizer)
        ]
    got = rm.score(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size)
    assert got.tolist() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_reference_logprobs_match_one_answer_at_a_time(tokenizer, batch_size):
    from datasets import Dataset

    from rlhf_edu.core.preferences import encode_pairs

    model = random_model("gpt2", len(tokenizer))
    rejected = ["3 plus 5 is 9 9", "2 3", "the cat is big", "the soup is bland", "the pizza"]
    pairs = Dataset.from_dict({"prompt": PROMPTS, "chosen": COMPLETIONS, "rejected": rejected})
    ref_chosen, ref_rejected = reference_logprobs(
        model, encode_pairs(tokenizer, pairs), tokenizer.pad_token_id, batch_size
    )
    assert ref_chosen == pytest.approx([logprob_alone(model, row) for row in rows_of(tokenizer)], abs=1e-4)
    assert ref_rejected == pytest.approx(
        [logprob_alone(model, row) for row in rows_of(tokenizer, PROMPTS, rejected)], abs=1e-4
    )


@pytest.mark.parametrize(
    "fn", [completion_logprobs, perplexity, rm.score, rm.score_pairs, reference_logprobs, precompute_ref_logps]
)
def test_every_scorer_batches_by_the_one_shared_default(fn):
    assert inspect.signature(fn).parameters["batch_size"].default == SCORING_BATCH_SIZE


def test_prompts_and_completions_of_different_lengths_are_refused_word_for_word(tokenizer):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(ValueError, match=r"^got 2 prompts but 1 completions: pass one completion per prompt$"):
        score_completions(model, tokenizer, ["add 1 and 2", "add 2 and 2"], ["3"], lambda *a: None)
