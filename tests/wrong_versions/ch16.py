"""Plausible wrong answers to notebook 16's function exercise, each with the case its check must name."""

import math
from statistics import NormalDist

from tests.exercise_tools import WrongVersion

_Z = NormalDist().inv_cdf

WRONG = {
    "16.1": [
        WrongVersion(  # one tail: z_{1−α}, as for a one-sided test
            "one-sided quantile z_{1−α}",
            lambda d, sd, p, a: math.ceil(((_Z(1 - a) + _Z(p)) * sd / d) ** 2),
            "δ = 0.1, sd = 1, 80% power at α = 0.05 (the textbook case: 785)",
        ),
        WrongVersion(  # rounded to the nearest prompt, not up
            "rounded to the nearest integer",
            lambda d, sd, p, a: round(((_Z(1 - a / 2) + _Z(p)) * sd / d) ** 2),
            "δ = 0.37, sd = 0.5, 80% power at α = 0.05 (14.3 before rounding)",
        ),
        WrongVersion(  # the spread left unsquared: sd where sd² belongs
            "sd not squared",
            lambda d, sd, p, a: math.ceil((_Z(1 - a / 2) + _Z(p)) ** 2 * sd / d**2),
            "δ = 0.37, sd = 0.5, 80% power at α = 0.05 (14.3 before rounding)",
        ),
    ],
}
