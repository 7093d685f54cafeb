"""AI feedback (chapter 13): a judge that is a model, and what its labels buy in place of a person's.

LLM-as-a-judge asks a model which of two answers is better. Here the judge is ``sft`` fine-tuned (chapter 9's
trainer) to read one user message holding a prompt and two answers, and to write "1" or "2":

    judge input:   "add 3 and 5 . 1 3 plus 5 is 8 . 2 3 plus 5 is 9"      judge output: "1"

Its verdict is a generative reward model's: the probability it gives each answer's number,

    P_J(first ≻ second) = π_J("1" | x₁₂) / (π_J("1" | x₁₂) + π_J("2" | x₁₂)) = σ(m₁₂),
    m₁₂ = log π_J("1" | x₁₂) − log π_J("2" | x₁₂)                                        (the judge's margin)

where x₁₂ shows the first answer first. The world's words already hold "1" and "2", so the judge needs no new
token and every shipped model keeps its vocabulary. Asked twice, with the answers swapped, a judge free of position
bias names the same answer both times (:func:`position_consistency`); averaging the two orders' margins
(:func:`debiased_margins`) cancels a constant pull toward one position.

- :func:`judge_message`, :func:`parse_verdict`, :func:`judge_rows`, :func:`train_judge`: the judge's format, its
  training data (each labelled pair in both orders) and its training.
- :func:`judge_margins`, :func:`debiased_margins`, :func:`judge_verdicts`: what it says.
- :func:`position_consistency`, :func:`first_position_share`: its position bias.
- :func:`pair_agreement`, :func:`agreement`: its agreement with held-out labels, from chance (0) to the noise
  ceiling (1).
- :func:`self_preference`: whether its mistakes favour answers from its own backbone.
- :func:`ai_labelled_pairs`: a fresh set of pairs labelled by a judge, a scalar reward model or the annotator, in
  the columns chapter 12's DPO trainer reads (RLAIF).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.logprobs import completion_logprobs
from .core.preferences import pair_dataset, pair_texts
from .core.runtime import numpy_rng
from .core.stats import ceiling_share, difference_stderr, mean_and_stderr
from .core.training import History
from .core.validation import check_same_length, check_texts
from .core.world import World, message_text, normalize_text
from .instruction_tuning import SFTConfig, train_sft

VERDICTS = ("1", "2")  # what the judge writes: the answer shown first is better, or the one shown second
SEPARATOR = "."  # the word between the prompt and each numbered answer in the judge's message
JUDGE_SFT = {"learning_rate": 1e-3, "batch_size": 32, "num_epochs": 8, "warmup_ratio": 0.05}  # the zoo's judge

Margins = torch.Tensor  # (N,) log π_J("1" | x) − log π_J("2" | x): above 0 when the judge prefers the first answer


# --- the judge's format --------------------------------------------------------------------------------------------
def judge_message(prompt: str, first: str, second: str) -> str:
    """The judge's user message: the prompt, then each answer after its number, "PROMPT . 1 FIRST . 2 SECOND"."""
    parts = (message_text(prompt, "prompt"), message_text(first, "first"), message_text(second, "second"))
    prompt, first, second = (normalize_text(part) for part in parts)
    if not prompt:
        raise ValueError(f"prompt is empty ({parts[0]!r}): the judge needs the question, e.g. World.prompts(1)[0]")
    return f"{prompt} {SEPARATOR} {VERDICTS[0]} {first} {SEPARATOR} {VERDICTS[1]} {second}"


def parse_verdict(text: str) -> int:
    """0 where the judge wrote "1" (the first answer wins), 1 where it wrote "2"; anything else is refused."""
    words = normalize_text(message_text(text, "verdict")).split()
    if words not in ([VERDICTS[0]], [VERDICTS[1]]):
        raise ValueError(
            f"verdict {text!r} is not one of the judge's two answers {VERDICTS}: a judge writes one word, "
            "'1' for the answer shown first or '2' for the one shown second; read its margins instead "
            "(judge_margins) if it writes anything else"
        )
    return VERDICTS.index(words[0])


def judge_rows(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]) -> list[dict]:
    """The judge's SFT rows for labelled pairs: each pair in both orders, the chosen answer's number as the answer.

    Both orders, so that the labels alone give no reason to favour a position: whatever position bias the judge
    shows, it brings from elsewhere. TRL's conversational ``prompt``/``completion`` format, 2N rows.
    """
    prompts, chosen, rejected = (
        check_texts(v, n) for v, n in ((prompts, "prompts"), (chosen, "chosen"), (rejected, "rejected"))
    )
    check_same_length(prompts, chosen, "prompts", "chosen answers")
    check_same_length(prompts, rejected, "prompts", "rejected answers")
    rows = []
    for prompt, good, bad in zip(prompts, chosen, rejected):
        for first, second, verdict in ((good, bad, VERDICTS[0]), (bad, good, VERDICTS[1])):
            rows.append(
                {
                    "prompt": [{"role": "user", "content": judge_message(prompt, first, second)}],
                    "completion": [{"role": "assistant", "content": verdict}],
                }
            )
    return rows


