"""Chapter 4's two pipelines, end to end on the toy world, with the hidden gold reward measured after every stage.

The classic three-stage pipeline (InstructGPT's, the book's figure of chapter 4):

    base ──SFT on ~10k demonstrations──▶ sft ──RM on ~100k pairs──▶ rm ──RL on ~100k prompts, −β·KL──▶ rl

and the modern multi-round one: SFT, then rounds that each sample fresh pairs from the
current policy, label them with the annotator, train on them (DPO), and then train on
what can be checked (GRPO with the verifier on sums). Every stage is its chapter's own
trainer (:func:`~rlhf_edu.instruction_tuning.train_sft`,
:func:`~rlhf_edu.reward_modeling.train_reward_model`,
:func:`~rlhf_edu.policy_gradients.train_policy_gradient`,
:func:`~rlhf_edu.direct_alignment.train_dpo`); this module only wires them together and
measures each stage's policy the same way (:func:`measure_stage`): its gold reward and
components on held-out prompts, its KL to the stage before and to SFT, the proxy's score
and a few samples. That is what no real pipeline can show, since none knows its gold reward.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core import zoo
from ..core.evaluation import evaluate_policy, gold_eval_fn
from ..core.logprobs import check_language_model
from ..core.preferences import build_preference_dataset
from ..core.rollouts import RewardFn
from ..core.runtime import Preset, get_device, get_preset, seed_everything
from ..core.stats import mean_and_stderr
from ..core.validation import check_choice, check_int
from ..core.world import GOLD_WEIGHTS, World
from ..direct_alignment import DPOConfig, train_dpo
from ..instruction_tuning import SFTConfig, train_sft
from ..policy_gradients import PolicyGradientConfig, train_policy_gradient
from ..reward_modeling import (
    HELD_OUT_PAIRS,
    RewardConfig,
    ceiling_share,
    evaluate_reward_model,
    reward_function,
    reward_model_from,
    train_reward_model,
)

BOOK_SIZES = {"sft": 10_000, "preference": 100_000, "rl": 100_000}  # demonstrations, pairs, RL prompts
PIPELINES = ("three-stage", "multi-round")
# Held-out prompts every stage of a pipeline is measured on (gold reward ± about 0.07). Half of graduate's
# SIDE_BY_SIDE_EVAL_PROMPTS: a pipeline evaluates every stage of every round and seed, and what it reports (SFT's
# gain of about 1.4) is large against that noise, while a side-by-side compares two trainers of one recipe, whose
# gap is small. The shipped sweeps were computed with this size.
STAGE_EVAL_PROMPTS = 256
NUM_VALIDATION_PROMPTS = 64  # other held-out prompts, on which the RL stage picks its best checkpoint
NUM_SAMPLES = 6  # samples kept per stage in the report
STAGE_NAMES = ("base", "sft", "rm", "rl")  # the three-stage run's folders; the multi-round's are sft, round-1, ...


def pipeline_sizes(preset: str | Preset | None = None, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """The book's ~10k/~100k/~100k as the preset scales them (``num_sft``, ``num_preference``, ``num_rl_prompts``).

    ``small`` runs the book's sizes. ``tiny`` gives 1,000 demonstrations, 2,000 pairs and
    2,000 RL prompts: it shrinks the demonstrations ten times and the pairs and prompts
    fifty, because on this world SFT needs about 1,000 demonstrations to stay on topic
    (measured: relevance 0.39 after 200, 0.98 after 1,000), while the later stages' cost grows with their sizes.
    ``sizes`` overrides any of them.
    """
    preset = get_preset(preset)
    result = {"sft": preset.num_sft, "preference": preset.num_preference, "rl": preset.num_rl_prompts}
    for name, size in (sizes or {}).items():
        check_choice(name, "sizes key", tuple(BOOK_SIZES))
        result[name] = check_int(size, f"sizes[{name!r}]", low=1, fix="a positive number of examples")
    return result


# --- the report -----------------------------------------------------------------------------------------------
@dataclass
class StageReport:
    """One stage's policy, measured: its gold reward and components, its KL and its cost."""

    name: str
    seconds: float  # wall time of the stage: its training, with the RM's held-out metrics or the RL's validation runs
    gold_reward: float  # mean gold reward on the held-out prompts
    gold_stderr: float
    components: dict[str, float]  # mean of each gold component
    kl_to_previous: float | None  # KL(π_stage ‖ π_previous) in nats; None for the first stage
    kl_to_sft: float | None  # KL(π_stage ‖ π_sft); None before SFT exists
    proxy_reward: float | None = None  # the reward model's mean score on the same samples, once one exists
    samples: list[dict] = field(default_factory=list)  # prompt, completion, gold
    notes: dict[str, float] = field(default_factory=dict)  # what else the stage measured (RM accuracy, best step, ...)
    history: list[dict[str, float]] = field(default_factory=list)  # the RL stage's evaluations while training


