"""The runs of notebook 13: labels from a person or a model, DPO trained on each (RLAIF), and SFT on a constitution's
revisions.

Each run is the chapters' own functions with fixed settings (chapter 12's DPO, chapter 9's SFT), so the notebook's
live run and the shipped sweep (``rlhf-edu sweep ai-feedback``) are the same computation at other seeds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from datasets import Dataset
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import ai_feedback as af
from ..constitution import revise_all
from ..core.evaluation import PolicyEvaluation, evaluate_policy
from ..core.preferences import encode_pairs, pair_texts
from ..core.rollouts import sample_rollouts
from ..core.runtime import numpy_rng
from ..core.stats import difference_stderr, mean_and_stderr
from ..core.world import World
from ..direct_alignment import DPOConfig, train_dpo, with_reference_logprobs
from ..instruction_tuning import SFTConfig, train_sft
from ..reward_modeling import score
from .recipes import SWEEPS

RLAIF_PAIRS = 500  # fresh pairs of sft's answers that each labeller labels
RLAIF_DPO = {  # notebook 12's DPO run
    "beta": 0.1,
    "learning_rate": 5e-4,
    "warmup_ratio": 0.1,
    "lr_scheduler_type": "linear",
    "batch_size": 32,
    "num_epochs": 1,
}
LABELLERS = ("annotator", "rm", "judge")  # who labels the pairs: a person-equivalent, or one of two models
JUDGE_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the judge's share of the labels, the rest the annotator's: the slider
EVAL_PROMPTS = 256  # held-out prompts each trained policy answers
CONSTITUTION_ROWS = 512  # answers each SFT run of section 5 trains on
CONSTITUTION_SFT = {"learning_rate": 1e-3, "batch_size": 32, "num_epochs": 2, "warmup_ratio": 0.1}
SFT_SETS = ("sft samples", "revised samples", "demonstrations")
SEEDS = (0, 1, 2)
PAIR_SEED = 100  # seed s samples its fresh pairs at PAIR_SEED + 10·s: its two answers use that seed and the next


def pair_seed(seed: int) -> int:
    """The sampling seed of seed ``seed``'s fresh pairs, spaced so no two seeds share an answer."""
    return PAIR_SEED + 10 * seed


def pooled(values: Sequence[float], stderrs: Sequence[float]) -> tuple[float, float]:
    """The mean of per-seed estimates and the larger of two standard errors: each run's own, √Σse²/S, and the
    spread between the seeds, s/√S. The first misses what varies from seed to seed (the pairs, the training);
    the second is unreliable with three seeds; a claim must hold against both."""
    values = np.asarray(values, dtype=float)
    within = difference_stderr(*stderrs) / len(values)
    return float(values.mean()), max(within, mean_and_stderr(values)[1])


def pooled_over_seeds(sweep: dict, per_seed: Callable[[dict], tuple[float, float]]) -> tuple[float, float]:
    """``per_seed(run)``, a (mean, se) from one seed's runs, pooled over the sweep's seeds with :func:`pooled`."""
    values = [per_seed(run) for run in sweep["seeds"].values()]
    return pooled([v[0] for v in values], [v[1] for v in values])


# --- RLAIF ----------------------------------------------------------------------------------------------------------
def model_labels(
    labeller: str,
    pairs: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    rm: PreTrainedModel | None = None,
    judge: PreTrainedModel | None = None,
) -> np.ndarray:
    """1 where the model prefers a pair's first answer: ``rm``'s higher score, or ``judge``'s margin averaged
    over both orders (:func:`~rlhf_edu.ai_feedback.debiased_margins`). (N,) ints."""
    prompts, a, b = pair_texts(pairs)
    if labeller == "rm":
        return (score(rm, tokenizer, prompts, a) > score(rm, tokenizer, prompts, b)).long().numpy()
    margins_ab = af.judge_margins(judge, tokenizer, prompts, a, b)
    margins_ba = af.judge_margins(judge, tokenizer, prompts, b, a)
    return af.judge_verdicts(af.debiased_margins(margins_ab, margins_ba))


