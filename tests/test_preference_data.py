"""Chapter 6's preference data: every public function of rlhf_edu/preference_data.py against an independent check.

Each check is a closed form, a brute force, a hand-worked example or a frequency over many draws held to its
binomial standard error; none re-runs the code it tests. No model is loaded: the answers are the world's
demonstrations (padded with filler words where a test needs lengths to vary), so the file runs in seconds.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from rlhf_edu import preference_data as pd
from rlhf_edu.core.preferences import pair_dataset, pair_texts
from rlhf_edu.core.stats import logistic_regression, within_prompt_agreement
from rlhf_edu.core.world import FILLER, GOLD_WEIGHTS, World

# A head start of 100 gold units overflows exp(−gap / τ) on the way to σ = 1, exactly as it should.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

WORLD = World(seed=0)
TAU = WORLD.tau  # 0.5


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def hand_words(text: str) -> int:
    """Word count of a plain demonstration (no punctuation): a split on spaces."""
    return len(text.split())


def hand_utility(annotator: pd.Annotator, prompts, completions) -> np.ndarray:
    """Σ_k w_k c_k + λ |y| from the world's components, summed here, not by the annotator."""
    components = WORLD.gold_components(prompts, completions)
    gold = np.zeros(len(prompts))
    for name, weight in annotator.weights.items():
        gold += weight * np.asarray(components[name])
    return gold + annotator.length_bias * np.array([hand_words(c) for c in completions])


def within(frequency: float, probability: float, n: int, k: float = 4.5) -> bool:
    """A frequency of n draws within k binomial standard errors of its probability."""
    return abs(frequency - probability) <= k * math.sqrt(probability * (1 - probability) / n) + 1e-12


def demo_pairs(n: int, seed: int = 0, split: str = "train"):
    """Two demonstrations per prompt, kept where they differ: prompts, first answers, second answers."""
    rng = np.random.default_rng(seed)
    prompts = WORLD.prompts(n, split=split)
    a = [WORLD.demonstration(p, rng) for p in prompts]
    b = [WORLD.demonstration(p, rng) for p in prompts]
    keep = [i for i in range(n) if a[i] != b[i]]
    return [prompts[i] for i in keep], [a[i] for i in keep], [b[i] for i in keep]


def padded_pairs(n: int, seed: int, first=(0, 6), second=(0, 6)):
    """Demonstration pairs with a random number of distinct filler words appended, so lengths vary."""
    rng = np.random.default_rng(seed)
    prompts = WORLD.prompts(n)

    def pad(text, low, high):
        k = int(rng.integers(low, high + 1))
        return " ".join([text, *rng.choice(FILLER, size=k, replace=False)]) if k else text

    a = [pad(WORLD.demonstration(p, rng), *first) for p in prompts]
    b = [pad(WORLD.demonstration(p, rng), *second) for p in prompts]
    return prompts, a, b


def demo_pool(m: int, n: int, seed: int = 0, split: str = "train") -> pd.AnswerPool:
    rng = np.random.default_rng(seed)
    prompts = WORLD.prompts(m, split=split)
    flat_prompts = [p for p in prompts for _ in range(n)]
    return pd.AnswerPool.from_flat(flat_prompts, [WORLD.demonstration(p, rng) for p in flat_prompts], n)


def gold_theta() -> np.ndarray:
    """θ of the perfect linear reward: the world's gold weights, and nothing for length."""
    return np.array([GOLD_WEIGHTS[k] for k in pd.COMPONENTS] + [0.0])


# --- the annotator -----------------------------------------------------------------------------------------------
def test_the_default_annotator_is_the_worlds_annotator_bit_for_bit():
    prompts, a, b = demo_pairs(300)
    assert len(prompts) > 150
    assert np.array_equal(
        pd.Annotator().preference_probability(prompts, a, b), WORLD.preference_probability(prompts, a, b)
    )
    assert np.array_equal(pd.Annotator().label_pairs(prompts, a, b, rng=7), WORLD.label_pairs(prompts, a, b, rng=7))
    assert np.array_equal(pd.Annotator().gold(prompts, a), WORLD.gold_reward(prompts, a))


def test_gold_is_the_hand_sum_of_weighted_components_and_a_missing_weight_counts_zero():
    prompts, a, _ = demo_pairs(60)
    components = World(seed=3).gold_components(prompts, a)  # the components do not depend on the seed
    annotator = pd.Annotator({"correctness": 3.0, "tone": 0.5, "repetition": 1.5})
    hand = [3.0 * components["correctness"][i] + 0.5 * components["tone"][i] + 1.5 * components["repetition"][i]
            for i in range(len(prompts))]  # fmt: skip
    assert annotator.gold(prompts, a) == pytest.approx(hand, abs=1e-12)
    assert pd.Annotator({"tone": 1.0}).gold(prompts, a) == pytest.approx(components["tone"], abs=1e-12)
    assert annotator.weights == {"correctness": 3.0, "tone": 0.5, "repetition": 1.5}  # no zeros filled in


def test_utility_adds_the_length_bias_per_word():
    prompts = ["describe the cat", "add 3 and 5", "review the soup"]
    answers = ["the cat is small and grey", "3 plus 5 is 8", "i think the soup is tasty and fresh"]
    base = pd.Annotator()
    biased = pd.Annotator(length_bias=0.25)
    assert biased.utility(prompts, answers) - base.utility(prompts, answers) == pytest.approx([1.5, 1.25, 2.0])
    assert base.utility(prompts, answers) == pytest.approx(WORLD.gold_reward(prompts, answers))
    assert biased.gold(prompts, answers) == pytest.approx(WORLD.gold_reward(prompts, answers))  # gold has no flaw


def test_word_counts_count_punctuation_and_read_messages():
    texts = ["the cat is small.", "3 plus 5 is 8", "", [{"role": "assistant", "content": "The Pizza is tasty !"}]]
    assert pd.word_counts(texts).tolist() == [5.0, 5.0, 0.0, 5.0]


def test_preference_probability_is_the_closed_form_with_position_bias_and_careless_share():
    prompts, a, b = padded_pairs(200, seed=1)
    annotator = pd.Annotator(
        {"correctness": 2.0, "relevance": 0.5, "tone": 1.5}, tau=0.7, length_bias=0.1, position_bias=0.3, careless=0.2
    )
    gap = hand_utility(annotator, prompts, a) - hand_utility(annotator, prompts, b)
    expected = 0.8 * sigmoid((gap + 0.3) / 0.7) + 0.1
    assert annotator.preference_probability(prompts, a, b) == pytest.approx(expected, abs=1e-12)
    # with no position bias the order does not matter: P(b ≻ a) = 1 − P(a ≻ b), careless share included
    fair = pd.Annotator(tau=0.7, length_bias=0.1, careless=0.2)
    forward, backward = fair.preference_probability(prompts, a, b), fair.preference_probability(prompts, b, a)
    assert forward + backward == pytest.approx(np.ones(len(prompts)), abs=1e-12)
    assert not np.allclose(  # a position bias does break the symmetry
        annotator.preference_probability(prompts, a, b) + annotator.preference_probability(prompts, b, a), 1
    )


