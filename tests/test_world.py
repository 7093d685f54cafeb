import hashlib
import json
import math
import re
from collections import Counter

import numpy as np
import pytest

from rlhf_edu.core.tokenizer import build_tokenizer
from rlhf_edu.core.world import (
    FACTS,
    FAMILIES,
    MULTI_STEP,
    MULTI_STEP_STYLES,
    NEGATIVE,
    POSITIVE,
    VOCAB,
    ParsedPrompt,
    World,
    fact_pairs,
    gold_components_one,
    parse_prompt,
    rephrase,
    split_steps,
    step_labels,
)


def test_prompts_are_deterministic_and_splits_differ(world):
    assert world.prompts(50) == World(seed=0).prompts(50)
    assert world.prompts(50, split="test") != world.prompts(50)
    assert World(seed=1).prompts(50) != world.prompts(50)


def test_prompts_cover_every_family_in_equal_shares_without_markup(world):
    families = Counter(parse_prompt(p).family for p in world.prompts(3000))
    assert set(families) == {"arithmetic", "review", "describe"}
    assert all(abs(count / 3000 - 1 / 3) < 0.03 for count in families.values()), families
    assert not any("<|" in p for p in world.prompts(60))


def test_pretraining_corpus_is_plain_text(world):
    corpus = world.pretraining_corpus(200)
    assert len(corpus) == 200 and corpus == World(seed=0).pretraining_corpus(200)
    assert not any("<" in line for line in corpus)  # neither chat markup nor special tokens
    assert all(line.endswith(" .") for line in corpus)
    assert not {w for line in world.pretraining_corpus(3000) for w in line.split()} - set(VOCAB)  # no <unk>


def test_sft_dataset_uses_trl_conversational_format(world):
    dataset = world.sft_dataset(20)
    assert dataset.column_names == ["prompt", "completion"]
    row = dataset[0]
    assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    assert row["completion"][0]["content"].strip()
    answers = world.sft_dataset(3000)["completion"]
    assert not {w for answer in answers for w in answer[0]["content"].split()} - set(VOCAB)  # "20" would be <unk>


def test_gold_components_hand_worked(world):
    # Correct sum, names both operands, 5 words, no repeated content word.
    assert gold_components_one("add 3 and 5", "3 plus 5 is 8") == {
        "correctness": 1.0,
        "relevance": 1.0,
        "tone": 0.0,
        "concision": 0.0,
        "repetition": 0.0,
    }
    # Two stated facts, one true ("small") and one false ("big"); one positive word.
    parts = gold_components_one("describe the cat", "the cat is small and big and lovely")
    assert parts["correctness"] == 0.5 and parts["tone"] == pytest.approx(math.tanh(1))
    # 8 words (one over the target of 7); "amazing" repeats 3 times among 8 words.
    spam = gold_components_one("review the pizza", "the pizza is amazing amazing amazing amazing amazing")
    assert spam["concision"] == pytest.approx(-1 / 7)
    assert spam["repetition"] == pytest.approx(-4 / 8)


def test_gold_reward_hand_worked(world):
    prompts = ["add 3 and 5", "review the pizza", "review the soup", "describe the cat"]
    completions = [
        "3 plus 5 is 8",
        "the pizza is tasty",
        "the soup is great great great great great great great great",
        "i think the cat is small and grey and small and grey and big and small and lovely",
    ]
    expected = [
        # correct (×2) + relevant; no tone for sums; 5 words ≤ 7; numbers and "plus", "is" never repeat
        2 * 1 + 1,
        # relevant + tanh(1 positive word); 4 words; "pizza", "tasty" each once
        1 + math.tanh(1),
        # 11 words: relevant + tanh(8) + concision (7 − 11) / 7, and content words soup + 8 × great
        # are 2 distinct among 9, so repetition is (2 − 9) / 11, weighed ×2
        1 + math.tanh(8) - 4 / 7 - 2 * 7 / 11,
        # 18 words: 5 of the 6 stated attributes are cat facts ("big" is not): correctness 5/6 (×2);
        # relevant; tanh(1) for "lovely"; concision (7 − 18) / 7 is clipped at −1; content words
        # i, think, cat, small ×3, grey ×2, big, lovely are 7 distinct among 10: repetition −3/18 (×2)
        2 * 5 / 6 + 1 + math.tanh(1) - 1 - 2 * 3 / 18,
    ]
    assert expected == pytest.approx([3.0, 1.7615942, 0.1558439, 2.0949275])
    assert world.gold_reward(prompts, completions) == pytest.approx(expected)


