import dataclasses
import math

import pytest
import torch
from matplotlib.colors import to_rgba

from rlhf_edu import recipes, zoo
from rlhf_edu.core.collate import pad_batch
from rlhf_edu.core.plotting import COMPLETION_COLOR
from rlhf_edu.core.runtime import get_preset
from rlhf_edu.instruction_tuning import (
    SFTConfig,
    capture_logits,
    data_size_curve,
    encode_dataset,
    encode_example,
    format_report,
    pack_rows,
    plot_loss_mask,
    sample_report,
    sft_loss,
    sft_step_loss,
    token_table,
    train_sft,
)
from tests.conftest import random_model

PROMPT_COMPLETION = {"prompt": [{"role": "user", "content": "add 3 and 5"}],
                     "completion": [{"role": "assistant", "content": "3 plus 5 is 8"}]}
CONVERSATION = {"messages": [
    {"role": "user", "content": "describe the cat"},
    {"role": "assistant", "content": "the cat is small"},
    {"role": "user", "content": "review the pizza"},
    {"role": "assistant", "content": "the pizza is tasty and fresh"},
]}


def words_then_end(tokenizer, text):
    """Ids of an answer's words followed by the end-of-turn token, counted without the chat template."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def masked_ids(encoded):
    return [i for i, m in zip(encoded["input_ids"], encoded["completion_mask"]) if m]


# --- masks ------------------------------------------------------------------------------------
def test_prompt_completion_mask_covers_exactly_the_answer_and_its_end_of_turn(tokenizer):
    encoded = encode_example(tokenizer, PROMPT_COMPLETION)
    assert masked_ids(encoded) == words_then_end(tokenizer, "3 plus 5 is 8")
    n = len(encoded["input_ids"])
    assert encoded["completion_mask"] == [0] * (n - 6) + [1] * 6  # the answer is the contiguous tail
    assert tokenizer.decode(encoded["input_ids"][: n - 6]) == "<bos> <|user|> add 3 and 5 <|end|> <|assistant|>"


def test_messages_mask_covers_every_assistant_turn_and_nothing_else(tokenizer):
    encoded = encode_example(tokenizer, CONVERSATION)
    expected = words_then_end(tokenizer, "the cat is small") + words_then_end(tokenizer, "the pizza is tasty and fresh")
    assert masked_ids(encoded) == expected
    context = [i for i, m in zip(encoded["input_ids"], encoded["completion_mask"]) if not m]
    assert tokenizer.decode(context) == ("<bos> <|user|> describe the cat <|end|> <|assistant|> "
                                         "<|user|> review the pizza <|end|> <|assistant|>")


def test_both_formats_encode_a_single_turn_identically(tokenizer):
    as_messages = {"messages": PROMPT_COMPLETION["prompt"] + PROMPT_COMPLETION["completion"]}
    assert encode_example(tokenizer, as_messages) == encode_example(tokenizer, PROMPT_COMPLETION)
    plain_strings = {"prompt": "add 3 and 5", "completion": "3 plus 5 is 8"}
    assert encode_example(tokenizer, plain_strings) == encode_example(tokenizer, PROMPT_COMPLETION)


def test_full_sequence_loss_masks_only_bos(tokenizer):
    for example in (PROMPT_COMPLETION, CONVERSATION):
        encoded = encode_example(tokenizer, example, completion_only=False)
        assert encoded["completion_mask"] == [0] + [1] * (len(encoded["input_ids"]) - 1)


# --- bad input --------------------------------------------------------------------------------
def test_dataset_without_the_needed_columns_names_found_and_expected(tokenizer):
    with pytest.raises(ValueError, match=r"messages or prompt/completion.*has question, answer: rename"):
        encode_example(tokenizer, {"question": "add 3 and 5", "answer": "8"})


def test_empty_completion_is_refused(tokenizer):
    with pytest.raises(ValueError, match="empty assistant message"):
        encode_example(tokenizer, {"prompt": "add 3 and 5", "completion": "  "})
    with pytest.raises(ValueError, match="empty assistant message"):
        encode_example(tokenizer, {"messages": [{"role": "user", "content": "add 3 and 5"},
                                                {"role": "assistant", "content": ""}]})


def test_conversation_without_assistant_turn_is_refused(tokenizer):
    with pytest.raises(ValueError, match="has no assistant turn.*drop it, or add the answer"):
        encode_example(tokenizer, {"messages": [{"role": "user", "content": "add 3 and 5"}]})


def test_sequence_longer_than_max_length_is_refused_not_cut(tokenizer):
    n = len(encode_example(tokenizer, PROMPT_COMPLETION)["input_ids"])
    assert len(encode_dataset(tokenizer, [PROMPT_COMPLETION], max_length=n)) == 1
    with pytest.raises(ValueError, match=f"example 0 is {n} tokens long but max_length is {n - 1}: raise max_length"):
        encode_dataset(tokenizer, [PROMPT_COMPLETION], max_length=n - 1)


def test_sequence_longer_than_the_model_context_is_refused_by_train_sft(tokenizer):
    model = random_model("llama", len(tokenizer))  # 128 positions
    long_answer = " ".join(["the cat is small and"] * 30)
    with pytest.raises(ValueError, match="but max_length is 128"):
        train_sft(model, tokenizer, [{"prompt": "describe the cat", "completion": long_answer}],
                  SFTConfig(progress=False))


def test_empty_dataset_is_refused(tokenizer):
    with pytest.raises(ValueError, match="the SFT dataset is empty"):
        encode_dataset(tokenizer, [], max_length=64)


def test_config_keeps_the_shared_validation():
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        SFTConfig(learning_rate=0)


# --- the loss -----------------------------------------------------------------------------------
def test_sft_loss_is_the_per_token_mean_over_the_batch():
    probs = torch.tensor([[0.5, 0.25, 0.9], [0.125, 0.7, 0.6]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected = -(math.log(0.5) + math.log(0.25) + math.log(0.125)) / 3  # = 2 ln 2: three tokens, equal weight
    assert sft_loss(probs.log() * mask, mask).item() == pytest.approx(expected)
    assert expected == pytest.approx(2 * math.log(2))
    per_example_mean = (-(math.log(0.5) + math.log(0.25)) / 2 - math.log(0.125)) / 2
    assert expected != pytest.approx(per_example_mean)  # the normalisation is a real choice


def test_sft_loss_matches_the_model_own_cross_entropy_on_completion_labels(model, tokenizer):
    batch = pad_batch([encode_example(tokenizer, PROMPT_COMPLETION), encode_example(tokenizer, CONVERSATION)],
                      tokenizer.pad_token_id)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)  # (B, T)
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss, _ = sft_step_loss(model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sft_loss_refuses_bad_shapes_and_empty_masks():
    with pytest.raises(ValueError, match="same"):
        sft_loss(torch.zeros(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="selects no token"):
        sft_loss(torch.zeros(2, 3), torch.zeros(2, 3))


def test_mean_token_accuracy_counts_greedy_hits_on_completion_tokens(model, tokenizer):
    batch = pad_batch([encode_example(tokenizer, CONVERSATION), encode_example(tokenizer, PROMPT_COMPLETION)],
                      tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        _, metrics = sft_step_loss(model, batch)
    hits = logits[:, :-1].argmax(dim=-1) == batch["input_ids"][:, 1:]  # (B, T-1)
    targets = batch["completion_mask"][:, 1:].bool()  # (B, T-1)
    assert metrics["mean_token_accuracy"] == pytest.approx(hits[targets].float().mean().item())


def test_capture_logits_removes_its_hook(tokenizer):
    model = random_model("llama", len(tokenizer))
    ids = torch.tensor([[2, 5, 6]])
    with capture_logits(model) as captured:
        model(input_ids=ids)
    model(input_ids=ids)
    assert len(captured) == 1 and captured[0].shape == (1, 3, len(tokenizer))


# --- training ---------------------------------------------------------------------------------
def test_a_few_sft_steps_lower_the_loss_on_a_fixed_batch(tokenizer, world):
    model = random_model("llama", len(tokenizer))
    dataset = world.sft_dataset(16)
    batch = pad_batch([encode_example(tokenizer, row) for row in dataset], tokenizer.pad_token_id)
    with torch.no_grad():
        before = sft_step_loss(model, batch)[0].item()
    history = train_sft(model, tokenizer, dataset, SFTConfig(batch_size=16, num_epochs=5, progress=False))
    with torch.no_grad():
        after = sft_step_loss(model, batch)[0].item()
    assert after < before - 0.5, (before, after)
    assert {"loss", "mean_token_accuracy", "num_tokens"} <= set(history.keys())
    assert history["num_tokens"] == [int(batch["attention_mask"].sum()) * (s + 1) for s in range(5)]


def test_packing_keeps_every_token_and_respects_max_length(tokenizer, world):
    rows = [encode_example(tokenizer, row) for row in world.sft_dataset(20)]
    packed = pack_rows(rows, max_length=40)
    assert len(packed) < len(rows)
    assert all(len(row["input_ids"]) <= 40 for row in packed)
    for key in ("input_ids", "completion_mask"):
        assert sum((row[key] for row in packed), []) == sum((row[key] for row in rows), [])


def test_train_sft_with_packing_runs_on_fewer_rows(tokenizer, world):
    model = random_model("gpt2", len(tokenizer))
    history = train_sft(model, tokenizer, world.sft_dataset(32), SFTConfig(batch_size=4, packing=True,
                                                                          num_epochs=1, progress=False))
    assert 1 <= len(history.steps) < 32 / 4


def test_build_sft_instruction_tunes_the_base_model(tokenizer, world, monkeypatch):
    model = random_model("llama", len(tokenizer))
    monkeypatch.setattr(recipes.zoo, "load", lambda name, preset=None, device=None: (model, tokenizer))
    preset = dataclasses.replace(get_preset("tiny"), num_sft=32)
    batch = pad_batch([encode_example(tokenizer, row) for row in world.sft_dataset(32)], tokenizer.pad_token_id)
    with torch.no_grad():
        before = sft_step_loss(model, batch)[0].item()
    tuned, returned_tokenizer = recipes.build_sft(preset)
    with torch.no_grad():
        after = sft_step_loss(tuned, batch)[0].item()
    assert tuned is model and returned_tokenizer is tokenizer
    assert after < before - 1.0, (before, after)


def test_data_size_curve_tunes_a_fresh_base_on_the_first_n_demonstrations(tokenizer, world):
    base = random_model("llama", len(tokenizer))
    before = [p.clone() for p in base.parameters()]
    prompts = world.prompts(12, split="test")
    config = SFTConfig(batch_size=8, num_epochs=2, progress=False)
    curve = data_size_curve(base, tokenizer, world, [0, 16], prompts, config)
    untouched = random_model("llama", len(tokenizer))
    _, untouched_report = sample_report(untouched, tokenizer, world, prompts)
    tuned = random_model("llama", len(tokenizer))
    train_sft(tuned, tokenizer, world.sft_dataset(16), config)
    _, tuned_report = sample_report(tuned, tokenizer, world, prompts)
    assert all(torch.equal(a, b) for a, b in zip(before, base.parameters()))  # each run tunes its own copy
    assert curve == [{"num_demonstrations": 0} | untouched_report, {"num_demonstrations": 16} | tuned_report]


def test_sft_rebuild_repeats_bit_for_bit(tmp_path):
    preset = dataclasses.replace(get_preset("tiny"), num_sft=32)  # the shipped recipe on fewer demonstrations
    first, second = (recipes.build(["sft"], preset, device="cpu", out_dir=tmp_path / run)[0] for run in ("a", "b"))
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


# --- measuring what SFT changes -----------------------------------------------------------------
def test_format_report_on_a_hand_worked_example(world):
    prompts = ["add 3 and 5", "describe the cat", "review the soup"]
    completions = ["3 plus 5 is 8", "the dog is big", "the soup is tasty"]
    report = format_report(world, prompts, completions, finished=[True, True, False])
    # gold by hand: 2·correct + relevant + tone: 2·1 + 1 + 0 = 3; wrong subject and fact: 0; 1 + tanh(1)
    assert report["gold"] == pytest.approx((3 + 0 + 1 + math.tanh(1)) / 3)
    assert report["answers_task"] == pytest.approx(2 / 3)  # the cat answer is about a dog
    assert report["closed_turn"] == pytest.approx(2 / 3)
    assert report["format_rate"] == pytest.approx(1 / 3)  # only the sum both closed its turn and answered
    assert report["gold/correctness"] == pytest.approx(1 / 3)
    assert report["gold/tone"] == pytest.approx(math.tanh(1) / 3)


def test_format_report_refuses_mismatched_lengths(world):
    with pytest.raises(ValueError, match="one of each per prompt"):
        format_report(world, ["add 3 and 5"], ["8"], finished=[])


def test_sample_report_sees_whether_the_model_closed_its_turn(tokenizer, world):
    model, prompts = random_model("llama", len(tokenizer)), world.prompts(6, split="test")

    def report_with_end_of_turn_logit(value):
        def fix_logit(module, inputs, logits):
            logits = logits.clone()
            logits[..., tokenizer.eos_token_id] = value
            return logits

        handle = model.get_output_embeddings().register_forward_hook(fix_logit)
        try:
            return sample_report(model, tokenizer, world, prompts, max_new_tokens=5)[1]
        finally:
            handle.remove()

    never = report_with_end_of_turn_logit(float("-inf"))  # can never close its turn: cut at max_new_tokens
    at_once = report_with_end_of_turn_logit(1e4)  # closes it before saying anything
    assert never["closed_turn"] == 0 and never["format_rate"] == 0
    assert at_once["closed_turn"] == 1 and at_once["format_rate"] == 0  # closed, but answers nothing


def test_shipped_sft_model_loads_offline_and_beats_base(world):
    prompts = world.prompts(150, split="test")
    reports = {}
    for name in ("base", "sft"):
        model, tokenizer = zoo.load(name, preset="tiny", device="cpu")
        completions, reports[name] = sample_report(model, tokenizer, world, prompts, seed=0)
        assert len(completions) == len(prompts)
    assert reports["base"]["format_rate"] < 0.1
    assert reports["sft"]["format_rate"] > 0.7
    assert reports["sft"]["gold"] > reports["base"]["gold"] + 1.0
    assert reports["sft"]["gold/correctness"] > reports["base"]["gold/correctness"]


# --- pictures ---------------------------------------------------------------------------------
def test_token_table_lists_the_template_token_by_token(tokenizer):
    table = token_table(tokenizer, PROMPT_COMPLETION)
    assert [token for token, _, _ in table] == \
        "<bos> <|user|> add 3 and 5 <|end|> <|assistant|> 3 plus 5 is 8 <|end|>".split()
    assert [i for _, i, _ in table] == encode_example(tokenizer, PROMPT_COMPLETION)["input_ids"]
    assert [token for token, _, in_loss in table if in_loss] == ["3", "plus", "5", "is", "8", "<|end|>"]


def test_plot_loss_mask_colours_exactly_the_loss_tokens(tokenizer):
    fig = plot_loss_mask(tokenizer, CONVERSATION)
    encoded = encode_example(tokenizer, CONVERSATION)
    faces = [patch.get_facecolor() for patch in fig.axes[0].patches]
    assert len(faces) == len(encoded["input_ids"])
    assert sum(face == to_rgba(COMPLETION_COLOR) for face in faces) == sum(encoded["completion_mask"])
