import itertools
import math
import re

import numpy as np
import pytest
import torch

from rlhf_edu import rejection_sampling as rs
from rlhf_edu import zoo
from rlhf_edu.core.rollouts import sample_rollouts
from rlhf_edu.core.stats import bootstrap_stderr
from tests.conftest import random_model

BOOK = [[0.7, 0.3, 0.5, 0.2], [0.4, 0.8, 0.6, 0.5], [0.9, 0.3, 0.4, 0.7], [0.2, 0.5, 0.8, 0.6], [0.5, 0.4, 0.3, 0.6]]


@pytest.mark.parametrize("as_input", [np.array, torch.tensor])
def test_the_books_worked_example(as_input):
    rewards = as_input(BOOK)
    assert [j + 1 for j in rs.select_top_per_prompt(rewards)] == [1, 2, 1, 3, 4]  # one-based, as the book prints
    top = rs.select_top_k_overall(rewards, 5)
    assert top == [8, 5, 14, 0, 11]
    assert sorted(i // 4 for i in top) == [0, 1, 2, 2, 3]  # prompt 3 (index 2) twice, prompt 5 (index 4) never


def test_ties_go_to_the_lower_index():
    rewards = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert rs.select_top_per_prompt(rewards) == [0, 1]
    assert rs.select_top_k_overall(rewards, 4) == [4, 5, 0, 1]
    many = np.tile([1.0, 0.0], (100, 1))  # 200 rewards in two levels: enough for a fast sort to reorder equals
    assert rs.select_top_k_overall(many, 200) == list(range(0, 200, 2)) + list(range(1, 200, 2))


def test_k_may_keep_every_completion():
    rewards = np.array([[0.2, 0.9], [0.5, 0.1]])
    assert rs.select_top_k_overall(rewards, 4) == [1, 2, 0, 3]
    assert sorted(rs.select_random_k_overall(rewards, 4, 0)) == [0, 1, 2, 3]  # without replacement: each once


def test_random_controls_keep_the_shape_of_their_rules():
    rewards = np.zeros((6, 5))
    per_prompt = rs.select_random_per_prompt(rewards, 0)
    assert len(per_prompt) == 6 and all(0 <= j < 5 for j in per_prompt)
    overall = rs.select_random_k_overall(rewards, 7, np.random.default_rng(0))
    assert len(set(overall)) == 7 and all(0 <= f < 30 for f in overall)
    assert rs.select_random_k_overall(rewards, 7, 1) == rs.select_random_k_overall(rewards, 7, 1)  # seeded


@pytest.mark.parametrize("n, bound", [(1, 0.0), (2, 0.1931), (4, 0.6363), (8, 1.2044), (16, 1.8351), (64, 3.1745)])
def test_the_kl_bound_of_best_of_n(n, bound):
    assert rs.best_of_n_kl_bound(n) == pytest.approx(bound, abs=1e-4)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize(
    "probs, rewards",
    [
        ([0.5, 0.3, 0.2], [0.0, 1.0, 2.0]),  # distinct rewards
        ([0.5, 0.3, 0.2], [1.0, 1.0, 0.0]),  # a tie at the top
        ([0.5, 0.0, 0.3, 0.2], [0.0, 3.0, 1.0, 1.0]),  # the best reward on an outcome π never samples
    ],
)
def test_exact_best_of_n_against_every_n_tuple(n, probs, rewards):
    brute = np.zeros(len(probs))
    for tuple_ in itertools.product(range(len(probs)), repeat=n):
        chance = math.prod(probs[i] for i in tuple_)
        best = max(rewards[i] for i in tuple_)
        winners = [i for i in tuple_ if rewards[i] == best]  # a tie is broken uniformly among the samples
        for i in winners:
            brute[i] += chance / len(winners)
    probs_bon, kl = rs.exact_best_of_n(probs, rewards, n)  # plain lists, taken in float64
    np.testing.assert_allclose(probs_bon, brute, atol=1e-15, rtol=1e-12)
    taken = brute > 0
    expected_kl = float(np.sum(brute[taken] * np.log(brute[taken] / np.array(probs)[taken])))
    assert math.isfinite(kl) and kl == pytest.approx(expected_kl, rel=1e-12, abs=1e-15)


def test_the_bound_is_an_upper_bound_met_only_as_outcomes_become_many_and_small():
    rng = np.random.default_rng(0)
    for n in (2, 4, 16):
        bound = rs.best_of_n_kl_bound(n)
        gaps = []
        for outcomes in (3, 30, 3000):
            probs = rng.dirichlet(np.ones(outcomes))
            _, kl = rs.exact_best_of_n(probs, rng.normal(size=outcomes), n)
            _, tied = rs.exact_best_of_n(probs, rng.integers(2, size=outcomes), n)  # two reward levels: ties
            assert tied < kl <= bound + 1e-12
            gaps.append(bound - kl)
        assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01  # the gap closes as the largest probability shrinks


def test_sample_and_score_lines_up_rewards_with_completions(tokenizer, world):
    model = random_model("llama", len(tokenizer))
    prompts = world.prompts(3)
    length = lambda ps, cs: [float(len(c.split())) + 0.01 * i for i, c in enumerate(cs)]  # encodes its row order
    completions, rewards = rs.sample_and_score(model, tokenizer, prompts, 4, length, max_new_tokens=6, seed=0)
    assert rewards.shape == (3, 4) and [len(row) for row in completions] == [4, 4, 4]
    for i, row in enumerate(completions):
        for j, completion in enumerate(row):
            assert rewards[i, j] == pytest.approx(len(completion.split()) + 0.01 * (4 * i + j))
    picks = rs.select_top_per_prompt(rewards)
    dataset = rs.rejection_sampling_dataset(prompts, completions, rewards, picks)
    assert dataset.column_names == ["prompt", "completion", "reward"] and len(dataset) == 3
    assert dataset[0]["prompt"] == [{"role": "user", "content": prompts[0]}]
    assert dataset[1]["completion"] == [{"role": "assistant", "content": completions[1][picks[1]]}]
    assert dataset["reward"] == pytest.approx(rewards.max(axis=1).tolist())
    overall = rs.rejection_sampling_dataset(
        prompts, completions, rewards, rs.select_top_k_overall(rewards, 5), per_prompt=False
    )
    assert sorted(overall["reward"], reverse=True) == pytest.approx(sorted(rewards.ravel(), reverse=True)[:5])
    best = rs.best_of_n(model, tokenizer, prompts, 4, length, max_new_tokens=6, seed=0)
    assert best == [row[j] for row, j in zip(completions, rs.select_top_per_prompt(rewards))]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: rs.select_top_per_prompt(np.zeros(4)), ValueError, "must be a \\(M prompts, N completions\\) matrix"),
        (lambda: rs.select_top_per_prompt(np.array([[1.0, math.nan]])), ValueError, "rewards hold NaN"),
        (lambda: rs.select_top_per_prompt("high"), TypeError, "rewards must be a numpy array or a tensor"),
        (lambda: rs.exact_best_of_n([0.5, 0.6], [0.0, 1.0], 2), ValueError, "probs must sum to 1"),
    ],
)
def test_bad_input_names_the_fix(call, error, message):
    with pytest.raises(error, match=message):
        call()