def test_gold_reward_prefers_what_a_human_would(world):
    prompts = ["add 2 and 2"] * 2 + ["describe the cow"] * 2 + ["review the book"] * 2
    good = ["2 plus 2 is 4", "the cow is big and white", "the book is great"]
    bad = ["2 plus 2 is 5", "the cow is small and green", "the book is great great great great great great"]
    gold = world.gold_reward(prompts[::2], good), world.gold_reward(prompts[::2], bad)
    assert all(g > b for g, b in zip(*gold))


def test_empty_completion_scores_zero_on_every_component():
    assert set(gold_components_one("describe the cat", "").values()) == {0.0}


def test_facts_are_neither_compliments_nor_insults():
    # a fact is correct but not positive: the trade-off between correctness and tone needs the two apart
    facts = {a for attributes in FACTS.values() for a in attributes}
    assert not facts & (set(POSITIVE) | set(NEGATIVE))
    assert all(len(attributes) == 3 for attributes in FACTS.values())


def test_label_pairs_follow_bradley_terry(world):
    prompts = ["add 2 and 3"] * 4000
    a, b = ["2 plus 3 is 5"] * 4000, ["2 plus 3 is 6"] * 4000
    p = 1 / (1 + math.exp(-(3.0 - 1.0) / world.tau))  # gold 3.0 vs 1.0: correctness differs by weight 2
    labels = world.label_pairs(prompts, a, b, rng=0)
    assert np.mean(labels) == pytest.approx(p, abs=0.02)
    assert labels == world.label_pairs(prompts, a, b, rng=np.random.default_rng(0))


def test_bayes_accuracy_is_mean_of_max_p(world):
    prompts = ["add 2 and 3", "review the cafe"]
    a, b = ["2 plus 3 is 5", "the cafe is fun"], ["2 plus 3 is 6", "the cafe is fun"]
    p_first = 1 / (1 + math.exp(-2.0 / world.tau))
    assert world.bayes_accuracy(prompts, a, b) == pytest.approx((p_first + 0.5) / 2)


def test_lower_tau_means_cleaner_labels():
    prompts, a, b = ["review the cafe"] * 2, ["the cafe is fun", "the cafe is bad"], ["the cafe is bad"] * 2
    assert World(tau=0.1).bayes_accuracy(prompts, a, b) > World(tau=1.0).bayes_accuracy(prompts, a, b)


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_refused(world, prompt):
    with pytest.raises(ValueError, match="empty prompt"):
        world.gold_reward([prompt], ["x"])


def test_foreign_prompt_is_refused(world):
    with pytest.raises(ValueError, match="not a world prompt.*World.prompts"):
        world.gold_reward(["write a poem"], ["roses are red"])


def test_mismatched_lengths_and_bare_strings_are_refused(world):
    with pytest.raises(ValueError, match="got 1 prompts but 0 completions: pass one per example"):
        world.gold_reward(["add 1 and 2"], [])
    with pytest.raises(TypeError, match="list of texts, got the single string"):
        world.gold_reward("add 1 and 2", "1 plus 2 is 3")


def test_bad_tau_and_split_are_refused(world):
    with pytest.raises(ValueError, match="tau must be > 0"):
        World(tau=0)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        world.prompts(3, split="val")


def test_demonstrator_is_good_but_not_perfect(world):
    rng = np.random.default_rng(0)
    prompts = world.prompts(600)
    demonstrations = [world.demonstration(p, rng) for p in prompts]
    components = world.gold_components(prompts, demonstrations)
    assert min(components["relevance"]) == 1.0  # always on topic
    arithmetic = [c for p, c in zip(prompts, components["correctness"]) if parse_prompt(p).family == "arithmetic"]
    assert 0.7 < np.mean(arithmetic) < 0.9  # right about 80% of the time: room for RL to improve
    assert min(components["tone"]) < 0  # some demonstrations are negative reviews


def test_repeated_numbers_and_function_words_are_not_repetition():
    assert gold_components_one("add 6 and 6", "6 plus 6 is 12")["repetition"] == 0.0
    assert gold_components_one("describe the cat", "the cat is small and the cat is grey")["repetition"] == -1 / 9