def test_label_pairs_follow_the_probability():
    prompt, a, b = "review the pizza", "the pizza is tasty", "the pizza is bland"
    annotator = pd.Annotator(tau=2.0, position_bias=0.2, careless=0.1)
    n = 20000
    labels = annotator.label_pairs([prompt] * n, [a] * n, [b] * n, rng=3)
    assert set(np.unique(labels)) <= {0, 1}
    p = 0.9 * sigmoid((2 * math.tanh(1) + 0.2) / 2.0) + 0.05
    assert within(labels.mean(), p, n)


# --- ratings and rankings ----------------------------------------------------------------------------------------
def test_a_noiseless_rating_counts_the_thresholds_below_the_utility():
    prompts, a, b = demo_pairs(200)
    answers, prompts = a + b, prompts + prompts
    thresholds = (0.4, 1.3, 2.1, 2.9)
    annotator = pd.Annotator(tau=1e-6, length_bias=0.05)
    u = hand_utility(annotator, prompts, answers)
    safe = np.min(np.abs(u[:, None] - np.array(thresholds)[None, :]), axis=1) > 1e-3  # not on a cut, where it is a coin
    assert safe.sum() > 200
    expected = 1 + np.array([sum(t < x for t in thresholds) for x in u])
    ratings = annotator.rate(prompts, answers, rng=0, thresholds=thresholds)
    assert np.array_equal(ratings[safe], expected[safe])
    expected = expected[safe]
    assert set(expected.tolist()) == {1, 2, 3, 4, 5}  # the example reaches every point of the scale


def test_a_careless_rating_is_uniform_over_the_scale():
    n = 10000
    ratings = pd.Annotator(careless=1.0).rate(["add 3 and 5"] * n, ["3 plus 5 is 8"] * n, rng=1)
    counts = np.bincount(ratings, minlength=6)[1:]
    assert counts.sum() == n and ratings.min() >= 1 and ratings.max() <= 5
    chi_square = float(((counts - n / 5) ** 2 / (n / 5)).sum())
    assert chi_square < 20  # 4 degrees of freedom: P(χ² > 20) ≈ 5e-4


def test_rating_frequencies_are_the_ordered_logit():
    n, tau = 30000, 0.6
    prompt, answer = "review the pizza", "the pizza is tasty"
    u = 1.0 + math.tanh(1.0)  # relevance and tone
    thresholds = pd.RATING_THRESHOLDS
    ratings = pd.Annotator(tau=tau).rate([prompt] * n, [answer] * n, rng=5)
    cdf = [0.0] + [float(sigmoid((t - u) / tau)) for t in thresholds] + [1.0]
    for j in range(1, len(thresholds) + 2):
        assert within(float(np.mean(ratings == j)), cdf[j] - cdf[j - 1], n), j


def test_a_ranking_of_two_is_bradley_terry():
    n, tau = 20000, 1.0
    prompt, better, worse = "review the pizza", "the pizza is tasty", "the pizza is bland"
    order = pd.Annotator(tau=tau).rank([prompt] * n, [[better, worse]] * n, rng=2)
    assert order.shape == (n, 2)
    assert within(float(np.mean(order[:, 0] == 0)), float(sigmoid(2 * math.tanh(1.0) / tau)), n)


def test_a_ranking_of_three_is_plackett_luce():
    n, tau = 20000, 1.0
    prompt = "review the pizza"
    answers = ["the pizza is tasty", "the pizza is bland", "the pizza is tasty and fresh"]
    u = hand_utility(pd.Annotator(), [prompt] * 3, answers) / tau
    e = np.exp(u)
    order = pd.Annotator(tau=tau).rank([prompt] * n, [answers] * n, rng=4)
    assert order.shape == (n, 3)
    for i, j, k in itertools.permutations(range(3)):
        probability = e[i] / (e[i] + e[j] + e[k]) * e[j] / (e[j] + e[k])
        frequency = float(np.mean((order[:, 0] == i) & (order[:, 1] == j) & (order[:, 2] == k)))
        assert within(frequency, probability, n), (i, j, k)


def test_a_careless_ranking_is_a_uniform_order():
    n = 12000
    answers = ["the pizza is tasty", "the pizza is bland", "the pizza is tasty and fresh"]
    order = pd.Annotator(careless=1.0).rank(["review the pizza"] * n, [answers] * n, rng=6)
    codes = order[:, 0] * 9 + order[:, 1] * 3 + order[:, 2]
    for i, j, k in itertools.permutations(range(3)):
        assert within(float(np.mean(codes == i * 9 + j * 3 + k)), 1 / 6, n)


def test_check_thresholds_returns_an_increasing_float_array():
    values = pd.check_thresholds([1, 2.5])
    assert values.dtype == np.float64 and values.tolist() == [1.0, 2.5]
    with pytest.raises(ValueError, match="at least 2 points"):
        pd.check_thresholds([])
    with pytest.raises(ValueError, match="thresholds must increase"):
        pd.check_thresholds([1.0, 1.0])


# --- populations -------------------------------------------------------------------------------------------------
def three_groups() -> pd.Population:
    return pd.Population(
        {
            "x": pd.Annotator(),
            "y": pd.Annotator({"tone": 2.0, "concision": 1.0}, tau=1.5, position_bias=0.4),
            "z": pd.Annotator({"correctness": 1.0}, tau=0.3, length_bias=0.2, careless=0.3),
        },
        {"x": 0.2, "y": 0.3, "z": 0.5},
    )


def test_a_population_is_the_share_weighted_mixture():
    prompts, a, b = padded_pairs(150, seed=2)
    population = three_groups()
    expected = np.zeros(len(prompts))
    for name, share in population.shares.items():
        group = population.groups[name]
        gap = hand_utility(group, prompts, a) - hand_utility(group, prompts, b) + group.position_bias
        expected += share * ((1 - group.careless) * sigmoid(gap / group.tau) + group.careless / 2)
    assert population.preference_probability(prompts, a, b) == pytest.approx(expected, abs=1e-12)
    golds = population.gold(prompts, a)
    assert set(golds) == {"x", "y", "z"} and golds["x"] == pytest.approx(WORLD.gold_reward(prompts, a))
    assert population.names == ["x", "y", "z"]


def test_one_group_of_share_one_is_that_group():
    prompts, a, b = demo_pairs(100)
    group = pd.Annotator(tau=0.8, position_bias=0.2)
    alone = pd.Population({"only": group}, {"only": 1.0})
    assert np.array_equal(alone.preference_probability(prompts, a, b), group.preference_probability(prompts, a, b))


def test_population_labels_come_from_groups_drawn_by_share():
    n = 20000
    prompts, a, b = ["review the pizza"] * n, ["the pizza is bland"] * n, ["the pizza is tasty"] * n
    population = pd.Population(
        {
            "first": pd.Annotator(position_bias=100.0, tau=0.05),
            "gold": pd.Annotator(tau=0.05),
            "coin": pd.Annotator(careless=1.0),
        },
        {"first": 0.25, "gold": 0.35, "coin": 0.4},
    )
    labels, groups = population.label_pairs(prompts, a, b, rng=0)
    for name, share in population.shares.items():
        assert within(float(np.mean(groups == name)), share, n), name
    assert labels[groups == "first"].min() == 1  # the first answer always wins with a head start of 100
    assert labels[groups == "gold"].max() == 0  # the tasty answer, shown second, always wins on gold
    assert within(float(labels[groups == "coin"].mean()), 0.5, int(np.sum(groups == "coin")))


