import dataclasses
import math
import re

import pytest
import torch
from matplotlib.colors import to_rgba

from rlhf_edu import zoo
from rlhf_edu.core.collate import encode_prompt_completion, pad_batch
from rlhf_edu.core.logprobs import token_logprobs
from rlhf_edu.core.plotting import COMPLETION_COLOR
from rlhf_edu.core.rollouts import generate_completions
from rlhf_edu.core.runtime import get_preset
from rlhf_edu.experiments import recipes
from rlhf_edu.instruction_tuning import (
    SFTConfig,
    _any_of,
    capture_logits,
    data_size_curve,
    encode_dataset,
    encode_example,
    format_report,
    last_turn_only,
    pack_rows,
    plot_loss_mask,
    sample_report,
    sft_loss,
    sft_step_loss,
    share_stderr,
    token_table,
    train_sft,
    unroll_conversation,
    well_formed,
)
from tests.conftest import random_model

PROMPT_COMPLETION = {
    "prompt": [{"role": "user", "content": "add 3 and 5"}],
    "completion": [{"role": "assistant", "content": "3 plus 5 is 8"}],
}
CONVERSATION = {
    "messages": [
        {"role": "user", "content": "describe the cat"},
        {"role": "assistant", "content": "the cat is small"},
        {"role": "user", "content": "review the pizza"},
        {"role": "assistant", "content": "the pizza is tasty and fresh"},
    ]
}


SYSTEM = {"role": "system", "content": "please say it so people like it ."}


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
    assert tokenizer.decode(context) == (
        "<bos> <|user|> describe the cat <|end|> <|assistant|> <|user|> review the pizza <|end|> <|assistant|>"
    )


def test_both_formats_encode_a_single_turn_identically(tokenizer):
    as_messages = {"messages": PROMPT_COMPLETION["prompt"] + PROMPT_COMPLETION["completion"]}
    assert encode_example(tokenizer, as_messages) == encode_example(tokenizer, PROMPT_COMPLETION)
    plain_strings = {"prompt": "add 3 and 5", "completion": "3 plus 5 is 8"}
    assert encode_example(tokenizer, plain_strings) == encode_example(tokenizer, PROMPT_COMPLETION)


def test_a_system_prompt_is_context_never_in_the_loss(tokenizer):
    system_first = {"messages": [SYSTEM, *PROMPT_COMPLETION["prompt"], *PROMPT_COMPLETION["completion"]]}
    encoded = encode_example(tokenizer, system_first)
    assert masked_ids(encoded) == words_then_end(tokenizer, "3 plus 5 is 8")
    context = [i for i, m in zip(encoded["input_ids"], encoded["completion_mask"]) if not m]
    assert tokenizer.decode(context) == (
        "<bos> <|system|> please say it so people like it . <|end|> <|user|> add 3 and 5 <|end|> <|assistant|>"
    )
    as_prompt = {"prompt": [SYSTEM, *PROMPT_COMPLETION["prompt"]], "completion": PROMPT_COMPLETION["completion"]}
    assert encode_example(tokenizer, as_prompt) == encoded


def test_last_turn_only_keeps_the_last_run_of_ones():
    assert last_turn_only([0, 1, 1, 0, 0, 1, 1, 1, 0]) == [0, 0, 0, 0, 0, 1, 1, 1, 0]
    assert last_turn_only([1, 1, 0]) == [1, 1, 0]
    assert last_turn_only([1, 0, 1]) == [0, 0, 1]
    assert last_turn_only([1, 1, 1]) == [1, 1, 1]
    message = "the mask has no 1s, so there is no assistant turn to keep: encode a row with an answer"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        last_turn_only([0, 0, 0])


