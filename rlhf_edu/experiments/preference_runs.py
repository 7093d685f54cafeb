"""The runs of notebooks 05 and 06: chapter 6's labels, a reward model trained on them (chapter 7), and a policy
optimised against it (best-of-n, chapter 10; RLOO, chapter 11).

Each run is the chapters' own functions with fixed settings, so the notebook's live run and the shipped sweep
(``rlhf-edu sweep preferences``) are the same computation at other seeds or settings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from datasets import Dataset
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core.rollouts import Rollout, sample_rollouts
from ..core.stats import best_of_n_per_prompt, mean_and_stderr
from ..core.world import World
from ..policy_gradients import PolicyGradientConfig, train_policy_gradient
from ..preference_data import Annotator, Labeller, best_of_n_gains, relabel, two_groups, word_counts
from ..reward_modeling import RewardConfig, reward_function, reward_model_from, score, train_reward_model
from .recipes import SWEEPS

REWARD_MODEL = {"learning_rate": 1e-3, "batch_size": 32, "num_epochs": 1, "warmup_ratio": 0.05}  # notebook 07's live
POOLED_EPOCHS = 2  # a pooled population's labels: half of them are noise to what the other half prefers
LENGTH_RL = {  # notebook 11's RLOO against a reward model, a little shorter
    "algorithm": "rloo",
    "learning_rate": 1e-3,
    "batch_size": 16,
    "num_generations": 4,
    "num_steps": 20,
    "beta": 0.05,
}
BEST_OF = 16  # answers per held-out prompt that best-of-n picks from
POLICY_SAMPLES = 4  # answers per held-out prompt that measure a trained policy
EVAL_PROMPTS = 128  # held-out prompts
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the warm group's share, notebook 05's slider
LENGTH_BIASES = (0.0, 0.1, 0.2, 0.4, 0.8)  # λ in gold units per word, notebook 06's slider
SEEDS = (0, 1, 2)
MEASURES = ("words", "gold", "concision")  # what answer_measures returns for each answer


def train_on_labels(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Dataset,
    labeller: Labeller,
    seed: int = 0,
    num_epochs: int = REWARD_MODEL["num_epochs"],
) -> PreTrainedModel:
    """A reward model on ``sft``'s backbone, trained with chapter 7's trainer (:data:`REWARD_MODEL`) on ``pairs`` as
    ``labeller`` labels them again (:func:`~rlhf_edu.preference_data.relabel`)."""
    model = reward_model_from(sft, seed=seed)
    config = RewardConfig(**REWARD_MODEL | {"num_epochs": num_epochs}, seed=seed, progress=False)
    train_reward_model(model, tokenizer, relabel(pairs, labeller, seed=seed), config)
    return model


def held_out_sample(
    world: World, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int = 1
) -> Rollout:
    """:data:`BEST_OF` answers of ``policy`` to each of :data:`EVAL_PROMPTS` held-out prompts."""
    return sample_rollouts(policy, tokenizer, world.prompts(EVAL_PROMPTS, split="test"), BEST_OF, seed=seed)


def answer_measures(world: World, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, np.ndarray]:
    """Each answer's ``words``, ``gold`` reward and gold ``concision`` term: three (N,) arrays."""
    return {
        "words": word_counts(completions),
        "gold": np.array(world.gold_reward(list(prompts), list(completions))),
        "concision": np.array(world.gold_components(prompts, completions)["concision"]),
    }