def test_two_groups_and_the_shares_they_must_sum_to():
    population = pd.two_groups(0.3)
    assert population.groups == {"warm": pd.WARM, "facts": pd.FACTS}
    assert population.shares["warm"] == 0.3 and population.shares["facts"] == pytest.approx(0.7)
    assert pd.two_groups(0.0).shares["facts"] == 1.0 and pd.two_groups(1.0).shares["warm"] == 1.0
    assert pd.WARM.weights["tone"] > pd.FACTS.weights.get("tone", 0.0)  # the warm group pays for kind words
    assert pd.FACTS.weights["correctness"] > pd.WARM.weights["correctness"]
    with pytest.raises(ValueError, match="warm_share must be <= 1"):
        pd.two_groups(1.5)
    with pytest.raises(ValueError, match="shares must sum to 1, got 0.9"):
        pd.Population({"a": pd.Annotator(), "b": pd.Annotator()}, {"a": 0.5, "b": 0.4})
    with pytest.raises(ValueError, match="must name the same groups"):
        pd.Population({"a": pd.Annotator()}, {"b": 1.0})


# --- datasets ----------------------------------------------------------------------------------------------------
def world_pairs(n: int = 80) -> Dataset:
    prompts, a, b = demo_pairs(n)
    labels = WORLD.label_pairs(prompts, a, b, rng=0)
    return pair_dataset(prompts, a, b, labels, WORLD.preference_probability(prompts, a, b), gold=WORLD.gold_reward)


def test_relabel_keeps_the_pairs_and_records_the_labellers_probability():
    dataset = world_pairs()
    annotator = pd.Annotator(tau=0.4, position_bias=0.6, length_bias=0.1)
    relabelled = pd.relabel(dataset, annotator, seed=3)
    assert relabelled.column_names == [
        *("prompt", "chosen", "rejected", "gold_chosen", "gold_rejected", "p_chosen", "chosen_first")
    ]
    old_prompts, old_chosen, old_rejected = pair_texts(dataset)
    prompts, chosen, rejected = pair_texts(relabelled)
    assert prompts == old_prompts
    assert [{c, r} for c, r in zip(chosen, rejected)] == [{c, r} for c, r in zip(old_chosen, old_rejected)]
    assert relabelled["gold_chosen"] == pytest.approx(WORLD.gold_reward(prompts, chosen))
    assert relabelled["gold_rejected"] == pytest.approx(WORLD.gold_reward(prompts, rejected))
    # p_chosen is the closed-form probability of the recorded label, in the order the pair was shown
    first_shown = np.array(relabelled["chosen_first"]) == 1
    u_chosen, u_rejected = hand_utility(annotator, prompts, chosen), hand_utility(annotator, prompts, rejected)
    expected = np.where(
        first_shown, sigmoid((u_chosen - u_rejected + 0.6) / 0.4), 1 - sigmoid((u_rejected - u_chosen + 0.6) / 0.4)
    )
    assert relabelled["p_chosen"] == pytest.approx(expected, abs=1e-12)
    assert 0.2 < first_shown.mean() < 1  # both orders occur, the first answer favoured by its head start


def test_relabel_by_a_first_answer_lover_chooses_what_it_showed_first():
    relabelled = pd.relabel(world_pairs(), pd.Annotator(position_bias=100.0, tau=0.05), seed=1)
    assert relabelled["chosen_first"] == [1] * len(relabelled)
    assert relabelled["p_chosen"] == pytest.approx([1.0] * len(relabelled))
    # a noiseless fair annotator chooses the better answer, in either order
    fair = pd.relabel(world_pairs(), pd.Annotator(tau=1e-4), seed=1)
    untied = np.abs(np.array(fair["gold_chosen"]) - np.array(fair["gold_rejected"])) > 1e-3
    assert untied.sum() > 20
    assert np.all(np.array(fair["gold_chosen"])[untied] > np.array(fair["gold_rejected"])[untied])
    assert 0 < np.mean(fair["chosen_first"]) < 1


def test_relabel_by_a_population_names_the_group():
    population = pd.Population(
        {"first": pd.Annotator(position_bias=100.0, tau=0.05), "gold": pd.Annotator(tau=1e-4)},
        {"first": 0.5, "gold": 0.5},
    )
    relabelled = pd.relabel(world_pairs(), population, seed=2)
    assert relabelled.column_names[-1] == "group"
    groups = np.array(relabelled["group"])
    assert set(groups) == {"first", "gold"}
    assert np.all(np.array(relabelled["chosen_first"])[groups == "first"] == 1)
    gold_rows = (groups == "gold") & (np.abs(np.array(relabelled["gold_chosen"]) - relabelled["gold_rejected"]) > 1e-3)
    assert np.all(np.array(relabelled["gold_chosen"])[gold_rows] > np.array(relabelled["gold_rejected"])[gold_rows])
    # p_chosen is the population's mixture probability of the label
    prompts, chosen, rejected = pair_texts(relabelled)
    first = np.array(relabelled["chosen_first"]) == 1
    shown_first = np.where(first, chosen, rejected).tolist()
    shown_second = np.where(first, rejected, chosen).tolist()
    p_first = population.preference_probability(prompts, shown_first, shown_second)
    assert relabelled["p_chosen"] == pytest.approx(np.where(first, p_first, 1 - p_first))
    with pytest.raises(TypeError, match="labeller must be an Annotator or a Population, got World"):
        pd.relabel(world_pairs(), WORLD)


def test_demonstration_pairs_are_labelled_by_the_world():
    pairs = pd.demonstration_pairs(WORLD, 60, seed=1)
    assert pairs.column_names == ["prompt", "chosen", "rejected", "gold_chosen", "gold_rejected", "p_chosen"]
    prompts, chosen, rejected = pair_texts(pairs)
    assert 30 < len(pairs) <= 60
    assert all(c != r for c, r in zip(chosen, rejected))
    expected_prompts = iter(WORLD.prompts(60))
    assert all(any(p == q for q in expected_prompts) for p in prompts)  # a subsequence of the split's prompts
    gold_c, gold_r = np.array(WORLD.gold_reward(prompts, chosen)), np.array(WORLD.gold_reward(prompts, rejected))
    assert pairs["gold_chosen"] == pytest.approx(gold_c) and pairs["gold_rejected"] == pytest.approx(gold_r)
    assert pairs["p_chosen"] == pytest.approx(sigmoid((gold_c - gold_r) / TAU))
    assert pd.demonstration_pairs(WORLD, 60, seed=1).to_dict() == pairs.to_dict()
    assert pd.demonstration_pairs(WORLD, 60, seed=2).to_dict() != pairs.to_dict()