def labelled_sets(
    world: World,
    pairs: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    rm: PreTrainedModel,
    judge: PreTrainedModel,
    seed: int = 0,
    shares: Sequence[float] = (),
) -> dict[str, Dataset]:
    """The same pairs labelled by each of :data:`LABELLERS`, and by mixes (:func:`share_name`): ``"judge 25%"`` takes
    the judge's label on a random quarter of the pairs and the annotator's on the rest. ``pairs`` come as a
    prompt/chosen/rejected dataset whose order of the two answers is used as (a, b)."""
    prompts, a, b = pair_texts(pairs)
    labels = {
        "annotator": af.annotator_labels(world, prompts, a, b, seed),
        "rm": model_labels("rm", pairs, tokenizer, rm=rm),
        "judge": model_labels("judge", pairs, tokenizer, judge=judge),
    }
    order = numpy_rng(seed).permutation(len(prompts))  # which pairs go to the judge first, as its share grows
    for share in shares:
        judged = np.zeros(len(prompts), bool)
        judged[order[: round(share * len(prompts))]] = True
        labels[share_name(share)] = np.where(judged, labels["judge"], labels["annotator"])
    return {name: af.ai_labelled_pairs(world, prompts, a, b, values) for name, values in labels.items()}


def share_name(share: float) -> str:
    """The labelled set at the judge's ``share`` of the labels: all the annotator's at 0, all the judge's at 1."""
    return {0.0: "annotator", 1.0: "judge"}.get(float(share), f"judge {share:.0%}")


def train_each(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    sets: dict[str, Dataset],
    eval_prompts: Sequence[str],
    seed: int,
    train: Callable[[PreTrainedModel, Dataset], object],
) -> dict[str, PolicyEvaluation]:
    """``train(policy, dataset)`` on a fresh copy of ``sft`` for each set; each policy sampled with the same seed on
    ``eval_prompts``, so two runs compare prompt by prompt. ``"sft"`` is the start, for the gains."""
    evaluations = {"sft": evaluate_policy(sft, sft, tokenizer, world, eval_prompts, seed)}
    for name, dataset in sets.items():
        policy = copy.deepcopy(sft)
        train(policy, dataset)
        evaluations[name] = evaluate_policy(policy, sft, tokenizer, world, eval_prompts, seed)
    return evaluations


def dpo_on(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    sets: dict[str, Dataset],
    eval_prompts: Sequence[str],
    seed: int = 0,
) -> dict[str, PolicyEvaluation]:
    """Chapter 12's DPO (:data:`RLAIF_DPO`) from ``sft`` on each labelled set, evaluated as :func:`train_each` does;
    the reference log-probs are ``sft``'s, computed once per set."""

    def dpo(policy: PreTrainedModel, pairs: Dataset) -> None:
        encoded = with_reference_logprobs(sft, encode_pairs(tokenizer, pairs), tokenizer.pad_token_id)
        train_dpo(policy, tokenizer, encoded, DPOConfig(**RLAIF_DPO, seed=seed, progress=False))

    return train_each(sft, tokenizer, world, sets, eval_prompts, seed, dpo)


def gains(evaluations: dict[str, PolicyEvaluation]) -> dict[str, dict[str, float]]:
    """Each run's gold gain over ``sft`` (paired per prompt) and KL to it, with standard errors."""
    start = np.asarray(evaluations["sft"].gold_rewards)
    table = {}
    for name, evaluation in evaluations.items():
        if name != "sft":
            gain, gain_se = mean_and_stderr(np.asarray(evaluation.gold_rewards) - start)
            kl, kl_se = mean_and_stderr(evaluation.log_ratios)
            table[name] = {"gain": gain, "gain_se": gain_se, "kl": kl, "kl_se": kl_se}
    return table


# --- a constitution's revisions, then SFT --------------------------------------------------------------------------
def constitution_sets(
    world: World, sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = CONSTITUTION_ROWS, seed: int = 0
) -> dict[str, Dataset]:
    """Three SFT sets on the same ``n`` training prompts: ``sft``'s own answers, the same answers revised by the
    constitution (:func:`~rlhf_edu.constitution.revise_all`), and the world's demonstrations (:data:`SFT_SETS`)."""
    prompts = world.prompts(n)
    samples = sample_rollouts(sft, tokenizer, prompts, seed=seed).completions
    rng = numpy_rng(seed)
    answers = {
        SFT_SETS[0]: samples,
        SFT_SETS[1]: revise_all(prompts, samples),
        SFT_SETS[2]: [world.demonstration(p, rng) for p in prompts],
    }
    return {
        name: Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": p}] for p in prompts],
                "completion": [[{"role": "assistant", "content": c}] for c in texts],
            }
        )
        for name, texts in answers.items()
    }


