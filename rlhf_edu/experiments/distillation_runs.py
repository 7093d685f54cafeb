"""The runs of notebook 15: a teacher, three kinds of distillation at an equal budget of teacher tokens, synthetic
data filtered or kept whole, and a model trained on its own answers.

Each run is the chapters' own functions with fixed settings (chapter 10's best-of-n, chapter 9's SFT, chapter 15's
:mod:`~rlhf_edu.distillation`), so the notebook's live runs and the shipped sweep (``rlhf-edu sweep distillation``)
are the same computation, the sweep at more seeds and with more runs per seed.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import distillation as distil
from ..core.evaluation import PolicyEvaluation, evaluate_policy
from ..core.rollouts import sample_rollouts
from ..core.runtime import numpy_rng
from ..core.stats import mean_and_stderr
from ..core.training import History, TrainingConfig
from ..core.validation import check_choice
from ..core.world import SUM_FAMILIES, World, parse_prompt
from ..instruction_tuning import SFTConfig, encode_example, train_sft
from ..rejection_sampling import best_of_n
from ..reward_modeling import score
from .feedback_runs import pooled, pooled_over_seeds  # noqa: F401  (the seeds pooled as notebook 13 pools them)
from .recipes import SWEEPS

# --- the teacher: sft fine-tuned on its own best-of-16 answers (chapter 10's rejection sampling) ---------------------
TEACHER_PROMPTS = 256  # training prompts the teacher's picks answer
TEACHER_SAMPLES = 16  # best of 16 sft answers per prompt
VERIFIER_WEIGHT = 10.0  # on sums, a right answer outranks any rm score; rm breaks the ties
TEACHER_SFT = {"learning_rate": 1e-3, "batch_size": 32, "num_epochs": 2}
# --- distillation at an equal budget ---------------------------------------------------------------------------------
DISTILLATION = {"teacher_tokens": 4000, "batch_size": 32, "learning_rate": 1e-3}  # some 550 of the teacher's answers
DISTILLATION_SFT = {k: v for k, v in DISTILLATION.items() if k != "teacher_tokens"}  # the demonstrations' SFT
TRAIN_PROMPTS = 1024  # training prompts the writers of the answers draw from
STUDENT_LAYERS = 2  # the smaller student keeps 2 of sft's 4 layers (distil.smaller_student)
STUDENTS = ("sft, 2 layers", "base")
EVAL_PROMPTS = 1024  # held-out prompts every model answers, with one sampling seed
SUM_PROMPTS = 256  # held-out sums, for the verifier's pass rate
EVAL_SEED = 7
# --- quality against quantity ----------------------------------------------------------------------------------------
POOL = 1280  # training prompts with one sft answer each: the synthetic data
SIZES = (128, 256, 512)  # rows of SFT, filtered or not
QUALITY_SFT = {"learning_rate": 1e-3, "batch_size": 32, "num_epochs": 3}
# --- a model trained on its own answers ------------------------------------------------------------------------------
SELF_PROMPTS = 64
GENERATIONS = 5  # sample → SFT rounds: the slider's grid is 0 … GENERATIONS
SELF_SAMPLES = 4  # answers per prompt each round
SELF_TEMPERATURE = 0.7  # below 1: what the model finds likely grows likelier each round
SELF_SFT = {"learning_rate": 1e-3, "num_epochs": 2}
REAL_SHARES = (0.0, 0.5)  # the share of each round's rows replaced by the world's demonstrations
SEEDS = (0, 1, 2)


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """The mean of a − b over the same prompts, and its standard error: (mean, se)."""
    return mean_and_stderr(np.subtract(a, b))


# --- the teacher -----------------------------------------------------------------------------------------------------
def is_sum(prompt: str) -> bool:
    """Whether the verifier can check the prompt's answer: a sum."""
    return parse_prompt(prompt).family in SUM_FAMILIES