def tagged(n: int, tag: str) -> Dataset:
    prompts, a, b = demo_pairs(n, seed=5 if tag == "on" else 6)
    data = pair_dataset(prompts, a, b, [1] * len(a), [0.5] * len(a), gold=WORLD.gold_reward)
    return data.add_column("source", [tag] * len(data)).add_column("row", list(range(len(data))))


def test_mixed_pairs_mix_the_asked_share_without_repeats():
    on_policy, off_policy = tagged(40, "on"), tagged(40, "off")
    for share, n in ((0.3, 20), (0.0, 10), (1.0, 10), (0.25, 30)):
        mixed = pd.mixed_pairs(on_policy, off_policy, share, n, seed=1)
        assert len(mixed) == n
        sources = np.array(mixed["source"])
        assert int(np.sum(sources == "off")) == round(n * share)
        keys = list(zip(mixed["source"], mixed["row"]))
        assert len(set(keys)) == n  # drawn without replacement
    mixed = pd.mixed_pairs(on_policy, off_policy, 0.5, 30, seed=1)
    assert mixed["source"] != sorted(mixed["source"])  # shuffled together, not stacked
    with pytest.raises(ValueError, match="off_policy has 5 pairs but the mix needs 10: build more pairs"):
        pd.mixed_pairs(on_policy, off_policy.select(range(5)), 0.5, 20)
    with pytest.raises(ValueError, match="on_policy has 5 pairs but the mix needs 15"):
        pd.mixed_pairs(on_policy.select(range(5)), off_policy, 0.25, 20)


# --- the linear reward model -------------------------------------------------------------------------------------
def test_features_are_the_gold_components_and_the_word_count():
    prompts, a, _ = padded_pairs(50, seed=3)
    phi = pd.features(prompts, a)
    components = WORLD.gold_components(prompts, a)
    assert phi.shape == (50, 6) and pd.FEATURES == (*pd.COMPONENTS, "length")
    for j, name in enumerate(pd.COMPONENTS):
        assert phi[:, j] == pytest.approx(components[name])
    assert phi[:, 5].tolist() == [hand_words(c) for c in a]


def test_a_linear_reward_with_the_gold_weights_is_the_gold_reward():
    prompts, a, _ = padded_pairs(50, seed=4)
    reward = pd.LinearReward(gold_theta(), np.diag([4.0, 1, 1, 1, 1, 9]))
    assert reward(prompts, a) == pytest.approx(WORLD.gold_reward(prompts, a), abs=1e-12)
    assert reward.stderr.tolist() == [2.0, 1, 1, 1, 1, 3]
    assert reward.weights() == dict(zip(pd.FEATURES, gold_theta().tolist()))


def test_fit_linear_on_a_quadratic_is_its_closed_form():
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta, inverse_hessian = pd.fit_linear(lambda t: 0.5 * (t - c) ** 2, 3, ridge=0.5)
    # minimise ½‖θ − c‖² + ¼‖θ‖²: θ = c / 1.5, Hessian 1.5 I
    assert theta == pytest.approx((c / 1.5).numpy(), abs=1e-8)
    assert inverse_hessian == pytest.approx(np.eye(3) / 1.5, abs=1e-10)


THETA = np.array([1.0, -0.5, 0.8, 0.3])


def bt_data(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    labels = (rng.random(n) < sigmoid((a - b) @ THETA)).astype(int)
    chosen = np.where(labels[:, None] == 1, a, b)
    rejected = np.where(labels[:, None] == 1, b, a)
    return a, b, labels, chosen, rejected


def test_fit_pairs_recovers_theta_and_maximises_the_likelihood():
    a, b, labels, chosen, rejected = bt_data()
    fit = pd.fit_pairs(chosen, rejected)
    assert fit.theta.shape == (4,) and fit.covariance.shape == (4, 4)
    assert np.all(np.abs(fit.theta - THETA) < 4 * fit.stderr), (fit.theta, fit.stderr)
    assert np.all(fit.stderr < 0.1)
    # the same model is a logistic regression of the labels on the feature differences
    theta, covariance = logistic_regression(a - b, labels)
    assert fit.theta == pytest.approx(theta, abs=1e-3)
    assert fit.covariance == pytest.approx(covariance, rel=0.02)

    def objective(t):  # the penalised log-likelihood fit_pairs maximises
        return float(np.sum(np.log(sigmoid((chosen - rejected) @ t))) - 1e-2 / 2 * np.sum(t**2))

    best = objective(fit.theta)
    for j in range(4):
        for step in (-1e-3, 1e-3):
            moved = fit.theta.copy()
            moved[j] += step
            assert objective(moved) < best
    # the covariance is the inverse of the hand-computed Fisher information (plus the ridge)
    d = chosen - rejected
    p = sigmoid(d @ fit.theta)
    information = d.T @ (d * (p * (1 - p))[:, None]) + 1e-2 * np.eye(4)
    assert fit.covariance == pytest.approx(np.linalg.inv(information), rel=1e-6)


def sample_plackett_luce(utilities: np.ndarray, rng) -> np.ndarray:
    """Orders best first, drawn sequentially: the best by softmax, then the best of the rest, and so on."""
    b, k = utilities.shape
    remaining = np.ones((b, k), dtype=bool)
    order = np.zeros((b, k), dtype=int)
    for position in range(k):
        weights = np.where(remaining, np.exp(utilities - utilities.max(axis=1, keepdims=True)), 0.0)
        cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        pick = np.minimum((rng.random(b)[:, None] > cumulative).sum(axis=1), k - 1)
        while not remaining[np.arange(b), pick].all():  # guard a rounding draw that lands on a taken slot
            bad = ~remaining[np.arange(b), pick]
            pick[bad] = np.argmax(remaining[bad], axis=1)
        order[:, position] = pick
        remaining[np.arange(b), pick] = False
    return order


def test_fit_rankings_recovers_theta_from_plackett_luce_orders():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 3, 4))
    order = sample_plackett_luce(x @ THETA, rng)
    ranked = np.take_along_axis(x, order[:, :, None], axis=1)
    fit = pd.fit_rankings(ranked)
    assert np.all(np.abs(fit.theta - THETA) < 4 * fit.stderr), (fit.theta, fit.stderr)
    assert np.all(fit.stderr < 0.1)
    # two answers ranked are a pair: Plackett-Luce with K = 2 is Bradley-Terry
    _, _, _, chosen, rejected = bt_data(800, seed=2)
    pairs_fit, ranked_fit = pd.fit_pairs(chosen, rejected), pd.fit_rankings(np.stack([chosen, rejected], axis=1))
    assert ranked_fit.theta == pytest.approx(pairs_fit.theta, abs=1e-6)


def test_fit_ratings_recovers_theta_from_the_ordered_logit():
    rng = np.random.default_rng(2)
    theta = np.array([1.0, -0.6, 0.4])
    x = rng.normal(size=(4000, 3))
    thresholds = np.array([-1.0, 0.0, 1.5])
    ratings = 1 + ((x @ theta + rng.logistic(size=4000))[:, None] > thresholds[None, :]).sum(axis=1)
    assert set(ratings.tolist()) == {1, 2, 3, 4}
    fit = pd.fit_ratings(x, ratings, 4)
    assert fit.theta.shape == (3,) and fit.covariance.shape == (3, 3)
    assert np.all(np.abs(fit.theta - theta) < 4 * fit.stderr), (fit.theta, fit.stderr)
    assert np.all(fit.stderr < 0.1)


