"""Chapter 16's sample sizes: the standard error, the variance components and the power of a z-test, each against
a simulation or a hand-worked value."""

import math

import numpy as np
import pytest

from rlhf_edu import sample_size as ss


def test_the_standard_error_matches_a_simulated_evaluation():
    """Scores = prompt effect (sd 0.8) + sample noise (sd 1.5): the spread of 4,000 simulated means of 50 prompts × 4
    samples is eq:eval_se's √(0.64/50 + 2.25/200)."""
    rng = np.random.default_rng(0)
    prompts = rng.normal(0, 0.8, size=(4000, 50, 1))
    means = (prompts + rng.normal(0, 1.5, size=(4000, 50, 4))).mean(axis=(1, 2))
    expected = ss.standard_error(0.64, 2.25, 50, 4)
    assert expected == pytest.approx(math.sqrt(0.64 / 50 + 2.25 / 200))
    assert means.std() == pytest.approx(expected, rel=0.04)


def test_the_variance_components_are_recovered_on_average():
    rng = np.random.default_rng(1)
    estimates = [
        ss.variance_components(rng.normal(0, 0.8, size=(200, 1)) + rng.normal(0, 1.5, size=(200, 3)))
        for _ in range(200)
    ]
    between, within = np.mean(estimates, axis=0)
    assert between == pytest.approx(0.64, rel=0.05) and within == pytest.approx(2.25, rel=0.02)


def test_prompts_needed_by_hand_and_at_the_edge():
    """δ = 0.1, sd = 1, 80% power at α = 0.05: (1.95996 + 0.84162)² × 100 = 784.9, so 785 prompts."""
    assert ss.prompts_needed(0.1, 1.0) == 785
    n = ss.prompts_needed(0.05, 0.7, power=0.9)
    assert ss.power(0.05, 0.7, n) >= 0.9 > ss.power(0.05, 0.7, n - 1)
    assert ss.detectable_difference(1.0, 785) == pytest.approx(0.1, rel=1e-3)


def test_power_matches_simulated_z_tests():
    """20,000 simulated studies of 100 paired prompts, true difference 0.2, sd 1: the share significant in the
    difference's direction is the power, about 0.516."""
    rng = np.random.default_rng(2)
    differences = rng.normal(0.2, 1.0, size=(20_000, 100))
    z = differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / 10)
    assert np.mean(z > 1.959964) == pytest.approx(ss.power(0.2, 1.0, 100), abs=0.015)


def test_pairing_shrinks_the_spread_of_a_difference():
    assert ss.difference_sd(1.0, 1.0, 0.0) == pytest.approx(math.sqrt(2))
    assert ss.difference_sd(1.0, 1.0, 0.75) == pytest.approx(math.sqrt(0.5))
    rng = np.random.default_rng(3)
    shared = rng.normal(size=100_000)
    a, b = shared + rng.normal(scale=0.5, size=100_000), shared + rng.normal(scale=0.5, size=100_000)
    rho = np.corrcoef(a, b)[0, 1]
    assert np.std(a - b) == pytest.approx(ss.difference_sd(a.std(), b.std(), rho), rel=0.01)


@pytest.mark.parametrize("bad_power", [0.0, 1.0, 1.5, -0.2])
def test_a_power_outside_zero_and_one_is_refused(bad_power):
    with pytest.raises(ValueError, match="power"):
        ss.prompts_needed(0.1, 1.0, power=bad_power)


def test_scores_without_two_samples_per_prompt_are_refused():
    with pytest.raises(ValueError, match="at least two answers per prompt"):
        ss.variance_components(np.zeros((10, 1)))


def test_resampled_power_matches_the_closed_form_and_pairing_helps():
    """Two models whose per-prompt scores share a prompt effect (sd 1) plus their own noise (sd 0.5), 0.1 apart:
    paired, the differences have sd √0.5 and 100 prompts give eq:eval_power's power; unpaired, far less."""
    rng = np.random.default_rng(4)
    prompt = rng.normal(size=20_000)
    a = prompt + 0.1 + rng.normal(scale=0.5, size=20_000)
    b = prompt + rng.normal(scale=0.5, size=20_000)
    paired = ss.resampled_power(a, b, 100, paired=True, num_trials=4000, seed=0)
    assert paired == pytest.approx(ss.power(0.1, math.sqrt(0.5), 100), abs=0.03)
    unpaired = ss.resampled_power(a, b, 100, paired=False, num_trials=4000, seed=0)
    assert unpaired == pytest.approx(ss.power(0.1, math.sqrt(2.5), 100), abs=0.03)
    assert unpaired < paired - 0.1


def test_resampled_power_refuses_scores_of_different_prompts():
    with pytest.raises(ValueError, match="same N >= 2 prompts"):
        ss.resampled_power([1.0, 2.0], [1.0], 10)


def test_the_detectable_difference_plot_draws_eq_eval_power_and_marks_the_chosen_n():
    fig = ss.plot_detectable({"paired": 0.5, "unpaired": 1.0}, 300)
    ax = fig.axes[0]
    curve, marker = ax.lines[0], ax.lines[1]
    x, y = curve.get_data()
    assert y == pytest.approx([ss.detectable_difference(0.5, int(k)) for k in x])
    assert marker.get_ydata()[0] == pytest.approx(ss.detectable_difference(0.5, 300))
    assert ax.lines[2].get_ydata() == pytest.approx([ss.detectable_difference(1.0, int(k)) for k in x])
    assert "0.081 at n = 300" in ax.get_legend().get_texts()[0].get_text()