def sft_on(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    sets: dict[str, Dataset],
    eval_prompts: Sequence[str],
    seed: int = 0,
) -> dict[str, PolicyEvaluation]:
    """Chapter 9's SFT (:data:`CONSTITUTION_SFT`) from ``sft`` on each set, evaluated as :func:`train_each` does."""
    config = SFTConfig(**CONSTITUTION_SFT, seed=seed, progress=False)
    return train_each(
        sft, tokenizer, world, sets, eval_prompts, seed, lambda policy, data: train_sft(policy, tokenizer, data, config)
    )


def component_gains(evaluations: dict[str, PolicyEvaluation]) -> dict[str, dict[str, tuple[float, float]]]:
    """Each run's change in every gold component and in the gold reward over ``sft``: (mean, se), paired per prompt."""
    start = evaluations["sft"]
    table = {}
    for name, evaluation in evaluations.items():
        if name != "sft":
            rows = {k: mean_and_stderr(np.subtract(v, start.components[k])) for k, v in evaluation.components.items()}
            rows["gold"] = mean_and_stderr(np.subtract(evaluation.gold_rewards, start.gold_rewards))
            table[name] = rows
    return table


# --- the sweep and its readers -------------------------------------------------------------------------------------
def seed_runs(
    sft: PreTrainedModel,
    rm: PreTrainedModel,
    judge: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    pairs: Dataset,
    seed: int,
) -> dict:
    """One seed of the sweep: DPO on every labeller's and every share's labels, and SFT on the three sets."""
    eval_prompts = world.prompts(EVAL_PROMPTS, split="test")
    sets = labelled_sets(world, pairs, tokenizer, rm, judge, seed, [s for s in JUDGE_SHARES if 0 < s < 1])
    label_agreement = {name: af.label_agreement(data)[0] for name, data in sets.items()}
    constitution = sft_on(
        sft, tokenizer, world, constitution_sets(world, sft, tokenizer, seed=seed), eval_prompts, seed
    )
    return {
        "label_agreement": label_agreement,
        "dpo": gains(dpo_on(sft, tokenizer, world, sets, eval_prompts, seed)),
        "sft": {name: {k: list(v) for k, v in rows.items()} for name, rows in component_gains(constitution).items()},
    }


def load_sweep(path: str | Path = SWEEPS / "ai_feedback.json") -> dict:
    """The shipped sweep: ``{"settings": ..., "seeds": {seed: seed_runs(...)}}``."""
    return json.loads(Path(path).read_text())


def share_curve(sweep: dict, measure: str = "gain") -> tuple[np.ndarray, np.ndarray]:
    """``measure`` of DPO against the judge's label share: the shares (S,) and one row per seed, (seeds, S)."""
    shares = np.array(sweep["settings"]["judge_shares"])
    values = np.array([[run["dpo"][share_name(s)][measure] for s in shares] for run in sweep["seeds"].values()])
    return shares, values


def plot_share(sweep: dict, share: float) -> Figure:  # pragma: no mutate block, a picture: its values are tested
    """The slider's plot: DPO's gold gain and KL against the judge's share of the labels, each seed a line."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, measure, label in zip(axes, ("gain", "kl"), ("gold gain over sft", "KL(π ‖ sft), nats")):
        shares, values = share_curve(sweep, measure)
        for seed, row in zip(sweep["seeds"], values):
            ax.plot(shares, row, marker="o", alpha=0.6, label=f"seed {seed}")
        ax.axvline(share, color="black", linestyle="--", linewidth=1)
        ax.set(xlabel="the judge's share of the labels", ylabel=label)
    axes[0].legend(fontsize=8)
    plt.tight_layout()
    return fig
