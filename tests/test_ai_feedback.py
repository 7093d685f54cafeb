"""Chapter 13's judge, each function against a number worked out by hand or computed another way.

No training here: where a model is needed, ``sft`` stands in for the judge (the format and the arithmetic are the
same whether or not a model was fine-tuned to write "1" or "2").
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from datasets import Dataset

from rlhf_edu import ai_feedback as af
from rlhf_edu.core import zoo
from rlhf_edu.core.collate import encode_prompt_completion
from rlhf_edu.core.rollouts import render_prompt
from rlhf_edu.core.runtime import numpy_rng, torch_generator
from rlhf_edu.core.world import World

PROMPT, RIGHT, WRONG = "add 3 and 5", "3 plus 5 is 8", "3 plus 5 is 9"


@pytest.fixture(scope="module")
def judge_and_tokenizer():
    return zoo.load("sft", device="cpu")  # a stand-in judge: the margins' arithmetic does not need a trained one


# --- the judge's format --------------------------------------------------------------------------------------------
def test_judge_message_numbers_the_two_answers():
    assert af.judge_message(PROMPT, RIGHT, WRONG) == "add 3 and 5 . 1 3 plus 5 is 8 . 2 3 plus 5 is 9"
    assert af.judge_message(PROMPT, WRONG, RIGHT) == "add 3 and 5 . 1 3 plus 5 is 9 . 2 3 plus 5 is 8"


def test_judge_message_takes_message_lists_and_reads_text_as_the_world_does():
    as_messages = af.judge_message(
        [{"role": "user", "content": PROMPT}],
        [{"role": "assistant", "content": RIGHT}],
        [{"role": "system", "content": "ignored"}, {"role": "assistant", "content": WRONG}],  # the last message
    )
    assert as_messages == af.judge_message(PROMPT, RIGHT, WRONG)
    assert af.judge_message("Add 3 and 5", "3 Plus 5 is 8", WRONG) == af.judge_message(PROMPT, RIGHT, WRONG)


@pytest.mark.parametrize("text, index", [("1", 0), ("2", 1), (" 2 ", 1), ("1\n", 0)])
def test_parse_verdict_reads_the_answers_number(text, index):
    assert af.parse_verdict(text) == index


@pytest.mark.parametrize("text", ["3", "", "1 2", "one", "12", "1 ."])
def test_parse_verdict_refuses_anything_else_by_name(text):
    with pytest.raises(ValueError, match=rf"^verdict {text!r} is not one of the judge's two answers \('1', '2'\)"):
        af.parse_verdict(text)


def test_judge_rows_show_each_pair_in_both_orders_with_the_chosen_answers_number():
    prompts, chosen, rejected = [PROMPT, "review the pizza"], [RIGHT, "the pizza is tasty"], [WRONG, "it is bad"]
    rows = af.judge_rows(prompts, chosen, rejected)
    assert len(rows) == 2 * len(prompts)
    expected = []
    for prompt, good, bad in zip(prompts, chosen, rejected):
        expected.append((af.judge_message(prompt, good, bad), "1"))  # chosen shown first: it is answer 1
        expected.append((af.judge_message(prompt, bad, good), "2"))  # chosen shown second: it is answer 2
    for row, (message, verdict) in zip(rows, expected):
        assert row == {  # TRL's conversational prompt/completion format
            "prompt": [{"role": "user", "content": message}],
            "completion": [{"role": "assistant", "content": verdict}],
        }
    # the labels alone favour no position: each number is the answer half of the time
    assert [row["completion"][0]["content"] for row in rows].count("1") == len(prompts)


# --- what the judge says ---------------------------------------------------------------------------------------------
def _verdict_logprob_by_hand(model, tokenizer, message: str) -> tuple[float, float]:
    """log π("1" <|end|> | x) and log π("2" <|end|> | x) from one unpadded forward pass of both continuations."""
    ids = tokenizer(render_prompt(tokenizer, message), add_special_tokens=False)["input_ids"]
    end = tokenizer.eos_token_id
    verdict_ids = [tokenizer.convert_tokens_to_ids(v) for v in ("1", "2")]
    batch = torch.tensor([ids + [v, end] for v in verdict_ids])  # (2, T + 2), the same length: no padding
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=batch).logits.double(), dim=-1)  # (2, T + 2, V)
    n = len(ids)
    return tuple(
        float(logps[row, n - 1, v] + logps[row, n, end])  # the verdict's token, then the end of the turn after it
        for row, v in enumerate(verdict_ids)
    )


def test_a_completion_is_the_verdict_and_the_end_of_the_turn(judge_and_tokenizer):
    # What the hand computation above must cover: the chat template closes the assistant's turn after its answer.
    _, tokenizer = judge_and_tokenizer
    message = af.judge_message(PROMPT, RIGHT, WRONG)
    row = encode_prompt_completion(tokenizer, message, "1")
    completion = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
    assert tokenizer.convert_ids_to_tokens(completion) == ["1", tokenizer.eos_token]
    assert tokenizer.eos_token == "<|end|>"


def test_judge_margins_are_the_log_ratio_of_the_two_numbers(judge_and_tokenizer):
    model, tokenizer = judge_and_tokenizer
    prompts = [PROMPT, "review the pizza", "describe the cat"]
    first = [RIGHT, "the pizza is tasty and fresh and great", "the cat is small"]
    second = [WRONG, "bad", "the cat is big and grey"]  # of different lengths: the library pads, the hand does not
    margins = af.judge_margins(model, tokenizer, prompts, first, second)
    assert margins.shape == (3,)
    for i, texts in enumerate(zip(prompts, first, second)):
        one, two = _verdict_logprob_by_hand(model, tokenizer, af.judge_message(*texts))
        assert margins[i].item() == pytest.approx(one - two, abs=1e-4)
    swapped = af.judge_margins(model, tokenizer, prompts, second, first)  # the order is the one given
    for i, texts in enumerate(zip(prompts, second, first)):
        one, two = _verdict_logprob_by_hand(model, tokenizer, af.judge_message(*texts))
        assert swapped[i].item() == pytest.approx(one - two, abs=1e-4)


def test_debiased_margins_by_hand():
    m_ab, m_ba = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-1.0, 0.0, 0.5])
    # (m_ab − m_ba) / 2: (2 + 1) / 2, (−1 − 0) / 2, (0.5 − 0.5) / 2
    assert af.debiased_margins(m_ab, m_ba).tolist() == [1.5, -0.5, 0.0]


def test_debiased_margins_are_antisymmetric_and_cancel_a_pull_to_the_first_position():
    generator = torch_generator(0)
    m_ab, m_ba = torch.randn(16, generator=generator), torch.randn(16, generator=generator)
    debiased = af.debiased_margins(m_ab, m_ba)
    torch.testing.assert_close(af.debiased_margins(m_ba, m_ab), -debiased)  # swapping the orders negates it
    for pull in (-3.0, 0.7, 25.0):  # the same constant on every margin of both orders
        torch.testing.assert_close(af.debiased_margins(m_ab + pull, m_ba + pull), debiased)


def test_judge_verdicts_name_the_first_answer_only_above_zero():
    verdicts = af.judge_verdicts(torch.tensor([2.0, 1e-6, 0.0, -0.0, -1e-6, -3.0]))
    assert verdicts.tolist() == [1, 1, 0, 0, 0, 0]
    assert verdicts.dtype.kind == "i"


def test_position_bias_on_a_hand_worked_example():
    first_wins_ab = [1, 1, 0, 1, 0]  # shown a then b: 1 where the judge named a (the first)
    first_wins_ba = [0, 1, 1, 1, 0]  # shown b then a: 1 where the judge named b (now the first)
    # The answer each verdict names, (a-first order, b-first order):
    #   pair 0: a, a  (first, then second: a both times)   -> consistent
    #   pair 1: a, b  (first both times)                     -> not
    #   pair 2: b, b  (second, then first: b both times)  -> consistent
    #   pair 3: a, b  (first both times)                     -> not
    #   pair 4: b, a  (second both times)                    -> not
    # Consistent: pairs 0 and 2, 2 of 5. First position named: 3 of the 5 a-first verdicts and 3 of the 5
    # b-first ones, 6 of the 10.
    assert af.position_consistency(first_wins_ab, first_wins_ba) == pytest.approx(2 / 5)
    assert af.first_position_share(first_wins_ab, first_wins_ba) == pytest.approx(6 / 10)


def test_a_judge_that_always_writes_one_is_never_consistent_and_a_consistent_judge_always_is():
    always_one = [1] * 6
    assert af.position_consistency(always_one, always_one) == 0.0
    assert af.first_position_share(always_one, always_one) == 1.0
    always_two = [0] * 6
    assert af.position_consistency(always_two, always_two) == 0.0
    assert af.first_position_share(always_two, always_two) == 0.0
    names_a = np.array([1, 0, 1, 1, 0, 0])  # whatever it thinks of each pair, it says so in both orders
    assert af.position_consistency(names_a, 1 - names_a) == 1.0
    assert af.first_position_share(names_a, 1 - names_a) == 0.5  # a consistent judge names each position N times


def test_a_constant_pull_makes_a_judge_inconsistent_and_debiasing_undoes_it():
    generator = torch_generator(1)
    preference = torch.randn(40, generator=generator)  # the judge's view of a over b, free of position
    pull = 10.0  # far larger than any preference: it writes "1" whatever it is shown
    m_ab, m_ba = preference + pull, -preference + pull
    ab, ba = af.judge_verdicts(m_ab), af.judge_verdicts(m_ba)
    assert af.position_consistency(ab, ba) == 0.0 and af.first_position_share(ab, ba) == 1.0
    debiased = af.debiased_margins(m_ab, m_ba)
    torch.testing.assert_close(debiased, preference)
    unbiased_ab, unbiased_ba = af.judge_verdicts(debiased), af.judge_verdicts(-debiased)
    assert af.position_consistency(unbiased_ab, unbiased_ba) == 1.0


# --- how good the judge is -----------------------------------------------------------------------------------------
def _pairs_by_hand(world: World, p_chosen: list[float]) -> Dataset:
    prompts = world.prompts(len(p_chosen))
    first = [world.demonstration(p, numpy_rng(1)) for p in prompts]
    rng = numpy_rng(2)
    second = [world.demonstration(p, rng) for p in prompts]
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in prompts],
            "chosen": [[{"role": "assistant", "content": c}] for c in first],
            "rejected": [[{"role": "assistant", "content": r}] for r in second],
            "p_chosen": p_chosen,  # chosen by hand: agreement reads the column, not the world, for the labels
        }
    )


def test_agreement_by_hand():
    world = World(seed=0)
    p_chosen = [0.9, 0.6, 0.3, 0.8, 0.55, 0.7, 0.2, 0.95]
    pairs = _pairs_by_hand(world, p_chosen)
    margins = torch.tensor([1.0, -0.5, 0.0, 2.0, -3.0, 0.1, 0.0, -0.2])  # 0 names neither: counted as rejected
    report = af.agreement(margins, pairs, world)
    names_chosen = [1, 0, 0, 1, 0, 1, 0, 0]
    per_pair = [p if n else 1 - p for p, n in zip(p_chosen, names_chosen)]
    # 0.9, 0.4, 0.7, 0.8, 0.45, 0.7, 0.8, 0.05
    expected = sum(per_pair) / 8
    assert report["accuracy"] == pytest.approx(3 / 8)
    assert report["expected_accuracy"] == pytest.approx(expected)
    assert report["expected_accuracy_se"] == pytest.approx(statistics.stdev(per_pair) / math.sqrt(8))
    prompts = [row[-1]["content"] for row in pairs["prompt"]]
    chosen = [row[-1]["content"] for row in pairs["chosen"]]
    rejected = [row[-1]["content"] for row in pairs["rejected"]]
    p = 1 / (
        1 + np.exp(-(np.subtract(world.gold_reward(prompts, chosen), world.gold_reward(prompts, rejected))) / world.tau)
    )
    bayes = float(np.maximum(p, 1 - p).mean())  # the ceiling: always naming the answer with the higher gold
    assert report["bayes_accuracy"] == pytest.approx(bayes)
    assert report["bayes_accuracy"] == pytest.approx(world.bayes_accuracy(prompts, chosen, rejected))
    assert 0.5 < bayes < 1
    assert report["ceiling_share"] == pytest.approx((expected - 0.5) / (bayes - 0.5))
    assert report["ceiling_share_se"] == pytest.approx(report["expected_accuracy_se"] / (bayes - 0.5))


def test_self_preference_is_the_difference_of_the_two_error_rates():
    # own answer worse in pairs 0-3: the judge names its own in 0 and 1 (errors in its favour: 2 of 4 = 0.5);
    # own answer better in pairs 4-7: it names the other in 4 (an error against itself: 1 of 4 = 0.25)
    picks_own = [1, 1, 0, 0, 0, 1, 1, 1]
    own_better = [0, 0, 0, 0, 1, 1, 1, 1]
    difference, se = af.self_preference(picks_own, own_better)
    assert difference == pytest.approx(0.25)
    se_worse, se_better = math.sqrt(1 / 3) / 2, 0.5 / 2  # sample sd / √4 of [1, 1, 0, 0] and of [1, 0, 0, 0]
    assert se == pytest.approx(math.hypot(se_worse, se_better))


def test_self_preference_beyond_a_person_takes_off_their_expected_errors_pair_by_pair():
    """With p the person's P(own wins): their expected error is p where own is worse, 1 − p where it is better."""
    picks_own, own_better = [1, 0, 0, 1], [0, 0, 1, 1]
    p = [0.4, 0.2, 0.9, 0.6]  # person's expected errors: 0.4, 0.2 (own worse); 0.1, 0.4 (own better)
    difference, _ = af.self_preference(picks_own, own_better, person_p_own=p)
    # judge's errors minus the person's: worse group [1 − 0.4, 0 − 0.2] → 0.2; better group [1 − 0.1, 0 − 0.4] → 0.25
    assert difference == pytest.approx(0.2 - 0.25)
    same = af.self_preference([1, 1, 0, 0], [0, 0, 1, 1], person_p_own=[1.0, 1.0, 0.0, 0.0])  # errs as the person
    assert same[0] == pytest.approx(0)


