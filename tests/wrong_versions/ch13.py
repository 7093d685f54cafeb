"""Plausible wrong answers to notebook 13's function exercise, each with the case its check must name."""

import numpy as np

from tests.exercise_tools import WrongVersion

WRONG = {
    "13.1": [
        WrongVersion(  # the same verdict word counted as the same answer
            "the same verdict word in both orders",
            lambda ab, ba: float(np.mean(np.asarray(ab) == np.asarray(ba))),
            "five pairs: [1, 1, 0, 1, 0] shown a first, [0, 1, 1, 1, 0] shown b first",
        ),
        WrongVersion(  # the first-position share instead of the consistency
            "the share of verdicts that name the first answer",
            lambda ab, ba: float(np.mean(np.concatenate([ab, ba]))),
            "five pairs: [1, 1, 0, 1, 0] shown a first, [0, 1, 1, 1, 0] shown b first",
        ),
        WrongVersion(  # a count, not a share
            "the number of consistent pairs",
            lambda ab, ba: float(np.sum(np.asarray(ab) != np.asarray(ba))),
            "five pairs: [1, 1, 0, 1, 0] shown a first, [0, 1, 1, 1, 0] shown b first",
        ),
    ],
}
