"""The runs of notebook 17: the cures for over-optimization measured with the gold reward, and a planted blind spot.

Per seed, one set of reward models on ``sft``'s pairs (chapter 7's trainer): an ensemble of :data:`MEMBERS` trained on
the same :data:`PAIRS` pairs from different initial seeds (the first member is the single proxy every cure is
compared against), one trained on :data:`BIG_PAIRS` pairs, and a held-out judge trained on other answers to the same
prompts, labelled afresh. A pair's two answers are sampled with the seed and the seed + 1, so neighbouring seeds
share half their answers: their reward models are not quite independent draws. Then:

- best-of-n from ``sft`` (chapter 10) picked by the single model, by every ensemble rule of
  :func:`~rlhf_edu.overoptimization.ensemble_reward` at every K and λ, by the larger-data model and by the gold reward;
- PPO from ``sft`` at β = 0 and a tenth of the RL stage's learning rate (Gao et al.'s set-up, notebook 04b's
  :data:`~rlhf_edu.experiments.recipes.OVEROPTIMIZATION`) against the single model, the ensemble and the larger-data
  model, and at β = :data:`CURE_BETA` against the single model; every evaluation also scores the held-out judge, so
  that early stopping on it can be read off the single model's run;
- the same β = :data:`CURE_BETA` run against the single model with a planted blind spot
  (:func:`~rlhf_edu.overoptimization.blind_spot_reward`), watched by gold-free monitors.

``rlhf-edu sweep overoptimization`` runs every seed; the notebook reads the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core.preferences import build_preference_dataset
from ..core.rollouts import RewardFn
from ..core.stats import best_of_n_per_prompt, difference_stderr, mean_and_stderr
from ..core.world import World
from ..overoptimization import blind_spot_reward, drift_alarm, ensemble_reward, parting_step, word_count
from ..preference_data import word_counts
from ..rejection_sampling import sample_and_score
from ..reward_modeling import (
    HELD_OUT_PAIRS,
    RewardConfig,
    evaluate_reward_model,
    reward_function,
    reward_model_from,
    score,
    train_reward_model,
)
from .feedback_runs import pooled, pooled_over_seeds
from .pipeline import rl_config, rl_stage
from .recipes import OVEROPTIMIZATION, SWEEPS

SEEDS = (0, 1, 2, 3, 4, 5)
PAIRS = 2000  # the tiny preset's preference pairs, as in the pipeline's reward-model stage
BIG_PAIRS = 8000  # the larger-data cure: four times the pairs
MEMBERS = 4  # the ensemble's K at most
LAMBDAS = (0.0, 0.5, 1.0, 2.0)  # mean − λ·std; λ = 0 is the plain mean
BON_PROMPTS = 256  # test-split prompts for best-of-n
BON_SAMPLES = 64  # answers per prompt: best-of-n for every n ≤ 64, exactly (order statistics)
NS = (1, 2, 4, 8, 16, 32, 64)
RL_PROMPTS = 2000  # 125 PPO steps of 16 prompts
ENSEMBLE_LAMBDA = 1.0  # the RL ensemble's rule: mean − 1·std of the MEMBERS models
CURE_BETA = 0.05  # the RL stage's own β
BLIND_WORD, BLIND_BONUS = "think", 1.0  # the planted blind spot: +1 for every "think"
HELDOUT_PAIR_SEED = 500  # the held-out judge's pairs are drawn with seed + this: other pairs than the proxy's


def member_seed(seed: int, k: int) -> int:
    """The initial seed of ensemble member k at sweep seed ``seed``; member 0 is the single proxy."""
    return 100 * seed + k


def train_rm(sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs, seed: int) -> PreTrainedModel:
    """A reward model on ``sft``'s backbone, one epoch on ``pairs`` (chapter 7), in eval mode."""
    rm = reward_model_from(sft, seed=seed)
    train_reward_model(rm, tokenizer, pairs, RewardConfig(num_epochs=1, seed=seed, progress=False))
    return rm.eval()