def test_self_preference_of_a_coin_and_of_a_perfect_judge_is_zero():
    """Errors that fall evenly either way score 0, however often the backbone's answer is the better one."""
    own_better = [0] * 6 + [1] * 2  # the backbone's answer is worse in most pairs
    coin = [1, 0, 1, 0, 1, 0, 1, 0]  # names its own half the time in each group
    assert af.self_preference(coin, own_better)[0] == pytest.approx(0)
    assert af.self_preference(own_better, own_better)[0] == pytest.approx(0)  # a perfect judge
    assert af.self_preference([1] * 8, own_better)[0] == pytest.approx(1)  # always its own


# --- RLAIF ---------------------------------------------------------------------------------------------------------
def _answers():
    prompts = [PROMPT, "review the pizza", "describe the cat", "add 1 and 2"]
    a = [RIGHT, "the pizza is tasty", "the cat is small", "1 plus 2 is 4"]
    b = [WRONG, "the pizza is bad and bad", "the cat is small and grey", "1 plus 2 is 3"]
    return prompts, a, b


def test_ai_labelled_pairs_follow_the_labels_and_score_them_as_a_person_would():
    world = World(seed=0)
    prompts, a, b = _answers()
    labels = [1, 0, 1, 0]  # 1 where a wins
    pairs = af.ai_labelled_pairs(world, prompts, a, b, labels)
    gap = np.subtract(world.gold_reward(prompts, a), world.gold_reward(prompts, b))
    p_a = 1 / (1 + np.exp(-gap / world.tau))  # the annotator's P(a ≻ b)
    assert [row[-1]["content"] for row in pairs["chosen"]] == [a[0], b[1], a[2], b[3]]
    assert [row[-1]["content"] for row in pairs["rejected"]] == [b[0], a[1], b[2], a[3]]
    assert [row[-1]["content"] for row in pairs["prompt"]] == prompts
    assert pairs["p_chosen"] == pytest.approx([p_a[0], 1 - p_a[1], p_a[2], 1 - p_a[3]])
    chosen = [row[-1]["content"] for row in pairs["chosen"]]
    assert pairs["gold_chosen"] == pytest.approx(world.gold_reward(prompts, chosen))
    mean, se = af.label_agreement(pairs)
    assert mean == pytest.approx(statistics.mean(pairs["p_chosen"]))
    assert se == pytest.approx(statistics.stdev(pairs["p_chosen"]) / 2)  # √4 = 2


