"""Reward modeling (chapter 7): a scalar score r_θ(y | x) learned from pairwise preferences.

A reward model is the policy's backbone with a one-number head read at the last
token of prompt + completion: Hugging Face's ``AutoModelForSequenceClassification``
with ``num_labels=1``, so a reward model trained here also works in TRL. It learns
from chosen/rejected pairs through the Bradley-Terry loss

    L(θ) = −log σ(r_θ(y_c | x) − r_θ(y_r | x))        (eq:rewardmodeling1)

and it only ever sees *differences* of rewards, so its scores are defined up to a
constant per prompt.

Because the toy world knows the true preference, everything the reward model
learns can be checked against it: held-out accuracy next to the annotator's noise
ceiling, calibration, rank correlation with the gold reward, and which gold
components it picked up, missed or over-weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .core.collate import Messages, as_messages, encode_prompt_completion, pad_batch, render_chat
from .core.logprobs import check_tokenizer_fits, completion_logprobs, position_ids_from_mask

# Chapter 7 teaches these, and chapter 6 fits and measures with them too, so they live in the core.
from .core.preferences import (  # noqa: F401 (re-exported)
    bradley_terry_loss,
    check_rankings,
    check_reward_pairs,
    check_scored_pairs,
    encode_pairs,
    expected_accuracy,
    pair_loader,
    pair_texts,
    pairwise_accuracy,
    plackett_luce_loss,
    preference_probability,
)
from .core.rollouts import generate_completions
from .core.runtime import SCORING_BATCH_SIZE, numpy_rng, shifted_seed
from .core.scoring import score_completions, score_rows
from .core.stats import (  # noqa: F401 (re-exported)
    RewardMatrix,
    best_of_n_curve,
    ceiling_share,
    masked_mean,
    spearman_correlation,
    within_prompt_agreement,
)
from .core.training import Batch, History, TrainingConfig, make_loader, train
from .core.validation import (
    check_causal_lm,
    check_choice,
    check_flag,
    check_int,
    check_number,
    check_same_length,
    check_texts,
    context_length,
)
from .core.world import (
    FAMILIES,
    MULTI_STEP,
    NUMBERS,
    OPERANDS,
    STEP_SEPARATOR,
    SUM_FAMILIES,
    World,
    fact_pairs,
    parse_prompt,
    split_steps,
    step_labels,
)

HELD_OUT_PAIRS = 1000  # test-split prompts the recipe and the notebook measure on


# --- the Bradley-Terry model: plain functions on rewards (core.preferences), and TRL's centering term ---
def reward_centering(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, coefficient: float) -> torch.Tensor:
    """c · (r_c + r_r)² per pair: the auxiliary term of TRL's ``center_rewards_coefficient``.

    Bradley-Terry sees only reward differences, so the level of r_θ drifts freely
    during training; this term pulls the mean reward toward 0 (Eisenstein et al.,
    2023) without changing which answer wins. Returns one value per pair.
    """
    check_reward_pairs(chosen_rewards, rejected_rewards)
    return coefficient * (chosen_rewards + rejected_rewards) ** 2


def plot_bradley_terry(
    gap: float = 1.0, margin: float = 0.0, axes: Sequence[Axes] | None = None
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """Preference probability σ(Δ) and loss −log σ(Δ − m) against the reward gap Δ = r_c − r_r, marked at ``gap``.

    Draws on the two ``axes`` (probability, loss) when given, else on a new figure; returns the figure.
    """
    gaps = torch.linspace(-6, 6, 241)  # (G,)
    zeros = torch.zeros_like(gaps)
    probability = torch.sigmoid(torch.tensor(gap)).item()
    left, right = plt.subplots(1, 2, figsize=(9, 3.2))[1] if axes is None else axes
    left.plot(gaps, preference_probability(gaps, zeros))
    left.plot([gap], [probability], "o", color="C3")
    left.set(
        xlabel="reward gap Δ = r(y_c) − r(y_r)",
        ylabel="P(y_c ≻ y_r)",
        ylim=(0, 1),
        title=f"P = σ({gap:.2f}) = {probability:.2f}",
    )
    right.plot(gaps, bradley_terry_loss(gaps, zeros), color="C7", ls="--", label="m = 0")
    right.plot(gaps, bradley_terry_loss(gaps, zeros, margin), label=f"m = {margin:.1f}")
    right.plot([gap], [bradley_terry_loss(torch.tensor(gap), torch.tensor(0.0), margin).item()], "o", color="C3")
    right.set(xlabel="reward gap Δ", ylabel="−log σ(Δ − m)", ylim=(0, 7), title="Bradley-Terry loss")
    right.legend()
    left.figure.tight_layout()
    return left.figure


# --- the reward model -------------------------------------------------------------------
def reward_model_from(causal_lm: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """A reward model on a copy of ``causal_lm``'s transformer, with a new linear score head.

    Returns the architecture's ``...ForSequenceClassification`` with ``num_labels=1``
    (e.g. ``LlamaForSequenceClassification``) on the same device, in eval mode; the
    causal LM is left untouched and ``seed`` fixes the head's initial weights.
    """
    return _with_scalar_head(causal_lm, AutoModelForSequenceClassification, seed)


def _with_scalar_head(causal_lm: PreTrainedModel, auto_class: type, seed: int) -> PreTrainedModel:
    """``auto_class`` (a sequence or token classifier, ``num_labels=1``) on a copy of ``causal_lm``'s transformer."""
    check_causal_lm(causal_lm, "causal_lm")  # a reward model is refused: a second head on it would score nothing
    config = copy.deepcopy(causal_lm.config)
    config.num_labels = 1
    # The model is built on the CPU, so only the CPU generator is seeded: torch.manual_seed would reseed every GPU too.
    with torch.random.fork_rng(devices=[]):  # pragma: no mutate (without a GPU, None forks the same generators)
        torch.default_generator.manual_seed(shifted_seed(seed))
        model = auto_class.from_config(config)
    model.base_model.load_state_dict(causal_lm.base_model.state_dict())
    return model.to(causal_lm.device).eval()  # pragma: no mutate (one device in tests: .to is the identity)