def train_judge(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Dataset, config: SFTConfig | None = None
) -> tuple[PreTrainedModel, History]:
    """A judge fine-tuned from a copy of ``model`` on labelled ``pairs`` (prompt/chosen/rejected) with chapter 9's
    SFT trainer; returns the judge and its :class:`History`. ``model`` is left as it was."""
    config = config or SFTConfig(**JUDGE_SFT, progress=False)
    judge = copy.deepcopy(model)
    history = train_sft(judge, tokenizer, judge_rows(*pair_texts(pairs)), config)
    return judge, history


# --- what the judge says --------------------------------------------------------------------------------------------
def judge_margins(
    judge: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    first: Sequence[str],
    second: Sequence[str],
) -> Margins:
    """m = log π_J("1" | x) − log π_J("2" | x) for each pair shown in this order: (N,), σ(m) = P_J(first ≻ second).

    Each verdict is scored as the judge writes it, the number and then its end-of-turn token, so m compares the two
    complete answers the judge could give.
    """
    check_texts(prompts, "prompts")
    check_same_length(prompts, first, "prompts", "first answers")
    check_same_length(prompts, second, "prompts", "second answers")
    messages = [judge_message(*texts) for texts in zip(prompts, first, second)]
    one, two = (completion_logprobs(judge, tokenizer, messages, [verdict] * len(messages)) for verdict in VERDICTS)
    return one - two  # (N,)


def debiased_margins(margins_ab: Margins, margins_ba: Margins) -> Margins:
    """(m_ab − m_ba) / 2: the margin for a over b averaged over both orders; (N,).

    ``margins_ab`` shows a first, ``margins_ba`` shows b first. A pull s toward the first position that is the same
    in both orders of a pair cancels, even if it varies from pair to pair: m_ab = d + s and m_ba = −d + s give d.
    (Lee et al., 2023, average the two orders' probabilities; Zheng et al., 2023, count an inconsistent pair a tie.)
    """
    margins_ab, margins_ba = torch.as_tensor(margins_ab), torch.as_tensor(margins_ba)
    if margins_ab.dim() != 1 or margins_ab.shape != margins_ba.shape:
        raise ValueError(
            f"margins_ab has shape {tuple(margins_ab.shape)} and margins_ba {tuple(margins_ba.shape)}: pass two (N,) "
            "margins of the same N pairs, as judge_margins returns them for each order"
        )
    return (margins_ab - margins_ba) / 2


def judge_verdicts(margins: Margins) -> np.ndarray:
    """The judge's greedy verdicts, 1 where it names the first answer (m > 0), as labels are written: (N,) ints."""
    return (torch.as_tensor(margins) > 0).long().numpy()


def position_consistency(first_wins_ab: Sequence[int], first_wins_ba: Sequence[int]) -> float:
    """Share of pairs whose verdict names the same answer in both orders.

    ``first_wins_ab[i]`` is 1 where the judge, shown a then b, named the first (a); ``first_wins_ba[i]`` the same
    with b shown first. The answer named is the same when exactly one of the two verdicts is "first": a judge
    free of position bias scores 1, and one that always writes "1" scores 0.
    """
    ab, ba = _verdict_pairs(first_wins_ab, first_wins_ba)
    return float(np.mean(ab != ba))


def first_position_share(first_wins_ab: Sequence[int], first_wins_ba: Sequence[int]) -> float:
    """Share of all 2N verdicts that name the answer shown first: 0.5 for a judge without position bias."""
    ab, ba = _verdict_pairs(first_wins_ab, first_wins_ba)
    return float(np.concatenate([ab, ba]).mean())


def _verdict_pairs(
    first: Sequence[int], second: Sequence[int], names: tuple[str, str] = ("first_wins_ab", "first_wins_ba")
) -> tuple[np.ndarray, np.ndarray]:
    """Two lists of 0/1 verdicts as (N,) int arrays, after checking they are 0/1, as many, and not empty."""
    arrays = []
    for values, name in zip((first, second), names):
        array = np.asarray(values, dtype=float)
        if array.ndim != 1 or len(array) == 0 or not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"{name} must be a non-empty list of 0/1 verdicts, got {values!r}: e.g. judge_verdicts(margins), "
                "1 where the judge named the answer shown first"
            )
        arrays.append(array.astype(int))
    check_same_length(*arrays, *names)
    return arrays[0], arrays[1]


# --- how good the judge is -----------------------------------------------------------------------------------------
def pair_agreement(margins: Margins, p_chosen: Sequence[float]) -> np.ndarray:
    """Each pair's expected agreement with the annotator, margins given chosen first: p_chosen where the judge names
    the chosen answer (m > 0), 1 − p_chosen where not; (N,). Its mean is the expected accuracy."""
    p_chosen = np.asarray(p_chosen, dtype=float)  # (N,)
    check_same_length(margins, p_chosen, "margins", "p_chosen")
    return np.where(judge_verdicts(margins).astype(bool), p_chosen, 1 - p_chosen)