def test_final_turn_only_trains_on_the_last_answer_alone(tokenizer):
    encoded = encode_example(tokenizer, CONVERSATION, assistant_turns="last")
    assert masked_ids(encoded) == words_then_end(tokenizer, "the pizza is tasty and fresh")
    assert encoded["input_ids"] == encode_example(tokenizer, CONVERSATION)["input_ids"]  # same text, fewer targets
    # independently: the earlier turns as the prompt, the last answer as the completion
    messages = CONVERSATION["messages"]
    assert encoded == encode_prompt_completion(tokenizer, messages[:-1], messages[-1:])


def test_unrolling_gives_one_row_per_answer_each_a_prefix(tokenizer):
    rows = unroll_conversation(CONVERSATION)
    assert rows == [{"messages": CONVERSATION["messages"][:2]}, {"messages": CONVERSATION["messages"]}]
    full = encode_example(tokenizer, CONVERSATION)
    unrolled = [encode_example(tokenizer, row, assistant_turns="last") for row in rows]
    assert all(full["input_ids"][: len(row["input_ids"])] == row["input_ids"] for row in unrolled)
    assert sum((masked_ids(row) for row in unrolled), []) == masked_ids(full)


def test_all_turns_in_one_row_has_the_log_probs_of_the_unrolled_rows(model, tokenizer):
    """Causal attention: each answer sees only the turns before it, in one row as in its own."""

    def masked_logps(rows):
        batch = pad_batch(rows, tokenizer.pad_token_id)
        with torch.no_grad():
            logps, mask = token_logprobs(
                model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
            )  # (B, L)
        return logps[mask.bool()]

    together = masked_logps([encode_example(tokenizer, CONVERSATION)])
    apart = masked_logps(
        [encode_example(tokenizer, row, assistant_turns="last") for row in unroll_conversation(CONVERSATION)]
    )
    assert torch.allclose(together, apart, atol=1e-5)


def test_train_sft_trains_on_the_final_turn_only_when_asked(tokenizer):
    def first_loss(assistant_turns):
        model = random_model("llama", len(tokenizer))
        config = SFTConfig(num_epochs=1, assistant_turns=assistant_turns, progress=False)
        return train_sft(model, tokenizer, [CONVERSATION], config)["loss"][0]  # logged before the update

    model = random_model("llama", len(tokenizer))
    batch = pad_batch([encode_example(tokenizer, CONVERSATION, assistant_turns="last")], tokenizer.pad_token_id)
    with torch.no_grad():
        expected = sft_step_loss(model, batch)[0].item()
    assert first_loss("last") == pytest.approx(expected, rel=1e-5)
    assert first_loss("all") != pytest.approx(expected, rel=1e-3)


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
        encode_example(
            tokenizer, {"messages": [{"role": "user", "content": "add 3 and 5"}, {"role": "assistant", "content": ""}]}
        )


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
        train_sft(
            model, tokenizer, [{"prompt": "describe the cat", "completion": long_answer}], SFTConfig(progress=False)
        )


def test_empty_dataset_is_refused(tokenizer):
    with pytest.raises(ValueError, match="^the SFT dataset is empty: pass at least one demonstration$"):
        encode_dataset(tokenizer, [], max_length=64)


def test_encode_dataset_by_default_masks_all_but_the_answers_and_packs_nothing(tokenizer):
    rows = encode_dataset(tokenizer, [PROMPT_COMPLETION, CONVERSATION], max_length=128)  # room to pack both
    assert rows == [encode_example(tokenizer, PROMPT_COMPLETION), encode_example(tokenizer, CONVERSATION)]