def check_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise ValueError unless ``model`` gives one score per sequence and can find each row's last token."""
    if not type(model).__name__.endswith("ForSequenceClassification") or model.config.num_labels != 1:
        raise ValueError(
            f"{type(model).__name__} with num_labels={model.config.num_labels} is not a reward model: build one "
            "with reward_model_from(causal_lm), or from_pretrained(path, num_labels=1) on a sequence classifier"
        )
    if model.config.pad_token_id is None:
        raise ValueError(
            "model.config.pad_token_id is not set, so the model cannot find the last real token of a padded "
            "row: set model.config.pad_token_id = tokenizer.pad_token_id"
        )
    if model.config.pad_token_id != tokenizer.pad_token_id:
        raise ValueError(
            f"model.config.pad_token_id is {model.config.pad_token_id} but the tokenizer pads with "
            f"{tokenizer.pad_token_id}: set model.config.pad_token_id = tokenizer.pad_token_id"
        )
    check_tokenizer_fits(model, tokenizer)


def sequence_rewards(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """r_θ(y | x) for each row of a padded batch: the score head at its last non-padding token, (B,).

    Positions come from the mask, so a row scores the same on either padding side.
    """
    logits = model(  # pragma: no mutate (dropping use_cache changes no logit; other drops match = None, tested)
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,  # pragma: no mutate (a cache is never read: it changes no logit)
    ).logits  # (B, 1)
    return logits[..., 0].float()  # (B,)


def batch_rewards(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`sequence_rewards` of a padded batch dict, (B,): the ``score_fn`` that ``score_rows`` takes."""
    return sequence_rewards(model, batch["input_ids"], batch["attention_mask"])


def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Messages],
    completions: Sequence[str | Messages],
    batch_size: int = SCORING_BATCH_SIZE,
) -> torch.Tensor:
    """r_θ(y | x) for each (prompt, completion), strings or message lists: a (N,) float tensor on the CPU.

    :func:`~rlhf_edu.core.scoring.score_rows` runs the model without gradients, in eval
    mode, on length-sorted right-padded batches, so a completion's score does not depend
    on what it is batched with.
    """
    check_texts(prompts, "prompts", allow_empty=True)
    check_texts(completions, "completions", allow_empty=True)
    check_same_length(prompts, completions, "prompts", "completions")
    check_reward_model(model, tokenizer)
    return score_completions(model, tokenizer, prompts, completions, batch_rewards, batch_size)


def reward_function(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """The reward model as a ``reward_fn(prompts, completions) -> list[float]``, what an RL trainer calls."""
    check_reward_model(model, tokenizer)
    return lambda prompts, completions: score(model, tokenizer, prompts, completions).tolist()


def score_pairs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, batch_size: int = SCORING_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen_rewards, rejected_rewards)``, each (N,), for a prompt/chosen/rejected dataset."""
    prompts, chosen, rejected = pair_texts(dataset)
    return (
        score(model, tokenizer, prompts, chosen, batch_size),
        score(model, tokenizer, prompts, rejected, batch_size),
    )


# --- training: the shared loop plus a pairwise loss ------------------------------------
@dataclass
class RewardConfig(TrainingConfig):
    """Reward-model training settings; the extra fields keep TRL's ``RewardConfig`` names.

    ``margin`` is one m for every pair (eq:rewardmodelingmargin); a dataset column
    ``margin`` gives each pair its own, as in TRL and Llama 2. ``group_by_length``
    batches pairs of similar length together (:func:`~rlhf_edu.core.preferences.pair_loader`), which cuts the
    compute spent on padding; it is off by default, so batches are plain random ones.
    """

    learning_rate: float = 1e-3
    batch_size: int = 32
    num_epochs: int = 1  # the book: one epoch is the norm, more overfits the pairs
    center_rewards_coefficient: float | None = None  # e.g. 0.01
    margin: float | None = None
    group_by_length: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.center_rewards_coefficient is not None:
            check_number(
                self.center_rewards_coefficient,
                "center_rewards_coefficient",
                low=0,
                fix="the centering term's weight, e.g. 0.01, or None to switch centering off",
            )
        if self.margin is not None:
            check_number(self.margin, "margin", low=0, fix="the gap m the chosen answer must win by, or None")
        check_flag(self.group_by_length, "group_by_length")


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """TRL's reward-model metrics of a batch of pairs.

    ``accuracy`` is the share of pairs with r_c > r_r, ``margin`` the mean r_c − r_r, and
    ``min_reward``, ``mean_reward`` and ``max_reward`` range over both answers.
    """
    rewards = torch.cat([chosen_rewards, rejected_rewards]).detach()  # (2B,)
    return {
        "accuracy": pairwise_accuracy(chosen_rewards, rejected_rewards),
        "margin": (chosen_rewards - rejected_rewards).mean().item(),
        "min_reward": rewards.min().item(),
        "mean_reward": rewards.mean().item(),
        "max_reward": rewards.max().item(),
    }


def reward_modeling_loss(
    model: PreTrainedModel, batch: Batch, center_rewards_coefficient: float | None = None, margin: float | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean Bradley-Terry loss of a :func:`collate_pairs` batch (eq:rewardmodeling1), and :func:`reward_metrics`.

    A per-pair ``batch["margin"]`` (eq:rewardmodelingmargin) is used when the batch has one, else ``margin``.
    """
    rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"])  # (2B,)
    chosen_rewards, rejected_rewards = rewards.chunk(2)  # (B,) each
    losses = bradley_terry_loss(chosen_rewards, rejected_rewards, batch.get("margin", margin))  # (B,)
    if center_rewards_coefficient:
        losses = losses + reward_centering(chosen_rewards, rejected_rewards, center_rewards_coefficient)
    return losses.mean(), reward_metrics(chosen_rewards, rejected_rewards)


def train_reward_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, config: RewardConfig
) -> History:
    """Fit r_θ to a prompt/chosen/rejected dataset with the Bradley-Terry loss; return the :class:`History`.

    Each step logs ``loss``, ``accuracy``, ``margin`` and ``min/mean/max_reward`` (TRL's names).
    """
    check_reward_model(model, tokenizer)
    rows = encode_pairs(tokenizer, dataset, context_length(model, config.max_length))
    if config.margin is not None and "margin" in rows[0]:
        raise ValueError("config.margin and the dataset's 'margin' column are both set: keep one of them")
    loader = pair_loader(rows, tokenizer.pad_token_id, config)
    loss_fn = partial(
        reward_modeling_loss, model, center_rewards_coefficient=config.center_rewards_coefficient, margin=config.margin
    )
    return train(model, loss_fn, loader, config, desc="reward model")


def accuracy_vs_pairs(
    causal_lm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    train_pairs: Dataset,
    test_pairs: Dataset,
    sizes: Sequence[int],
    config: RewardConfig,
) -> dict[str, list[float]]:
    """Train a fresh reward model on the first n pairs for each n in ``sizes``; return its held-out metrics.

    Returns ``num_pairs`` and one list per :func:`evaluate_reward_model` metric, in the order of ``sizes``.
    """
    curve = {"num_pairs": list(sizes)}
    for n in sizes:
        model = reward_model_from(causal_lm, seed=config.seed)
        train_reward_model(model, tokenizer, train_pairs.select(range(n)), config)
        for name, value in evaluate_reward_model(model, tokenizer, world, test_pairs).items():
            curve.setdefault(name, []).append(value)
    return curve


# --- measured against the world ----------------------------------------------------------
def calibration_table(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, num_bins: int = 10
) -> dict[str, torch.Tensor]:
    """Predicted P(y_c ≻ y_r) against how often that answer won, in ``num_bins`` equal bins (a reliability diagram).

    Each labelled pair counts in both orders, (σ(Δ), won) and (σ(−Δ), lost), so the
    table does not depend on which answer is listed first. Returns, for the bins
    that hold any comparison, ``predicted`` (mean predicted probability),
    ``observed`` (share won) and ``count``. Calibrated means observed ≈ predicted.
    """
    check_int(num_bins, "num_bins", fix="the number of equal-width bins of predicted probability, e.g. 10")
    check_scored_pairs(chosen_rewards, rejected_rewards)
    p = preference_probability(chosen_rewards, rejected_rewards).double()  # (N,)
    predicted = torch.cat([p, 1 - p])  # (2N,)
    won = torch.cat([torch.ones_like(p), torch.zeros_like(p)])  # (2N,)
    bins = (predicted * num_bins).long().clamp(max=num_bins - 1)  # (2N,)
    count = torch.bincount(bins, minlength=num_bins)  # (num_bins,)
    keep = count > 0
    return {
        "predicted": (torch.bincount(bins, predicted, num_bins) / count.clamp(min=1))[keep],
        "observed": (torch.bincount(bins, won, num_bins) / count.clamp(min=1))[keep],
        "count": count[keep],
    }


def expected_calibration_error(table: dict[str, torch.Tensor]) -> float:
    """Σ_bins (count / N) · |observed − predicted| of a :func:`calibration_table`: 0 when perfectly calibrated."""
    weights = table["count"] / table["count"].sum()
    return (weights * (table["observed"] - table["predicted"]).abs()).sum().item()


def component_correlations(rewards: torch.Tensor, components: dict[str, Sequence[float]]) -> dict[str, float]:
    """Spearman's ρ between the reward model's scores and each gold component (e.g. ``World.gold_components``)."""
    return {name: spearman_correlation(rewards, values) for name, values in components.items()}


def implied_weights(
    rewards: torch.Tensor, components: dict[str, Sequence[float]], intercept: bool = True
) -> dict[str, float]:
    """Least-squares w_k in r ≈ b + Σ_k w_k c_k: what the reward model pays per unit of each gold component.

    Labels follow σ((g(a) − g(b)) / τ), so a reward model that learned them exactly
    has w_k = GOLD_WEIGHTS[k] / τ, up to a constant per prompt. One intercept b cannot
    absorb constants that differ by prompt; Bradley-Terry identifies only differences, so
    fit those: ``rewards`` r_c − r_r and ``components`` c_k(y_c) − c_k(y_r), one row per
    pair, with ``intercept=False`` (:func:`pair_differences` builds them).
    """
    ones = torch.ones(len(rewards), dtype=torch.float64)  # pragma: no mutate (1 is exact in any dtype; stack promotes)
    columns = [ones] if intercept else []
    columns += [torch.as_tensor(values, dtype=torch.float64) for values in components.values()]
    features = torch.stack(columns, dim=1)  # (N, [1 +] K)
    solution = torch.linalg.lstsq(features, rewards.double().unsqueeze(1)).solution  # ([1 +] K, 1)
    return dict(zip(components, solution[int(intercept) :, 0].tolist()))


def pair_differences(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, world: World, dataset: Dataset
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """r_c − r_r, (N,), and c_k(y_c) − c_k(y_r) per gold component: one row per pair, for :func:`implied_weights`."""
    prompts, chosen, rejected = pair_texts(dataset)
    check_same_length(chosen_rewards, prompts, "rewards", "pairs in the dataset")
    chosen_c, rejected_c = world.gold_components(prompts, chosen), world.gold_components(prompts, rejected)
    return chosen_rewards - rejected_rewards, {k: list(np.subtract(chosen_c[k], rejected_c[k])) for k in chosen_c}


def fact_ranking(
    causal_lm: PreTrainedModel, reward_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> dict[str, float]:
    """How often each model ranks a true fact above a false one, over every :func:`~rlhf_edu.core.world.fact_pairs` row.

    ``lm`` compares log π(y | x) under ``causal_lm``: does the backbone *know* the fact?
    ``rm`` compares r_θ(y | x): does the reward model *pay* for it? Each is a share in
    [0, 1], with 0.5 for chance and a tie counted as wrong.
    """
    prompts, true_answers, false_answers = fact_pairs()
    return {
        "lm": pairwise_accuracy(
            completion_logprobs(causal_lm, tokenizer, prompts, true_answers),
            completion_logprobs(causal_lm, tokenizer, prompts, false_answers),
        ),
        "rm": pairwise_accuracy(
            score(reward_model, tokenizer, prompts, true_answers),
            score(reward_model, tokenizer, prompts, false_answers),
        ),
    }


def sum_knowledge(causal_lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> float:
    """Share of the world's sum prompts whose likeliest answer under ``causal_lm`` is right.

    For each ``add a and b`` it compares log π("a plus b is s" | x) over every s in
    :data:`~rlhf_edu.core.world.NUMBERS` and checks the argmax against a + b: does the backbone
    know the sums a reward model would have to check? 1.0 is all of them.
    """
    pairs = [(a, b) for a in OPERANDS for b in OPERANDS]
    prompts = [f"add {a} and {b}" for a, b in pairs for _ in NUMBERS]
    answers = [f"{a} plus {b} is {s}" for a, b in pairs for s in NUMBERS]
    logps = completion_logprobs(causal_lm, tokenizer, prompts, answers).view(len(pairs), len(NUMBERS))  # (P, S)
    truth = torch.tensor([NUMBERS.index(str(int(a) + int(b))) for a, b in pairs])  # (P,)
    return (logps.argmax(dim=1) == truth).float().mean().item()


def evaluate_reward_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, dataset: Dataset
) -> dict[str, float]:
    """:func:`pair_metrics` of ``model``'s scores on a held-out pair dataset."""
    check_world_columns(dataset)  # before the scoring pass, not after it
    return pair_metrics(*score_pairs(model, tokenizer, dataset), world, dataset)


def evaluate_by_family(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, dataset: Dataset
) -> dict[str, dict[str, float]]:
    """:func:`pair_metrics_by_family` of ``model``'s scores: ``{"arithmetic": {...}, "review": ..., ...}``."""
    check_world_columns(dataset)
    return pair_metrics_by_family(*score_pairs(model, tokenizer, dataset), world, dataset)


WORLD_COLUMNS = ("p_chosen", "gold_chosen", "gold_rejected")  # what the world knows of each pair it labelled


def check_world_columns(dataset: Dataset) -> None:
    """Raise ValueError unless ``dataset`` has the pair columns and the world's :data:`WORLD_COLUMNS`."""
    pair_texts(dataset)  # names a missing prompt, chosen or rejected column
    missing = [name for name in WORLD_COLUMNS if name not in dataset.column_names]
    if missing:
        raise ValueError(
            f"the dataset has no {', '.join(missing)} column: the metrics against the world need the columns "
            "build_preference_dataset writes; for pairs from elsewhere, use pairwise_accuracy(*score_pairs(...))"
        )


def pair_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, world: World, dataset: Dataset
) -> dict[str, float]:
    """Held-out accuracy next to its noise ceiling, and the rank correlation of scores with the gold reward.

    ``chosen_rewards`` and ``rejected_rewards`` (N,) score the dataset's N pairs (:func:`score_pairs`).
    Returns ``accuracy`` (on the dataset's labels), ``expected_accuracy`` (label noise
    averaged out), ``bayes_accuracy`` (the ceiling on these pairs) and ``gold_spearman``.
    """
    prompts, chosen, rejected = pair_texts(dataset)
    check_world_columns(dataset)
    check_same_length(chosen_rewards, prompts, "rewards", "pairs in the dataset")
    return {
        "accuracy": pairwise_accuracy(chosen_rewards, rejected_rewards),
        "expected_accuracy": expected_accuracy(chosen_rewards, rejected_rewards, list(dataset["p_chosen"])),
        "bayes_accuracy": world.bayes_accuracy(prompts, chosen, rejected),
        "gold_spearman": spearman_correlation(
            torch.cat([chosen_rewards, rejected_rewards]), list(dataset["gold_chosen"]) + list(dataset["gold_rejected"])
        ),
    }


def pair_metrics_by_family(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, world: World, dataset: Dataset
) -> dict[str, dict[str, float]]:
    """:func:`pair_metrics` on each prompt family's pairs, in :data:`~rlhf_edu.core.world.FAMILIES` order."""
    families = [parse_prompt(prompt).family for prompt in pair_texts(dataset)[0]]
    results = {}
    for family in FAMILIES:
        rows = [i for i, f in enumerate(families) if f == family]
        if rows:
            results[family] = pair_metrics(chosen_rewards[rows], rejected_rewards[rows], world, dataset.select(rows))
    return results


# --- honest measures: against chance, within a prompt, and where it counts (best-of-n) -----------------
def best_of_n_capture(scores: RewardMatrix, gold: RewardMatrix, ns: Sequence[int]) -> dict[int, float]:
    """For each n ≥ 2, the share of the gold oracle's best-of-n gain that selecting by ``scores`` gets.

    (gold of the scores' pick − gold at n = 1) / (gold of the oracle's pick − gold at n = 1),
    from :func:`~rlhf_edu.core.stats.best_of_n_curve` on (M, N) matrices: 1 is as good as
    the gold reward itself, 0 no better than one random sample, below 0 worse.
    """
    ns = [check_int(n, "n", low=2, fix="at n = 1 there is no choice, so no gain to share") for n in ns]
    picked = best_of_n_curve(scores, gold, [1, *ns])
    oracle = best_of_n_curve(gold, gold, ns)
    return {n: (picked[n] - picked[1]) / (oracle[n] - picked[1]) for n in ns}


def implied_weights_interval(
    rewards: torch.Tensor,
    components: dict[str, Sequence[float]],
    level: float = 0.9,
    num_resamples: int = 200,
    seed: int = 0,
    intercept: bool = True,
) -> dict[str, tuple[float, float]]:
    """A bootstrap interval for each :func:`implied_weights` value: resample the rows, refit, take the quantiles.

    Returns ``{component: (low, high)}`` at ``level``. On :func:`pair_differences` a row is
    a pair, so pairs are what is resampled. Correlated components trade weight between
    them from one resample to the next, so their intervals widen: a wide interval says
    the data cannot tell those components apart, not that the model ignores them.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}: e.g. 0.9 for a 90% interval")
    fits = _bootstrap_weights(rewards, components, num_resamples, seed, intercept)
    low, high = (1 - level) / 2, (1 + level) / 2
    return {name: (float(np.quantile(fits[name], low)), float(np.quantile(fits[name], high))) for name in components}


def implied_weights_stderr(
    rewards: torch.Tensor,
    components: dict[str, Sequence[float]],
    num_resamples: int = 200,
    seed: int = 0,
    intercept: bool = True,
) -> dict[str, float]:
    """The bootstrap standard error of each :func:`implied_weights` value: the spread of the refits.

    The same resamples as :func:`implied_weights_interval` with the same ``seed``; what a
    check cell compares a weight with (e.g. its gold weight, by 3 standard errors).
    """
    fits = _bootstrap_weights(rewards, components, num_resamples, seed, intercept)
    return {name: float(np.std(fits[name], ddof=1)) for name in components}


def _bootstrap_weights(
    rewards: torch.Tensor, components: dict[str, Sequence[float]], num_resamples: int, seed: int, intercept: bool
) -> dict[str, np.ndarray]:
    """``{component: (num_resamples,) refits}``: :func:`implied_weights` on rows resampled with replacement."""
    check_int(num_resamples, "num_resamples", low=2, fix="the number of resamples, e.g. 200")
    rng = numpy_rng(seed)
    values = {name: np.asarray(column, dtype=np.float64) for name, column in components.items()}
    fits = []
    for _ in range(num_resamples):
        rows = torch.as_tensor(rng.integers(len(rewards), size=len(rewards)))  # (N,) with repeats
        fits.append(
            implied_weights(rewards[rows], {name: column[rows.numpy()] for name, column in values.items()}, intercept)
        )
    return {name: np.array([fit[name] for fit in fits]) for name in components}


# --- outcome reward models: correctness at every token, from a verifier's labels ------------------------
def outcome_reward_model_from(causal_lm: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """An outcome reward model (ORM) on a copy of ``causal_lm``'s transformer: one logit w_θ(s_t) per token.

    Returns the architecture's ``...ForTokenClassification`` with ``num_labels=1``, the
    scalar head of :func:`reward_model_from` read at every position instead of the last.
    """
    return _with_scalar_head(causal_lm, AutoModelForTokenClassification, seed)


def token_correctness_logits(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """w_θ(s_t) at every position of a padded batch, (B, T); the probability of correctness is σ(w)."""
    if not type(model).__name__.endswith("ForTokenClassification") or model.config.num_labels != 1:
        raise ValueError(
            f"{type(model).__name__} with num_labels={model.config.num_labels} is not an outcome "
            "reward model: build one with outcome_reward_model_from(causal_lm)"
        )
    return model(  # pragma: no mutate (dropping use_cache changes no logit; other drops match = None, tested)
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=position_ids_from_mask(batch["attention_mask"]),
        use_cache=False,  # pragma: no mutate (a cache is never read: it changes no logit)
    ).logits[..., 0]


def orm_token_loss(logits: torch.Tensor, completion_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of σ(w_t) against each completion's outcome label r at every one of its tokens.

    eq:orm_token_loss: −(1/T) Σ_t [r log p_θ(s_t) + (1 − r) log(1 − p_θ(s_t))] per
    completion of T tokens (prompt and padding masked out), averaged over the batch.
    ``logits`` and ``completion_mask`` are (B, T), ``labels`` (B,) in {0, 1}.
    """
    mask = completion_mask.float()  # (B, T)
    targets = labels.float()[:, None].expand_as(logits)  # (B, T) the outcome, copied onto every token
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, T)
    return masked_mean(bce, mask, dim=1).mean()


def last_completion_logits(logits: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Each row's logit at its last completion token (its closing ``<|end|>``), (B,): the ORM's verdict."""
    last = completion_mask.shape[1] - 1 - completion_mask.flip(1).argmax(1)  # (B,) index of the last 1
    return logits.gather(1, last[:, None]).squeeze(1)


def sampled_answers(
    world: World,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n: int,
    num_generations: int,
    split: str,
    seed: int,
    family: str,
) -> tuple[list[str], list[str]]:
    """``num_generations`` answers of ``policy`` to each of ``n`` sum prompts of ``family``: ``(prompts, completions)``,
    each prompt repeated once per answer: what an outcome or a process reward model is labelled on."""
    check_int(num_generations, "num_generations", fix="answers per prompt, e.g. 4")
    check_choice(family, "family", SUM_FAMILIES)
    prompts = [p for p in world.prompts(n, split=split, family=family) for _ in range(num_generations)]
    return prompts, generate_completions(policy, tokenizer, prompts, seed=seed)


def orm_dataset(
    world: World,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n: int,
    num_generations: int = 4,
    split: str = "train",
    seed: int = 0,
    family: str = "arithmetic",
) -> Dataset:
    """``num_generations`` answers of ``policy`` to each of ``n`` sum prompts, labelled by the world's verifier.

    Returns TRL's unpaired format: conversational ``prompt`` and ``completion`` columns and
    a boolean ``label`` (True where the sum is right, :meth:`World.verifiable_reward`).
    ``family`` is ``"arithmetic"`` (two numbers) or ``"multi_step"`` (three, chapter 14).
    """
    prompts, completions = sampled_answers(world, policy, tokenizer, n, num_generations, split, seed, family)
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in prompts],
            "completion": [[{"role": "assistant", "content": c}] for c in completions],
            "label": [r == 1.0 for r in world.verifiable_reward(prompts, completions)],
        }
    )


def orm_loss(model: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`orm_token_loss` of a batch, and the ``accuracy`` of its verdict at the last token."""
    logits = token_correctness_logits(model, batch)  # (B, T)
    verdict = last_completion_logits(logits, batch["completion_mask"]) > 0  # (B,) σ(w) > 1/2
    return (
        orm_token_loss(logits, batch["completion_mask"], batch["label"]),
        {"accuracy": (verdict == batch["label"].bool()).float().mean().item()},
    )


def train_outcome_reward_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, config: TrainingConfig
) -> History:
    """Train an ORM on a prompt/completion/label dataset (:func:`orm_dataset`) with the shared loop."""
    missing = {"prompt", "completion", "label"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"the dataset lacks the column(s) {sorted(missing)}: build it with orm_dataset, or give "
            "it TRL's unpaired prompt/completion/label columns"
        )
    rows = [
        encode_prompt_completion(tokenizer, row["prompt"], row["completion"]) | {"label": float(row["label"])}
        for row in dataset
    ]
    loader = make_loader(rows, partial(pad_batch, pad_token_id=tokenizer.pad_token_id), config)
    return train(model, partial(orm_loss, model), loader, config, desc="outcome reward model")


def correctness_probability(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str]
) -> torch.Tensor:
    """The ORM's probability that each completion is correct, σ(w) at its last token: a (N,) tensor on the CPU."""
    check_texts(prompts, "prompts")
    check_same_length(prompts, completions, "prompts", "completions")
    return torch.sigmoid(score_completions(model, tokenizer, prompts, completions, orm_verdict_logits))


def orm_verdict_logits(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """The ORM's logit at each row's last completion token, (B,): the ``score_fn`` that ``score_rows`` takes."""
    return last_completion_logits(token_correctness_logits(model, batch), batch["completion_mask"])


# --- process reward models: correctness at every step, from a step checker's labels ----------------------
# A process reward model (PRM; Lightman et al. 2023, "Let's verify step by step") is the ORM's architecture,
# built the same way (outcome_reward_model_from: one logit per token), trained on other labels: one per step
# of a reasoning chain, read at the token that ends the step, instead of one per answer copied onto every token.
PRM_AGGREGATES = ("min", "product", "last")  # how prm_score turns step probabilities into one score
PRM_COLUMNS = ("prompt", "completions", "labels")  # TRL's stepwise format, as its PRMTrainer reads it


def prm_dataset(
    world: World,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n: int,
    num_generations: int = 4,
    split: str = "train",
    seed: int = 0,
    family: str = MULTI_STEP,
) -> Dataset:
    """``num_generations`` answers of ``policy`` to each of ``n`` sum prompts, each step labelled by the world.

    Returns TRL's stepwise format: a conversational ``prompt`` (as :func:`orm_dataset`),
    ``completions``, the answer's steps (:func:`~rlhf_edu.core.world.split_steps`), and
    ``labels``, one bool per step (:func:`~rlhf_edu.core.world.step_labels`).
    """
    prompts, completions = sampled_answers(world, policy, tokenizer, n, num_generations, split, seed, family)
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in prompts],
            "completions": [split_steps(c) for c in completions],
            "labels": [step_labels(p, c) for p, c in zip(prompts, completions)],
        }
    )


