"""Notebook 10's exercises (chapter 10, rejection sampling): the book's two selection rules, best-of-3 of a coin, and
the reward model's favourite answers to sums, on fresh samples."""

from __future__ import annotations

import numpy as np

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
    return np.random.default_rng(seed).normal(size=shape)


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


def _top_k_cases() -> list[Case]:
    """K larger than a row, equal rewards across prompts, the book's example, and K at its two ends."""
    return [
        Case("a random 4 × 3 reward matrix, K = 5 (more than a row holds)", (_random_rewards((4, 3), 11), 5)),
        Case(
            "equal rewards in different prompts (the lower flat index comes first), K = 4",
            (np.array([[0.5, 0.9], [0.9, 0.5], [0.9, 0.1]]), 4),
        ),
        Case("the book's 5 × 4 example, K = 5 (prompt 3 keeps two, prompt 5 none)", (_book_rewards(), 5)),
        Case("K = 1: the single best completion of a random 3 × 4 matrix", (_random_rewards((3, 4), 12), 1)),
        Case("K = M × N: the whole random 3 × 3 matrix, best first", (_random_rewards((3, 3), 13), 9)),
        Case("one prompt (M = 1), K = N = 4", (np.array([[-0.2, 0.7, 0.1, 0.4]]), 4)),
    ]


def _right_picks_on_fresh_sums() -> int:
    """How many held-out sums the RM's favourite of its fresh answers gets right: exercise 4's cells, rerun.

    The notebook's ``fresh_sums`` are the sums among section 2's held-out prompts, and its ``Y_fresh, R_fresh``
    their ``FRESH_SAMPLES`` answers from ``sft`` with seed ``FRESH_SEED``, scored by ``rm``: the same models, prompts
    and seed give the same answers here.
    """
    from ..core.runtime import get_device
    from ..core.world import World, parse_prompt
    from ..core.zoo import load
    from ..reward_modeling import reward_function

    device, world = get_device(), World(seed=0)
    (model, tokenizer), (rm, rm_tokenizer) = load("sft", device=device), load("rm", device=device)
    sums = [p for p in world.prompts(64, split="test") if parse_prompt(p).family == "arithmetic"]
    Y, R = sample_and_score(model, tokenizer, sums, FRESH_SAMPLES, reward_function(rm, rm_tokenizer), seed=FRESH_SEED)
    picks = [row[j] for row, j in zip(Y, select_top_per_prompt(R))]  # the RM's favourite answer to each sum
    return int(sum(world.verifiable_reward(sums, picks)))


register(
    Exercise(
        "10.1",
        success="the argmax of each row, zero-based, the first of equal maxima: every prompt keeps one completion",
        hints=(
            "one index per row (a prompt): the column of that row's largest reward, counted from 0; where the "
            "largest reward is shared, the first such column",
            "eq:rs_selection_per_prompt: S(R) = [argmax_j r_{i,j}] for i = 1, …, M, the maximum taken along each row "
            "(over j, the completions), not down the columns",
        ),
        reference=select_top_per_prompt,
        cases=_per_prompt_cases,
    ),
    Exercise(
        "10.2",
        success="R flattened row by row and sorted stably from the highest reward down, cut at K: a prompt may keep "
        "several completions, or none",
        hints=(
            "flatten R row by row, so that completion j of prompt i sits at i·N + j; then order the flat indices "
            "from the highest reward down, equal rewards keeping their order, and keep the first K",
            "eq:rs_topk_selection: S_K(R) = argsort(−flatten(R))[1:K], with the book's one-based [1:K]: the minus sign "
            "puts the largest first, and a stable sort keeps equal rewards in flat order",
        ),
        reference=select_top_k_overall,
        cases=_top_k_cases,
    ),
    Exercise(
        "10.3",
        success="π_BoN = (⅛, ⅞): KL = ⅛·log ¼ + ⅞·log 1.75 ≈ 0.316 nats, below the bound log 3 − ⅔ ≈ 0.432",
        hints=(
            "the best of three flips is 0 only if all three are 0",
            "`rs.exact_best_of_n`: π_BoN(y) = F(y)ⁿ − F⁻(y)ⁿ with n = 3, F the probability of a reward ≤ r(y) and "
            "F⁻ of a reward < r(y); then KL(π_BoN ‖ π) = Σ_y π_BoN(y)·log(π_BoN(y)/π(y))",
        ),
        expected=lambda: exact_best_of_n([0.5, 0.5], [0.0, 1.0], 3)[1],
        compare=close(1e-4),
    ),
    Exercise(
        "10.4",
        success="that is the count; compare it with 21 × the share of right answers among all 672 fresh ones (one "
        "answer per sum, drawn at random), and with the gold reward's favourites",
        hints=(
            "the RM's favourite answer to each sum is exercise 1's selection on R_fresh; score those 21 answers, "
            "not all 672",
            "`rs.select_top_per_prompt(R_fresh)` gives the column j of sum i's favourite, Y_fresh[i][j]; "
            "`world.verifiable_reward(prompts, completions)` is 1.0 for a right sum and 0.0 else: add it up",
        ),
        expected=_right_picks_on_fresh_sums,
        compare=equal,
        prediction=Prediction(
            ("most of them (over half)", "a few of them (under half)"),
            lambda right: "most of them (over half)" if right > 10 else "a few of them (under half)",
            "the RM scores an answer's form far more than its arithmetic (chapter 7), so its favourite of 32 is "
            "right on few sums, as one answer drawn at random is; the gold reward's favourite is right on nearly all",
        ),
    ),
)
