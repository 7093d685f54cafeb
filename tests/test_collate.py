import copy

import pytest
import torch

from rlhf_edu.core.collate import as_messages, check_length, collate, encode_prompt_completion, pad_batch


def test_completion_mask_covers_answer_and_end_of_turn(tokenizer):
    row = encode_prompt_completion(tokenizer, "add 3 and 5", "3 plus 5 is 8")
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert [t for t, m in zip(tokens, row["completion_mask"]) if m] == ["3", "plus", "5", "is", "8", "<|end|>"]
    assert tokens[:8] == ["<bos>", "<|user|>", "add", "3", "and", "5", "<|end|>", "<|assistant|>"]


def test_strings_and_message_lists_encode_alike(tokenizer):
    plain = encode_prompt_completion(tokenizer, "review the soup", "the soup is tasty")
    messages = encode_prompt_completion(
        tokenizer,
        [{"role": "user", "content": "review the soup"}],
        [{"role": "assistant", "content": "the soup is tasty"}],
    )
    assert plain == messages


def test_pad_batch_pads_right_and_keeps_numeric_fields(tokenizer):
    rows = [
        encode_prompt_completion(tokenizer, "add 1 and 2", "1 plus 2 is 3"),
        encode_prompt_completion(tokenizer, "review the soup", "the soup is tasty and fresh and good"),
    ]
    rows = [{**row, "label": i, "note": "text"} for i, row in enumerate(rows)]
    batch = pad_batch(rows, tokenizer.pad_token_id)
    n0 = len(rows[0]["input_ids"])
    assert batch["input_ids"].shape == batch["completion_mask"].shape == (2, len(rows[1]["input_ids"]))
    assert batch["attention_mask"][0].tolist() == [1] * n0 + [0] * (batch["input_ids"].shape[1] - n0)
    assert (batch["input_ids"][0, n0:] == tokenizer.pad_token_id).all()
    assert batch["completion_mask"][0].tolist() == rows[0]["completion_mask"] + [0] * (batch["input_ids"].shape[1] - n0)
    assert batch["label"].tolist() == [0, 1] and "note" not in batch


def test_collate_is_encode_then_pad(tokenizer):
    batch = collate(tokenizer, ["add 1 and 2"], ["1 plus 2 is 3"])
    row = encode_prompt_completion(tokenizer, "add 1 and 2", "1 plus 2 is 3")
    assert batch["input_ids"][0].tolist() == row["input_ids"]
    assert batch["completion_mask"].dtype == torch.long


@pytest.mark.parametrize("prompt, completion", [("", "3"), ("add 1 and 2", ""), ("add 1 and 2", "   ")])
def test_empty_prompt_or_completion_is_refused(tokenizer, prompt, completion):
    with pytest.raises(ValueError, match="empty (user|assistant) message.*needs some text"):
        encode_prompt_completion(tokenizer, prompt, completion)


def test_bad_message_types_are_refused():
    with pytest.raises(TypeError, match="non-empty list"):
        as_messages([], "user")
    with pytest.raises(TypeError, match="not a single string"):
        collate(None, "add 1 and 2", "1 plus 2 is 3")


def test_mismatched_counts_are_refused(tokenizer):
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        collate(tokenizer, ["add 1 and 2", "add 2 and 2"], ["1 plus 2 is 3"])


def test_overlong_example_is_refused_not_cut(tokenizer):
    rows = [encode_prompt_completion(tokenizer, "review the soup", "the soup is " + "good and " * 20 + "tasty")]
    with pytest.raises(ValueError, match="example 0 is .* tokens long but max_length is 16"):
        check_length(rows, 16)
    with pytest.raises(ValueError, match="max_length is 16"):
        collate(tokenizer, ["review the soup"], ["the soup is " + "good and " * 20 + "tasty"], max_length=16)


def test_unknown_role_is_refused_by_the_encoder(tokenizer):
    with pytest.raises(
        ValueError,
        match=r"^the chat template refused \[\{'role': 'tool', 'content': 'add 1 and 2'\}\]: unknown role tool: use "
        "system, user or assistant$",
    ):
        encode_prompt_completion(tokenizer, [{"role": "tool", "content": "add 1 and 2"}], "1 plus 2 is 3")