def test_ordinal_nll_hand_values_and_normalisation():
    scores = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    thresholds = torch.tensor([0.0, 1.0], dtype=torch.float64)
    nll = pd.ordinal_nll(scores, torch.tensor([1, 2, 3]), thresholds)
    s = lambda v: 1 / (1 + math.exp(-v))
    expected = [-math.log(s(-0.5)), -math.log(s(0.5) - s(-0.5)), -math.log(1 - s(0.5))]
    assert nll.tolist() == pytest.approx(expected, abs=1e-12)
    cuts = torch.tensor([-1.0, 0.2, 0.9, 2.5], dtype=torch.float64)
    for score in (-3.0, 0.4, 1.7, 6.0):
        all_ratings = torch.arange(1, 6)
        total = torch.exp(-pd.ordinal_nll(torch.full((5,), score, dtype=torch.float64), all_ratings, cuts)).sum()
        assert total.item() == pytest.approx(1.0, abs=1e-12)


# --- logistic regression (core/stats.py) -------------------------------------------------------------------------
def logit(p):
    return math.log(p / (1 - p))


def test_logistic_regression_on_a_binary_feature_is_its_closed_form():
    # x = 0: 100 ones out of 400 (p0 = 0.25); x = 1: 420 ones out of 600 (p1 = 0.7)
    x = np.column_stack([np.ones(1000), np.r_[np.zeros(400), np.ones(600)]])
    y = np.r_[np.ones(100), np.zeros(300), np.ones(420), np.zeros(180)]
    theta, covariance = logistic_regression(x, y)
    assert theta == pytest.approx([logit(0.25), logit(0.7) - logit(0.25)], abs=1e-9)
    v0, v1 = 1 / (400 * 0.25 * 0.75), 1 / (600 * 0.7 * 0.3)
    assert covariance == pytest.approx(np.array([[v0, -v0], [-v0, v0 + v1]]), rel=1e-8)


def test_logistic_regression_agrees_with_gradient_ascent_and_a_bootstrap():
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(size=1500), rng.normal(size=1500), np.ones(1500)])
    y = (rng.random(1500) < sigmoid(x @ np.array([1.2, -0.7, 0.3]))).astype(float)
    theta, covariance = logistic_regression(x, y)
    ascent = np.zeros(3)
    for _ in range(3000):
        ascent += 2.0 * x.T @ (y - sigmoid(x @ ascent)) / len(y)
    assert theta == pytest.approx(ascent, abs=1e-6)
    boot = []
    for _ in range(150):
        rows = rng.integers(1500, size=1500)
        boot.append(logistic_regression(x[rows], y[rows])[0])
    assert np.sqrt(np.diag(covariance)) == pytest.approx(np.std(boot, axis=0, ddof=1), rel=0.2)


def test_logistic_regression_reads_a_soft_label_as_a_mean_of_hard_ones():
    rng = np.random.default_rng(4)
    x = np.column_stack([rng.normal(size=300), np.ones(300)])
    first, second = (rng.random((2, 300)) < sigmoid(x @ np.array([1.0, 0.2]))).astype(float)
    soft_theta, soft_covariance = logistic_regression(x, (first + second) / 2)
    hard_theta, hard_covariance = logistic_regression(np.vstack([x, x]), np.r_[first, second])
    assert soft_theta == pytest.approx(hard_theta, abs=1e-9)
    assert soft_covariance == pytest.approx(2 * hard_covariance, rel=1e-8)  # half the labels' information


def test_logistic_regression_refuses_separable_data():
    with pytest.raises(ValueError, match="separate the labels"):
        logistic_regression(np.array([[-2.0], [-1.0], [1.0], [2.0]]), [0, 0, 1, 1])


