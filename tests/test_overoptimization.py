import numpy as np
import pytest

from rlhf_edu.core.training import History
from rlhf_edu.overoptimization import (
    best_of_n_distances,
    best_of_n_overoptimization,
    blind_spot_reward,
    drift_alarm,
    ensemble_reward,
    fit_gao_form,
    gao_form,
    gao_peak,
    intervention,
    parting_step,
    plot_overoptimization,
    rl_overoptimization,
    word_count,
)


@pytest.mark.parametrize("form, alpha, beta", [("bon", 1.3, 0.4), ("rl", 0.8, 0.5), ("rl", 0.5, -0.1)])
def test_the_fit_recovers_known_alpha_and_beta(form, alpha, beta):
    d = np.linspace(0.1, 3.0, 25)
    assert fit_gao_form(d, gao_form(d, alpha, beta, form), form) == pytest.approx((alpha, beta), abs=1e-9)
    noisy = gao_form(d, alpha, beta, form) + np.random.default_rng(0).normal(0, 0.01, len(d))
    assert fit_gao_form(d, noisy, form) == pytest.approx((alpha, beta), abs=0.03)


def test_the_forms_match_gao_et_al_written_out():
    d = np.array([0.0, 0.5, 2.0])
    assert gao_form(d, 1.0, 0.25, "bon") == pytest.approx(d * (1.0 - 0.25 * d))
    assert gao_form(d[1:], 1.0, 0.25, "rl") == pytest.approx(d[1:] * (1.0 - 0.25 * np.log(d[1:])))
    assert gao_form([0.0], 1.0, 0.25, "rl")[0] == 0.0  # d log d → 0


@pytest.mark.parametrize("form, alpha, beta", [("bon", 1.3, 0.4), ("rl", 0.8, 0.5)])
def test_the_peak_is_where_the_form_is_highest(form, alpha, beta):
    grid = np.linspace(1e-3, 10, 200_001)
    assert gao_peak(alpha, beta, form) == pytest.approx(grid[np.argmax(gao_form(grid, alpha, beta, form))], abs=1e-3)
    assert gao_peak(alpha, 0.0, form) == float("inf")
    assert gao_peak(-0.5, 0.2, "bon") == 0.0  # a curve that never rises peaks at its start


def test_best_of_n_distances_are_the_root_of_the_kl_bound():
    assert best_of_n_distances([1, 2, 4]) == pytest.approx(np.sqrt([0.0, np.log(2) - 0.5, np.log(4) - 0.75]))


def test_best_of_n_picks_by_the_proxy_and_reports_both_scores():
    proxy = np.array([[0.0, 1.0], [2.0, 1.0]])  # the proxy picks answer 1, then answer 0
    gold = np.array([[5.0, -1.0], [0.0, 3.0]])  # ... which the gold reward scores −1 and 0
    curve = best_of_n_overoptimization(proxy, gold, [1, 2])
    assert curve["proxy"] == pytest.approx([1.0, 1.5]) and curve["gold"] == pytest.approx([1.75, -0.5])


def test_an_rl_history_becomes_a_curve_in_the_root_of_the_kl():
    history = History(
        [
            {"step": 0, "gold_reward": 1.0, "eval/kl": -0.01, "eval/reward": 0.2},
            {"step": 5, "loss": 0.3},
            {"step": 10, "gold_reward": 1.2, "eval/kl": 4.0, "eval/reward": 0.9},
        ]
    )
    curve = rl_overoptimization(history)
    assert curve["step"].tolist() == [0, 10] and curve["d"] == pytest.approx([0.0, 2.0])
    assert curve["gold"].tolist() == [1.0, 1.2] and curve["proxy"].tolist() == [0.2, 0.9]
    figure = plot_overoptimization({"run": curve | {"d": np.array([0.5, 2.0])}}, "rl")
    assert figure.axes


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown form 'ppo'"):
        gao_form([1.0], 1.0, 1.0, "ppo")
    with pytest.raises(ValueError, match="d must be"):
        fit_gao_form([1.0, -1.0], [0.0, 0.0], "bon")
    with pytest.raises(ValueError, match="one per distance"):
        fit_gao_form([1.0, 2.0], [0.0], "bon")
    with pytest.raises(ValueError, match="two or more distinct distances"):
        fit_gao_form([1.0, 1.0], [0.5, 0.5], "bon")
    with pytest.raises(ValueError, match="no evaluation with gold_reward"):
        rl_overoptimization(History([{"step": 0, "gold_reward": 1.0}]))