def encode_steps(
    tokenizer: PreTrainedTokenizerBase, prompt: str | Messages, steps: Sequence[str]
) -> tuple[dict[str, list[int]], list[int]]:
    """The chat-formatted prompt + steps joined by " . ", and the index of the token that ends each step.

    Returns ``(row, ends)``: ``row`` as :func:`~rlhf_edu.core.collate.encode_prompt_completion`
    encodes it, ``ends`` one token index per step. A step ends at the separator "." after
    it, and the last step at the closing end-of-turn token, the token the ORM reads. Why
    there: it is the first token at which the step is whole, so a causal model's logit
    there has read all of it, result included, and at sampling time it is the token that
    says "this step is done" (a number's last token cannot: "1" may go on to "12" under
    another tokenizer). It is where TRL's PRMTrainer puts a step's label too: on the
    step separator it appends to each step. The separator is located by its characters
    (the tokenizer's offsets), so this holds for any fast tokenizer.
    """
    if isinstance(steps, str) or not all(isinstance(step, str) for step in steps):
        raise TypeError(f"steps must be a list of step texts, got {steps!r}: e.g. ['3 plus 5 is 8', '8 plus 4 is 12']")
    if not steps:
        raise ValueError("steps is empty: a PRM reads at least one step (an empty answer is one empty step, [''])")
    completion = f" {STEP_SEPARATOR} ".join(steps)
    row = encode_prompt_completion(tokenizer, prompt, completion, allow_empty_completion=True)
    messages = as_messages(prompt, "user")
    prompt_text = render_chat(tokenizer, messages, add_generation_prompt=True, tokenize=False)
    text = render_chat(tokenizer, messages + as_messages(completion, "assistant", allow_empty=True), tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"] != row["input_ids"]:
        raise ValueError(
            "this tokenizer encodes the rendered chat differently from its chat template, so the steps "
            "cannot be located: use a fast tokenizer whose template tokenizes its own text"
        )
    start = text.index(completion, len(prompt_text))  # where the answer's characters begin
    separators, at = [], start
    for step in steps[:-1]:
        at += len(step) + 1  # past the step and the space before its "."
        separators.append(at)
        at += len(STEP_SEPARATOR) + 1
    ends = [_token_at(encoded["offset_mapping"], char) for char in separators]
    last = len(row["completion_mask"]) - 1  # the closing end-of-turn token, as last_completion_logits reads it
    return row, [*ends, last]


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """The index of the token whose characters hold ``char``."""
    return next(i for i, (begin, end) in enumerate(offsets) if begin <= char < end)


def prm_step_loss(logits: torch.Tensor, step_end_mask: torch.Tensor, step_labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of σ(w) at the last token of each step against that step's label, averaged over steps.

    eq:prm_loss: −(1/S) Σ_s [c_s log σ(w_θ(s_{t_s})) + (1 − c_s) log(1 − σ(w_θ(s_{t_s})))], over the
    S steps of the batch, where t_s is step s's end token (:func:`encode_steps`) and c_s ∈ {0, 1}
    its label. Every step weighs the same, as in TRL's PRMTrainer, so an answer with more
    steps weighs more. ``logits``, ``step_end_mask`` (1 at each step's end) and
    ``step_labels`` (the label at each end; other positions are not read) are all (B, T).
    Returns the scalar loss.
    """
    if not logits.shape == step_end_mask.shape == step_labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, step_end_mask {tuple(step_end_mask.shape)} and step_labels "
            f"{tuple(step_labels.shape)} must all be (B, T): one value per token"
        )
    ends = step_end_mask.bool()  # (B, T)
    if not ends.any():
        raise ValueError("step_end_mask marks no step end: mark each step's last token with a 1 (see encode_steps)")
    return F.binary_cross_entropy_with_logits(logits[ends], step_labels[ends].float())  # mean over the (S,) steps


def prm_loss(model: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`prm_step_loss` of a batch, and its ``step_accuracy``: the share of steps where σ(w) > 1/2 iff right."""
    logits = token_correctness_logits(model, batch)  # (B, T)
    ends = batch["step_end_mask"].bool()  # (B, T)
    verdicts = logits[ends] > 0  # (S,)
    return (
        prm_step_loss(logits, batch["step_end_mask"], batch["step_labels"]),
        {"step_accuracy": (verdicts == batch["step_labels"][ends].bool()).float().mean().item()},
    )


def _prm_row(tokenizer: PreTrainedTokenizerBase, row: dict, index: int) -> dict[str, list]:
    """One stepwise dataset row encoded, with its step ends and labels laid out on its tokens."""
    steps, labels = row["completions"], row["labels"]
    if isinstance(labels, (str, bool)) or len(labels) != len(steps):
        raise ValueError(
            f"row {index} has labels {labels!r} for {len(steps)} step(s): give labels one bool per "
            "step of completions (step_labels(prompt, completion) computes them)"
        )
    encoded, ends = encode_steps(tokenizer, row["prompt"], steps)
    end_mask, end_labels = [0] * len(encoded["input_ids"]), [0.0] * len(encoded["input_ids"])
    for end, label in zip(ends, labels):
        end_mask[end], end_labels[end] = 1, float(label)
    return encoded | {"step_end_mask": end_mask, "step_labels": end_labels}


def pad_step_batch(rows: Sequence[dict[str, list]], pad_token_id: int) -> Batch:
    """:func:`~rlhf_edu.core.collate.pad_batch`, plus the rows' ``step_end_mask`` and ``step_labels``, each (B, T)."""
    batch = pad_batch(rows, pad_token_id)  # (B, T) ids and masks; it leaves per-token lists out
    T = batch["input_ids"].shape[1]
    for key in ("step_end_mask", "step_labels"):
        batch[key] = torch.tensor([row[key] + [0] * (T - len(row[key])) for row in rows], dtype=torch.float)  # (B, T)
    return batch


def train_process_reward_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, config: TrainingConfig
) -> History:
    """Train a PRM (built with :func:`outcome_reward_model_from`) on a stepwise dataset (:func:`prm_dataset`).

    The shared loop with :func:`prm_loss`; the :class:`History` logs ``loss`` and ``step_accuracy``.
    """
    missing = set(PRM_COLUMNS) - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"the dataset lacks the column(s) {sorted(missing)}: build it with prm_dataset, or give it "
            "TRL's stepwise prompt/completions/labels columns"
        )
    rows = [_prm_row(tokenizer, row, i) for i, row in enumerate(dataset)]
    loader = make_loader(rows, partial(pad_step_batch, pad_token_id=tokenizer.pad_token_id), config)
    return train(model, partial(prm_loss, model), loader, config, desc="process reward model")


def step_correctness_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Messages],
    completions: Sequence[str | Messages],
) -> list[list[float]]:
    """The PRM's probability that each step of each completion is right: σ(w) at each step's end, a list per completion.

    A completion is read as its steps (:func:`~rlhf_edu.core.world.split_steps`), so an
    empty answer is one empty step.
    """
    check_texts(prompts, "prompts")
    check_same_length(prompts, completions, "prompts", "completions")
    rows, counts = [], []
    for prompt, completion in zip(prompts, completions):
        row, ends = encode_steps(tokenizer, prompt, split_steps(completion))
        # One row per step, each naming the token to read: score_rows keeps one value per row, and
        # reusing it (batching by length, eval mode, no gradients) costs one pass per step (1 to 3 here).
        rows += [row | {"step_end": end} for end in ends]
        counts.append(len(ends))
    probabilities = torch.sigmoid(score_rows(model, rows, tokenizer.pad_token_id, _step_end_logits)).tolist()
    starts = np.cumsum([0, *counts])
    return [probabilities[a:b] for a, b in zip(starts[:-1], starts[1:])]