def reward_models(
    sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, seed: int
) -> tuple[dict[str, list[PreTrainedModel]], dict[str, list[dict[str, float]]]]:
    """The seed's reward models, ``{"members": [K models], "big": [one], "heldout": [one]}``, and each one's held-out
    pair metrics (chapter 7's :func:`~rlhf_edu.reward_modeling.evaluate_reward_model`)."""
    pairs = build_preference_dataset(world, sft, tokenizer, n=PAIRS, seed=seed)
    models = {
        "members": [train_rm(sft, tokenizer, pairs, member_seed(seed, k)) for k in range(MEMBERS)],
        "big": [train_rm(sft, tokenizer, build_preference_dataset(world, sft, tokenizer, BIG_PAIRS, seed=seed), seed)],
        "heldout": [
            train_rm(
                sft,
                tokenizer,
                build_preference_dataset(world, sft, tokenizer, PAIRS, seed=seed + HELDOUT_PAIR_SEED),
                member_seed(seed, 50),
            )
        ],
    }
    test_pairs = build_preference_dataset(world, sft, tokenizer, n=HELD_OUT_PAIRS, split="test", seed=seed)
    metrics = {
        name: [evaluate_reward_model(m, tokenizer, world, test_pairs) for m in ms] for name, ms in models.items()
    }
    return models, metrics