def test_ensemble_rewards_by_hand():
    """Three reward models on two answers: means 2 and 1, minima 1 and 0, sample standard deviations 1 and 1."""
    scores = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0]])  # (K = 3, N = 2)
    np.testing.assert_allclose(ensemble_reward(scores), [2.0, 1.0])
    np.testing.assert_allclose(ensemble_reward(scores, "min"), [1.0, 0.0])
    np.testing.assert_allclose(ensemble_reward(scores, "mean_minus_std", lam=0.5), [1.5, 0.5])
    np.testing.assert_allclose(ensemble_reward(scores, "mean_minus_std", lam=0.0), ensemble_reward(scores))


def test_an_ensemble_penalty_needs_two_models_and_a_nonnegative_lambda():
    with pytest.raises(ValueError, match="K = 1 reward model"):
        ensemble_reward(np.ones((1, 4)), "mean_minus_std", lam=1.0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        ensemble_reward(np.ones((3, 4)), "mean_minus_std", lam=-0.5)


def test_a_planted_blind_spot_pays_for_its_word_wherever_it_stands():
    def plain(prompts, completions):
        return [1.0] * len(completions)

    reward = blind_spot_reward(plain, "think", 0.5)
    answers = ["the soup is tasty", "i think the soup is tasty", "think think . Think"]
    assert reward(["review the soup"] * 3, answers) == [1.0, 1.5, 2.5]  # counted as the world reads words
    with pytest.raises(ValueError, match="word='ponder' is not a word of the world's vocabulary"):
        blind_spot_reward(plain, "ponder", 0.5)
    with pytest.raises(ValueError, match="bonus"):
        blind_spot_reward(plain, "think", 0.0)


def test_the_gold_and_the_proxy_part_where_the_gold_falls_beyond_its_noise_and_the_proxy_still_rises():
    step = np.arange(0, 35, 5)
    gold = np.array([1.0, 1.2, 1.5, 1.4, 1.2, 0.9, 0.5])  # best 1.5 at step 10
    proxy = np.array([0.0, 0.5, 1.0, 1.2, 1.4, 1.6, 1.8])
    curve = {"step": step, "gold": gold, "proxy": proxy}
    # √2 · 0.05 · 3 ≈ 0.21: 1.5 − 1.2 = 0.3 is the first fall beyond it, at step 20
    assert parting_step(curve, gold_se=0.05) == 20.0
    assert parting_step(curve, gold_se=0.1) == 25.0  # 0.42: the fall of 0.6 at step 25
    assert parting_step(curve | {"proxy": proxy[::-1]}, gold_se=0.05) is None  # the proxy fell too: no parting
    assert parting_step(curve | {"gold": np.sort(gold)}, gold_se=0.05) is None  # the gold never falls


def test_the_drift_alarm_rings_at_the_first_move_beyond_its_noise():
    steps = [0, 5, 10, 15]
    assert drift_alarm(steps, [0.10, 0.12, 0.30, 0.50], stderr=0.02) == 10.0  # 3 · √2 · 0.02 ≈ 0.085
    assert drift_alarm(steps, [0.10, 0.12, 0.05, 0.14], stderr=0.02) is None
    assert drift_alarm(steps, [0.10, 0.12, -0.2, 0.14], stderr=0.02) == 10.0  # either way


def test_word_count_reads_words_as_the_world_does():
    answers = ["i think so", "Think, think.", "rethink it", ""]
    assert word_count(answers, "think").tolist() == [1, 2, 0, 0]


def test_an_intervention_is_the_paired_change_of_each_reward():
    def proxy(prompts, completions):  # pays 1 per word
        return [float(len(c.split())) for c in completions]

    def gold(prompts, completions):  # pays 1 for "great", and only on the first prompt
        return [float(i == 0 and "great" in c.split()) for i, c in enumerate(completions)]

    prompts, answers = ["a", "b", "c"], ["x", "x y", "x y z"]
    effect = intervention(proxy, gold, prompts, answers, ["great", "fun"])
    assert effect["proxy"] == pytest.approx((2.0, 0.0))  # every answer gains exactly 2 words: no spread
    assert effect["gold"][0] == pytest.approx(1 / 3)
    assert effect["gold"][1] == pytest.approx(np.std([1, 0, 0], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="words=\\['ponder'\\]"):
        intervention(proxy, gold, prompts, answers, ["ponder"])