FORMATS = "an SFT dataset needs the columns messages or prompt/completion (TRL's conversational formats), but this one"
RENAME = "rename its columns, e.g. dataset.rename_column('answer', 'completion')"
NO_ROLE = "has no role: add one, e.g. {'role': 'user', 'content': ...}, so the chat template knows whose turn it is"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: encode_example(t, {"prompt": "add 3 and 5"}), f"{FORMATS} has prompt: {RENAME}"),
        (lambda t: encode_example(t, {}), f"{FORMATS} has none: {RENAME}"),
        (
            lambda t: unroll_conversation(PROMPT_COMPLETION),
            "only a 'messages' row has turns to unroll, but this one has prompt, completion: "
            "pass {'messages': [...]} (a prompt/completion row is already one answer)",
        ),
        (
            lambda t: unroll_conversation({}),
            "only a 'messages' row has turns to unroll, but this one has none: "
            "pass {'messages': [...]} (a prompt/completion row is already one answer)",
        ),
        (  # a plain string is the user's turn
            lambda t: encode_example(t, {"messages": "add 3 and 5"}),
            "the conversation [{'role': 'user', 'content': 'add 3 and 5'}] has no assistant turn, so SFT has nothing "
            "to learn from it: drop it, or add the answer as {'role': 'assistant', 'content': ...}",
        ),
        (
            lambda t: encode_example(t, {"messages": [{"content": "add 3 and 5"}]}),
            f"the message {{'content': 'add 3 and 5'}} {NO_ROLE}",
        ),
        (
            lambda t: unroll_conversation({"messages": [{"content": "add 3 and 5"}]}),
            f"the message {{'content': 'add 3 and 5'}} {NO_ROLE}",
        ),
        (
            lambda t: encode_example(
                t, {"messages": [{"role": "user", "content": "add 3 and zebra"}, {"role": "assistant", "content": "3"}]}
            ),
            "the user message 'add 3 and zebra' holds words the tokenizer does not know: 'zebra'. "
            "Use the world's words (rlhf_edu.core.world.VOCAB), with '.' as the only punctuation",
        ),
        (
            lambda t: SFTConfig(assistant_turns="last", completion_only_loss=False),
            "assistant_turns='last' chooses among the assistant turns, but completion_only_loss=False trains on every "
            "token anyway: keep assistant_turns='all', or set completion_only_loss=True",
        ),
    ],
)
def test_bad_rows_are_refused_with_the_whole_message(tokenizer, call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call(tokenizer)


def test_config_keeps_the_shared_validation():
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        SFTConfig(learning_rate=0)


def test_unknown_or_contradictory_assistant_turns_are_refused(tokenizer):
    with pytest.raises(ValueError, match="unknown assistant_turns 'first': use one of 'all', 'last'"):
        SFTConfig(assistant_turns="first")
    with pytest.raises(ValueError, match="unknown assistant_turns 'final'"):
        encode_example(tokenizer, CONVERSATION, assistant_turns="final")
    with pytest.raises(ValueError, match="assistant_turns='last'.*completion_only_loss=False.*keep assistant_turns"):
        SFTConfig(assistant_turns="last", completion_only_loss=False)


def test_only_a_messages_row_can_be_unrolled():
    with pytest.raises(ValueError, match="only a 'messages' row has turns to unroll, but this one has prompt"):
        unroll_conversation(PROMPT_COMPLETION)


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
    batch = pad_batch(
        [encode_example(tokenizer, PROMPT_COMPLETION), encode_example(tokenizer, CONVERSATION)], tokenizer.pad_token_id
    )
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
    batch = pad_batch(
        [encode_example(tokenizer, CONVERSATION), encode_example(tokenizer, PROMPT_COMPLETION)], tokenizer.pad_token_id
    )
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        _, metrics = sft_step_loss(model, batch)
    hits = logits[:, :-1].argmax(dim=-1) == batch["input_ids"][:, 1:]  # (B, T-1)
    targets = batch["completion_mask"][:, 1:].bool()  # (B, T-1)
    assert metrics["mean_token_accuracy"] == pytest.approx(hits[targets].float().mean().item())


def test_train_sft_labels_its_progress_bar(tokenizer, capsys):
    model = random_model("llama", len(tokenizer))
    train_sft(model, tokenizer, [PROMPT_COMPLETION], SFTConfig(num_epochs=1, progress=True))
    assert re.search(r"(^|\r)SFT: ", capsys.readouterr().err)


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


def test_packing_on_a_hand_worked_example():
    def row(*ids):  # the completion mask marks the last token, to see it travel with its row
        return {"input_ids": list(ids), "completion_mask": [0] * (len(ids) - 1) + [1]}

    rows = [row(1, 2, 3), row(4, 5, 6, 7), row(8, 9), row(10, 11, 12, 13, 14), row(15)]
    # 3 + 4 = 7 fits; 7 + 2 does not: a new row, and 2 + 5 = 7 fits; 7 + 1 does not
    assert pack_rows(rows, max_length=7) == [
        {"input_ids": [1, 2, 3, 4, 5, 6, 7], "completion_mask": [0, 0, 1, 0, 0, 0, 1]},
        {"input_ids": [8, 9, 10, 11, 12, 13, 14], "completion_mask": [0, 1, 0, 0, 0, 0, 1]},
        {"input_ids": [15], "completion_mask": [1]},
    ]
    assert pack_rows(rows, max_length=100) == [{key: sum((r[key] for r in rows), []) for key in rows[0]}]
    with pytest.raises(ValueError, match="example 3 is 5 tokens long but max_length is 4: raise max_length"):
        pack_rows(rows, max_length=4)


def test_packing_keeps_every_token_and_respects_max_length(tokenizer, world):
    rows = [encode_example(tokenizer, row) for row in world.sft_dataset(20)]
    packed = pack_rows(rows, max_length=40)
    assert len(packed) < len(rows)
    assert all(len(row["input_ids"]) <= 40 for row in packed)
    for key in ("input_ids", "completion_mask"):
        assert sum((row[key] for row in packed), []) == sum((row[key] for row in rows), [])


def test_train_sft_with_packing_runs_on_fewer_rows(tokenizer, world):
    model = random_model("gpt2", len(tokenizer))
    history = train_sft(
        model, tokenizer, world.sft_dataset(32), SFTConfig(batch_size=4, packing=True, num_epochs=1, progress=False)
    )
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
    untouched_answers, untouched_report = sample_report(untouched, tokenizer, world, prompts)
    tuned = random_model("llama", len(tokenizer))
    train_sft(tuned, tokenizer, world.sft_dataset(16), config)
    tuned_answers, tuned_report = sample_report(tuned, tokenizer, world, prompts)
    assert all(torch.equal(a, b) for a, b in zip(before, base.parameters()))  # each run tunes its own copy
    assert curve == [{"num_demonstrations": 0} | untouched_report, {"num_demonstrations": 16} | tuned_report]
    again, completions = data_size_curve(base, tokenizer, world, [0, 16], prompts, config, return_completions=True)
    assert again == curve and completions == [untouched_answers, tuned_answers]  # the answers behind each report


def test_data_size_curve_by_default_trains_the_zoo_recipe_quietly_even_on_one_demonstration(tokenizer, world, capsys):
    base = random_model("llama", len(tokenizer))
    prompts = world.prompts(4, split="test")
    (report,), (answers,) = data_size_curve(base, tokenizer, world, [1], prompts, seed=3, return_completions=True)
    tuned = random_model("llama", len(tokenizer))
    train_sft(tuned, tokenizer, world.sft_dataset(1), SFTConfig(progress=False))
    tuned_answers, tuned_report = sample_report(tuned, tokenizer, world, prompts, seed=3)
    assert answers == tuned_answers and report == {"num_demonstrations": 1} | tuned_report
    assert answers != sample_report(base, tokenizer, world, prompts, seed=3)[0]  # one demonstration moved it
    assert "SFT" not in capsys.readouterr().err  # no progress bar unless a config asks for one


def test_sft_rebuild_repeats_bit_for_bit(tmp_path):
    preset = dataclasses.replace(get_preset("tiny"), num_sft=32)  # the shipped recipe on fewer demonstrations
    first, second = (recipes.build(["sft"], preset, device="cpu", out_dir=tmp_path / run)[0] for run in ("a", "b"))
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


# --- measuring what SFT changes -----------------------------------------------------------------
def test_well_formed_checks_the_shape_and_not_the_content():
    assert well_formed("add 3 and 5", "3 plus 5 is 8")
    assert well_formed("add 3 and 5", "1 plus 1 is 3")  # wrong operands, wrong sum: still the shape of a sum
    assert well_formed("describe the cat", "I think the Pizza is tasty and dull")  # read as the world reads text
    assert well_formed("review the soup", "the soup is tasty and tasty and tasty")
    assert well_formed("describe the cat", [{"role": "assistant", "content": "the cat is small"}])
    for prompt, completion in [
        ("add 3 and 5", "8"),
        ("add 3 and 5", "the cat is small"),
        ("describe the cat", "3 plus 5 is 8"),
        ("describe the cat", "the cat is"),
        ("describe the cat", "the cat is small ."),  # the corpus's ending, not an answer's
        ("review the soup", "soup is tasty"),
        ("review the soup", "the soup is tasty and"),
        ("describe the cat", ""),
    ]:
        assert not well_formed(prompt, completion), (prompt, completion)


def test_any_of_matches_one_of_its_words_literally_as_one_group():
    pattern = _any_of(["a.b", "cd"])
    assert re.fullmatch(pattern, "a.b") and re.fullmatch(pattern, "cd")
    assert not re.fullmatch(pattern, "axb") and not re.fullmatch(pattern, "a.bcd")  # "." is a dot, one word only
    assert re.fullmatch(f"{pattern}!", "cd!") and not re.fullmatch(f"{pattern}!", "a.b")  # a group: "!" follows either


def test_well_formed_names_a_completion_it_cannot_read():
    message = "completion must be a string or a list of {'role', 'content'} messages, got 8"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        well_formed("add 3 and 5", 8)


def test_every_demonstration_is_well_formed(world):
    for split in ("train", "test"):
        rows = world.sft_dataset(300, split=split)
        assert all(well_formed(row["prompt"], row["completion"]) for row in rows)


def test_format_report_on_a_hand_worked_example(world):
    prompts = ["add 3 and 5", "describe the cat", "review the soup", "add 1 and 2"]
    completions = ["3 plus 5 is 8", "the dog is big", "the soup is tasty", "1 and 2 is 3"]
    report = format_report(world, prompts, completions, finished=[True, True, False, True])
    # gold by hand: 2·correct + relevant = 3; wrong subject and fact: 0; relevant + tone = 1 + tanh(1); 2 + 1 = 3
    assert report["gold"] == pytest.approx((3 + 0 + 1 + math.tanh(1) + 3) / 4)
    assert report["closed_turn"] == pytest.approx(3 / 4)  # the soup answer never closed its turn
    assert report["well_formed"] == pytest.approx(3 / 4)  # "1 and 2 is 3" is not the shape of a sum
    assert report["format_rate"] == pytest.approx(2 / 4)  # both: the first two, whatever they say
    assert report["answers_task"] == pytest.approx(3 / 4)  # the cat answer is about a dog
    assert report["gold/correctness"] == pytest.approx(2 / 4)
    assert report["gold/tone"] == pytest.approx(math.tanh(1) / 4)


def test_format_report_refuses_mismatched_lengths(world):
    with pytest.raises(ValueError, match="got 1 prompts but 0 finished flags: pass one per example"):
        format_report(world, ["add 3 and 5"], ["8"], finished=[])
    with pytest.raises(ValueError, match="got 1 prompts but 2 completions"):
        format_report(world, ["add 3 and 5"], ["8", "9"], finished=[True])


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {"seed": 3}])
def test_sample_report_samples_as_generate_completions_does(tokenizer, world, settings):
    model, prompts = random_model("llama", len(tokenizer)), world.prompts(4, split="test")
    temperature, seed = settings.get("temperature", 1.0), settings.get("seed", 0)
    answers, report = sample_report(model, tokenizer, world, prompts, max_new_tokens=5, **settings)
    expected, finished = generate_completions(
        model, tokenizer, prompts, 5, temperature, seed=seed, return_finished=True
    )
    assert answers == expected and report == format_report(world, prompts, expected, finished)


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
    assert at_once["closed_turn"] == 1 and at_once["well_formed"] == 0  # closed, but says nothing
    assert at_once["format_rate"] == 0 and at_once["answers_task"] == 0