ONE_SAMPLE = "n must be >= 1, got 0: best-of-n needs at least one sample"
SHAPE = "must describe the same M prompts × N completions: pass what sample_and_score returned"


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: rs.best_of_n_kl_bound(0), ValueError, ONE_SAMPLE),
        (lambda: rs.exact_best_of_n([0.5, 0.5], [0.0, 1.0], 0), ValueError, ONE_SAMPLE),
        (lambda: rs.picks_table(["add 1 and 2"], [["3"]], [[1.0]], [[1.0]], 0), ValueError, ONE_SAMPLE),
        (
            lambda: rs.select_top_k_overall(np.zeros((2, 3)), 7),
            ValueError,
            "k = 7 is more than the M × N = 6 completions there are: keep at most 6",
        ),
        (
            lambda: rs.select_random_k_overall(np.zeros((2, 3)), 0, 0),
            ValueError,
            "k must be >= 1, got 0: keep between 1 and M × N = 6 completions",
        ),
        (
            lambda: rs.exact_best_of_n([0.5, 0.5], [0.0, 1.0, 2.0], 2),
            ValueError,
            "probs (2,) and rewards (3,) must be 1-D with one entry per outcome",
        ),
        (
            lambda: rs.exact_best_of_n([0.5, 0.5], [1.0, None], 2),
            ValueError,
            "rewards hold NaN or inf",
        ),  # a missing score
        (
            lambda: rs.sample_and_score(None, None, "add 1 and 2", 2, len),
            TypeError,
            "prompts must be a list of texts, got the single string 'add 1 and 2': pass ['add 1 and 2']",
        ),
        (
            lambda: rs.sample_and_score(None, None, ["add 1 and 2"], 0, len),
            ValueError,
            "n must be >= 1, got 0: the number of completions per prompt, e.g. 8",
        ),
        (  # one prompt too many
            lambda: rs.rejection_sampling_dataset(["a", "b", "c"], [["x", "y"], ["x", "y"]], np.zeros((2, 2)), [0, 0]),
            ValueError,
            f"prompts (3), completions and rewards (2, 2) {SHAPE}",
        ),
        (  # one row of completions too few
            lambda: rs.rejection_sampling_dataset(["a", "b"], [["x", "y"]], np.zeros((2, 2)), [0, 0]),
            ValueError,
            f"prompts (2), completions and rewards (2, 2) {SHAPE}",
        ),
        (  # a row one completion short
            lambda: rs.rejection_sampling_dataset(["a", "b"], [["x", "y"], ["x"]], np.zeros((2, 2)), [0, 0]),
            ValueError,
            f"prompts (2), completions and rewards (2, 2) {SHAPE}",
        ),
        (  # column N of a 2 × 2 matrix
            lambda: rs.rejection_sampling_dataset(["a", "b"], [["x", "y"], ["x", "y"]], np.zeros((2, 2)), [0, 2]),
            ValueError,
            "selected holds an index outside the 2 × 2 matrix: pass a selection rule's output (per_prompt=True)",
        ),
        (  # flat index M·N, one past the last cell
            lambda: rs.rejection_sampling_dataset(
                ["a", "b"], [["x", "y"], ["x", "y"]], np.zeros((2, 2)), [4], per_prompt=False
            ),
            ValueError,
            "selected holds an index outside the 2 × 2 matrix: pass a selection rule's output (per_prompt=False)",
        ),
    ],
)
def test_bad_input_is_refused_with_the_whole_message(call, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()


def test_a_reward_fn_with_the_wrong_number_of_scores_is_refused(tokenizer, world):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(ValueError, match="reward_fn returned 1 scores for 8 completions"):
        rs.sample_and_score(model, tokenizer, world.prompts(2), 4, lambda p, c: [0.0], max_new_tokens=3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        rs.sample_and_score(model, tokenizer, world.prompts(2), 0, lambda p, c: [0.0] * len(c))


def test_sampling_follows_sample_rollouts_and_best_of_n_picks_from_it(world):
    """Rows in prompt order; by default at temperature 1 from seed 0; a temperature and a seed given are used."""
    model, tokenizer = zoo.load("sft", device="cpu")  # a trained model: its samples depend on the temperature
    prompts = world.prompts(3)
    length = lambda ps, cs: [float(len(c)) for c in cs]

    def rows(temperature, seed):
        completions = sample_rollouts(model, tokenizer, prompts, 4, 8, temperature=temperature, seed=seed).completions
        return [completions[4 * i : 4 * (i + 1)] for i in range(3)]

    default, rewards = rs.sample_and_score(model, tokenizer, prompts, 4, length, max_new_tokens=8)
    assert default == rows(1.0, 0)
    hot, _ = rs.sample_and_score(model, tokenizer, prompts, 4, length, max_new_tokens=8, temperature=2.0, seed=5)
    assert hot == rows(2.0, 5) and hot != rows(1.0, 5)
    picks = lambda Y: [max(row, key=len) for row in Y]  # the longest answer, the first of equals
    assert rs.best_of_n(model, tokenizer, prompts, 4, length, max_new_tokens=8) == picks(default)
    assert rs.best_of_n(model, tokenizer, prompts, 4, length, max_new_tokens=8, seed=5) == picks(rows(1.0, 5))


def test_held_out_best_of_n_is_64_samples_of_each_of_64_test_prompts_by_default(world, monkeypatch):
    """The one measurement chapters 8 and 10 share; here with the sampler replaced by one that records its call."""
    asked = []

    def record(policy, tokenizer, prompts, n, reward_fn, **kwargs):
        asked.append((prompts, n))
        return [["the cat is small"] * n for _ in prompts], np.zeros((len(prompts), n))

    monkeypatch.setattr(rs, "sample_and_score", record)
    prompts, Y, R, G = rs.held_out_best_of_n(None, None, world, None)
    assert asked == [(world.prompts(64, split="test"), 64)] and prompts == asked[0][0]
    assert R.shape == G.shape == (64, 64)


def test_best_of_n_curve_averages_every_subset_of_n():
    rng = np.random.default_rng(0)
    scores, values = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    curve = rs.best_of_n_curve(scores, values, [1, 2, 6])
    for n in (1, 2, 6):
        brute = np.mean(
            [
                np.mean(
                    [values[i, list(s)][np.argmax(scores[i, list(s)])] for s in itertools.combinations(range(6), n)]
                )
                for i in range(3)
            ]
        )
        assert curve[n] == pytest.approx(brute)
    assert curve[1] == pytest.approx(values.mean()) and curve[6] == pytest.approx(
        values[np.arange(3), scores.argmax(1)].mean()
    )
    with pytest.raises(ValueError, match="n = 7 needs at least n samples per prompt, but there are N = 6"):
        rs.best_of_n_curve(scores, values, [7])


def test_the_picks_table_and_the_curve_picture():
    scores, values = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.8]]), np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    prompts, completions = ["add 1 and 2", "review the soup"], [["a", "b", "c"], ["d", "e", "f"]]
    assert rs.picks_table(prompts, completions, scores, values, n=1) == (
        "add 1 and 2          score +0.10  gold +1.00   a\nreview the soup      score +0.70  gold -1.00   d"
    )
    assert rs.picks_table(prompts[:1], completions, scores, values, n=3).endswith("gold +2.00   b")
    many = rs.picks_table(prompts * 4, completions * 4, np.tile(scores, (4, 1)), np.tile(values, (4, 1)), n=3)
    assert len(many.split("\n")) == 6  # the first six prompts by default
    figure = rs.plot_best_of_n_curves({"pick": {1: 1.0, 2: 1.5}, "oracle": {1: 1.0, 2: 2.0}}, highlight=2)
    assert len(figure.axes[0].lines) == 2 and len(figure.axes[0].collections) == 2  # two curves, two dots