def best_of_n_measures(
    world: World, reward_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sample: Rollout
) -> dict[str, np.ndarray]:
    """:func:`answer_measures` of best-of-:data:`BEST_OF` picked by ``reward_model``, per prompt: (M,) each."""
    shape = (len(sample.completions) // BEST_OF, BEST_OF)
    scores = score(reward_model, tokenizer, sample.prompts, sample.completions).numpy().reshape(shape)  # (M, N)
    measures = answer_measures(world, sample.prompts, sample.completions)
    return {name: best_of_n_per_prompt(scores, values.reshape(shape), BEST_OF) for name, values in measures.items()}


def rl_against(
    sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, reward_model: PreTrainedModel, seed: int
) -> PreTrainedModel:
    """A copy of ``sft`` trained with :data:`LENGTH_RL` against ``reward_model``; returns the policy."""
    policy = copy.deepcopy(sft)
    config = PolicyGradientConfig(**LENGTH_RL, seed=seed, progress=False)
    prompts = world.prompts(LENGTH_RL["batch_size"] * LENGTH_RL["num_steps"])
    train_policy_gradient(policy, tokenizer, prompts, reward_function(reward_model, tokenizer), config)
    return policy


def policy_sample(world: World, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int = 3) -> Rollout:
    """:data:`POLICY_SAMPLES` answers of ``policy`` to each of the :data:`EVAL_PROMPTS` held-out prompts."""
    return sample_rollouts(policy, tokenizer, world.prompts(EVAL_PROMPTS, split="test"), POLICY_SAMPLES, seed=seed)


def policy_measures(
    world: World, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int = 3
) -> dict[str, np.ndarray]:
    """:func:`answer_measures` of :func:`policy_sample`, as (M, :data:`POLICY_SAMPLES`) arrays."""
    sample = policy_sample(world, policy, tokenizer, seed)
    measures = answer_measures(world, sample.prompts, sample.completions)
    return {k: v.reshape(-1, POLICY_SAMPLES) for k, v in measures.items()}


def share_runs(
    sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, pairs: Dataset, sample: Rollout, seed: int
) -> dict[str, dict[str, list[float]]]:
    """For each warm share in :data:`SHARES`: each group's best-of-n gain under the pooled reward model (trained for
    :data:`POOLED_EPOCHS`), per prompt."""
    shape = (len(sample.completions) // BEST_OF, BEST_OF)
    results = {}
    for share in SHARES:
        population = two_groups(share)
        model = train_on_labels(sft, tokenizer, pairs, population, seed, num_epochs=POOLED_EPOCHS)
        scores = score(model, tokenizer, sample.prompts, sample.completions).numpy().reshape(shape)  # (M, N)
        golds = population.gold(sample.prompts, sample.completions)
        golds = {name: gold.reshape(shape) for name, gold in golds.items()}
        results[str(share)] = {name: gains.tolist() for name, gains in best_of_n_gains(scores, golds, BEST_OF).items()}
    return results


def length_bias_runs(
    sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, pairs: Dataset, sample: Rollout, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """For each λ in :data:`LENGTH_BIASES`: the mean words, gold and concision of best-of-n and of RL against a
    reward model trained on λ-biased labels."""
    results = {}
    for bias in LENGTH_BIASES:
        model = train_on_labels(sft, tokenizer, pairs, Annotator(length_bias=bias), seed)
        policy = rl_against(sft, tokenizer, world, model, seed)
        results[str(bias)] = {
            "best_of_n": {k: float(v.mean()) for k, v in best_of_n_measures(world, model, tokenizer, sample).items()},
            "rl": {k: float(v.mean()) for k, v in policy_measures(world, policy, tokenizer).items()},
        }
    return results


# --- the shipped sweep, read back for the notebooks' sliders -------------------------------------------------------
SWEEP_PATH = SWEEPS / "preferences.json"


def load_sweep(path: str | Path = SWEEP_PATH) -> dict:
    """The sweep :func:`~rlhf_edu.experiments.recipes.preferences_sweep` wrote: its settings and every seed's runs."""
    return json.loads(Path(path).read_text())


def share_gains(sweep: dict) -> dict[str, np.ndarray]:
    """Each group's mean best-of-n gain under the pooled reward model: ``{group: (seeds, shares)}``."""
    shares, seeds = sweep["settings"]["shares"], list(sweep["seeds"].values())
    groups = seeds[0]["shares"][str(shares[0])]
    return {g: np.array([[np.mean(s["shares"][str(x)][g]) for x in shares] for s in seeds]) for g in groups}


def length_curves(sweep: dict) -> dict[str, dict[str, np.ndarray]]:
    """Words, gold and concision after best-of-n and after RL, per seed and λ: ``{method: {measure: (seeds, λs)}}``."""
    biases, seeds = sweep["settings"]["length_biases"], list(sweep["seeds"].values())
    return {
        method: {k: np.array([[s["length_bias"][str(b)][method][k] for b in biases] for s in seeds]) for k in MEASURES}
        for method in ("best_of_n", "rl")
    }


def _errorbar(ax: Axes, x: Sequence[float], values: np.ndarray, label: str) -> None:
    """Mean over seeds (rows) of each column, ± one standard error."""
    means, stderrs = zip(*(mean_and_stderr(column) for column in values.T))
    ax.errorbar(x, means, yerr=stderrs, marker="o", capsize=3, label=label)


def plot_share_sweep(gains: dict[str, np.ndarray], shares: Sequence[float], warm_share: float) -> Figure:
    """Each group's best-of-n gain against warm's share, mean ± se over the seeds, a line at ``warm_share``."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for name, values in gains.items():
        _errorbar(ax, shares, values, f"{name}'s gold gain")
    ax.axvline(warm_share, color="grey", linestyle=":")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(xlabel="warm's share of the annotators", ylabel=f"best-of-{BEST_OF} gain")
    ax.legend(fontsize=8)
    return fig


def plot_length_sweep(curves: dict[str, dict[str, np.ndarray]], biases: Sequence[float], bias: float) -> Figure:
    """Words, gold and concision against λ, after best-of-n and after RL, mean ± se over the seeds."""
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(13, 3.2))
    for ax, measure in zip(axes, MEASURES):
        for method, label in (("best_of_n", f"best-of-{BEST_OF}"), ("rl", f"RLOO, {LENGTH_RL['num_steps']} steps")):
            _errorbar(ax, biases, curves[method][measure], label)
        ax.axvline(bias, color="grey", linestyle=":")
        ax.set(xlabel="λ (gold units per word)", ylabel=measure)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