def test_shipped_sft_model_loads_offline_and_beats_base(world):
    prompts = world.prompts(150, split="test")
    reports = {}
    for name in ("base", "sft"):
        model, tokenizer = zoo.load(name, preset="tiny", device="cpu")
        completions, reports[name] = sample_report(model, tokenizer, world, prompts, seed=0)
        assert len(completions) == len(prompts)
    assert reports["base"]["format_rate"] < 0.1 and reports["base"]["answers_task"] < 0.3
    assert reports["sft"]["format_rate"] > 0.9 and reports["sft"]["answers_task"] > 0.7
    assert reports["sft"]["gold"] > reports["base"]["gold"] + 1.0
    assert reports["sft"]["gold/correctness"] > reports["base"]["gold/correctness"]


# --- pictures ---------------------------------------------------------------------------------
def test_token_table_lists_the_template_token_by_token(tokenizer):
    table = token_table(tokenizer, PROMPT_COMPLETION)
    assert [
        token for token, _, _ in table
    ] == "<bos> <|user|> add 3 and 5 <|end|> <|assistant|> 3 plus 5 is 8 <|end|>".split()
    assert [i for _, i, _ in table] == encode_example(tokenizer, PROMPT_COMPLETION)["input_ids"]
    assert [token for token, _, in_loss in table if in_loss] == ["3", "plus", "5", "is", "8", "<|end|>"]
    last = token_table(tokenizer, CONVERSATION, assistant_turns="last")
    assert [token for token, _, in_loss in last if in_loss] == "the pizza is tasty and fresh <|end|>".split()


