"""Contamination: a benchmark's answers in the training data, the score they inflate, and a detector (chapter 16).

A benchmark is contaminated when its prompts, with their reference answers, were in a model's training data: its
score then measures recall as well as skill. Split the benchmark's prompts into a leaked part and a clean part
(:func:`leak_split`), and the gain on the leaked prompts beyond the gain on the clean ones, which any real learning
shares, is what the leak bought:

    inflation = (s_after − s_before)(leaked) − (s_after − s_before)(clean)          (eq:contamination_inflation)

(:func:`inflation`, the means of per-prompt gains). A detector that needs no training data reads the model's
log-likelihood of each reference answer y* against a reference model that never saw the benchmark:

    gap(x) = log π(y* | x) − log π_ref(y* | x)                                        (eq:contamination_gap)

(:func:`likelihood_gap`): a memorised answer is far likelier than the reference model finds it. How well a score
tells leaked prompts from clean ones is its AUROC, the chance that a random leaked prompt scores above a random
clean one, ties counted half (:func:`detection_auc`): 0.5 is a coin, 1 a perfect detector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.logprobs import completion_logprobs
from .core.runtime import numpy_rng
from .core.stats import difference_stderr, mean_and_stderr
from .core.validation import check_probability, check_same_length, check_texts


def leak_split(prompts: Sequence[str], share: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """The distinct strings of ``prompts``, sorted, split at random into a leaked ``share`` and the clean rest.

    The split is by prompt string, not by row: a benchmark that repeats a prompt would otherwise leak it into both
    parts, and the clean part would not be clean.
    """
    check_texts(prompts, "prompts")
    check_probability(share, "share", "the share of the distinct prompts that leak, e.g. 0.5")
    distinct = sorted(set(prompts))
    leaked = set(numpy_rng(seed).permutation(distinct)[: round(share * len(distinct))].tolist())
    if not leaked or len(leaked) == len(distinct):
        raise ValueError(
            f"share={share} of {len(distinct)} distinct prompts leaves one part empty: pass more distinct prompts or "
            "a share nearer 0.5"
        )
    return [p for p in distinct if p in leaked], [p for p in distinct if p not in leaked]


def inflation(before: Sequence[float], after: Sequence[float], leaked: Sequence[bool]) -> tuple[float, float]:
    """eq:contamination_inflation from per-prompt scores before and after training, and which prompts leaked:
    (value, standard error), the two parts' mean gains compared as independent samples."""
    gains = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)  # (N,) each prompt's own gain
    leaked = np.asarray(leaked, dtype=bool)
    check_same_length(gains, leaked, "after", "leaked")
    if leaked.all() or not leaked.any():
        raise ValueError("leaked must mark some prompts True and some False: the clean part is the comparison")
    (gain_leaked, se_leaked), (gain_clean, se_clean) = mean_and_stderr(gains[leaked]), mean_and_stderr(gains[~leaked])
    return gain_leaked - gain_clean, difference_stderr(se_leaked, se_clean)


def likelihood_gap(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
) -> np.ndarray:
    """eq:contamination_gap for each (prompt, reference answer): log π(y*|x) − log π_ref(y*|x), in nats; (N,)."""
    logps = completion_logprobs(model, tokenizer, prompts, answers)  # (N,)
    ref_logps = completion_logprobs(reference, tokenizer, prompts, answers)  # (N,)
    return (logps - ref_logps).numpy()


def detection_auc(leaked_scores: Sequence[float], clean_scores: Sequence[float]) -> tuple[float, float]:
    """A detector's AUROC, P(leaked score > clean score) + ½ P(tie) over every leaked × clean pair, and its standard
    error by Hanley & McNeil (1982)."""
    leaked, clean = np.asarray(leaked_scores, dtype=float), np.asarray(clean_scores, dtype=float)
    for values, name in ((leaked, "leaked_scores"), (clean, "clean_scores")):
        if values.ndim != 1 or len(values) < 2 or not np.isfinite(values).all():
            raise ValueError(f"{name} must be at least two finite scores, got {values.tolist()!r}")
    above = (leaked[:, None] > clean[None, :]).mean()  # (n_l, n_c) every pair compared
    auc = float(above + 0.5 * (leaked[:, None] == clean[None, :]).mean())
    n_l, n_c = len(leaked), len(clean)
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)  # two leaked both beat one clean; one leaked beats two clean
    var = (auc * (1 - auc) + (n_l - 1) * (q1 - auc**2) + (n_c - 1) * (q2 - auc**2)) / (n_l * n_c)
    return auc, math.sqrt(max(var, 0.0))