@dataclass
class PipelineReport:
    """A pipeline's stages in order, each measured the same way; ``plot()``, ``to_markdown()``, ``save()``."""

    pipeline: str
    preset: str
    sizes: dict[str, int]
    settings: dict
    stages: list[StageReport] = field(default_factory=list)

    def stage(self, name: str) -> StageReport:
        """The stage called ``name``."""
        check_choice(name, "stage", tuple(s.name for s in self.stages))
        return next(s for s in self.stages if s.name == name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON to ``path``; :meth:`load` reads it back."""
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PipelineReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, data: dict) -> PipelineReport:
        return cls(**{**data, "stages": [StageReport(**stage) for stage in data["stages"]]})

    def plot(self) -> Figure:
        """Gold reward per stage, KL per stage, the gold components per stage, and the RL stage's curves if any."""
        history = next((s.history for s in self.stages if s.history), None)
        figure, axes = plt.subplots(1, 4 if history else 3, figsize=(15 if history else 11.5, 3.3))
        x, names = np.arange(len(self.stages)), self.names
        gold = [s.gold_reward for s in self.stages]
        axes[0].bar(x, gold, yerr=[s.gold_stderr for s in self.stages], color="C2", capsize=3)
        axes[0].set(xticks=x, xticklabels=names, ylabel="gold reward (held out)", title="what each stage buys")
        previous = [s.kl_to_previous or 0.0 for s in self.stages]
        axes[1].bar(x, previous, color="C0", label="KL to the stage before")
        axes[1].plot(
            x, [np.nan if s.kl_to_sft is None else s.kl_to_sft for s in self.stages], "ko-", ms=4, label="KL to sft"
        )
        axes[1].set(xticks=x, xticklabels=names, ylabel="nats", yscale="symlog", title="what each stage costs in KL")
        axes[1].legend(fontsize=7)
        for name in GOLD_WEIGHTS:
            axes[2].plot(x, [s.components[name] for s in self.stages], "o-", ms=3, label=name)
        axes[2].set(xticks=x, xticklabels=names, ylabel="mean component", title="gold, component by component")
        axes[2].legend(fontsize=7)
        if history:
            plot_rl_curves(history, axes[3])
        for ax in axes[:3]:
            ax.tick_params(axis="x", labelsize=8, rotation=20)
        figure.suptitle(f"{self.pipeline} pipeline, {self.preset} preset", fontsize=10)
        figure.tight_layout()
        return figure

    def to_markdown(self, figure: str | None = None, samples: bool = True) -> str:
        """A report card: one row per stage (time, gold ± s.e., KL, proxy), the components, ``figure``, samples."""
        lines = [
            f"# The {self.pipeline} pipeline, {self.preset} preset",
            "",
            "Sizes: "
            + ", ".join(f"{name} {size:,}" for name, size in self.sizes.items())
            + ". Settings: "
            + ", ".join(f"{k}={v}" for k, v in self.settings.items())
            + ".",
            "",
            "| stage | time (s) | gold reward | Δ gold | KL to the stage before | KL to sft | RM score |",
            "|---|---|---|---|---|---|---|",
        ]
        before = None
        for s in self.stages:
            delta = "" if before is None else f"{s.gold_reward - before:+.3f}"
            lines.append(
                f"| {s.name} | {s.seconds:.0f} | {s.gold_reward:.3f} ± {s.gold_stderr:.3f} | {delta} | "
                f"{_nats(s.kl_to_previous)} | {_nats(s.kl_to_sft)} | {_number(s.proxy_reward)} |"
            )
            before = s.gold_reward
        lines += [
            "",
            f"Total time: {sum(s.seconds for s in self.stages):.0f} s.",
            "",
            "| stage | " + " | ".join(GOLD_WEIGHTS) + " |",
            "|---|" + "---|" * len(GOLD_WEIGHTS),
        ]
        lines += [
            f"| {s.name} | " + " | ".join(f"{s.components[k]:.3f}" for k in GOLD_WEIGHTS) + " |" for s in self.stages
        ]
        notes = [(s.name, k, v) for s in self.stages for k, v in s.notes.items()]
        if notes:
            lines += ["", "Also measured:", ""] + [f"- {name}: {key} = {_number(value)}" for name, key, value in notes]
        if figure:
            lines += ["", f"![the report card's plots]({figure})"]
        if not samples:
            return "\n".join(lines) + "\n"
        lines += ["", "Samples on held-out prompts (gold reward in brackets):", ""]
        for i, sample in enumerate(self.stages[0].samples):
            lines.append(f"- *{sample['prompt']}*")
            lines += [
                f"  - {s.name}: {s.samples[i]['completion'] or '(nothing)'} [{s.samples[i]['gold']:+.2f}]"
                for s in self.stages
                if i < len(s.samples)
            ]
        return "\n".join(lines) + "\n"


def _nats(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def plot_rl_curves(history: list[dict[str, float]], ax: plt.Axes) -> None:
    """The RL stage's gold reward (left axis) and proxy score (right axis) on validation prompts, best step marked."""
    steps = [row["step"] for row in history]
    gold = [row["gold_reward"] for row in history]
    ax.plot(steps, gold, "o-", color="C2", ms=3, label="gold")
    best = int(np.argmax(gold))
    ax.plot([steps[best]], [gold[best]], "*", color="C2", ms=12, label="best checkpoint")
    ax.set(xlabel="RL step", ylabel="gold reward (validation)", title="the RL stage")
    if "eval/reward" in history[0]:
        twin = ax.twinx()
        twin.plot(steps, [row["eval/reward"] for row in history], "s--", color="C3", ms=3)
        twin.set_ylabel("RM score (dashed)", color="C3")
    ax.legend(fontsize=7, loc="lower right")


# --- measuring a stage ----------------------------------------------------------------------------------------
def eval_prompts(world: World, num_eval_prompts: int) -> list[str]:
    """The held-out prompts every stage is measured on: the first ``num_eval_prompts`` of the test split."""
    return world.prompts(check_int(num_eval_prompts, "num_eval_prompts", fix="e.g. 256"), split="test")


def measure_stage(
    name: str,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    prompts: list[str],
    seconds: float,
    previous: PreTrainedModel | None = None,
    sft: PreTrainedModel | None = None,
    reward_fn: RewardFn | None = None,
    seed: int = 0,
) -> StageReport:
    """``policy`` against the world on ``prompts``: gold and components, KL to ``previous`` and to ``sft``, proxy.

    Every stage is sampled with the same ``seed`` on the same prompts, so two stages compare
    on the same draws (:func:`~rlhf_edu.core.evaluation.evaluate_policy`); each KL is the
    mean log-ratio on those samples.
    """
    evaluation = evaluate_policy(
        policy, previous if previous is not None else policy, tokenizer, world, prompts, seed=seed
    )
    to_sft = None
    if sft is not None:
        to_sft = (
            evaluation.kl if sft is previous else evaluate_policy(policy, sft, tokenizer, world, prompts, seed=seed).kl
        )
    samples = [
        {"prompt": p, "completion": c, "gold": g}
        for p, c, g in zip(evaluation.prompts[:NUM_SAMPLES], evaluation.completions, evaluation.gold_rewards)
    ]
    proxy = None if reward_fn is None else float(np.mean(reward_fn(evaluation.prompts, evaluation.completions)))
    return StageReport(
        name,
        seconds,
        evaluation.gold_reward,
        mean_and_stderr(evaluation.gold_rewards)[1],
        evaluation.component_means(),
        None if previous is None else evaluation.kl,
        to_sft,
        proxy,
        samples,
    )


def prepare_out(out: str | Path | None, overwrite: bool = False) -> Path | None:
    """Make the output folder ``out``; refuse one that holds files unless ``overwrite`` (which empties it).

    ``overwrite`` replaces an earlier pipeline's output only (``report.*`` files and stage
    folders), so that a mistyped path never deletes anything else.
    """
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file: name a folder for the report and the stage models")
    entries = sorted(out.iterdir()) if out.exists() else []
    if entries and not overwrite:
        raise ValueError(
            f"out={str(out)!r} exists and is not empty: name a new folder, or pass overwrite=True "
            "(--overwrite) to replace what is in it"
        )
    foreign = [
        e.name
        for e in entries
        if not (e.name.startswith("report.") or e.name in STAGE_NAMES or e.name.startswith("round-"))
    ]
    if foreign:
        raise ValueError(
            f"out={str(out)!r} holds {', '.join(foreign[:3])}, which no pipeline wrote: overwrite "
            "replaces a pipeline's earlier output only, so name a new or empty folder"
        )
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_stage(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path | None, name: str) -> None:
    """Save a stage's model and tokenizer with ``save_pretrained`` to ``out/name`` (nothing without ``out``)."""
    if out is not None:
        zoo.save(model, tokenizer, name, out_dir=out)


def write_report(report: PipelineReport, out: Path | None) -> PipelineReport:
    """Write ``report.json``, ``report.png`` and ``report.md`` (which shows the plots) to ``out``; return the report."""
    if out is not None:
        report.save(out / "report.json")
        figure = report.plot()
        figure.savefig(out / "report.png", dpi=110)
        plt.close(figure)
        (out / "report.md").write_text(report.to_markdown(figure="report.png"))
    return report


class _Clock:
    """Wall time since the last call to ``lap()``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self.start = now - self.start, now
        return seconds


# --- the stages -------------------------------------------------------------------------------------------------
def sft_stage(
    base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, num_sft: int, seed: int, progress: bool
) -> PreTrainedModel:
    """Stage 1: a copy of ``base`` instruction-tuned on ``num_sft`` of the world's demonstrations (chapter 9)."""
    sft = copy.deepcopy(base)
    train_sft(sft, tokenizer, world.sft_dataset(num_sft), SFTConfig(seed=seed, progress=progress))
    return sft


def reward_model_stage(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    num_pairs: int,
    seed: int,
    progress: bool,
    num_epochs: int = 1,
    num_test_pairs: int = HELD_OUT_PAIRS,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Stage 2: a reward model on ``sft``'s backbone, on pairs sampled from ``sft`` and labelled by the annotator.

    Returns the model and its metrics on ``num_test_pairs`` held-out pairs (chapter 7), with ``ceiling_share``.
    """
    pairs = build_preference_dataset(world, sft, tokenizer, n=num_pairs, seed=seed)
    rm = reward_model_from(sft, seed=seed)
    train_reward_model(rm, tokenizer, pairs, RewardConfig(num_epochs=num_epochs, seed=seed, progress=progress))
    test_pairs = build_preference_dataset(world, sft, tokenizer, n=num_test_pairs, split="test", seed=seed)
    metrics = evaluate_reward_model(rm, tokenizer, world, test_pairs)
    metrics["ceiling_share"] = ceiling_share(metrics["expected_accuracy"], metrics["bayes_accuracy"])
    return rm, {"pairs": len(pairs), **metrics}


def rl_stage(
    sft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    reward_fn: RewardFn,
    config: PolicyGradientConfig,
    num_prompts: int,
    num_eval_prompts: int = STAGE_EVAL_PROMPTS,
    monitors: Mapping[str, RewardFn] | None = None,
) -> tuple[PreTrainedModel, list[dict], dict[str, float]]:
    """Stage 3: RL from ``sft`` against ``reward_fn`` with −β·KL to ``sft`` (chapter 11), keeping the best checkpoint.

    Every ``config.eval_steps`` steps the policy is measured on validation prompts (other
    held-out prompts than the report's), and the checkpoint with the highest gold reward
    there is kept. The gold reward is an oracle no real pipeline has: it stands in for the
    held-out evaluation a real one picks checkpoints by. Returns that policy, the validation
    curve and ``best_step``, ``best_gold_reward`` and ``final_gold_reward`` (the last step's).
    ``monitors`` are measured on the same samples (:func:`~rlhf_edu.core.evaluation.gold_eval_fn`).
    """
    prompts = world.prompts(num_eval_prompts + NUM_VALIDATION_PROMPTS, split="test")[num_eval_prompts:]
    measure = gold_eval_fn(world, tokenizer, prompts, sft, reward_fn, seed=config.seed, monitors=monitors)
    policy, best = copy.deepcopy(sft), {"gold_reward": -np.inf}
    curve: list[dict[str, float]] = []

    def record(model: PreTrainedModel, step: int) -> dict[str, float]:
        metrics = measure(model)
        curve.append({"step": step, **metrics})
        if metrics["gold_reward"] > best["gold_reward"]:
            best.update(
                gold_reward=metrics["gold_reward"],
                step=step,
                state={k: v.clone() for k, v in model.state_dict().items()},
            )
        return metrics

    # train_policy_gradient calls eval_fn before the updates of steps 0, eval_steps, 2·eval_steps, ...
    seed_everything(config.seed)  # PPO's critic gets a fresh head: the same one on every run with this seed
    train_policy_gradient(
        policy,
        tokenizer,
        world.prompts(num_prompts),
        reward_fn,
        config,
        ref_model=sft,
        eval_fn=lambda model: record(model, len(curve) * config.eval_steps),
    )
    record(policy, config.num_steps)  # the last step's policy, so that it can be the best too
    policy.load_state_dict(best["state"])
    return (
        policy,
        curve,
        {
            "best_step": best["step"],
            "best_gold_reward": best["gold_reward"],
            "final_gold_reward": curve[-1]["gold_reward"],
        },
    )


def rl_config(
    algorithm: str, beta: float, num_prompts: int, seed: int, progress: bool, **overrides: float
) -> PolicyGradientConfig:
    """The RL stage's settings: notebook 11's against the RM (16 prompts × 4 answers a step), one pass over prompts."""
    settings = {"learning_rate": 1e-3, "batch_size": 16, "num_generations": 4, "eval_steps": 10}
    if algorithm == "ppo":
        settings["num_mini_batches"] = 2
    settings |= overrides
    num_steps = max(1, num_prompts // settings["batch_size"])
    return PolicyGradientConfig(
        algorithm=algorithm, beta=beta, num_steps=num_steps, seed=seed, progress=progress, **settings
    )


# --- the pipelines ----------------------------------------------------------------------------------------------
def run_three_stage(
    preset: str | Preset | None = None,
    sizes: dict[str, int] | None = None,
    rl_algorithm: str = "ppo",
    beta: float = 0.05,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
    rm_epochs: int = 1,
    num_eval_prompts: int = STAGE_EVAL_PROMPTS,
) -> PipelineReport:
    """base → SFT → reward model → RL against it, each stage measured with the gold reward; return the report.

    ``sizes`` (``sft``, ``preference``, ``rl``) default to :func:`pipeline_sizes`; the
    reward model trains ``rm_epochs`` epochs (the book's one by default). Every stage is
    measured on ``num_eval_prompts`` held-out prompts (:func:`measure_stage`). With
    ``out``, each stage's model is saved to ``out/<stage>/`` and the report card to
    ``out/report.md`` (with ``report.png`` and ``report.json``).
    """
    preset, sizes = get_preset(preset), pipeline_sizes(preset, sizes)
    config = rl_config(rl_algorithm, beta, sizes["rl"], seed, progress)  # bad settings fail before any training
    out = prepare_out(out, overwrite)
    seed_everything(seed)  # the same report from the same seed, whatever ran before in this process
    world = World(seed=seed, preset=preset)
    prompts = eval_prompts(world, num_eval_prompts)
    report = PipelineReport(
        "three-stage",
        preset.name,
        sizes,
        {"rl_algorithm": rl_algorithm, "beta": beta, "rm_epochs": rm_epochs, "seed": seed},
    )
    base, tokenizer = zoo.load("base", preset, get_device(device))
    report.stages.append(measure_stage("base", base, tokenizer, world, prompts, 0.0, seed=seed))
    save_stage(base, tokenizer, out, "base")
    clock = _Clock()
    sft = sft_stage(base, tokenizer, world, sizes["sft"], seed, progress)
    report.stages.append(measure_stage("sft", sft, tokenizer, world, prompts, clock.lap(), base, seed=seed))
    save_stage(sft, tokenizer, out, "sft")
    clock.lap()
    rm, rm_metrics = reward_model_stage(
        sft, tokenizer, world, sizes["preference"], seed, progress, rm_epochs, num_test_pairs=4 * num_eval_prompts
    )
    rm_fn = reward_function(rm, tokenizer)
    seconds = clock.lap()
    stage = measure_stage("rm", sft, tokenizer, world, prompts, seconds, sft, sft, rm_fn, seed=seed)
    stage.notes = rm_metrics  # the policy is still sft: this stage trained the judge, and this is how good it is
    report.stages.append(stage)
    save_stage(rm, tokenizer, out, "rm")
    clock.lap()
    policy, curve, notes = rl_stage(sft, tokenizer, world, rm_fn, config, sizes["rl"], num_eval_prompts)
    stage = measure_stage("rl", policy, tokenizer, world, prompts, clock.lap(), sft, sft, rm_fn, seed=seed)
    stage.notes, stage.history = notes, curve
    report.stages.append(stage)
    save_stage(policy, tokenizer, out, "rl")
    return write_report(report, out)


def run_multi_round(
    rounds: int = 3,
    preset: str | Preset | None = None,
    sizes: dict[str, int] | None = None,
    beta: float = 0.1,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
    sft: PreTrainedModel | None = None,
    num_eval_prompts: int = STAGE_EVAL_PROMPTS,
) -> PipelineReport:
    """base → SFT, then ``rounds`` rounds of fresh on-policy pairs → DPO → GRPO on sums; return the report.

    ``sft`` starts the rounds from a model instruction-tuned already (the SFT stage of a
    three-stage run with the same sizes, say), which is then measured but not retrained.

    Each round r:

    1. samples two answers per prompt from the current policy (seed ``seed + r``), and the
       annotator labels them: ``sizes["preference"] / rounds`` fresh pairs;
    2. trains on them with DPO (β = ``beta``), the round's starting policy as the reference;
    3. then runs GRPO with the world's verifier on sums (``sizes["rl"] / rounds`` prompts,
       8 answers each, β = 0.04 to the model DPO left): the stage for what can be checked
       rather than judged. It takes notebook 11's RLVR settings with a learning rate of 3e-4
       instead of 1e-3: at 1e-3, 41 steps on sums alone cost the other prompts' relevance
       (0.98 → 0.59 in the first round of the tiny preset), which the verifier never sees;
    4. is measured against the previous round's model and against SFT.

    This is the shape of Llama 2's and Tülu 3's recipes, in miniature: preference tuning
    on the current policy's own samples, then RL with verifiable rewards, repeated.
    """
    rounds = check_int(rounds, "rounds", low=1, fix="the number of rounds after SFT, e.g. 3")
    preset, sizes = get_preset(preset), pipeline_sizes(preset, sizes)
    pairs_per_round = check_int(
        sizes["preference"] // rounds, "sizes['preference'] // rounds", low=1, fix="give each round at least one pair"
    )
    grpo = PolicyGradientConfig(
        algorithm="grpo",
        learning_rate=3e-4,
        batch_size=16,
        num_generations=8,
        beta=0.04,
        num_steps=max(1, sizes["rl"] // rounds // 16),
        max_completion_length=12,
        seed=seed,
        progress=progress,
    )
    out = prepare_out(out, overwrite)
    seed_everything(seed)  # the same report from the same seed, whatever ran before in this process
    world = World(seed=seed, preset=preset)
    prompts = eval_prompts(world, num_eval_prompts)
    report = PipelineReport(
        "multi-round", preset.name, sizes, {"rounds": rounds, "dpo_beta": beta, "grpo_beta": grpo.beta, "seed": seed}
    )
    base, tokenizer = zoo.load("base", preset, get_device(device))
    report.stages.append(measure_stage("base", base, tokenizer, world, prompts, 0.0, seed=seed))
    clock = _Clock()
    if sft is None:
        sft = sft_stage(base, tokenizer, world, sizes["sft"], seed, progress)
    else:
        check_language_model(sft, tokenizer, "sft")
        report.settings["sft"] = "given"
    report.stages.append(measure_stage("sft", sft, tokenizer, world, prompts, clock.lap(), base, seed=seed))
    save_stage(sft, tokenizer, out, "sft")
    sums = world.prompts(rounds * grpo.num_steps * grpo.batch_size, family="arithmetic")  # each round its own
    previous = sft
    for r in range(1, rounds + 1):
        clock.lap()
        policy = copy.deepcopy(previous)
        pairs = build_preference_dataset(world, previous, tokenizer, n=pairs_per_round, seed=seed + r)
        train_dpo(
            policy,
            tokenizer,
            pairs,
            DPOConfig(beta=beta, num_epochs=1, seed=seed + r, progress=progress),
            ref_model=previous,
        )
        after_dpo = evaluate_policy(policy, previous, tokenizer, world, prompts, seed=seed).gold_reward
        round_sums = sums[(r - 1) * grpo.num_steps * grpo.batch_size :][: grpo.num_steps * grpo.batch_size]
        # GRPO's KL is to the model DPO left (a frozen copy, as the trainer makes by default): a penalty toward the
        # round's start would pull back what DPO just learned
        train_policy_gradient(policy, tokenizer, round_sums, world.verifiable_reward, grpo)
        stage = measure_stage(f"round-{r}", policy, tokenizer, world, prompts, clock.lap(), previous, sft, seed=seed)
        stage.notes = {"pairs": len(pairs), "gold_after_dpo": after_dpo, "grpo_steps": grpo.num_steps}
        report.stages.append(stage)
        save_stage(policy, tokenizer, out, f"round-{r}")
        previous = policy
    return write_report(report, out)


def run_pipeline(name: str, **kwargs) -> PipelineReport:
    """Run the pipeline called ``name`` ("three-stage" or "multi-round") with ``kwargs``."""
    check_choice(name, "pipeline", PIPELINES)
    return (run_three_stage if name == "three-stage" else run_multi_round)(**kwargs)


def load_stage(
    out: str | Path, name: str, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A stage's saved model and tokenizer from a pipeline's output folder (``from_pretrained``, in eval mode)."""
    path = Path(out) / name
    if not (path / "config.json").exists():
        saved = (
            sorted(p.name for p in Path(out).iterdir() if (p / "config.json").exists()) if Path(out).is_dir() else []
        )
        raise ValueError(f"no stage {name!r} saved in {str(out)!r}: it holds {', '.join(saved) or 'no stage'}")
    return zoo.load_dir(path, device)


def save_reports(reports: list[PipelineReport], path: str | Path) -> Path:
    """Write several runs of one pipeline (one per seed) to one JSON file, without their samples."""
    data = [{**asdict(report), "stages": [{**asdict(s), "samples": []} for s in report.stages]} for report in reports]
    Path(path).write_text(json.dumps({"reports": data}, indent=1) + "\n")
    return Path(path)


def load_reports(path: str | Path) -> list[PipelineReport]:
    """The runs that :func:`save_reports` wrote."""
    return [PipelineReport.from_dict(data) for data in json.loads(Path(path).read_text())["reports"]]


def gains_over_seeds(reports: list[PipelineReport], stage: str, before: str) -> tuple[list[float], float, float]:
    """The gold gained from ``before`` to ``stage`` in each run, their mean, and the mean's standard error over runs.

    Each run is a seed of the whole pipeline: its own world, data, training and samples.
    The spread over seeds is the honest error of "what this stage buys": it holds every
    source of noise, where one run's sampling error holds only one.
    """
    from ..core.stats import mean_and_stderr

    gains = [r.stage(stage).gold_reward - r.stage(before).gold_reward for r in reports]
    return (gains, *mean_and_stderr(gains))