def test_logistic_regression_refuses_separable_data_with_an_intercept():
    x = np.array([[-2.0, 1.0], [-1.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    with pytest.raises(ValueError, match="separate the labels"):
        logistic_regression(x, [0, 0, 1, 1, 1])


# --- recovering planted flaws ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flaw_pairs():
    prompts, a, b = padded_pairs(3000, seed=0)
    base = pd.Annotator()
    gold_gap = base.gold(prompts, a) - base.gold(prompts, b)
    length_gap = np.array([hand_words(x) - hand_words(y) for x, y in zip(a, b)], dtype=float)
    return prompts, a, b, gold_gap, length_gap


def test_estimate_intervals_and_the_delta_method_ratio():
    estimate = pd.Estimate(0.4, 0.1)
    assert estimate.interval() == pytest.approx((0.1, 0.7)) and estimate.interval(1) == pytest.approx((0.3, 0.5))
    assert estimate.contains(0.69) and not estimate.contains(0.71) and estimate.contains(0.45, k=1)
    # θ = (2, 1), ratio θ_1 / θ_0 = 0.5; ∇ = (−θ_1/θ_0², 1/θ_0) = (−0.25, 0.5)
    covariance = np.array([[0.04, 0.01], [0.01, 0.09]])
    ratio = pd.ratio_estimate(np.array([2.0, 1.0]), covariance, 1, 0)
    variance = 0.25**2 * 0.04 + 0.5**2 * 0.09 - 2 * 0.25 * 0.5 * 0.01
    assert ratio.value == 0.5 and ratio.stderr == pytest.approx(math.sqrt(variance))


def test_length_bias_estimate_recovers_a_planted_bias(flaw_pairs):
    prompts, a, b, gold_gap, length_gap = flaw_pairs
    assert abs(np.corrcoef(gold_gap, length_gap)[0, 1]) < 0.6  # the two regressors are not collinear
    labels = pd.Annotator(length_bias=0.3).label_pairs(prompts, a, b, rng=1)
    estimate = pd.length_bias_estimate(labels, gold_gap, length_gap)
    assert estimate.contains(0.3), estimate
    assert estimate.stderr < 0.03, estimate
    none = pd.length_bias_estimate(pd.Annotator().label_pairs(prompts, a, b, rng=2), gold_gap, length_gap)
    assert none.contains(0.0) and none.stderr < 0.03, none


def test_position_bias_estimate_recovers_a_planted_bias(flaw_pairs):
    prompts, a, b, gold_gap, _ = flaw_pairs
    labels = pd.Annotator(position_bias=0.4).label_pairs(prompts, a, b, rng=3)
    estimate = pd.position_bias_estimate(labels, gold_gap)
    assert estimate.contains(0.4), estimate
    assert estimate.stderr < 0.08, estimate


def test_careless_share_estimate_recovers_a_planted_share_and_is_the_likelihood_maximum(flaw_pairs):
    prompts, a, b, _, _ = flaw_pairs
    p_careful = pd.Annotator().preference_probability(prompts, a, b)
    labels = pd.Annotator(careless=0.2).label_pairs(prompts, a, b, rng=4)
    estimate = pd.careless_share_estimate(labels, p_careful)
    assert estimate.contains(0.2), estimate
    assert estimate.stderr < 0.06, estimate
    # a grid search of the log-likelihood Σ log((1 − ε) h + ε / 2) finds the same ε, and its curvature the same se
    h = np.where(labels == 1, p_careful, 1 - p_careful)
    grid = np.linspace(0, 1, 100001)
    loglik = lambda eps: np.sum(np.log((1 - eps) * h + eps / 2))
    values = np.array([loglik(e) for e in grid[::100]])
    coarse = grid[::100][np.argmax(values)]
    fine = grid[(grid > coarse - 2e-3) & (grid < coarse + 2e-3)]
    best = fine[np.argmax([loglik(e) for e in fine])]
    assert estimate.value == pytest.approx(best, abs=2e-5)
    step = 1e-4
    curvature = (loglik(best + step) - 2 * loglik(best) + loglik(best - step)) / step**2
    assert estimate.stderr == pytest.approx(1 / math.sqrt(-curvature), rel=0.01)
    # careful labels: the estimate is near 0
    careful = pd.careless_share_estimate(pd.Annotator().label_pairs(prompts, a, b, rng=5), p_careful)
    assert careful.value < 0.05 and careful.contains(0.0), careful


def test_length_controlled_win_rate():
    prompts, a, b = padded_pairs(3000, seed=7, first=(2, 6), second=(0, 0))  # the first answers are longer
    base = pd.Annotator()
    gold_gap = base.gold(prompts, a) - base.gold(prompts, b)
    length_gap = pd.word_counts(a) - pd.word_counts(b)
    assert length_gap.mean() > 2
    fair = pd.Annotator().label_pairs(prompts, a, b, rng=0)
    result = pd.length_controlled_win_rate(fair, gold_gap, length_gap)
    assert set(result) == {"raw", "length_controlled", "length_bias"}
    assert result["raw"] == fair.mean()
    assert abs(result["length_controlled"] - result["raw"]) < 0.03
    biased = pd.Annotator(length_bias=0.5).label_pairs(prompts, a, b, rng=0)
    result = pd.length_controlled_win_rate(biased, gold_gap, length_gap)
    assert result["raw"] == biased.mean()
    assert result["raw"] - result["length_controlled"] > 0.2
    # the controlled rate is the regression's own prediction with the length term set to zero
    theta, _ = logistic_regression(np.column_stack([gold_gap, length_gap]), biased)
    assert result["length_controlled"] == pytest.approx(float(np.mean(sigmoid(theta[0] * gold_gap))))
    assert result["length_bias"].contains(0.5)


def test_ask_twice_cancels_the_position_bias():
    prompts, a, b = demo_pairs(200)
    values = pd.ask_twice(pd.Annotator(tau=0.5), prompts, a, b, rng=0)
    assert set(np.unique(values)) <= {0.0, 0.5, 1.0}
    stubborn = pd.Annotator(position_bias=100.0, tau=0.05)
    assert np.all(pd.ask_twice(stubborn, prompts, a, b, rng=0) == 0.5)
    n = 20000
    prompt, x, y = "review the pizza", "the pizza is tasty", "the pizza is tasty and fresh"
    biased = pd.Annotator(position_bias=0.5, tau=0.5)
    values = pd.ask_twice(biased, [prompt] * n, [x] * n, [y] * n, rng=1)
    x_first = biased.preference_probability([prompt], [x], [y])[0]  # P(x wins when shown first)
    x_second = 1 - biased.preference_probability([prompt], [y], [x])[0]  # P(x wins when shown second)
    expected = (x_first + x_second) / 2
    assert x_first - x_second > 0.1  # the bias is there to cancel
    assert abs(values.mean() - expected) < 4.5 * values.std() / math.sqrt(n)


# --- whose preferences -------------------------------------------------------------------------------------------
def test_best_of_n_gains_by_enumerating_every_subset():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 5))
    golds = {"a": rng.normal(size=(2, 5)), "b": rng.normal(size=(2, 5))}
    gains = pd.best_of_n_gains(scores, golds, 3)
    for name, gold in golds.items():
        for m in range(2):
            picks = [gold[m, max(subset, key=lambda j: scores[m, j])] for subset in itertools.combinations(range(5), 3)]
            assert gains[name][m] == pytest.approx(np.mean(picks) - gold[m].mean(), abs=1e-12)


CONDORCET = list(pd.CONDORCET_ANSWERS.values())


def condorcet_population() -> pd.Population:
    return pd.Population(pd.CONDORCET_GROUPS, dict.fromkeys(pd.CONDORCET_GROUPS, 1 / 3))


def test_preference_matrix_is_the_pairwise_probability():
    answers = ["the cat is small", "the cat is lovely", "the cat is big", "the cat is small and grey"]
    matrix = pd.preference_matrix(pd.Annotator(), "describe the cat", answers)
    gold = WORLD.gold_reward(["describe the cat"] * 4, answers)
    assert matrix == pytest.approx(sigmoid((np.subtract.outer(gold, gold)) / TAU), abs=1e-12)
    assert np.diag(matrix).tolist() == [0.5] * 4
    assert matrix + matrix.T == pytest.approx(np.ones((4, 4)), abs=1e-12)
    biased = pd.preference_matrix(pd.Annotator(position_bias=0.5), "describe the cat", answers)
    assert np.all(np.diag(biased) > 0.5)  # a position bias tilts even an answer against itself


def test_the_condorcet_groups_form_a_cyclic_latin_square():
    prompts = [pd.CONDORCET_PROMPT] * 3
    orders = {name: tuple(np.argsort(-group.gold(prompts, CONDORCET))) for name, group in pd.CONDORCET_GROUPS.items()}
    for position in range(3):
        assert {order[position] for order in orders.values()} == {0, 1, 2}  # each answer first for one group, ...
    rotations = {tuple(np.roll(orders["fact-checkers"], shift)) for shift in range(3)}
    assert set(orders.values()) == rotations  # ... and the orders are the rotations of one cycle
    for group in pd.CONDORCET_GROUPS.values():
        gold = group.gold(prompts, CONDORCET)
        assert np.min(np.abs(np.subtract.outer(gold, gold))[~np.eye(3, dtype=bool)]) > 0.25  # decisive at τ


def test_the_condorcet_population_has_a_majority_cycle_and_one_annotator_has_none():
    population = condorcet_population()
    matrix = pd.preference_matrix(population, pd.CONDORCET_PROMPT, CONDORCET)
    groups = [pd.preference_matrix(g, pd.CONDORCET_PROMPT, CONDORCET) for g in pd.CONDORCET_GROUPS.values()]
    assert matrix == pytest.approx(sum(groups) / 3, abs=1e-12)
    cycle = pd.majority_cycle(matrix)
    assert cycle is not None and sorted(cycle) == [0, 1, 2]
    prompts = [pd.CONDORCET_PROMPT] * 3
    for i, j in zip(cycle, cycle[1:] + cycle[:1]):  # each edge of the cycle is won two groups to one
        votes = sum(
            int(g.gold(prompts, CONDORCET)[i] > g.gold(prompts, CONDORCET)[j]) for g in pd.CONDORCET_GROUPS.values()
        )
        assert votes == 2, (i, j)
        assert matrix[i, j] > 0.5
    assert pd.majority_cycle(pd.preference_matrix(pd.Annotator(), pd.CONDORCET_PROMPT, CONDORCET)) is None
    for group in pd.CONDORCET_GROUPS.values():  # one person is transitive
        assert pd.majority_cycle(pd.preference_matrix(group, pd.CONDORCET_PROMPT, CONDORCET)) is None


def test_majority_cycle_on_hand_matrices():
    cyclic = np.array([[0.5, 0.6, 0.3], [0.4, 0.5, 0.7], [0.7, 0.3, 0.5]])  # 0 → 1 → 2 → 0
    cycle = pd.majority_cycle(cyclic)
    assert cycle in ([0, 1, 2], [1, 2, 0], [2, 0, 1])
    transitive = np.array([[0.5, 0.6, 0.9], [0.4, 0.5, 0.7], [0.1, 0.3, 0.5]])
    assert pd.majority_cycle(transitive) is None
    tie = np.array([[0.5, 0.6, 0.5], [0.4, 0.5, 0.7], [0.5, 0.3, 0.5]])  # a tie is no majority
    assert pd.majority_cycle(tie) is None


def brute_force_bt(matrix: np.ndarray) -> np.ndarray:
    """argmax Σ_{i≠j} P_ij log σ(s_i − s_j) over centred s of 3 items, by a coarse then a fine grid."""

    def best(centre, half_width, steps):
        s0, s1 = np.meshgrid(*(np.linspace(c - half_width, c + half_width, steps) for c in centre), indexing="ij")
        s = np.stack([s0, s1, -s0 - s1])  # (3, G, G) centred
        total = 0
        for i in range(3):
            for j in range(3):
                if i != j:
                    total = total + matrix[i, j] * np.log(sigmoid(s[i] - s[j]))
        index = np.unravel_index(np.argmax(total), total.shape)
        return np.array([s0[index], s1[index]])

    coarse = best((0.0, 0.0), 4.0, 401)
    fine = best(coarse, 0.04, 401)
    return np.array([fine[0], fine[1], -fine[0] - fine[1]])


def test_bradley_terry_scores_against_a_grid_search():
    for matrix in (
        pd.preference_matrix(condorcet_population(), pd.CONDORCET_PROMPT, CONDORCET),
        np.array([[0.5, 0.8, 0.6], [0.2, 0.5, 0.55], [0.4, 0.45, 0.5]]),
    ):
        scores = pd.bradley_terry_scores(matrix)
        assert scores.sum() == pytest.approx(0.0, abs=1e-9)
        assert scores == pytest.approx(brute_force_bt(matrix), abs=5e-4)
    # P from a true Bradley-Terry model gives its scores back
    s = np.array([0.7, -0.2, -0.5])
    assert pd.bradley_terry_scores(sigmoid(np.subtract.outer(s, s))) == pytest.approx(s, abs=1e-4)


def test_broken_majorities_by_hand_and_on_the_cycle():
    cyclic = np.array([[0.5, 0.6, 0.3], [0.4, 0.5, 0.7], [0.7, 0.3, 0.5]])  # 0 → 1 → 2 → 0
    assert pd.broken_majorities(cyclic, np.array([1.0, 0.0, -1.0])) == [(2, 0)]
    assert pd.broken_majorities(cyclic, np.array([-1.0, 0.0, 1.0])) == [(0, 1), (1, 2)]
    assert pd.broken_majorities(cyclic, np.zeros(3)) == []  # a tie breaks nothing
    matrix = pd.preference_matrix(condorcet_population(), pd.CONDORCET_PROMPT, CONDORCET)
    broken = pd.broken_majorities(matrix, pd.bradley_terry_scores(matrix))
    cycle = pd.majority_cycle(matrix)
    edges = set(zip(cycle, cycle[1:] + cycle[:1]))
    assert 1 <= len(broken) <= 2 and set(broken) <= edges  # a line through a cycle breaks one of its edges


# --- label formats -----------------------------------------------------------------------------------------------
def test_answer_pool_from_flat_groups_each_prompts_answers():
    prompts = ["add 3 and 5"] * 3 + ["review the soup"] * 3
    answers = ["3 plus 5 is 8", "3 plus 5 is 9", "8", "the soup is tasty", "the soup is bland", "soup"]
    pool = pd.AnswerPool.from_flat(prompts, answers, 3)
    assert pool.prompts == ["add 3 and 5", "review the soup"]
    assert pool.completions == [answers[:3], answers[3:]]
    assert pool.features.shape == (2, 3, 6)
    for m in range(2):
        for j in range(3):
            assert pool.features[m, j] == pytest.approx(pd.features([prompts[3 * m]], [answers[3 * m + j]])[0])
    texts = pool.texts(np.array([1, 0]), np.array([2, 0]))
    assert texts == (["review the soup", "add 3 and 5"], ["soup", "3 plus 5 is 8"])


@pytest.fixture(scope="module")
def pool():
    return demo_pool(30, 4, seed=0)


@pytest.mark.parametrize("fmt", pd.FORMATS)
def test_fit_format_returns_a_linear_reward_fitted_on_the_budget(fmt, pool, monkeypatch):
    seen = {}
    for name in ("fit_pairs", "fit_rankings", "fit_ratings"):
        original = getattr(pd, name)

        def spy(*args, _original=original, _name=name):
            seen[_name] = args
            return _original(*args)

        monkeypatch.setattr(pd, name, spy)
    annotator = pd.Annotator(tau=1e-4, length_bias=0.05)  # noiseless: its judgements follow its utility
    utility_theta = np.array([annotator.weights.get(k, 0.0) for k in pd.COMPONENTS] + [0.05])
    reward = pd.fit_format(fmt, pool, annotator, 50, np.random.default_rng(0), k=3)
    assert isinstance(reward, pd.LinearReward)
    assert reward.theta.shape == (6,) and reward.covariance.shape == (6, 6) and np.all(np.isfinite(reward.theta))
    if fmt == "pairs":
        chosen, rejected = seen["fit_pairs"]
        assert chosen.shape == rejected.shape == (50, 6)
        assert np.all(chosen @ utility_theta >= rejected @ utility_theta - 1e-9)
    elif fmt == "rankings":
        (ranked,) = seen["fit_rankings"]
        assert ranked.shape == (50, 3, 6)
        assert np.all(np.diff(ranked @ utility_theta, axis=1) <= 1e-9)  # best first
    else:
        rated, ratings, points = seen["fit_ratings"]
        assert rated.shape == (50, 6) and points == 5
        u = rated @ utility_theta
        safe = np.min(np.abs(u[:, None] - np.array(pd.RATING_THRESHOLDS)[None, :]), axis=1) > 1e-3
        expected = 1 + (u[:, None] > np.array(pd.RATING_THRESHOLDS)[None, :]).sum(axis=1)
        assert safe.sum() > 25 and np.array_equal(np.asarray(ratings)[safe], expected[safe])


def test_fit_format_refuses_bad_settings(pool):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="k must be >= 2, got 1"):
        pd.fit_format("rankings", pool, pd.Annotator(), 10, rng, k=1)
    with pytest.raises(ValueError, match=r"k = 5 is more answers than the pool has per prompt \(4\): rank at most 4"):
        pd.fit_format("rankings", pool, pd.Annotator(), 10, rng, k=5)
    with pytest.raises(ValueError, match="unknown format 'stars': use one of 'pairs', 'ratings', 'rankings'"):
        pd.fit_format("stars", pool, pd.Annotator(), 10, rng)


