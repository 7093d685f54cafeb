import re
from functools import partial

import numpy as np
import pytest
from datasets import Dataset

from rlhf_edu.core.preferences import (
    build_preference_dataset,
    check_pair_columns,
    collate_pairs,
    encode_pairs,
    pair_dataset,
    pair_loader,
    pair_texts,
)
from rlhf_edu.core.rollouts import generate_completions
from rlhf_edu.core.training import TrainingConfig, make_loader
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
    with pytest.raises(
        ValueError,
        match=r"^temperature must be > 0, got 0: two answers per prompt must differ, and greedy decoding \(0\) gives "
        "the same one twice$",
    ):
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
    with pytest.raises(
        ValueError, match=r"no rejected column \(it has prompt, chosen\): preference pairs need prompt, chosen and"
    ):
        check_pair_columns(Dataset.from_dict({"prompt": ["add 1 and 2"], "chosen": ["1 plus 2 is 3"]}))


@pytest.mark.parametrize(
    "n, error, message",
    [(0, ValueError, "n must be >= 1, got 0"), (2.0, TypeError, "n must be an integer, got 2.0 (float)")],
)
def test_a_bad_number_of_pairs_is_refused_by_name(tokenizer, world, n, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        build_preference_dataset(world, random_model("llama", len(tokenizer)), tokenizer, n=n)


def test_pairs_are_the_two_seeded_samples_of_each_prompt_of_the_split(tokenizer, world):
    model = closing_model(tokenizer)
    prompts = world.prompts(16, split="test")
    assert prompts != world.prompts(16, split="train")
    pairs = build_preference_dataset(
        world, model, tokenizer, n=16, split="test", seed=4, temperature=0.7, max_new_tokens=6
    )
    # The documented recipe, step by step: two samples per prompt at seeds 4 and 5, kept where they differ and
    # both closed their turn with some text.
    a, finished_a = generate_completions(model, tokenizer, prompts, 6, 0.7, seed=4, return_finished=True)
    b, finished_b = generate_completions(model, tokenizer, prompts, 6, 0.7, seed=5, return_finished=True)
    kept = [i for i in range(16) if a[i] != b[i] and a[i].strip() and b[i].strip() and finished_a[i] and finished_b[i]]
    assert 0 < len(kept) < 16
    kept_prompts, chosen, rejected = pair_texts(pairs)
    assert kept_prompts == [prompts[i] for i in kept]
    assert [{c, r} for c, r in zip(chosen, rejected)] == [{a[i], b[i]} for i in kept]


PAIRS = Dataset.from_dict(
    {
        "prompt": ["add 3 and 5", "review the soup", "describe the cat"],
        "chosen": ["3 plus 5 is 8", "the soup is tasty", "the cat is small"],
        "rejected": ["3 plus 5 is 9", "the soup is bland", "the cat is big"],
        "margin": [1.0, 2.0, 0.5],
        "source": ["book", "web", "book"],
    }
)


def test_encoded_pairs_carry_their_numeric_columns_only(tokenizer):
    pairs = encode_pairs(tokenizer, PAIRS)
    assert [set(pair) for pair in pairs] == [{"chosen", "rejected", "margin"}] * 3  # the text column stays behind
    assert [pair["margin"] for pair in pairs] == [1.0, 2.0, 0.5]
    with pytest.raises(ValueError, match="^the preference dataset is empty: build one with build_preference_dataset$"):
        encode_pairs(tokenizer, PAIRS.select([]))


def test_a_plain_training_config_gets_random_batches_of_pairs(tokenizer):
    pairs = [pair | {"index": i} for i, pair in enumerate(encode_pairs(tokenizer, PAIRS.select([0, 1, 2] * 4)))]
    config = TrainingConfig(batch_size=4, seed=2)  # no group_by_length field: batches are not grouped
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    batches = [batch["index"].tolist() for batch in pair_loader(pairs, tokenizer.pad_token_id, config)]
    assert batches == [batch["index"].tolist() for batch in make_loader(pairs, collate, config)]
    grouped = make_loader(
        pairs, collate, config, group_by_length=True, length=lambda pair: len(pair["chosen"]["input_ids"])
    )
    assert batches != [batch["index"].tolist() for batch in grouped]


def test_pair_dataset_writes_what_build_preference_dataset_wrote(world):
    # By hand: a is chosen where its label is 1, and p_chosen is p_a there and 1 − p_a where b was chosen.
    prompts = ["add 3 and 5", "review the soup", "describe the cat"]
    a = ["3 plus 5 is 8", "the soup is bland", "the cat is small"]
    b = ["3 plus 5 is 9", "the soup is tasty", "the cat is big"]
    pairs = pair_dataset(prompts, a, b, [1, 0, 1], [0.8, 0.3, 0.6], gold=world.gold_reward)
    assert pairs.column_names == ["prompt", "chosen", "rejected", "gold_chosen", "gold_rejected", "p_chosen"]
    assert pairs["prompt"] == [[{"role": "user", "content": p}] for p in prompts]
    assert pairs["chosen"] == [[{"role": "assistant", "content": c}] for c in (a[0], b[1], a[2])]
    assert pairs["rejected"] == [[{"role": "assistant", "content": r}] for r in (b[0], a[1], b[2])]
    assert pairs["p_chosen"] == pytest.approx([0.8, 0.7, 0.6])
    assert pairs["gold_chosen"] == pytest.approx(world.gold_reward(prompts, [a[0], b[1], a[2]]))
    assert pairs["gold_rejected"] == pytest.approx(world.gold_reward(prompts, [b[0], a[1], b[2]]))
    # numpy labels and probabilities are read the same way
    again = pair_dataset(prompts, a, b, np.array([1, 0, 1]), np.array([0.8, 0.3, 0.6]), gold=world.gold_reward)
    assert again.to_dict() == pairs.to_dict()