def teacher_score(
    world: World, rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """The teacher's pick rule: ``rm``'s score, plus :data:`VERIFIER_WEIGHT` on a sum the verifier passes.

    Best-of-16 with it picks a right sum whenever one of the 16 is right, and the answer ``rm`` likes best
    elsewhere: a verifier's pick on sums, a reward model's on the rest. It never reads the gold reward.
    """

    def reward_fn(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        rewards = score(rm, tokenizer, prompts, completions).double().numpy()  # (N,)
        sums = [i for i, p in enumerate(prompts) if is_sum(p)]
        if sums:
            right = world.verifiable_reward([prompts[i] for i in sums], [completions[i] for i in sums])
            rewards[sums] += VERIFIER_WEIGHT * np.asarray(right)
        return rewards.tolist()

    return reward_fn


def build_teacher(
    sft: PreTrainedModel, rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, seed: int = 0
) -> PreTrainedModel:
    """A copy of ``sft`` fine-tuned on its own best-of-16 answers picked by :func:`teacher_score`, in eval mode."""
    prompts = world.prompts(TEACHER_PROMPTS)
    picks = best_of_n(sft, tokenizer, prompts, TEACHER_SAMPLES, teacher_score(world, rm, tokenizer), seed=1000 + seed)
    teacher = copy.deepcopy(sft)
    rows = [{"prompt": p, "completion": c} for p, c in zip(prompts, picks)]
    train_sft(teacher, tokenizer, rows, SFTConfig(**TEACHER_SFT, seed=seed, progress=False))
    return teacher.eval()


# --- distillation at an equal budget ---------------------------------------------------------------------------------
def new_student(name: str, sft: PreTrainedModel, base: PreTrainedModel) -> PreTrainedModel:
    """One of :data:`STUDENTS`, fresh: ``sft`` with 2 of its 4 layers, or a copy of ``base``."""
    check_choice(name, "name", STUDENTS)
    return distil.smaller_student(sft, STUDENT_LAYERS) if name == STUDENTS[0] else copy.deepcopy(base)


def demonstration_rows(
    world: World, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], budget: int, seed: int = 0
) -> list[dict[str, str]]:
    """The world's demonstrations as prompt/completion rows, in a seeded order of ``prompts``, while their completion
    tokens fit ``budget``: the second teacher, which passes on text only, at the same budget as the model teacher."""
    rng = numpy_rng(seed)
    rows, spent = [], 0
    for i in rng.permutation(len(prompts)):
        row = {"prompt": prompts[i], "completion": world.demonstration(prompts[i], rng)}
        spent += sum(encode_example(tokenizer, row)["completion_mask"])  # the end-of-turn token counts, as in a rollout
        if spent > budget:
            break
        rows.append(row)
    return rows


def distil_one(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    kind: str,
    num_epochs: int = 1,
    seed: int = 0,
) -> tuple[PreTrainedModel, History]:
    """Train ``student`` in place from ``teacher`` with ``kind`` (:data:`~rlhf_edu.distillation.KINDS`, or
    ``"demonstrations"``: SFT on the world's demonstrations at the same budget) and :data:`DISTILLATION`'s settings;
    return it in eval mode, and its training history."""
    prompts = world.prompts(TRAIN_PROMPTS)
    if kind == "demonstrations":
        rows = demonstration_rows(world, tokenizer, prompts, DISTILLATION["teacher_tokens"], seed)
        config = SFTConfig(**DISTILLATION_SFT, warmup_ratio=0.0, num_epochs=num_epochs, seed=seed, progress=False)
        history = train_sft(student, tokenizer, rows, config)  # the sequence kind's settings, on the world's text
    else:
        config = distil.DistillationConfig(**DISTILLATION, kind=kind, num_epochs=num_epochs, seed=seed, progress=False)
        history = distil.train_distillation(student, teacher, tokenizer, prompts, config)
    return student.eval(), history


def measure(
    model: PreTrainedModel, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World
) -> dict[str, list[float]]:
    """A model's answers to the held-out prompts (sampled at :data:`EVAL_SEED`, so models compare prompt by prompt):
    ``gold`` and ``kl`` (log π(y|x) − log π_T(y|x), the one-sample reverse KL to the teacher) per answer, and
    ``sums``, the verifier's verdict on one answer to each of :data:`SUM_PROMPTS` held-out sums."""
    prompts, sum_prompts = held_out(world)
    evaluation: PolicyEvaluation = evaluate_policy(model, teacher, tokenizer, world, prompts, EVAL_SEED)
    answers = sample_rollouts(model, tokenizer, sum_prompts, seed=EVAL_SEED).completions
    return {
        "gold": evaluation.gold_rewards,
        "kl": evaluation.log_ratios,
        "sums": world.verifiable_reward(sum_prompts, answers),
    }


def held_out(world: World) -> tuple[list[str], list[str]]:
    """The held-out prompts every model answers: :data:`EVAL_PROMPTS` of every family, :data:`SUM_PROMPTS` sums."""
    return world.prompts(EVAL_PROMPTS, split="test"), world.prompts(SUM_PROMPTS, split="test", family="arithmetic")


def measure_demonstrations(world: World, seed: int = 0) -> dict[str, list[float]]:
    """:func:`measure` for the world's demonstrator: ``gold`` and ``sums`` of its answers to the same prompts (it is
    no model, so it has no KL to the teacher)."""
    rng = numpy_rng(seed)
    prompts, sum_prompts = held_out(world)
    return {
        "gold": world.gold_reward(prompts, [world.demonstration(p, rng) for p in prompts]),
        "sums": world.verifiable_reward(sum_prompts, [world.demonstration(p, rng) for p in sum_prompts]),
    }


def summary(measured: dict[str, list[float]]) -> dict[str, float]:
    """Means and standard errors of :func:`measure`'s three lists, and the KL's median (its mean is heavy-tailed)."""
    row = {}
    for name in ("gold", "kl", "sums"):
        row[name], row[name + "_se"] = mean_and_stderr(measured[name])
    row["kl_median"] = float(np.median(measured["kl"]))
    return row


def differences(
    measured: dict[str, dict[str, list[float]]], measures: Sequence[str] = ("gold", "kl", "sums")
) -> dict[str, dict[str, float]]:
    """Every ordered pair of runs, "a − b": each measure's paired difference over the same prompts, with its error."""
    table = {}
    for a, b in itertools.permutations(measured, 2):
        row = {}
        for name in measures:
            row[name], row[name + "_se"] = paired(measured[a][name], measured[b][name])
        table[f"{a} − {b}"] = row
    return table


# --- quality against quantity ----------------------------------------------------------------------------------------
def synthetic_pool(
    world: World, sft: PreTrainedModel, rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int = 0
) -> tuple[list[str], list[str], np.ndarray]:
    """:data:`POOL` training prompts with one ``sft`` answer each, and the filter's verdict on each (N,) bools.

    On sums the verifier passes an answer; elsewhere ``rm`` does, at or above its family's median score, so about
    half of those pass. Neither reads the gold reward.
    """
    prompts = world.prompts(POOL)
    answers = sample_rollouts(sft, tokenizer, prompts, seed=2000 + seed).completions
    rewards = score(rm, tokenizer, prompts, answers).numpy()  # (N,)
    families = np.array([parse_prompt(p).family for p in prompts])
    keep = np.zeros(len(prompts), bool)
    for family in set(families):
        rows = np.flatnonzero(families == family)
        if family in SUM_FAMILIES:
            keep[rows] = (
                np.asarray(world.verifiable_reward([prompts[i] for i in rows], [answers[i] for i in rows])) == 1
            )
        else:
            keep[rows] = rewards[rows] >= np.median(rewards[rows])
    return prompts, answers, keep


def sft_on_rows(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    rows: Sequence[dict[str, str]],
    seed: int = 0,
) -> list[float]:
    """SFT a copy of ``base`` on prompt/completion ``rows`` (:data:`QUALITY_SFT`); its gold per held-out answer."""
    student = copy.deepcopy(base)
    train_sft(student, tokenizer, rows, SFTConfig(**QUALITY_SFT, seed=seed, progress=False))
    return evaluate_policy(student.eval(), student, tokenizer, world, held_out(world)[0], EVAL_SEED).gold_rewards


def quality_runs(
    base: PreTrainedModel,
    sft: PreTrainedModel,
    rm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    sizes: Sequence[int] = SIZES,
    seed: int = 0,
) -> dict:
    """SFT ``base`` on the pool's first N answers ("all") and on the first N the filter kept ("filtered"), for each N.

    Returns the pool's share kept and its gold with and without the filter, and each run's gold per held-out answer,
    keyed "all N" and "filtered N".
    """
    prompts, answers, keep = synthetic_pool(world, sft, rm, tokenizer, seed)
    gold = np.array(world.gold_reward(prompts, answers))
    result = {"share_kept": float(keep.mean()), "pool_gold": float(gold.mean()), "kept_gold": float(gold[keep].mean())}
    every = distil.filter_by(prompts, answers, [True] * len(prompts))
    kept = distil.filter_by(prompts, answers, keep.tolist())
    runs = {}
    for n in sizes:
        runs[f"all {n}"] = sft_on_rows(base, tokenizer, world, every[:n], seed)
        runs[f"filtered {n}"] = sft_on_rows(base, tokenizer, world, kept[:n], seed)
    return result | {"gold": runs}


# --- a model trained on its own answers ------------------------------------------------------------------------------
def self_training_runs(
    sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, seed: int = 0
) -> dict[str, list[dict]]:
    """:func:`~rlhf_edu.distillation.self_training` from ``sft`` at each of :data:`REAL_SHARES`, keyed by the share."""
    config = TrainingConfig(**SELF_SFT, seed=seed, progress=False)
    prompts = world.prompts(SELF_PROMPTS)
    return {
        str(share): distil.self_training(
            sft, tokenizer, world, prompts, GENERATIONS, share, SELF_SAMPLES, config, SELF_TEMPERATURE, seed
        )
        for share in REAL_SHARES
    }


# --- the sweep and its readers ---------------------------------------------------------------------------------------
def seed_runs(
    sft: PreTrainedModel,
    base: PreTrainedModel,
    rm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    seed: int,
) -> dict:
    """One seed of the sweep: the teacher, every student × kind (and 3 epochs for the smaller student's offline kinds),
    the quality runs at every size, and self-training at every real share."""
    teacher = build_teacher(sft, rm, tokenizer, world, seed)
    measured = {"teacher": measure(teacher, teacher, tokenizer, world), "sft": measure(sft, teacher, tokenizer, world)}
    distillation = {"teacher − sft": paired(measured["teacher"]["gold"], measured["sft"]["gold"])}
    for name in STUDENTS:
        runs = {}
        for kind, epochs in [(kind, 1) for kind in (*distil.KINDS, "demonstrations")] + [("sequence", 3), ("token", 3)]:
            if epochs == 3 and name != STUDENTS[0]:
                continue
            student, _ = distil_one(new_student(name, sft, base), teacher, tokenizer, world, kind, epochs, seed)
            runs[f"{kind}, {epochs} epoch{'s' * (epochs > 1)}"] = measure(student, teacher, tokenizer, world)
        distillation[name] = {"runs": {k: summary(v) for k, v in runs.items()}, "differences": differences(runs)}
    quality = quality_runs(base, sft, rm, tokenizer, world, SIZES, seed)
    quality["differences"] = differences({k: {"gold": v} for k, v in quality.pop("gold").items()}, ["gold"])
    return {
        "teacher": summary(measured["teacher"]),
        "sft": summary(measured["sft"]),
        "distillation": distillation,
        "quality": quality,
        "self_training": self_training_runs(sft, tokenizer, world, seed),
    }


def load_sweep(path: str | Path = SWEEPS / "distillation.json") -> dict:
    """The shipped sweep: ``{"settings": ..., "seeds": {seed: seed_runs(...)}}``."""
    return json.loads(Path(path).read_text())


def pooled_difference(sweep: dict, student: str, a: str, b: str, measure: str = "gold") -> tuple[float, float]:
    """Run ``a`` minus run ``b`` of one student (e.g. "token, 1 epoch"), paired per prompt in each seed, then pooled."""

    def per_seed(run: dict) -> tuple[float, float]:
        row = run["distillation"][student]["differences"][f"{a} − {b}"]
        return row[measure], row[measure + "_se"]

    return pooled_over_seeds(sweep, per_seed)


def pooled_quality(sweep: dict, a: str, b: str) -> tuple[float, float]:
    """Quality run ``a`` minus ``b`` (e.g. "filtered 256", "all 512") in held-out gold, paired per prompt, pooled."""

    def per_seed(run: dict) -> tuple[float, float]:
        row = run["quality"]["differences"][f"{a} − {b}"]
        return row["gold"], row["gold_se"]

    return pooled_over_seeds(sweep, per_seed)


def per_prompt(records: list[dict], generation: int, measure: str) -> list[float]:
    """Self-training's ``measure`` ("gold" or "distinct") for each prompt after ``generation``: one value per prompt."""
    return records[generation][measure + "_per_prompt"]


def pooled_generations(
    sweep: dict, a: tuple[float, int], b: tuple[float, int], measure: str = "gold"
) -> tuple[float, float]:
    """Self-training at (real share, generation) ``a`` minus at ``b``, paired per prompt in each seed, then pooled."""

    def per_seed(run: dict) -> tuple[float, float]:
        return paired(*(per_prompt(run["self_training"][str(share)], g, measure) for share, g in (a, b)))

    return pooled_over_seeds(sweep, per_seed)


def pooled_table(sweep: dict, student: str) -> dict[str, dict[str, float | tuple[float, float]]]:
    """Each run of one student over the seeds: ``gold`` and ``kl`` pooled as (mean, se), and the seeds' mean
    ``kl_median`` and ``sums``."""
    first = next(iter(sweep["seeds"].values()))
    table = {}
    for name in first["distillation"][student]["runs"]:
        rows = [run["distillation"][student]["runs"][name] for run in sweep["seeds"].values()]
        table[name] = {m: pooled([r[m] for r in rows], [r[m + "_se"] for r in rows]) for m in ("gold", "kl")}
        table[name] |= {m: float(np.mean([r[m] for r in rows])) for m in ("kl_median", "sums")}
    return table


def generation_curve(sweep: dict, measure: str, share: float) -> np.ndarray:
    """``measure`` (``gold``, ``distinct_answers`` or ``entropy``) of self-training at a real ``share``, after each
    generation: one row per seed, (seeds, generations + 1)."""
    return np.array([[r[measure] for r in run["self_training"][str(share)]] for run in sweep["seeds"].values()])


def plot_generations(
    sweep: dict, generation: int
) -> Figure:  # pragma: no mutate block, a picture: its values are tested
    """The slider's plot: gold and distinct answers per prompt against the generation, each real share a colour."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, measure, label in zip(axes, ("gold", "distinct_answers"), ("gold reward", "distinct answers of 4")):
        for share, colour in zip(REAL_SHARES, ("tab:red", "tab:blue")):
            curve = generation_curve(sweep, measure, share)
            for row in curve:
                ax.plot(row, color=colour, alpha=0.35)
            ax.plot(curve.mean(axis=0), color=colour, marker="o", label=f"{share:.0%} real data")
        ax.axvline(generation, color="black", linestyle="--", linewidth=1)
        ax.set(xlabel="generation (rounds of sample → SFT)", ylabel=label)
    axes[0].legend(fontsize=8)
    plt.tight_layout()
    return fig


def at_generation(sweep: dict, generation: int) -> dict[float, dict[str, float]]:
    """The slider's readout: for each real share, the seeds' mean ``gold`` and ``distinct_answers`` after
    ``generation``."""
    measures = ("gold", "distinct_answers")
    return {
        share: {m: float(generation_curve(sweep, m, share)[:, generation].mean()) for m in measures}
        for share in REAL_SHARES
    }