def test_held_out_metrics_of_a_perfect_a_reversed_and_a_blind_reward(pool):
    annotator = pd.Annotator()
    flat_prompts = [p for p in pool.prompts for _ in range(4)]
    gold = np.array(WORLD.gold_reward(flat_prompts, [c for answers in pool.completions for c in answers]))
    by_prompt = gold.reshape(30, 4)
    gaps = np.abs(by_prompt[:, :, None] - by_prompt[:, None, :])
    assert np.all((gaps < 1e-12) | (gaps > 1e-6))  # gold either ties or differs far beyond rounding
    perfect = pd.LinearReward(gold_theta(), np.eye(6))
    metrics = pd.held_out_metrics(perfect, pool, annotator)
    assert set(metrics) == {"within_prompt_agreement", "ceiling_share"}
    assert metrics["within_prompt_agreement"] == 1.0
    assert metrics["ceiling_share"] == pytest.approx(1.0, abs=1e-9)
    reversed_metrics = pd.held_out_metrics(pd.LinearReward(-gold_theta(), np.eye(6)), pool, annotator)
    assert reversed_metrics["within_prompt_agreement"] == 0.0 and reversed_metrics["ceiling_share"] < 0
    blind = pd.held_out_metrics(pd.LinearReward(np.zeros(6), np.eye(6)), pool, annotator)
    assert blind["within_prompt_agreement"] == 0.5  # every score ties: one half each


