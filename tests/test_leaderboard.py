"""Chapter 16's leaderboard: Bradley–Terry ratings against scipy's maximum likelihood, and bootstrap intervals that
cover the true strengths about as often as they claim."""

import math

import numpy as np
import pytest
from scipy import optimize  # a test dependency (the dev extra): an independent maximum-likelihood fit

from rlhf_edu import leaderboard as lb


def _battles(strengths, per_pair, rng, ties=0.0):
    """Simulated battles: every ordered pair of models ``per_pair`` times, won with σ(θ_a − θ_b)."""
    models = list(strengths)
    battles = []
    for a in models:
        for b in models:
            if a == b:
                continue
            p = 1 / (1 + math.exp(-(strengths[a] - strengths[b])))
            for _ in range(per_pair):
                u = rng.random()
                battles.append((a, b, 0.5 if u < ties else float(rng.random() < p)))
    return models, battles


def _scipy_ratings(battles, models):
    """The maximum of the Bradley–Terry log-likelihood found by scipy's BFGS, centred: an independent fit."""
    index = {m: k for k, m in enumerate(models)}

    def negative_log_likelihood(free):
        theta = np.concatenate([[0.0], free])
        total = 0.0
        for a, b, y in battles:
            d = theta[index[a]] - theta[index[b]]
            total -= y * -np.logaddexp(0, -d) + (1 - y) * -np.logaddexp(0, d)
        return total

    result = optimize.minimize(
        negative_log_likelihood, np.zeros(len(models) - 1), method="BFGS", options={"gtol": 1e-9}
    )
    theta = np.concatenate([[0.0], result.x])
    return theta - theta.mean()


def test_the_ratings_are_scipys_maximum_likelihood_solution():
    rng = np.random.default_rng(0)
    models, battles = _battles({"base": -1.0, "sft": 0.2, "dpo": 0.5, "rl": 0.6}, per_pair=15, rng=rng, ties=0.1)
    np.testing.assert_allclose(lb.bradley_terry_ratings(battles, models), _scipy_ratings(battles, models), atol=1e-5)


def test_two_models_by_hand():
    """With two models, θ_a − θ_b = log(wins of a / wins of b): 3 wins to 1 is log 3, split ±½ log 3 about 0."""
    battles = [("a", "b", 1.0), ("a", "b", 1.0), ("b", "a", 0.0), ("b", "a", 1.0)]
    np.testing.assert_allclose(lb.bradley_terry_ratings(battles, ["a", "b"]), [math.log(3) / 2, -math.log(3) / 2])
    assert lb.elo_scale([math.log(10), 0.0]).tolist() == pytest.approx([1400.0, 1000.0])


def test_bootstrap_intervals_cover_the_true_strengths_about_as_often_as_they_claim():
    """40 simulated leaderboards of 4 models: the 90% interval of each model's centred rating covers its true
    centred strength in about 90% of them (160 intervals; a too-narrow interval, e.g. of level 0.5, fails)."""
    truth = {"a": -0.6, "b": 0.0, "c": 0.3, "d": 0.3}
    centred = np.array(list(truth.values())) - np.mean(list(truth.values()))
    rng = np.random.default_rng(16)
    covered = []
    for seed in range(40):
        models, battles = _battles(truth, per_pair=12, rng=rng)
        interval = lb.percentile_interval(lb.bootstrap_ratings(battles, models, num_resamples=100, seed=seed), 0.9)
        covered += ((interval[:, 0] <= centred) & (centred <= interval[:, 1])).tolist()
    assert 0.82 <= np.mean(covered) <= 0.97, np.mean(covered)


def test_neighbours_are_separated_only_when_their_gap_interval_leaves_out_zero():
    rng = np.random.default_rng(1)
    models, battles = _battles({"weak": -2.0, "mid": 0.0, "twin": 0.02}, per_pair=40, rng=rng)
    ratings = lb.bradley_terry_ratings(battles, models)
    gaps = lb.neighbour_gaps(models, ratings, lb.bootstrap_ratings(battles, models, 100, seed=0))
    assert [g["below"] for g in gaps][-1] == "weak" and gaps[-1]["separated"]
    assert not gaps[0]["separated"] and gaps[0]["low"] <= 0 <= gaps[0]["high"]
    assert all(g["gap"] >= 0 for g in gaps)


