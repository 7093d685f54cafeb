"""A leaderboard with honest intervals: Bradley–Terry ratings from pairwise battles (chapter 16).

Chatbot Arena's method, on any list of battles: each battle is two models, one prompt, and a verdict (1 if the
first model won, 0 if the second did, ½ for a tie); :func:`round_robin` plays every pair of models on every prompt
before a judge, a coin deciding which answer is shown first. The Bradley–Terry model says

    P(a beats b) = σ(θ_a − θ_b)                                                         (eq:bt_battle)

with one rating θ per model: chapter 7's Bradley–Terry likelihood, with one free number per model in place of a
reward network. The ratings are fitted by maximum likelihood, a logistic regression on one column per model (+1 for
the first model of a battle, −1 for the second; :func:`battle_design`) by
:func:`~rlhf_edu.core.stats.logistic_regression`. Only differences of ratings are defined, so they are reported
centred (mean 0), in nats, or on Arena's Elo-like scale (:func:`elo_scale`). Chapter 6's
:func:`~rlhf_edu.preference_data.bradley_terry_scores` fits the same model to known win probabilities; a leaderboard
has only a finite list of verdicts. The ratings' uncertainty comes from resampling the battles
(:func:`bootstrap_ratings`), and two neighbours on the board are told apart only when the interval of their
difference leaves out 0 (:func:`neighbour_gaps`). Where a reference order is known, as the world's gold reward is,
:func:`rank_reversals` lists the pairs a judge's board puts the wrong way round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .core.runtime import numpy_rng
from .core.stats import logistic_regression, mean_and_stderr
from .core.validation import check_int, check_probability

Battle = tuple[str, str, float]  # (first model, second model, 1 if the first won, 0 if it lost, ½ for a tie)
ELO_SCALE = 400 / math.log(10)  # Arena's points per nat: a 400-point gap is 10:1 odds
ELO_CENTRE = 1000.0


Judge = Callable[[list[str], list[str], list[str]], Sequence[float]]  # (prompts, a, b) -> 1 where a wins, 0, or ½


def round_robin(
    prompts: Sequence[str], answers: Mapping[str, Sequence[str]], judge: Judge, seed: int = 0
) -> list[Battle]:
    """Every pair of models on every prompt, judged: K(K − 1)/2 battles per prompt.

    ``answers[model][i]`` is the model's answer to ``prompts[i]``. Which model is shown first is drawn by a coin for
    each battle (seeded), so a judge's pull toward one position favours no model; ``judge(prompts, first, second)``
    gives one verdict per battle, e.g. the world's annotator, ``lambda p, a, b: world.label_pairs(p, a, b, rng)``.
    """
    models = list(answers)
    if len(models) < 2:
        raise ValueError(f"answers must hold at least two models, got {models}: a battle needs two")
    for model, texts in answers.items():
        if len(texts) != len(prompts):
            raise ValueError(
                f"answers[{model!r}] holds {len(texts)} answers for {len(prompts)} prompts: give one answer per prompt"
            )
    rng = numpy_rng(seed)
    rows = []  # (first model, second model, prompt, first answer, second answer)
    for i, prompt in enumerate(prompts):
        for j, a in enumerate(models):
            for b in models[j + 1 :]:
                first, second = (a, b) if rng.random() < 0.5 else (b, a)  # the coin for the position
                rows.append((first, second, prompt, answers[first][i], answers[second][i]))
    firsts, seconds, shown, first_texts, second_texts = (list(column) for column in zip(*rows))
    verdicts = judge(shown, first_texts, second_texts)
    return [(a, b, float(v)) for a, b, v in zip(firsts, seconds, verdicts)]


def check_battles(battles: Sequence[Battle], models: Sequence[str]) -> None:
    """Refuse battles that name a model outside ``models``, a verdict other than 0, ½ or 1, or a model that never
    plays: each error names the value and the fix."""
    if len(set(models)) != len(models) or len(models) < 2:
        raise ValueError(f"models must name at least two different models, got {list(models)!r}")
    if not battles:
        raise ValueError("battles is empty: a leaderboard needs battles, e.g. [('sft', 'base', 1.0)]")
    known, played = set(models), set()
    for i, battle in enumerate(battles):
        if len(battle) != 3:
            raise ValueError(f"battles[{i}] = {battle!r} must be (first model, second model, verdict)")
        a, b, verdict = battle
        for name in (a, b):
            if name not in known:
                raise ValueError(
                    f"battles[{i}] names {name!r}, which is not among the models {sorted(known)}: add it to models "
                    "or drop its battles"
                )
        if a == b:
            raise ValueError(f"battles[{i}] pits {a!r} against itself: a battle needs two different models")
        if verdict not in (0, 0.5, 1):
            raise ValueError(f"battles[{i}] has verdict {verdict!r}: use 1 (the first won), 0 (it lost) or 0.5 (a tie)")
        played |= {a, b}
    missing = [m for m in models if m not in played]
    if missing:
        raise ValueError(
            f"{missing} never play in the battles, so the data say nothing of their ratings: add battles with them "
            "or leave them off the leaderboard"
        )


def battle_design(battles: Sequence[Battle], models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The logistic regression of eq:bt_battle: x (N, K − 1) and y (N,).

    Row n holds +1 in the first model's column and −1 in the second's; the first of ``models`` has no column, so its
    rating is fixed at 0 (the ratings are defined only up to a shift). y is the verdict.
    """
    check_battles(battles, models)
    column = {name: k for k, name in enumerate(models)}
    x = np.zeros((len(battles), len(models)))  # (N, K)
    for n, (a, b, _) in enumerate(battles):
        x[n, column[a]], x[n, column[b]] = 1.0, -1.0
    y = np.array([float(verdict) for _, _, verdict in battles])  # (N,)
    return x[:, 1:], y