def test_fit_format_learns_the_annotator_from_enough_pairs(pool):
    test_pool = demo_pool(30, 4, seed=1, split="test")
    reward = pd.fit_format("pairs", pool, pd.Annotator(), 400, np.random.default_rng(1))
    metrics = pd.held_out_metrics(reward, test_pool, pd.Annotator())
    assert metrics["within_prompt_agreement"] > 0.75 and metrics["ceiling_share"] > 0.4, metrics


def test_format_comparison_has_one_value_per_seed(pool):
    test_pool = demo_pool(20, 4, seed=2, split="test")
    results = pd.format_comparison(pool, test_pool, pd.Annotator(), 40, seeds=[0, 1, 2], k=3)
    assert set(results) == set(pd.FORMATS)
    for metrics in results.values():
        assert set(metrics) == {"within_prompt_agreement", "ceiling_share"}
        assert all(values.shape == (3,) and np.all(np.isfinite(values)) for values in metrics.values())
        assert np.all((metrics["within_prompt_agreement"] >= 0) & (metrics["within_prompt_agreement"] <= 1))


# --- which pairs to label ----------------------------------------------------------------------------------------
def test_candidate_pairs_are_every_same_prompt_pair_whose_features_differ():
    small = demo_pool(3, 5, seed=3)
    rows, left, right = pd.candidate_pairs(small)
    phi = small.features
    expected = [(m, i, j) for m in range(3) for i, j in itertools.combinations(range(5), 2)
                if not np.array_equal(phi[m, i], phi[m, j])]  # fmt: skip
    assert 0 < len(expected) < 3 * 5 * 4 // 2  # the demonstrations repeat some answers' features
    assert sorted(zip(rows.tolist(), left.tolist(), right.tolist())) == expected


def test_active_reward_fits_on_exactly_the_budget(monkeypatch):
    small = demo_pool(16, 4, seed=4)
    candidates = len(pd.candidate_pairs(small)[0])  # of the 96 same-prompt pairs, those whose features differ
    assert candidates >= 51
    calls = []
    original = pd.fit_pairs

    def spy(chosen, rejected):
        reward = original(chosen, rejected)
        calls.append((chosen - rejected, reward.theta))
        return reward

    monkeypatch.setattr(pd, "fit_pairs", spy)
    reward = pd.active_reward(small, pd.Annotator(), 50, "random", np.random.default_rng(0))
    assert isinstance(reward, pd.LinearReward) and [len(gaps) for gaps, _ in calls] == [50]
    calls.clear()
    pd.active_reward(small, pd.Annotator(), 50, "uncertainty", np.random.default_rng(0), start=20, batch=20)
    assert [len(gaps) for gaps, _ in calls] == [20, 40, 50]
    # the second batch is among the pairs the first fit was least sure of: margins |(φ_i − φ_j) · θ| are
    # sign-free, so they can be computed for every candidate without its label
    rows, left, right = pd.candidate_pairs(small)
    margins = np.sort(np.abs((small.features[rows, left] - small.features[rows, right]) @ calls[0][1]))
    added = np.abs(calls[1][0][20:] @ calls[0][1])
    assert added.max() <= margins[39] + 1e-12
    with pytest.raises(ValueError, match="unknown strategy 'greedy': use one of 'random', 'uncertainty'"):
        pd.active_reward(small, pd.Annotator(), 10, "greedy", np.random.default_rng(0))
    with pytest.raises(
        ValueError, match=rf"budget = {candidates + 1} is more pairs than the pool holds \({candidates}\)"
    ):
        pd.active_reward(small, pd.Annotator(), candidates + 1, "random", np.random.default_rng(0))


def test_the_experiments_module_imports():
    from rlhf_edu.experiments import preference_runs

    assert callable(preference_runs.train_on_labels)


def test_the_utility_is_linear_in_the_features_and_held_out_metrics_read_it_so():
    """u = φ · (w, λ) for every annotator, and held_out_metrics from the features equals a recomputation from texts."""
    world = World(seed=0)
    rng = np.random.default_rng(3)
    prompts = world.prompts(12)
    answers = [world.demonstration(p, rng) + " and very nice" * int(rng.integers(3)) for p in prompts for _ in range(4)]
    repeated = [p for p in prompts for _ in range(4)]
    flawed = pd.Annotator({"tone": 2.0, "concision": 1.0, "relevance": 0.5}, tau=0.3, length_bias=0.2)
    assert pd.features(repeated, answers) @ flawed.feature_weights() == pytest.approx(flawed.utility(repeated, answers))
    pool = pd.AnswerPool.from_flat(repeated, answers, 4)
    reward = pd.LinearReward(np.array([1.0, 0.5, 2.0, 1.0, 1.0, -0.1]), np.eye(6))
    metrics = pd.held_out_metrics(reward, pool, flawed)
    scores = reward(repeated, answers).reshape(12, 4)
    p_first = flawed.preference_probability(repeated[0::2], answers[0::2], answers[1::2])
    hits = np.where(scores.reshape(-1)[0::2] > scores.reshape(-1)[1::2], p_first, 1 - p_first)
    bayes = np.maximum(p_first, 1 - p_first).mean()
    assert metrics["ceiling_share"] == pytest.approx((hits.mean() - 0.5) / (bayes - 0.5))
    gold = flawed.gold(repeated, answers).reshape(12, 4)
    assert metrics["within_prompt_agreement"] == pytest.approx(within_prompt_agreement(scores, gold))
