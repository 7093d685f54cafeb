"""Notebook 10's exercises (chapter 10, rejection sampling): the book's two selection rules, best-of-3 of a coin, and
the reward model's favourite answers to sums against the gold reward's, on fresh samples."""

from __future__ import annotations

import functools

import numpy as np

from ..core.runtime import numpy_rng
from ..rejection_sampling import exact_best_of_n, sample_and_score, select_top_k_overall, select_top_per_prompt
from .checks import Case, Exercise, Prediction, close, equal, register

FRESH_SAMPLES, FRESH_SEED = 32, 3  # exercise 4's answers per held-out sum, and their sampling seed (section 2's is 1)


def _book_rewards() -> np.ndarray:
    """The book's 5 × 4 reward matrix R, 5 prompts by 4 completions (section 1)."""
    return np.array(
        [[0.7, 0.3, 0.5, 0.2], [0.4, 0.8, 0.6, 0.5], [0.9, 0.3, 0.4, 0.7], [0.2, 0.5, 0.8, 0.6], [0.5, 0.4, 0.3, 0.6]]
    )


def _random_rewards(shape: tuple[int, int], seed: int) -> np.ndarray:
    """An (M, N) reward matrix with no two rewards equal."""
    return numpy_rng(seed).normal(size=shape)


def _per_prompt_cases() -> list[Case]:
    """The book's example, random matrices, ties, all-negative rewards, and one completion or one prompt."""
    return [
        Case("the book's 5 × 4 example (section 1)", (_book_rewards(),)),
        Case("a random 4 × 6 reward matrix", (_random_rewards((4, 6), 10),)),
        Case(
            "rows whose best reward is shared (the first completion sampled keeps it)",
            (np.array([[0.5, 0.9, 0.9, 0.1], [0.3, 0.3, 0.3, 0.3], [1.0, 0.2, 1.0, 1.0]]),),
        ),
        Case("rewards that are all negative", (np.array([[-0.5, -0.2, -0.9], [-3.0, -1.0, -2.0]]),)),
        Case("one completion per prompt (N = 1)", (np.array([[0.4], [-1.0], [2.0]]),)),
        Case("one prompt (M = 1)", (np.array([[0.1, 0.5, 0.3]]),)),
    ]


def _many_ties() -> np.ndarray:
    """A 6 × 8 reward matrix on four levels, so that most rewards are tied: 48 of them, longer than the short arrays
    whose ties NumPy's default, unstable sort happens to keep in order, so an unstable sort shows here."""
    return (np.arange(48).reshape(6, 8) * 5 % 4) * 0.25  # fixed, so the tie case is the same under any seed


def _top_k_cases() -> list[Case]:
    """K larger than a row, equal rewards across prompts and in a larger matrix, the book's example, and K at its two
    ends."""
    return [
        Case("a random 4 × 3 reward matrix, K = 5 (more than a row holds)", (_random_rewards((4, 3), 11), 5)),
        Case(
            "equal rewards in different prompts (the lower flat index comes first), K = 4",
            (np.array([[0.5, 0.9], [0.9, 0.5], [0.9, 0.1]]), 4),
        ),
        Case(
            "a 6 × 8 matrix of four reward levels, most of them tied (each tie in flat order), K = 20",
            (_many_ties(), 20),
        ),
        Case("the book's 5 × 4 example, K = 5 (prompt 3 keeps two, prompt 5 none)", (_book_rewards(), 5)),
        Case("K = 1: the single best completion of a random 3 × 4 matrix", (_random_rewards((3, 4), 12), 1)),
        Case("K = M × N: the whole random 3 × 3 matrix, best first", (_random_rewards((3, 3), 13), 9)),
        Case("one prompt (M = 1), K = N = 4", (np.array([[-0.2, 0.7, 0.1, 0.4]]), 4)),
    ]