def test_best_of_n_stderr_is_the_prompts_noise_and_the_gain_is_paired():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(400, 16))
    values = scores + rng.normal(size=(400, 1)) * 3  # a prompt effect that every sample of the prompt shares
    se = rs.best_of_n_stderr(scores, values, [1, 4])
    assert se[1] == pytest.approx(values.mean(axis=1).std() / 20, rel=0.2)  # s/√M of the prompt means
    gain, gain_se = rs.best_of_n_gain(scores, values, 1, 4)
    curve = rs.best_of_n_curve(scores, values, [1, 4])
    assert gain == pytest.approx(curve[4] - curve[1]) and gain_se < se[1] / 5  # the shared prompt effect cancels
    noisy = values + rng.normal(size=values.shape)  # a proxy that selects worse than the values themselves
    lift, lift_se = rs.best_of_n_gain(noisy, values, 0, 4, oracle=values)
    assert lift == pytest.approx(rs.best_of_n_curve(values, values, [4])[4] - rs.best_of_n_curve(noisy, values, [4])[4])
    assert lift > 5 * lift_se > 0


def test_held_out_best_of_n_scores_the_same_completions_by_reward_and_by_gold(tokenizer, world):
    model = random_model("llama", len(tokenizer))
    length = lambda p, c: [float(len(x)) for x in c]
    prompts, Y, R, G = rs.held_out_best_of_n(model, tokenizer, world, length, num_prompts=3, n=2)
    assert prompts == world.prompts(3, split="test") and R.shape == G.shape == (3, 2)
    assert np.allclose(R, [[len(c) for c in row] for row in Y])
    assert np.allclose(G[1], world.gold_reward([prompts[1]] * 2, Y[1]))
    assert Y == rs.sample_and_score(model, tokenizer, prompts, 2, length, seed=rs.BEST_OF_N_SEED)[0]  # its own seed
    other = rs.held_out_best_of_n(model, tokenizer, world, length, num_prompts=3, n=2, seed=7)[1]
    assert other == rs.sample_and_score(model, tokenizer, prompts, 2, length, seed=7)[0] and other != Y