def test_plot_loss_mask_colours_exactly_the_loss_tokens(tokenizer):
    for assistant_turns, in_loss in [("all", 5 + 7), ("last", 7)]:  # answers of 4 and 6 words, each with <|end|>
        fig = plot_loss_mask(tokenizer, CONVERSATION, assistant_turns=assistant_turns)
        faces = [patch.get_facecolor() for patch in fig.axes[0].patches]
        assert len(faces) == len(encode_example(tokenizer, CONVERSATION)["input_ids"])
        assert sum(face == to_rgba(COMPLETION_COLOR) for face in faces) == in_loss


def test_share_stderr_is_binomial_in_the_middle_and_never_zero():
    assert share_stderr(0.5, 10_000) == pytest.approx(math.sqrt(0.25 / 10_000), rel=1e-3)
    assert 0 < share_stderr(1.0, 300) < share_stderr(0.5, 300)
    assert share_stderr(0.0, 300) == pytest.approx(share_stderr(1.0, 300))
    # by hand: one answer of one, (1 + 2)/(1 + 4) = 0.6; half of ten, (5 + 2)/(10 + 4) = 0.5
    assert share_stderr(1.0, 1) == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    assert share_stderr(0.5, 10) == pytest.approx(math.sqrt(0.25 / 14))
    with pytest.raises(ValueError, match="share"):
        share_stderr(1.5, 10)


@pytest.mark.parametrize("flag", ["completion_only_loss", "packing"])
def test_a_flag_that_is_not_a_bool_is_named_word_for_word(flag):
    with pytest.raises(TypeError, match=rf"^{flag} must be True or False, got 'yes' \(str\)$"):
        SFTConfig(**{flag: "yes"})