def test_labels_that_follow_the_gold_reward_agree_with_a_person_as_often_as_the_ceiling():
    world = World(seed=0)
    prompts, a, b = _answers()
    gold_labels = (np.subtract(world.gold_reward(prompts, a), world.gold_reward(prompts, b)) > 0).astype(int)
    mean, _ = af.label_agreement(af.ai_labelled_pairs(world, prompts, a, b, gold_labels))
    assert mean == pytest.approx(world.bayes_accuracy(prompts, a, b))


def test_annotator_labels_are_the_worlds_labels_drawn_through_the_runtime():
    world = World(seed=0)
    prompts = world.prompts(64)
    answers = [world.demonstration(p, numpy_rng(0)) for p in prompts]
    rng = numpy_rng(3)
    others = [world.demonstration(p, rng) for p in prompts]
    labels = af.annotator_labels(world, prompts, answers, others, seed=5)
    assert np.array_equal(labels, af.annotator_labels(world, prompts, answers, others, seed=5))
    assert np.array_equal(labels, world.label_pairs(prompts, answers, others, rng=numpy_rng(5)))
    p = world.preference_probability(prompts, answers, others)
    assert np.array_equal(labels, (numpy_rng(5).random(len(p)) < p).astype(int))  # Bernoulli(P(a ≻ b)) each
    ties = af.annotator_labels(world, prompts, answers, answers, seed=5)  # P = 1/2 each: a fair coin per pair
    assert not np.array_equal(ties, af.annotator_labels(world, prompts, answers, answers, seed=6))