def test_the_bootstraps_of_best_of_n_are_those_of_per_prompt_values():
    """At n = 1 the curve is the mean of all values, and best-of-N less best-of-1 the mean over prompts of (the value
    at the top score − the prompt's mean value): resampling prompts, each is the plain mean of one (M,) column."""
    rng = np.random.default_rng(1)
    scores, values = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    row_means = values.mean(axis=1)  # (M,)
    lifts = values[np.arange(30), scores.argmax(axis=1)] - row_means  # (M,)
    for settings in ({}, {"num_resamples": 50, "seed": 3}):  # by default the bootstrap's 200 resamples from seed 0
        se = rs.best_of_n_stderr(scores, values, [1], **settings)[1]
        assert se == pytest.approx(bootstrap_stderr(np.mean, row_means, **settings), rel=1e-9)
        gain, gain_se = rs.best_of_n_gain(scores, values, 1, 4, **settings)
        assert gain == pytest.approx(lifts.mean(), rel=1e-9)
        assert gain_se == pytest.approx(bootstrap_stderr(np.mean, lifts, **settings), rel=1e-9)


def test_the_curve_picture_draws_a_band_where_it_is_given_standard_errors():
    figure = rs.plot_best_of_n_curves({"pick": {1: 1.0, 2: 1.5}}, stderrs={"pick": {1: 0.1, 2: 0.2}})
    band = figure.axes[0].collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.9) and band[:, 1].max() == pytest.approx(1.7)
