"""Plausible wrong answers to notebook 10's function exercises, each with the case its check must name."""

import numpy as np

from tests.exercise_tools import WrongVersion


def _best_from_zero(R):
    """The best column of each row, with the running best started at a reward of 0 instead of the first reward."""
    picks = []
    for row in np.asarray(R):
        best, best_j = 0.0, 0
        for j, reward in enumerate(row):
            if reward > best:
                best, best_j = reward, j
        picks.append(best_j)
    return picks


WRONG = {
    "10.1": [
        WrongVersion(  # a sign flip: the worst completion of each prompt
            "argmin for argmax",
            lambda R: np.argmin(R, axis=1).tolist(),
            "the book's 5 × 4 example (section 1)",
        ),
        WrongVersion(  # an index off by one: the book prints its columns one-based
            "one-based columns",
            lambda R: (np.argmax(R, axis=1) + 1).tolist(),
            "the book's 5 × 4 example (section 1)",
        ),
        WrongVersion(  # a tie goes to the last completion (a loop with >=, or argmax of the reversed row)
            "ties to the last completion",
            lambda R: (np.shape(R)[1] - 1 - np.argmax(np.asarray(R)[:, ::-1], axis=1)).tolist(),
            "rows whose best reward is shared (the first completion sampled keeps it)",
        ),
        WrongVersion(  # a running maximum started at 0, which no negative reward beats
            "the running best started at 0",
            _best_from_zero,
            "rewards that are all negative",
        ),
    ],
    "10.2": [
        WrongVersion(  # a sign flip: argsort ascending keeps the K lowest rewards
            "argsort without the minus sign",
            lambda R, k: np.argsort(np.ravel(R), kind="stable")[:k].tolist(),
            "a random 4 × 3 reward matrix, K = 5 (more than a row holds)",
        ),
        WrongVersion(  # an index off by one: the book's one-based [1:K] copied as a Python slice
            "the book's [1:K] as a Python slice",
            lambda R, k: np.argsort(-np.ravel(R), kind="stable")[1:k].tolist(),
            "a random 4 × 3 reward matrix, K = 5 (more than a row holds)",
        ),
        WrongVersion(  # ties broken toward the higher flat index: an ascending sort read backwards
            "an ascending sort reversed",
            lambda R, k: np.argsort(np.ravel(R), kind="stable")[::-1][:k].tolist(),
            "equal rewards in different prompts (the lower flat index comes first), K = 4",
        ),
        WrongVersion(  # NumPy's default sort, which is not stable: equal rewards come out in no promised order
            "an unstable sort",
            lambda R, k: np.argsort(-np.ravel(R))[:k].tolist(),
            "a 6 × 8 matrix of four reward levels, most of them tied (each tie in flat order), K = 20",
        ),
        WrongVersion(  # flattened column by column: j·M + i instead of i·N + j
            "flattened column by column",
            lambda R, k: np.argsort(-np.ravel(R, order="F"), kind="stable")[:k].tolist(),
            "a random 4 × 3 reward matrix, K = 5 (more than a row holds)",
        ),
    ],
}
