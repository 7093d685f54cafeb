"""Plausible wrong answers to notebook 08's function exercise, each with the case its check must name."""

from tests.exercise_tools import WrongVersion


def _estimates(log_ratio, estimator, half=0.5):
    return {"k1": -log_ratio, "k2": half * log_ratio**2, "k3": log_ratio.exp() - 1 - log_ratio}[estimator]


WRONG = {
    "08.1": [
        WrongVersion(  # a sign flip: r = π/π_ref, which turns k3 into the reversed k3
            "the ratio upside down",
            lambda logps, ref_logps, estimator: _estimates(logps - ref_logps, estimator),
            'random log-probs, estimator "k1"',
        ),
        WrongVersion(  # a wrong normaliser: k2 without its ½
            "k2 without its half",
            lambda logps, ref_logps, estimator: _estimates(ref_logps - logps, estimator, half=1.0),
            'random log-probs, estimator "k2"',
        ),
        WrongVersion(  # k3 with r itself in place of r − 1 (its mean is then 1 more than the KL)
            "k3 without the minus one",
            lambda logps, ref_logps, estimator: _estimates(ref_logps - logps, estimator) + (estimator == "k3") * 1.0,
            'random log-probs, estimator "k3"',
        ),
    ],
}
