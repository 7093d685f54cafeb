import math

import numpy as np
import pytest
import torch

from rlhf_edu.core.stats import ranks, running_mean, spearman_correlation


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
