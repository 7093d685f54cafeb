"""Plausible wrong answers to notebook 04b's function exercise, each with the case its check must name."""

import numpy as np

from tests.exercise_tools import WrongVersion

FIRST = "three seeds, before [1.0, 1.2, 0.9] and after [1.5, 1.4, 1.6]"


def _gains(before, after):
    return np.subtract(after, before)


WRONG = {
    "04b.2": [
        WrongVersion(  # the population standard deviation: n, not n − 1, under the root
            "ddof=0 in the spread",
            lambda before, after: (
                float(_gains(before, after).mean()),
                float(_gains(before, after).std() / np.sqrt(len(before))),
            ),
            FIRST,
        ),
        WrongVersion(  # the spread of the seeds, not the error of their mean
            "the standard deviation for the standard error",
            lambda before, after: (float(_gains(before, after).mean()), float(_gains(before, after).std(ddof=1))),
            FIRST,
        ),
        WrongVersion(  # the two sides' errors combined as if independent: throws the pairing away
            "an unpaired error, √(se_before² + se_after²)",
            lambda before, after: (
                float(_gains(before, after).mean()),
                float(np.hypot(*(np.std(x, ddof=1) / np.sqrt(len(x)) for x in (before, after)))),
            ),
            FIRST,
        ),
    ],
}
