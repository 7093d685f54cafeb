import pytest
from jinja2.exceptions import TemplateError

from rlhf_edu.core.tokenizer import END_OF_TURN, build_tokenizer
from rlhf_edu.core.world import VOCAB


def test_every_world_word_is_one_token(tokenizer):
    ids = tokenizer(" ".join(VOCAB), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(VOCAB)
    assert tokenizer.unk_token_id not in ids


def test_chat_template_matches_a_chat_model(tokenizer):
    messages = [{"role": "user", "content": "add 3 and 5"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<bos>",
        "<|user|>",
        "add",
        "3",
        "and",
        "5",
        "<|end|>",
        "<|assistant|>",
    ]
    assert tokenizer.eos_token == END_OF_TURN


def test_assistant_mask_covers_answer_and_end_of_turn(tokenizer):
    messages = [{"role": "user", "content": "add 3 and 5"}, {"role": "assistant", "content": "3 plus 5 is 8"}]
    out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    answer = [t for t, m in zip(tokenizer.convert_ids_to_tokens(out["input_ids"]), out["assistant_masks"]) if m]
    assert answer == ["3", "plus", "5", "is", "8", "<|end|>"]


def test_decode_round_trips_world_text(tokenizer):
    text = "the cat is small and grey ."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_special_tokens_come_first_then_the_sorted_vocabulary():
    tokenizer = build_tokenizer()
    specials = ["<pad>", "<unk>", "<bos>", "<eos>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    assert tokenizer.convert_ids_to_tokens(list(range(len(specials)))) == specials
    assert tokenizer.pad_token_id == 0  # the id the test models' configs name as pad_token_id
    assert tokenizer.convert_ids_to_tokens(list(range(8, len(tokenizer)))) == sorted(VOCAB)
    assert tokenizer.get_vocab() == build_tokenizer().get_vocab()


def test_chat_template_renders_system_and_several_turns(tokenizer):
    messages = [
        {"role": "system", "content": "please say it"},
        {"role": "user", "content": "add 3 and 5"},
        {"role": "assistant", "content": "3 plus 5 is 8"},
        {"role": "user", "content": "review the soup"},
    ]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<bos>",
        "<|system|>",
        "please",
        "say",
        "it",
        "<|end|>",
        "<|user|>",
        "add",
        "3",
        "and",
        "5",
        "<|end|>",
        "<|assistant|>",
        "3",
        "plus",
        "5",
        "is",
        "8",
        "<|end|>",
        "<|user|>",
        "review",
        "the",
        "soup",
        "<|end|>",
        "<|assistant|>",
    ]


def test_unknown_role_is_refused(tokenizer):
    with pytest.raises(TemplateError, match=r"^unknown role tool: use system, user or assistant$"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