def _step_end_logits(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """The PRM's logit at each row's ``step_end`` token, (B,): the ``score_fn`` that ``score_rows`` takes."""
    logits = token_correctness_logits(model, batch)  # (B, T)
    return logits.gather(1, batch["step_end"][:, None]).squeeze(1)


def prm_score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Messages],
    completions: Sequence[str | Messages],
    aggregate: str = "min",
) -> torch.Tensor:
    """One score per completion from its step probabilities, (N,) on the CPU: what a best-of-k with a PRM ranks by.

    ``"min"`` (the default) is the weakest step's probability, ``"product"`` the chance that
    every step is right if the PRM's errors were independent, ``"last"`` the final step's.
    Lightman et al. (2023) score a solution by the product or the minimum; the minimum is
    the default here because a chain is as good as its weakest link (one wrong partial sum
    spoils the total, however sure the other steps are), and unlike the product it does
    not punish an answer for having more steps: the direct and the stepwise formats
    compete on equal terms.
    """
    check_choice(aggregate, "aggregate", PRM_AGGREGATES)
    reduce = {"min": min, "product": math.prod, "last": lambda values: values[-1]}[aggregate]
    probabilities = step_correctness_probabilities(model, tokenizer, prompts, completions)
    return torch.tensor([reduce(values) for values in probabilities])