def test_fact_pairs_answer_each_question_right_and_wrong():
    prompts, true_answers, false_answers = fact_pairs()
    assert len(prompts) == 8 * 3 * (11 - 3)  # 8 animals × 3 true facts × 8 of the 11 attributes that are false
    assert ("describe the dog", "the dog is brown", "the dog is soft") in zip(prompts, true_answers, false_answers)
    for prompt, good, bad in zip(prompts, true_answers, false_answers):
        good_c, bad_c = gold_components_one(prompt, good), gold_components_one(prompt, bad)
        assert (good_c["correctness"], bad_c["correctness"]) == (1.0, 0.0)
        assert {k: v for k, v in good_c.items() if k != "correctness"} == {
            k: v for k, v in bad_c.items() if k != "correctness"
        }, "only correctness tells the two apart"


def test_the_verifier_checks_the_last_number_of_a_sum(world):
    prompts = ["add 3 and 5"] * 5
    completions = ["3 plus 5 is 8", "it is 8 .", "8 plus 3 is 9", "3 plus 5 is 8 and 9", ""]
    assert world.verifiable_reward(prompts, completions) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert world.verifiable_reward(prompts, completions) == world.gold_components(prompts, completions)["correctness"]


def test_the_verifier_refuses_what_it_cannot_check(world):
    with pytest.raises(ValueError, match="the verifier checks sums only, got 'review the pizza'"):
        world.verifiable_reward(["add 1 and 2", "review the pizza"], ["3", "tasty"])


def test_prompts_of_one_family_are_the_mixed_streams_own(world):
    mixed = world.prompts(60, split="test")
    sums = world.prompts(10, split="test", family="arithmetic")
    assert sums == [p for p in mixed if p.startswith("add ")][:10]
    with pytest.raises(ValueError, match="unknown family 'poetry'"):
        world.prompts(3, family="poetry")


def test_rl_dataset_holds_conversational_prompts_as_trl_reads_them(world):
    dataset = world.rl_dataset(6, split="test")
    assert dataset.column_names == ["prompt"]
    assert dataset["prompt"] == [[{"role": "user", "content": p}] for p in world.prompts(6, split="test")]
    sums = world.rl_dataset(4, family="arithmetic")["prompt"]
    assert all(row[0]["content"].startswith("add ") for row in sums)
    assert len(World(seed=0, preset="tiny").rl_dataset()) == 2_000  # the preset's num_rl_prompts


def test_reward_function_takes_trls_calling_convention(world):
    gold = world.reward_function("gold")
    verifier = world.reward_function("verifier")
    prompts = ["add 3 and 5", "describe the cat"]
    completions = ["3 plus 5 is 8", "the cat is small"]
    expected = world.gold_reward(prompts, completions)
    as_messages = gold(
        [[{"role": "user", "content": p}] for p in prompts],
        [[{"role": "assistant", "content": c}] for c in completions],
        completion_ids=[[1, 2], [3]],
        trainer_state=None,
        answer=["8", ""],
    )  # what TRL adds
    assert gold(prompts, completions) == expected == as_messages
    assert verifier(["add 3 and 5"] * 2, [[{"role": "assistant", "content": "3 plus 5 is 8"}], "3 plus 5 is 9"]) == [
        1.0,
        0.0,
    ]
    assert (gold.__name__, verifier.__name__) == ("gold_reward", "verifier_reward")  # TRL logs rewards/<name>/mean
    with pytest.raises(ValueError, match="unknown kind 'human': use one of 'gold', 'verifier'"):
        world.reward_function("human")
    with pytest.raises(ValueError, match="the verifier checks sums only"):
        verifier(["describe the cat"], ["the cat is small"])


# --- the default world's streams are pinned: an opt-in family must not move them ------------------------
def _digest(texts) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def test_the_default_worlds_streams_are_pinned_by_hash():
    # Computed before the multi-step family existed: adding a family must leave every default stream alone.
    world = World(0)
    prompts = world.prompts(300)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)
    answers_a = [world.demonstration(p, rng_a) for p in prompts[:60]]
    answers_b = [world.demonstration(p, rng_b) for p in prompts[:60]]
    assert _digest(prompts) == "61d0ee3bd988cdd3"
    assert _digest(world.prompts(50, split="test")) == "4257a61791eb87d0"
    kept = world.prompts(40, family="arithmetic") + world.prompts(40, split="test", family="review")
    assert _digest(kept) == "a720e2087f9386eb"
    assert _digest(world.pretraining_corpus(300)) == "d9cb86d70af1804d"
    assert _digest(json.dumps(row, sort_keys=True) for row in world.sft_dataset(100)) == "8cb3aa8e15f01bd7"
    assert _digest(map(str, world.label_pairs(prompts[:60], answers_a, answers_b, 7))) == "846b5d0c2f30d7db"
    assert _digest(row["prompt"][0]["content"] for row in world.rl_dataset(30)) == "3e98fc45d3eac3de"