def ensemble_function(models: Sequence[PreTrainedModel], tokenizer: PreTrainedTokenizerBase, lam: float) -> RewardFn:
    """The ensemble as a ``reward_fn``: mean − λ·std of the models' scores (:func:`ensemble_reward`)."""

    def reward(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        scores = np.stack([score(m, tokenizer, prompts, completions).numpy() for m in models])  # (K, N)
        return ensemble_reward(scores, "mean_minus_std", lam).tolist()

    return reward


def bon_entry(proxy: np.ndarray, gold: np.ndarray, single: np.ndarray | None) -> dict[str, list[float]]:
    """Best-of-n by ``proxy`` at every n of :data:`NS`: the pick's mean ``gold`` and its ``se`` over prompts, and the
    ``diff_se`` of its paired difference from best-of-n by the ``single`` model (0 where ``single`` is None)."""
    entry: dict[str, list[float]] = {"gold": [], "se": [], "diff_se": []}
    for n in NS:
        picked = best_of_n_per_prompt(proxy, gold, n)  # (M,) each prompt's expected gold of the pick
        mean, se = mean_and_stderr(picked)
        diff_se = 0.0 if single is None else mean_and_stderr(picked - best_of_n_per_prompt(single, gold, n))[1]
        entry["gold"].append(mean)
        entry["se"].append(se)
        entry["diff_se"].append(diff_se)
    return entry


def bon_grid(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    models: dict[str, list[PreTrainedModel]],
    seed: int,
) -> dict:
    """Best-of-n from ``sft`` on :data:`BON_PROMPTS` × :data:`BON_SAMPLES` answers, picked by the single model, by
    the first K members as mean − λ·std (every λ of :data:`LAMBDAS`) and as the min, by the larger-data model and by
    the gold reward; each entry is :func:`bon_entry`."""
    prompts = world.prompts(BON_PROMPTS, split="test")
    completions, gold = sample_and_score(sft, tokenizer, prompts, BON_SAMPLES, world.gold_reward, seed=seed)  # (M, N)
    flat_prompts = [p for p in prompts for _ in range(BON_SAMPLES)]
    flat_completions = [c for row in completions for c in row]

    def scores_of(model: PreTrainedModel) -> np.ndarray:
        return score(model, tokenizer, flat_prompts, flat_completions).numpy()  # (M·N,)

    member_scores = np.stack([scores_of(m) for m in models["members"]])  # (K, M·N)
    single = member_scores[0].reshape(gold.shape)
    grid = {
        "single": bon_entry(single, gold, None),
        "big": bon_entry(scores_of(models["big"][0]).reshape(gold.shape), gold, single),
        "gold": bon_entry(gold, gold, single),
        "mean_minus_std": {},
        "min": {},
    }
    for k in range(2, MEMBERS + 1):
        first_k = member_scores[:k]
        grid["min"][str(k)] = bon_entry(ensemble_reward(first_k, "min").reshape(gold.shape), gold, single)
        grid["mean_minus_std"][str(k)] = {
            str(lam): bon_entry(ensemble_reward(first_k, "mean_minus_std", lam).reshape(gold.shape), gold, single)
            for lam in LAMBDAS
        }
    return grid


def rl_run(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    reward_fn: RewardFn,
    monitors: dict[str, RewardFn],
    seed: int,
    beta: float = 0.0,
) -> list[dict[str, float]]:
    """PPO from ``sft`` against ``reward_fn`` with Gao et al.'s settings (:data:`OVEROPTIMIZATION`, here at
    ``beta``), :data:`RL_PROMPTS` prompts; returns its evaluations every 5 steps, with the ``monitors``."""
    config = rl_config("ppo", num_prompts=RL_PROMPTS, seed=seed, progress=False, **(OVEROPTIMIZATION | {"beta": beta}))
    _, curve, _ = rl_stage(sft, tokenizer, world, reward_fn, config, RL_PROMPTS, monitors=monitors)
    return curve


def rl_cures(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    models: dict[str, list[PreTrainedModel]],
    seed: int,
) -> dict[str, list[dict[str, float]]]:
    """The RL runs: against the single model (β = 0 and β = :data:`CURE_BETA`), the ensemble, the larger-data model,
    and the single model with a planted blind spot at β = :data:`CURE_BETA`. Each evaluation also measures the
    held-out judge's score, the planted word's count and the answers' length (``monitor/...``)."""
    single = reward_function(models["members"][0], tokenizer)
    monitors = {
        "heldout": reward_function(models["heldout"][0], tokenizer),
        BLIND_WORD: lambda prompts, completions: word_count(completions, BLIND_WORD),
        "words": lambda prompts, completions: word_counts(completions),
    }
    proxies = {
        "single": (single, 0.0),
        "beta": (single, CURE_BETA),
        "ensemble": (ensemble_function(models["members"], tokenizer, ENSEMBLE_LAMBDA), 0.0),
        "big": (reward_function(models["big"][0], tokenizer), 0.0),
        "blind_spot": (blind_spot_reward(single, BLIND_WORD, BLIND_BONUS), CURE_BETA),
    }
    return {name: rl_run(sft, tokenizer, world, fn, monitors, seed, beta) for name, (fn, beta) in proxies.items()}


def seed_runs(sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, seed: int) -> dict:
    """One seed of the sweep: the reward models' metrics, the best-of-n grid and the RL runs."""
    models, metrics = reward_models(sft, tokenizer, world, seed)
    return {
        "reward_models": metrics,
        "bon": bon_grid(sft, tokenizer, world, models, seed),
        "rl": rl_cures(sft, tokenizer, world, models, seed),
    }


def load_sweep(path: str | Path = SWEEPS / "overoptimization.json") -> dict:
    """The shipped sweep: ``{"settings": ..., "seeds": {seed: seed_runs(...)}}``."""
    return json.loads(Path(path).read_text())


# --- reading the sweep ------------------------------------------------------------------------------------------------
CURES = {  # the RL runs against the same proxy from the same start, and what each changes
    "single": "one reward model, β = 0",
    "beta": f"the same, β = {CURE_BETA}",
    "ensemble": f"{MEMBERS} reward models, mean − {ENSEMBLE_LAMBDA:g}·std",
    "big": f"one reward model, {BIG_PAIRS:,} pairs",
}


def ensemble_path(k: int, lam: float | None) -> tuple[str, ...]:
    """Where the best-of-n grid keeps an ensemble of the first ``k`` members: mean − λ·std, or the min for
    ``lam=None``; k = 1 is the single model."""
    if k not in range(1, MEMBERS + 1) or (lam is not None and float(lam) not in LAMBDAS):
        raise ValueError(
            f"k={k!r}, lam={lam!r} is not on the grid: k is 1 to {MEMBERS} models, λ one of {LAMBDAS} (None: the min)"
        )
    k = int(k)  # a slider gives 2.0
    if k == 1:
        return ("single",)
    return ("min", str(k)) if lam is None else ("mean_minus_std", str(k), str(float(lam)))


def _bon_entry(seed_result: dict, path: Sequence[str]) -> dict:
    entry = seed_result["bon"]
    for key in path:
        entry = entry[key]
    return entry


def _n_index(n: int) -> int:
    if n not in NS:
        raise ValueError(f"n={n!r} was not measured: best-of-n is on the grid n = {NS}")
    return NS.index(n)


def pooled_bon(sweep: dict, path: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-n's pick's gold at every n, pooled over the seeds (:func:`~.feedback_runs.pooled`): means and ses."""
    pairs = [pooled_over_seeds(sweep, lambda r, i=i: (_bon_entry(r, path)["gold"][i], _bon_entry(r, path)["se"][i]))
             for i in range(len(NS))]  # fmt: skip
    return np.array([m for m, _ in pairs]), np.array([s for _, s in pairs])


def bon_gains(sweep: dict, path: Sequence[str], n: int) -> list[tuple[float, float]]:
    """Each seed's gold of the pick by ``path`` less the single model's pick's, at best-of-``n``, with the paired
    standard error of that difference: one (gain, se) a seed."""
    i = _n_index(n)
    gains = []
    for result in sweep["seeds"].values():
        entry = _bon_entry(result, path)
        gains.append((entry["gold"][i] - result["bon"]["single"]["gold"][i], entry["diff_se"][i]))
    return gains


def pooled_bon_gain(sweep: dict, path: Sequence[str], n: int) -> tuple[float, float]:
    """:func:`bon_gains` pooled over the seeds (:func:`~.feedback_runs.pooled`)."""
    gains = bon_gains(sweep, path, n)
    return pooled([g for g, _ in gains], [se for _, se in gains])


def plot_bon_cures(sweep: dict, k: int, lam: float) -> Figure:
    """Best-of-n's pick's gold against n, pooled over the seeds (± 1 s.e.): the single model, the first ``k``
    members as mean − ``lam``·std and as the min, the larger-data model, and the gold reward's own pick."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    lines = {
        "one reward model": ("single",),
        f"K = {k:g}, mean − {lam:g}·std": ensemble_path(k, lam),
        f"K = {k:g}, min": ensemble_path(k, None),
        f"one reward model, {BIG_PAIRS:,} pairs": ("big",),
    }
    for label, path in lines.items():
        gold, se = pooled_bon(sweep, path)
        ax.errorbar(NS, gold, yerr=se, marker="o", ms=3, capsize=2, label=label)
    oracle, _ = pooled_bon(sweep, ("gold",))
    ax.plot(NS, oracle, "k:", label="the gold reward's own pick (an oracle)")
    ax.set(xscale="log", xlabel="n (best of n answers from sft)", ylabel="gold reward of the pick")
    ax.set_xticks(NS, [str(n) for n in NS])
    ax.set_ylim(top=oracle[NS.index(8)])  # the oracle climbs off the chart: what matters is below it
    ax.legend(fontsize=7, loc="lower center", ncol=2)
    return fig


def run_values(run: Sequence[dict], key: str) -> np.ndarray:
    """One metric of an RL run at every evaluation, e.g. ``gold_reward`` or ``monitor/think``: (E,)."""
    return np.array([row[key] for row in run])


def rl_summary(run: Sequence[dict]) -> dict[str, float]:
    """Where an RL run's gold peaks (``peak``, ``peak_step``, ``peak_kl``), where it ends (``end``, ``end_kl``),
    and where early stopping on the held-out judge would have stopped it (``early``, ``early_step``): the
    evaluation with the judge's highest score. Each gold comes with its evaluation's ``_se``."""
    gold, se, kl = (run_values(run, key) for key in ("gold_reward", "gold_reward_se", "eval/kl"))
    steps = run_values(run, "step")
    top, early = int(np.argmax(gold)), int(np.argmax(run_values(run, "monitor/heldout")))
    return {
        "peak": gold[top], "peak_se": se[top], "peak_step": steps[top], "peak_kl": kl[top],
        "end": gold[-1], "end_se": se[-1], "end_kl": kl[-1],
        "early": gold[early], "early_se": se[early], "early_step": steps[early], "early_kl": kl[early],
    }  # fmt: skip


POINTS = ("peak", "end", "early")  # where rl_summary reads an RL run's gold


def pooled_rl(sweep: dict, name: str, point: str) -> tuple[float, float]:
    """:func:`rl_summary`'s gold at ``point`` (``peak``, ``end`` or ``early``) of the run ``name``, pooled over the
    seeds."""
    return rl_gain(sweep, (name, point), None)


def rl_gain(sweep: dict, a: tuple[str, str], b: tuple[str, str] | None) -> tuple[float, float]:
    """Run ``a``'s gold at its point (``(name, "end")``, ``(name, "early")``, ...) less run ``b``'s (nothing if
    None), pooled over the seeds; each seed's two evaluations are counted as independent (they share prompts, so
    this errs wide)."""
    for name, point in (a, b or a):
        if point not in POINTS or name not in next(iter(sweep["seeds"].values()))["rl"]:
            raise ValueError(f"({name!r}, {point!r}) is not a run and point of the sweep: points are {POINTS}")

    def per_seed(result: dict) -> tuple[float, float]:
        sa = rl_summary(result["rl"][a[0]])
        if b is None:
            return sa[a[1]], sa[f"{a[1]}_se"]
        sb = rl_summary(result["rl"][b[0]])
        return sa[a[1]] - sb[b[1]], difference_stderr(sa[f"{a[1]}_se"], sb[f"{b[1]}_se"])

    return pooled_over_seeds(sweep, per_seed)


def plot_rl_cures(sweep: dict) -> Figure:
    """Every RL cure's gold reward and KL to ``sft`` against the step, the mean over the seeds, the gold ± 1 pooled
    s.e. (:func:`~.feedback_runs.pooled`: the larger of the runs' own error and the seeds' spread)."""
    fig, (ax_gold, ax_kl) = plt.subplots(1, 2, figsize=(13, 3.6))
    for name, label in CURES.items():
        runs = [result["rl"][name] for result in sweep["seeds"].values()]
        steps = run_values(runs[0], "step")
        gold = np.array([run_values(run, "gold_reward") for run in runs])  # (S, E)
        gold_se = np.array([run_values(run, "gold_reward_se") for run in runs])  # (S, E)
        mean, band = np.array([pooled(gold[:, e], gold_se[:, e]) for e in range(len(steps))]).T  # (E,) each
        ax_gold.plot(steps, mean, "o-", ms=3, label=label)
        ax_gold.fill_between(steps, mean - band, mean + band, alpha=0.15)
        ax_kl.plot(steps, np.array([run_values(run, "eval/kl") for run in runs]).mean(0), "o-", ms=3, label=label)
    ax_gold.set(title="gold reward on the validation prompts", xlabel="PPO step", ylabel="gold reward")
    ax_kl.set(title="KL to sft", xlabel="PPO step", ylabel="nats", yscale="symlog")
    ax_gold.legend(fontsize=7)
    return fig


def hacking_report(run: Sequence[dict], k: float = 3.0) -> dict[str, float | None]:
    """The step at which gold and the planted proxy part ways (:func:`parting_step`), and the steps at which two
    gold-free monitors fire (:func:`drift_alarm`): the planted word's count and the answers' length, each judged
    against its own standard error at the start, which is what two evaluations would differ by if nothing changed.
    None where a step never comes, and for a monitor that had no spread at the start to judge against."""
    steps = run_values(run, "step")
    curve = {"step": steps, "proxy": run_values(run, "eval/reward"), "gold": run_values(run, "gold_reward")}
    report = {"parting": parting_step(curve, float(np.median(run_values(run, "gold_reward_se"))), k)}
    for name in (BLIND_WORD, "words"):
        values, stderr = run_values(run, f"monitor/{name}"), run[0][f"monitor/{name}_se"]
        report[name] = drift_alarm(steps, values, stderr, k) if stderr > 0 else None
    return report


def plot_hacking(sweep: dict) -> Figure:
    """The blind-spot run (solid) against the same run on the plain proxy (dotted), one colour per seed: the proxy,
    the gold reward with the parting step (dashed), and the planted word's count with the monitor's alarm (dashed)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.3))
    keys = ("eval/reward", "gold_reward", f"monitor/{BLIND_WORD}")
    for i, result in enumerate(sweep["seeds"].values()):
        for name, style in (("blind_spot", "-"), ("beta", ":")):
            run = result["rl"][name]
            for ax, key in zip(axes, keys):
                ax.plot(run_values(run, "step"), run_values(run, key), style, color=f"C{i}", lw=1)
        report = hacking_report(result["rl"]["blind_spot"])
        for ax, step in ((axes[1], report["parting"]), (axes[2], report[BLIND_WORD])):
            if step is not None:
                ax.axvline(step, color=f"C{i}", ls="--", lw=0.8)
    axes[0].set(title="the proxy: rm + 1 per planted word (solid)", xlabel="PPO step")
    axes[1].set(title="gold reward; dashed: where it parts from the proxy", xlabel="PPO step")
    axes[2].set(title=f'"{BLIND_WORD}" per answer; dashed: the alarm', xlabel="PPO step")
    axes[2].set_yscale("symlog", linthresh=0.1)  # linear near 0: the first rise, from about 0.1 an answer, shows
    axes[2].set_ylim(bottom=0)
    fig.tight_layout()
    return fig