def test_template_whose_prompt_is_not_a_prefix_is_refused(tokenizer):
    # the generation prompt here ends with a token that the full conversation never has at that place
    odd = copy.deepcopy(tokenizer)
    odd.chat_template = (
        "{% for m in messages %}{{ m['content'] + ' ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )
    with pytest.raises(
        ValueError,
        match="^this tokenizer's chat template renders the prompt differently with and without the answer, so the "
        "completion cannot be located: use a template whose generation prompt is a prefix of the full conversation$",
    ):
        encode_prompt_completion(odd, "add 1 and 2", "1 plus 2 is 3")


def test_missing_pad_token_is_refused(tokenizer):
    with pytest.raises(ValueError, match="no pad token.*tokenizer.pad_token"):
        pad_batch([encode_prompt_completion(tokenizer, "add 1 and 2", "3")], None)


@pytest.mark.parametrize(
    "prompts, completions", [("add 1 and 2", ["1 plus 2 is 3"]), (["add 1 and 2"], "1 plus 2 is 3")]
)
def test_collate_refuses_a_single_string_on_either_side(tokenizer, prompts, completions):
    with pytest.raises(TypeError, match="^pass lists of prompts and completions, not a single string$"):
        collate(tokenizer, prompts, completions)


def test_check_length_says_what_max_length_is():
    with pytest.raises(
        ValueError,
        match="^max_length must be >= 1, got 0: it is the longest example in tokens, e.g. the model's context$",
    ):
        check_length([], 0)


@pytest.mark.parametrize(
    "messages, error, match",
    [
        ([], TypeError, r"^expected a string or a non-empty list of \{'role', 'content'\} dicts, got \[\]$"),
        (["hi"], TypeError, r"^each message must be a \{'role': \.\.\., 'content': str\} dict, got 'hi'$"),
        (
            [{"content": "hi"}],
            ValueError,
            r"^the message \{'content': 'hi'\} has no role: add one, e\.g\. \{'role': 'user', 'content': \.\.\.\}, so "
            "the chat template knows whose turn it is$",
        ),
        (
            [{"role": "system", "content": " "}, {"role": "user", "content": "hi"}],
            ValueError,
            r"^empty system message in \[\{'role': 'system', 'content': ' '\}, \{'role': 'user', 'content': 'hi'\}\]: "
            r"every prompt and completion needs some text \(drop or fix that example\)$",
        ),
    ],
)
def test_as_messages_says_what_is_wrong_with_a_conversation(messages, error, match):
    with pytest.raises(error, match=match):
        as_messages(messages, "user")


def test_as_messages_takes_an_empty_answer_only_when_allowed():
    assert as_messages("", "assistant", allow_empty=True) == [{"role": "assistant", "content": ""}]
    with pytest.raises(ValueError, match="^empty assistant message"):
        as_messages("", "assistant")


@pytest.mark.parametrize(
    "completion, match",
    [
        (
            "the soup is délicieux",
            "^the assistant message 'the soup is délicieux' holds words the tokenizer does not know",
        ),
        ("the soup <|end|> is good", r"^the assistant message 'the soup <\|end\|> is good' contains the special token"),
    ],
)
def test_the_encoder_names_the_message_it_refuses(tokenizer, completion, match):
    with pytest.raises(ValueError, match=match):
        encode_prompt_completion(tokenizer, "review the soup", completion)


def test_pad_batch_refusals_say_what_to_do(tokenizer):
    row = encode_prompt_completion(tokenizer, "add 1 and 2", "3")
    with pytest.raises(
        ValueError, match=r"^the tokenizer has no pad token: set tokenizer\.pad_token = tokenizer\.eos_token$"
    ):
        pad_batch([row], None)
    with pytest.raises(ValueError, match="^no rows to pad: pass at least one encoded example$"):
        pad_batch([], tokenizer.pad_token_id)
    batch = pad_batch([row], tokenizer.pad_token_id)
    assert {name: tensor.dtype for name, tensor in batch.items()} == dict.fromkeys(batch, torch.long)