def bradley_terry_ratings(battles: Sequence[Battle], models: Sequence[str]) -> np.ndarray:
    """The maximum-likelihood ratings θ of eq:bt_battle, one per model in the order of ``models``, centred to mean 0,
    in nats: (K,).

    The maximum exists only if no group of models beat all the others in every battle between them; otherwise the
    fit says so (:func:`~rlhf_edu.core.stats.logistic_regression`)."""
    x, y = battle_design(battles, models)
    try:
        theta, _ = logistic_regression(x, y)  # (K − 1,) the first model's rating is 0
    except ValueError as error:
        raise ValueError(
            "the ratings run off to infinity: some models won (or lost) every battle they had against the others; "
            "add battles between the two groups"
        ) from error
    ratings = np.concatenate([[0.0], theta])  # (K,)
    return ratings - ratings.mean()


def elo_scale(ratings: np.ndarray) -> np.ndarray:
    """Ratings in nats on Arena's scale: 1000 + 400·θ / ln 10, so 400 points are odds of 10 to 1."""
    return ELO_CENTRE + ELO_SCALE * np.asarray(ratings, dtype=float)


def bootstrap_ratings(
    battles: Sequence[Battle], models: Sequence[str], num_resamples: int = 200, seed: int = 0
) -> np.ndarray:
    """:func:`bradley_terry_ratings` on ``num_resamples`` resamples of the battles, drawn with replacement: (R, K).

    Each resample is as long as the battles; its spread is the ratings' sampling error, as Chatbot Arena reports it.
    """
    num_resamples = check_int(num_resamples, "num_resamples", low=2, fix="e.g. 200 resamples")
    check_battles(battles, models)
    rng = numpy_rng(seed)
    samples = []
    for _ in range(num_resamples):
        drawn = rng.integers(0, len(battles), size=len(battles))  # (N,) battles drawn with replacement
        samples.append(bradley_terry_ratings([battles[i] for i in drawn], models))
    return np.stack(samples)  # (R, K)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> np.ndarray:
    """The central ``level`` interval of bootstrap samples, column by column: (K, 2), low and high."""
    tail = (1 - check_probability(level, "level", "the interval's coverage, e.g. 0.95")) / 2
    return np.quantile(np.asarray(samples, dtype=float), [tail, 1 - tail], axis=0).T  # (K, 2)


def neighbour_gaps(
    models: Sequence[str], ratings: np.ndarray, samples: np.ndarray, level: float = 0.95
) -> list[dict[str, object]]:
    """Each pair of neighbours on the board, best first: the rating gap, its bootstrap interval, and whether it is
    ``separated`` (the interval leaves out 0). Two models whose own intervals overlap can still be separated: what
    matters is the interval of their difference, resampled together."""
    order = np.argsort(-np.asarray(ratings))  # best first
    gaps = []
    for upper, lower in zip(order, order[1:]):
        low, high = (float(v) for v in percentile_interval(samples[:, [upper]] - samples[:, [lower]], level)[0])
        gap = float(ratings[upper] - ratings[lower])
        gaps.append({"above": models[upper], "below": models[lower], "gap": gap, "low": low, "high": high})
        gaps[-1]["separated"] = low > 0
    return gaps


def rank_reversals(
    models: Sequence[str],
    ratings: np.ndarray,
    gold: Mapping[str, Sequence[float]],
    k: float = 3.0,
    rating_se: np.ndarray | None = None,
) -> list[tuple[str, str]]:
    """The pairs (better, worse) that the gold reward orders beyond ``k`` standard errors and ``ratings`` order the
    other way round: a judge's rank reversals. ``gold[model][i]`` is the gold reward of the model's answer to prompt
    i, the same prompts for every model, so each difference is paired prompt by prompt. With ``rating_se`` (K, K),
    the standard error of each rating gap (e.g. from :func:`bootstrap_ratings`), the reversed gap must also be
    beyond ``k`` of its own: a board that cannot order the pair does not reverse it."""
    missing = [m for m in models if m not in gold]
    if missing or len({len(gold[m]) for m in models}) != 1 or len(gold[models[0]]) < 2:
        lengths = {m: len(gold[m]) for m in models if m in gold}
        raise ValueError(
            f"gold must hold every model's gold rewards, at least two and as many for each; missing {missing}, "
            f"lengths {lengths}: score each model's answers to the same prompts"
        )
    reversals = []
    for i, a in enumerate(models):
        for j, b in enumerate(models):
            mean, se = mean_and_stderr(np.subtract(gold[a], gold[b]))  # a − b paired prompt by prompt
            board_se = 0.0 if rating_se is None else float(np.asarray(rating_se)[i, j])
            if mean > k * se and ratings[j] - ratings[i] > k * board_se:
                reversals.append((a, b))
    return reversals
