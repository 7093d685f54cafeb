"""Plausible wrong answers to notebook 17's function exercise, each with the case its check must name."""

import math

import numpy as np

from tests.exercise_tools import WrongVersion


def _kl(ns):
    return np.array([math.log(n) - (n - 1) / n for n in ns])  # best-of-n's KL, in nats


def _fit(columns, gains):
    return tuple(float(c) for c in np.linalg.lstsq(columns, gains, rcond=None)[0])


WRONG = {
    "17.1": [
        WrongVersion(  # d is √KL; this takes the KL itself for the distance
            "the KL for d, without its square root",
            lambda ns, gold: _fit(np.stack([_kl(ns), -(_kl(ns) ** 2)], axis=1), gold - gold[0]),
            "a curve exactly on d(α − βd) with α = 0.5, β = 0.25, starting at gold 0",
        ),
        WrongVersion(  # a sign flip: the column d² where R = αd − βd² needs −d², so β comes out negated
            "the column d² without its minus sign",
            lambda ns, gold: _fit(np.stack([np.sqrt(_kl(ns)), _kl(ns)], axis=1), gold - gold[0]),
            "a curve exactly on d(α − βd) with α = 0.5, β = 0.25, starting at gold 0",
        ),
        WrongVersion(  # forgetting the baseline: the gold itself, not its gain over n = 1
            "the gold, not the gain over n = 1",
            lambda ns, gold: _fit(np.stack([np.sqrt(_kl(ns)), -_kl(ns)], axis=1), gold),
            "the same curve starting at gold 2: only the gain over n = 1 counts",
        ),
        WrongVersion(  # a regression's habit: an intercept column, though R(0) = 0 is held fixed
            "an intercept in the fit",
            lambda ns, gold: _fit(np.stack([np.ones(len(ns)), np.sqrt(_kl(ns)), -_kl(ns)], axis=1), gold - gold[0])[1:],
            "a noisy curve off the law, starting at gold 1.7",
        ),
    ],
}