def agreement(margins: Margins, pairs: Dataset, world: World) -> dict[str, float]:
    """A judge's agreement with the annotator on labelled ``pairs``, its margins given chosen first.

    Returns ``accuracy`` (on the pairs' labels), ``expected_accuracy`` with its standard error (the mean of
    :func:`pair_agreement`: the label noise averaged out, as notebook 07 measures a reward model),
    ``bayes_accuracy`` (the ceiling on these pairs) and ``ceiling_share``, (expected accuracy − 0.5) / (Bayes − 0.5):
    0 is a coin, 1 the ceiling.
    """
    prompts, chosen, rejected = pair_texts(pairs)
    check_same_length(margins, prompts, "margins", "pairs")
    expected, expected_se = mean_and_stderr(pair_agreement(margins, pairs["p_chosen"]))
    bayes = world.bayes_accuracy(prompts, chosen, rejected)
    return {
        "accuracy": float(judge_verdicts(margins).mean()),
        "expected_accuracy": expected,
        "expected_accuracy_se": expected_se,
        "bayes_accuracy": bayes,
        "ceiling_share": ceiling_share(expected, bayes),
        "ceiling_share_se": expected_se / (bayes - 0.5),
    }


def self_preference(
    picks_own: Sequence[int], own_better: Sequence[int], person_p_own: Sequence[float] | None = None
) -> tuple[float, float]:
    """A judge's errors in favour of its own backbone's answers, minus its errors against them.

    Each pair holds one answer from the judge's backbone and one from another writer. ``picks_own[i]`` is 1 where
    the judge names the backbone's answer, ``own_better[i]`` 1 where the gold reward ranks it higher (leave out the
    pairs the gold reward ties). Returns

        P(names its own | its own is worse) − P(names the other | its own is better)

    and its standard error (two disjoint groups of pairs: √(se₁² + se₂²)); the equal-opportunity form of
    self-preference (Wataoka et al., 2024). Counting errors, not wins, keeps a weak judge's noise from passing for
    self-preference: a coin names either answer half the time, however often the backbone's is the better one.

    A judge without self-preference need not score 0: if one group's pairs are closer in gold than the other's,
    any noisy labeller errs more on them. Pass ``person_p_own``, a labeller's probability that the backbone's
    answer wins on each pair (``World.preference_probability``), and its expected error is taken off pair by pair:
    what remains is the judge's lean beyond that labeller's.
    """
    picks, better = _verdict_pairs(picks_own, own_better, ("picks_own", "own_better"))
    errors = np.where(better == 0, picks == 1, picks == 0).astype(float)  # (N,) the judge's error on each pair
    if person_p_own is not None:
        p = np.asarray(person_p_own, dtype=float)
        check_same_length(p, picks, "person_p_own", "picks_own")
        if not ((p >= 0) & (p <= 1)).all():
            raise ValueError(f"person_p_own must hold probabilities in [0, 1], got {p.tolist()!r}")
        errors -= np.where(better == 0, p, 1 - p)  # a person's expected error on the same pair
    rates = []
    for group in (better == 0, better == 1):
        if group.sum() < 2:
            raise ValueError(
                f"own_better holds {int(group.sum())} pair(s) of one kind: the error rates need at least 2 pairs where "
                "the backbone's answer is better and 2 where it is worse; pass more pairs"
            )
        rates.append(mean_and_stderr(errors[group]))
    return rates[0][0] - rates[1][0], difference_stderr(rates[0][1], rates[1][1])


# --- RLAIF: the same pairs, labelled by a person or by a model ------------------------------------------------------
def ai_labelled_pairs(
    world: World, prompts: Sequence[str], samples_a: Sequence[str], samples_b: Sequence[str], labels: Sequence[int]
) -> Dataset:
    """Pairs labelled by anyone (1 where a wins) as chapter 12's DPO trainer reads them, with the world's columns.

    ``p_chosen`` is the world's annotator's probability of each label, so a dataset labelled by a model can be
    scored against what a person would have said (:func:`label_agreement`).
    """
    check_same_length(prompts, labels, "prompts", "labels")
    if not np.isin(np.asarray(labels, dtype=float), (0, 1)).all():
        raise ValueError(
            f"labels must be 0 or 1 (1 where a wins), got {list(labels)!r}: threshold a probability p > 0.5"
        )
    p_a = world.preference_probability(list(prompts), list(samples_a), list(samples_b))
    return pair_dataset(prompts, samples_a, samples_b, labels, p_a, gold=world.gold_reward)


def label_agreement(pairs: Dataset) -> tuple[float, float]:
    """How often a person would give a labelled dataset's labels: the mean of ``p_chosen``, with its standard error."""
    return mean_and_stderr(np.asarray(pairs["p_chosen"], dtype=float))


def annotator_labels(world: World, prompts: Sequence[str], a: Sequence[str], b: Sequence[str], seed: int) -> np.ndarray:
    """The world's annotator's labels (1 where a wins), drawn with ``seed`` through the runtime."""
    return np.array(world.label_pairs(list(prompts), list(a), list(b), rng=numpy_rng(seed)))
