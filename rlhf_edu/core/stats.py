"""Small statistics that every chapter measures with: ranks, Spearman's ρ, a running mean and pass@k."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .validation import check_int


def running_mean(values: Sequence[float] | np.ndarray | torch.Tensor, window: int) -> np.ndarray:
    """The mean of each ``window`` consecutive values: ``len(values) − window + 1`` of them, float64.

    A window of 1, or one longer than the series, returns the values unchanged, so a
    short run is still drawn rather than vanishing from its plot.
    """
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing their average rank (float64)."""
    sorted_values, order = values.sort()
    _, run, run_length = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    positions = torch.arange(1, len(values) + 1, dtype=torch.float64)
    run_mean = torch.zeros(len(run_length), dtype=torch.float64).index_add_(0, run, positions) / run_length
    result = torch.empty(len(values), dtype=torch.float64)
    result[order] = run_mean[run]
    return result


def check_paired(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` and ``y`` are 1-D with one value each per example."""
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must be 1-D and of the same length: "
                         "pass one value of each per example")


def spearman_correlation(x: torch.Tensor | Sequence[float], y: torch.Tensor | Sequence[float]) -> float:
    """Spearman's ρ: the correlation of the ranks of x and y (1 = same order, −1 = reversed; NaN if one is constant)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    check_paired(x, y)
    rank_x, rank_y = ranks(x) - (len(x) + 1) / 2, ranks(y) - (len(y) + 1) / 2  # centred: mean rank is (N + 1) / 2
    return (rank_x @ rank_y / (rank_x.norm() * rank_y.norm())).item()


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. (2021), 1 − C(n − c, k) / C(n, k).

    It is the chance that k of ``num_samples`` answers, drawn without replacement, hold
    at least one of the ``num_correct`` right ones.
    """
    n, c, k = (check_int(v, name, low=0) for v, name in ((num_samples, "num_samples"), (num_correct, "num_correct"),
                                                          (k, "k")))
    if not c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= num_correct <= num_samples and 1 <= k <= num_samples, got "
                         f"n={n}, c={c}, k={k}: draw at least k samples per prompt")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