# --- the opt-in multi-step family -------------------------------------------------------------------------
def test_a_three_number_sum_parses_and_one_that_leaves_the_numbers_is_refused():
    assert FAMILIES == ("arithmetic", "review", "describe")  # the default mix is unchanged
    assert parse_prompt("add 3 and 5 and 4") == ParsedPrompt(MULTI_STEP, ("3", "5", "4"), 12)
    assert parse_prompt("Add 9 and 9 and 0") == ParsedPrompt(MULTI_STEP, ("9", "9", "0"), 18)  # read as the world reads
    message = (
        "'add 9 and 9 and 9' reaches the partial sum 27, which the world cannot say: every partial sum must be "
        "at most 18: e.g. World.prompts(n, family='multi_step')"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_prompt("add 9 and 9 and 9")
    with pytest.raises(ValueError, match="is not a world prompt"):
        parse_prompt("add 3 and 5 and 14")  # 14 is a number, not an operand


def test_multi_step_prompts_come_from_their_own_stream(world):
    prompts = world.prompts(300, family=MULTI_STEP)
    assert prompts == World(0).prompts(300, family=MULTI_STEP) != world.prompts(300, split="test", family=MULTI_STEP)
    parsed = [parse_prompt(p) for p in prompts]
    assert {p.family for p in parsed} == {MULTI_STEP} and max(p.answer for p in parsed) <= 18
    assert len(set(prompts)) > 100  # many distinct sums, not a handful
    assert not any(parse_prompt(p).family == MULTI_STEP for p in world.prompts(3000))  # never in the mix
    assert world.rl_dataset(3, family=MULTI_STEP)["prompt"] == [[{"role": "user", "content": p}] for p in prompts[:3]]
    assert world.prompts(0, family=MULTI_STEP) == []


def test_multi_step_demonstrations_differ_only_in_format(world):
    assert world.multi_step_demonstration("add 3 and 5 and 4", "direct") == "3 plus 5 plus 4 is 12"
    assert world.multi_step_demonstration("add 3 and 5 and 4", "steps") == "3 plus 5 is 8 . 8 plus 4 is 12"
    assert world.multi_step_demonstration("add 3 and 5 and 4") == "3 plus 5 is 8 . 8 plus 4 is 12"  # the default
    with pytest.raises(ValueError, match="unknown style 'essay': use one of 'direct', 'steps'"):
        world.multi_step_demonstration("add 3 and 5 and 4", "essay")
    with pytest.raises(ValueError, match="'add 3 and 5' is not a multi-step sum"):
        world.multi_step_demonstration("add 3 and 5", "steps")
    with pytest.raises(ValueError, match=r"use World.multi_step_demonstration\(prompt, style\)$"):
        world.demonstration("add 3 and 5 and 4", np.random.default_rng(0))


def test_multi_step_sft_datasets_hold_the_same_questions_in_trls_format(world):
    direct, steps = (world.multi_step_sft_dataset(40, style) for style in MULTI_STEP_STYLES)
    assert direct.column_names == steps.column_names == ["prompt", "completion"]
    assert (
        direct["prompt"]
        == steps["prompt"]
        == [[{"role": "user", "content": p}] for p in world.prompts(40, family=MULTI_STEP)]
    )
    tokenizer = build_tokenizer()
    for data, words in ((direct, 7), (steps, 11)):
        prompts = [row[0]["content"] for row in data["prompt"]]
        answers = [row[0]["content"] for row in data["completion"]]
        assert world.verifiable_reward(prompts, answers) == [1.0] * 40  # always right
        assert {len(a.split()) for a in answers} == {words}
        assert all(len(tokenizer(a)["input_ids"]) == words for a in answers)  # one token a word, none unknown
        assert all(all(step_labels(p, a)) for p, a in zip(prompts, answers))
    assert world.multi_step_sft_dataset(3, "steps", split="test")["prompt"] != steps["prompt"][:3]


def test_the_gold_reward_and_the_verifier_read_multi_step_answers(world):
    prompt = "add 3 and 5 and 4"
    assert gold_components_one(prompt, "3 plus 5 plus 4 is 12") == {
        "correctness": 1.0,
        "relevance": 1.0,
        "tone": 0.0,
        "concision": 0.0,
        "repetition": 0.0,
    }
    steps = gold_components_one(prompt, "3 plus 5 is 8 . 8 plus 4 is 12")
    assert (steps["correctness"], steps["relevance"], steps["repetition"]) == (1.0, 1.0, 0.0)
    assert steps["concision"] == pytest.approx(-4 / 7)  # 11 words: writing the steps out costs concision
    assert gold_components_one(prompt, "3 plus 5 is 8")["relevance"] == 0.0  # the 4 is never named
    verifier = world.reward_function("verifier")
    completions = ["3 plus 5 is 8 . 8 plus 4 is 12", "3 plus 5 plus 4 is 13", "12", ""]
    assert verifier([prompt] * 4, completions) == world.verifiable_reward([prompt] * 4, completions) == [1, 0, 1, 0]


@pytest.mark.parametrize(
    "completion, labels",
    [
        ("3 plus 5 is 8 . 8 plus 4 is 12", [True, True]),  # right
        ("3 plus 5 is 9 . 9 plus 4 is 13", [False, False]),  # wrong arithmetic, and a step built on it
        ("3 plus 5 is 8 . 8 plus 4 is 11", [True, False]),  # wrong arithmetic at the end
        ("3 plus 5 is 9 . 8 plus 4 is 12", [False, True]),  # back on the true chain
        ("3 plus 4 is 7 . 7 plus 5 is 12", [False, False]),  # right arithmetic, wrong operand
        ("5 plus 4 is 9 . 9 plus 3 is 12", [False, False]),  # right arithmetic, does not start at the first operand
        ("3 plus 5 plus 4 is 12", [True]),  # a direct answer is one step
        ("3 plus 5 plus 4 is 11", [False]),
        ("3 plus 5 is 8 .", [True]),  # right so far, and unfinished: the outcome is wrong
        ("3 plus 5 is 8 . 8 plus 4 is 12 . 12 plus 0 is 12", [True, True, False]),  # no operand is left to add
        ("12", [False]),  # a bare number is no step
        ("the 3 plus 5 is 8 . 8 plus 4 is 12", [False, False]),  # not a sum; a malformed step moves nothing
        ("", [False]),  # an empty answer is one empty step
    ],
)
def test_step_labels_hand_worked(completion, labels):
    assert step_labels("add 3 and 5 and 4", completion) == labels


def test_step_labels_split_at_the_separator_and_read_sums_of_two():
    assert split_steps("3 Plus 5 is 8. 8 plus 4 is 12") == ["3 plus 5 is 8", "8 plus 4 is 12"]
    assert split_steps([{"role": "assistant", "content": "a . . b"}]) == ["a", "", "b"]
    assert split_steps("") == split_steps(".") == [""]
    assert step_labels("add 3 and 5", "3 plus 5 is 8") == [True]
    assert step_labels("add 3 and 5", "3 plus 5 is 9") == [False]
    with pytest.raises(ValueError, match="steps can only be checked on sums, got 'review the pizza'"):
        step_labels("review the pizza", "the pizza is tasty")


@pytest.mark.parametrize("form", ["please", "period"])
def test_a_rephrased_prompt_asks_the_same_and_earns_the_same_gold(world, form):
    prompts = world.prompts(30, split="test") + world.prompts(5, family="multi_step")
    rephrased = [rephrase(p, form) for p in prompts]
    assert rephrased[0] == {"please": f"please {prompts[0]}", "period": f"{prompts[0]} ."}[form]
    assert [parse_prompt(p) for p in rephrased] == [parse_prompt(p) for p in prompts]
    answers = [world.demonstration(p, np.random.default_rng(0)) for p in prompts[:30]] + ["8"] * 5
    assert world.gold_reward(rephrased, answers) == world.gold_reward(prompts, answers)
    assert [rephrase(p, "plain") for p in rephrased] == prompts  # back again


def test_rephrase_refuses_an_unknown_form_and_a_foreign_prompt():
    with pytest.raises(ValueError, match="form.*'shout'.*plain"):
        rephrase("add 3 and 5", "shout")
    with pytest.raises(ValueError, match="'write a poem' is not a world prompt"):
        rephrase("write a poem", "please")
    for bare in ("please", ".", "please ."):  # nothing left to ask once the form's words are off
        with pytest.raises(ValueError, match="is not a world prompt"):
            parse_prompt(bare)