@functools.cache
def _rm_short_of_gold_on_fresh_sums() -> int:
    """On how many held-out sums the RM's favourite of its fresh answers earns less gold than the gold reward's
    favourite: exercise 4's cells, rerun once (sampling 672 answers takes seconds), then remembered.

    The notebook's ``fresh_sums`` are the sums among section 2's held-out prompts, and its ``Y_fresh, R_fresh,
    G_fresh`` their ``FRESH_SAMPLES`` answers from ``sft`` with seed ``FRESH_SEED``, scored by ``rm`` and by the gold
    reward: the same models, prompts and seed give the same answers here.
    """
    from ..core.runtime import get_device
    from ..core.world import World, parse_prompt
    from ..core.zoo import load
    from ..reward_modeling import reward_function

    device, world = get_device(), World(seed=0)
    (model, tokenizer), (rm, rm_tokenizer) = load("sft", device=device), load("rm", device=device)
    sums = [p for p in world.prompts(64, split="test") if parse_prompt(p).family == "arithmetic"]
    Y, R = sample_and_score(model, tokenizer, sums, FRESH_SAMPLES, reward_function(rm, rm_tokenizer), seed=FRESH_SEED)
    G = np.array([world.gold_reward([prompt] * len(row), row) for prompt, row in zip(sums, Y)])  # (21, 32)
    rm_gold = G[np.arange(len(sums)), select_top_per_prompt(R)]  # (21,) the gold reward of the RM's favourite
    return int((rm_gold < G.max(axis=1)).sum())  # short of the gold reward's favourite; an equal one is not short


register(
    Exercise(
        "10.1",
        success="the argmax of each row, zero-based, the first of equal maxima: every prompt keeps one completion",
        hints=(
            "which of prompt i's completions does the book keep, and are those completions a row of R or a column?",
            "eq:rs_selection_per_prompt: S(R) = [argmax_j r_{i,j}] for i = 1, …, M: for each prompt i, the index j of "
            "its completion with the largest reward, counted from 0, the one sampled first where rewards tie",
        ),
        reference=select_top_per_prompt,
        cases=_per_prompt_cases,
    ),
    Exercise(
        "10.2",
        success="R flattened row by row and sorted stably from the highest reward down, cut at K: a prompt may keep "
        "several completions, or none",
        hints=(
            "what does the book's minus sign do to the order an argsort returns, and does your sort promise to leave "
            "equal rewards in the order it found them?",
            "eq:rs_topk_selection: S_K(R) = argsort(−flatten(R))[1:K], with the book's one-based [1:K], the first K: "
            "the minus sign puts the largest first, and only a stable sort keeps equal rewards in flat order (not "
            "every sort is stable by default)",
        ),
        reference=select_top_k_overall,
        cases=_top_k_cases,
    ),
    Exercise(
        "10.3",
        success="π_BoN = (⅛, ⅞): KL = ⅛·log ¼ + ⅞·log 1.75 ≈ 0.316 nats, below the bound log 3 − ⅔ ≈ 0.432",
        hints=(
            "when is the best of three flips a 0?",
            "section 3's best-of-n distribution: π_BoN(y) = F(y)ⁿ − F⁻(y)ⁿ, F the probability of a reward ≤ r(y) and "
            "F⁻ of a reward < r(y); then eq:kl_distance_regularization (notebook 08), KL(π_BoN ‖ π) = "
            "Σ_y π_BoN(y)·log(π_BoN(y)/π(y))",
        ),
        expected=lambda: exact_best_of_n([0.5, 0.5], [0.0, 1.0], 3)[1],
        compare=close(1e-4),
    ),
    Exercise(
        "10.4",
        success="that is the count: on most sums the RM's favourite gives up gold that the gold reward's favourite, "
        "among the same 32 answers, earns; check which of the two favourites get the sum right",
        hints=(
            "which of a sum's 32 answers would each reward keep, and how much gold reward does each of the two kept "
            "answers earn?",
            "eq:rs_selection_per_prompt on R_fresh gives the RM's favourite, and on G_fresh the gold reward's; a sum "
            "counts when the RM's favourite earns strictly less gold reward than the gold reward's favourite does",
        ),
        expected=_rm_short_of_gold_on_fresh_sums,
        compare=equal,
        prediction=Prediction(
            ("most of them (over half)", "a few of them (under half)"),
            lambda short: "most of them (over half)" if short > 10 else "a few of them (under half)",
            "the gold reward pays twice for a right sum, so its favourite is a right answer on nearly every sum, "
            "while the RM scores an answer's form far more than its arithmetic (chapter 7): its favourite is right on "
            "few sums, and on the others it falls short",
        ),
    ),
)
