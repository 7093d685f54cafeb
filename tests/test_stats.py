import math

import numpy as np
import pytest
import torch

from rlhf_edu.core.stats import bootstrap_stderr, mean_and_stderr, ranks, running_mean, spearman_correlation


def test_ranks_share_ties():
    assert ranks(torch.tensor([10.0, 30.0, 20.0, 20.0])).tolist() == [1.0, 4.0, 2.5, 2.5]


def test_spearman_correlation_hand_examples():
    # no ties: ρ = 1 − 6 Σ d² / (n (n² − 1)) = 1 − 6·4 / 120
    assert spearman_correlation([10, 20, 30, 40, 50], [1, 3, 2, 5, 4]) == pytest.approx(0.8)
    # ties: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4) give 4.5 / sqrt(4.5 · 5)
    assert spearman_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman_correlation([1, 2, 3], [9, 4, 1]) == pytest.approx(-1.0)
    values = torch.tensor([0.1, 0.5, 0.2])
    assert spearman_correlation(values, values.exp()) == pytest.approx(1.0)  # only the order matters
    with pytest.raises(ValueError, match="same length"):
        spearman_correlation([1, 2, 3], [1, 2])


def test_running_mean_by_hand():
    assert running_mean([1, 2, 3, 4], 2).tolist() == [1.5, 2.5, 3.5]
    assert running_mean([1, 2, 3, 4], 3).tolist() == [2.0, 3.0]
    assert running_mean([5, 7], 1).tolist() == [5.0, 7.0]
    assert running_mean([5, 7], 3).tolist() == [5.0, 7.0]  # too short to smooth: drawn as it is
    np.testing.assert_allclose(running_mean(torch.arange(10.0), 10), [4.5])


@pytest.mark.parametrize("n, c, k", [(16, 4, 4), (5, 2, 1), (6, 0, 3), (6, 6, 2), (7, 3, 7)])
def test_pass_at_k_counts_every_draw_of_k(n, c, k):
    from itertools import combinations

    from rlhf_edu.core.stats import pass_at_k

    right = set(range(c))  # answers 0..c-1 are the right ones
    draws = list(combinations(range(n), k))
    brute_force = sum(bool(right & set(draw)) for draw in draws) / len(draws)
    assert pass_at_k(n, c, k) == pytest.approx(brute_force)


def test_pass_at_k_refuses_impossible_counts():
    from rlhf_edu.core.stats import pass_at_k

    with pytest.raises(ValueError, match="1 <= k <= num_samples"):
        pass_at_k(4, 1, 8)
    with pytest.raises(ValueError, match="num_correct <= num_samples"):
        pass_at_k(4, 5, 1)


def test_mean_and_stderr_is_the_mean_and_s_over_root_n():
    assert mean_and_stderr([0, 1, 0, 1]) == pytest.approx((0.5, math.sqrt(1 / 3) / 2))
    mean, se = mean_and_stderr(np.r_[np.ones(80), np.zeros(20)])  # a share: binomial s.e. √(p(1−p)/(n−1))
    assert mean == 0.8 and se == pytest.approx(math.sqrt(0.8 * 0.2 / 99))
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_and_stderr([1.0])


def test_bootstrap_stderr_of_a_mean_is_s_over_root_n_and_keeps_rows_together():
    values = np.random.default_rng(0).normal(size=400)
    assert bootstrap_stderr(np.mean, values, num_resamples=400) == pytest.approx(mean_and_stderr(values)[1], rel=0.15)
    paired = np.arange(50.0)
    assert bootstrap_stderr(lambda a, b: float(np.abs(a - b).max()), paired, paired.copy()) == 0.0  # same rows
    with pytest.raises(ValueError, match="same number of rows"):
        bootstrap_stderr(np.mean, values, values[:10])


def test_difference_stderr_adds_variances():
    from rlhf_edu.core.stats import difference_stderr

    assert difference_stderr(0.065, 0.070) == pytest.approx(0.0955, abs=1e-4)  # notebook 04b's two stages
    assert difference_stderr(3.0, 4.0) == 5.0


def test_assert_beyond_asks_k_standard_errors_of_the_difference(capsys):
    from rlhf_edu.core.stats import assert_beyond, report_difference

    assert assert_beyond(0.31, 0.1, "more") == pytest.approx(3.1)
    assert capsys.readouterr().out.startswith("holds: more: +0.31 ± 0.1 (+3.1 s.e., asked > 3)")
    with pytest.raises(AssertionError, match=r"not resolved: gain: \+0.18 ± 0.096 \(\+1.9 s.e., asked > 3\)"):
        assert_beyond(0.18, 0.096, "gain")
    with pytest.raises(AssertionError, match="not resolved"):
        assert_beyond(-0.5, 0.1, "the wrong sign", k=0)
    with pytest.raises(ValueError, match="positive standard error"):
        assert_beyond(1.0, 0.0, "no spread")
    report_difference(0.1, 0.1, "a bump")
    assert capsys.readouterr().out.startswith("measured, not asserted: a bump: +0.1 ± 0.1 (+1.0 s.e.; 95% interval")