@pytest.mark.parametrize(
    ("battles", "models", "message"),
    [
        ([("a", "zed", 1.0)], ["a", "b"], "'zed', which is not among the models"),
        ([("a", "b", 1.0), ("b", "a", 1.0)], ["a", "b", "c"], "['c'] never play"),
        ([("a", "b", 2.0)], ["a", "b"], "verdict 2.0"),
        ([], ["a", "b"], "battles is empty"),
        ([("a", "a", 1.0)], ["a", "b"], "against itself"),
    ],
)
def test_bad_battles_are_refused_by_name(battles, models, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        lb.bradley_terry_ratings(battles, models)


def test_a_model_that_wins_every_battle_has_no_finite_rating():
    with pytest.raises(ValueError, match="run off to infinity"):
        lb.bradley_terry_ratings([("a", "b", 1.0)] * 5 + [("b", "c", 1.0), ("c", "b", 1.0)], ["a", "b", "c"])


def test_a_level_outside_zero_and_one_is_refused():
    with pytest.raises(ValueError, match="level"):
        lb.percentile_interval(np.zeros((5, 2)), 1.0)


def test_a_round_robin_plays_every_pair_on_every_prompt_in_both_positions():
    """Three models on 40 prompts: 3 battles a prompt, each judged once on the texts shown; a coin picks the order."""
    prompts = [f"p{i}" for i in range(40)]
    answers = {m: [f"{m}-{i}" for i in range(40)] for m in ("a", "b", "c")}
    seen = []

    def judge(shown, first, second):  # the first answer wins when its model's name sorts first
        seen.extend(zip(shown, first, second))
        return [int(x < y) for x, y in zip(first, second)]

    battles = lb.round_robin(prompts, answers, judge, seed=0)
    assert len(battles) == 40 * 3 == len(seen)
    assert all(first.startswith(a) and second.startswith(b) for (a, b, _), (_, first, second) in zip(battles, seen))
    assert all(prompt == "p" + first.split("-")[1] for prompt, first, _ in seen)  # each answer to its own prompt
    assert {(a, b) for a, b, _ in battles} == {(x, y) for x in "abc" for y in "abc" if x != y}  # both positions
    assert all(v == float(a < b) for a, b, v in battles)
    upsets = [("c", "a", 1.0), ("b", "a", 1.0), ("c", "b", 1.0)]  # one each, so no model wins every battle
    ratings = lb.bradley_terry_ratings(battles + upsets, ["a", "b", "c"])
    assert ratings[0] > ratings[1] > ratings[2]


def test_a_round_robin_needs_one_answer_per_prompt_from_each_of_two_models():
    with pytest.raises(ValueError, match="at least two models"):
        lb.round_robin(["p"], {"a": ["x"]}, lambda p, a, b: [1] * len(p))
    with pytest.raises(ValueError, match=r"answers\['b'\] holds 2 answers for 1 prompts"):
        lb.round_robin(["p"], {"a": ["x"], "b": ["y", "z"]}, lambda p, a, b: [1] * len(p))


def test_rank_reversals_are_the_resolved_gold_pairs_that_the_ratings_put_the_wrong_way_round():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=400)
    gold = {"a": 1.0 + noise, "b": 0.5 + noise + 0.1 * rng.normal(size=400), "c": 0.5 + noise + 0.001 * noise}
    # a beats b and c by far; b against c is 0 ± 0.005, unresolved, so it is no reversal either way round
    assert lb.rank_reversals(["a", "b", "c"], np.array([2.0, 1.0, 0.0]), gold) == []
    assert lb.rank_reversals(["a", "b", "c"], np.array([0.0, 1.0, 2.0]), gold) == [("a", "b"), ("a", "c")]
    assert lb.rank_reversals(["a", "b", "c"], np.array([1.0, 2.0, 0.0]), gold) == [("a", "b")]


def test_a_rank_reversal_the_board_cannot_resolve_is_not_counted():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=400)
    gold = {"a": 1.0 + noise, "b": noise}  # a beats b by 1 ± 0 in gold
    se = np.array([[0.0, 0.1], [0.1, 0.0]])
    assert lb.rank_reversals(["a", "b"], np.array([0.0, 0.2]), gold, rating_se=se) == []  # 2 se: not resolved
    assert lb.rank_reversals(["a", "b"], np.array([0.0, 0.4]), gold, rating_se=se) == [("a", "b")]  # 4 se
    assert lb.rank_reversals(["a", "b"], np.array([0.0, 0.2]), gold) == [("a", "b")]  # no se: the order alone
