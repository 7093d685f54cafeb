import pytest
from datasets import Dataset

from rlhf_edu.core.preferences import build_preference_dataset, check_pair_columns, pair_texts
from tests.conftest import random_model, with_end_of_turn_bias


def closing_model(tokenizer, bias=3.0):
    """A random model that closes its turn within 6 tokens about two times in three."""
    return with_end_of_turn_bias(random_model("llama", len(tokenizer)), tokenizer, bias)


@pytest.fixture(scope="module")
def pairs(tokenizer, world):
    return build_preference_dataset(world, closing_model(tokenizer), tokenizer, n=32, seed=0, max_new_tokens=6)


def test_pairs_are_conversational_and_carry_the_truth(pairs, world):
    assert pairs.column_names == ["prompt", "chosen", "rejected", "gold_chosen", "gold_rejected", "p_chosen"]
    assert 0 < len(pairs) <= 32
    assert pairs[0]["prompt"][0]["role"] == "user" and pairs[0]["chosen"][0]["role"] == "assistant"
    prompts, chosen, rejected = pair_texts(pairs)
    assert pairs["gold_chosen"][:] == pytest.approx(world.gold_reward(prompts, chosen))
    assert pairs["gold_rejected"][:] == pytest.approx(world.gold_reward(prompts, rejected))
    # p_chosen is the annotator's probability of the label as it was drawn
    assert pairs["p_chosen"][:] == pytest.approx(world.preference_probability(prompts, chosen, rejected).tolist())
    # and the label follows the annotator: the chosen answer is usually the one with the higher gold reward
    gold = list(zip(pairs["gold_chosen"], pairs["gold_rejected"]))
    assert sum(c > r for c, r in gold) > 2 * sum(c < r for c, r in gold)
    assert sum(pairs["p_chosen"]) / len(pairs) > 0.55


def test_pairs_that_carry_no_preference_are_dropped(pairs, tokenizer, world):
    _, chosen, rejected = pair_texts(pairs)
    assert all(c != r and c.strip() and r.strip() for c, r in zip(chosen, rejected))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0: .*greedy decoding"):
        build_preference_dataset(world, random_model("llama", len(tokenizer)), tokenizer, n=8, temperature=0.0)


def test_answers_cut_before_the_turn_closed_are_dropped(tokenizer, world):
    with pytest.raises(ValueError, match="none of the 8 pairs carries a preference .*unfinished"):
        build_preference_dataset(world, closing_model(tokenizer, bias=-float("inf")), tokenizer, n=8, max_new_tokens=6)
    # closing about one turn in six within 6 tokens, both answers of a pair close about one time in 36
    some_cut = build_preference_dataset(world, closing_model(tokenizer, bias=1.0), tokenizer, n=64, max_new_tokens=6)
    assert 0 < len(some_cut) <= 8


def test_same_seed_same_pairs(pairs, tokenizer, world):
    model = closing_model(tokenizer)
    again = build_preference_dataset(world, model, tokenizer, n=32, seed=0, max_new_tokens=6)
    other = build_preference_dataset(world, model, tokenizer, n=32, seed=1, max_new_tokens=6)
    assert again.to_dict() == pairs.to_dict()
    assert other.to_dict() != pairs.to_dict()


def test_pair_texts_reads_strings_and_messages():
    plain = Dataset.from_dict({"prompt": ["add 1 and 2"], "chosen": ["1 plus 2 is 3"], "rejected": ["1 plus 2 is 4"]})
    chat = Dataset.from_dict(
        {
            "prompt": [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "add 1 and 2"}]],
            "chosen": [[{"role": "assistant", "content": "1 plus 2 is 3"}]],
            "rejected": [[{"role": "assistant", "content": "1 plus 2 is 4"}]],
        }
    )
    expected = (["add 1 and 2"], ["1 plus 2 is 3"], ["1 plus 2 is 4"])
    assert pair_texts(plain) == expected and pair_texts(chat) == expected


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="no rejected column .*need prompt, chosen and rejected"):
        check_pair_columns(Dataset.from_dict({"prompt": ["add 1 and 2"], "chosen": ["1 plus 2 is 3"]}))
