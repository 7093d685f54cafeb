"""The runs of notebook 16: how many prompts, a leaderboard judged three ways, contamination and format sensitivity.

Each run is the chapters' own functions with fixed settings (chapter 16's :mod:`~rlhf_edu.sample_size`,
:mod:`~rlhf_edu.leaderboard` and :mod:`~rlhf_edu.contamination`; chapter 10's best-of-n, chapter 12's DPO, chapter
13's judge, chapter 15's teacher), so the notebook's live runs and the shipped sweep (``rlhf-edu sweep evaluation``)
are the same computation, the sweep at more seeds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import ai_feedback as af
from .. import contamination as ct
from .. import leaderboard as lb
from .. import sample_size as ss
from ..core.logprobs import completion_logprobs
from ..core.preferences import build_preference_dataset, encode_pairs
from ..core.rollouts import sample_rollouts
from ..core.runtime import numpy_rng
from ..core.stats import difference_stderr, mean_and_stderr
from ..core.world import PROMPT_FORMS, World, parse_prompt, rephrase
from ..direct_alignment import DPOConfig, train_dpo, with_reference_logprobs
from ..instruction_tuning import SFTConfig, train_sft
from ..preference_data import length_bias_estimate, word_counts
from ..rejection_sampling import best_of_n
from ..reward_modeling import score
from . import distillation_runs as druns
from . import feedback_runs as fruns
from .distillation_runs import paired  # per-prompt differences, as notebook 15 pairs them
from .feedback_runs import pooled
from .recipes import SWEEPS

MODELS = ("base", "sft", "DPO", "best-of-16", "RS fine-tuned")  # the board, in the order the pipeline builds them
BEST_OF = 16  # best-of-16 of sft, picked by rm: a policy that is a sampler and a judge, not new weights
DPO_PAIRS = 500  # fresh pairs labelled by the annotator, notebook 12's settings (feedback_runs.RLAIF_DPO)
BOARD_PROMPTS = 300  # test-split prompts every model answers once: 3,000 battles per judge
BOOTSTRAP = 200  # resamples of the battles for the intervals
SIZE_PROMPTS = 1024  # test-split prompts for the sample-size section (about 116 distinct strings, repeated)
SIZE_SAMPLES = 4  # answers per prompt there, to tell the within-prompt spread from the between-prompt one
BENCHMARK_SUMS = 512  # the benchmark: test-split sums (99 distinct), half of whose distinct prompts leak
LEAK_SHARE = 0.5
LEAK_SFT = {"learning_rate": 1e-3, "batch_size": 8, "num_epochs": 10}  # the leaked rows, seen ten times
FORMAT_PROMPTS = 1024
EVAL_SEED = 7  # the answers' sampling seed is EVAL_SEED + seed, so every seed of the sweep draws new answers
POWER_TRIALS = 2000  # simulated evaluations per resampled power (sample_size.resampled_power's default)
SEEDS = (0, 1, 2)


def answer_seed(seed: int) -> int:
    """The sampling seed of seed ``seed``'s answers: every model answers with it, so models compare prompt by prompt."""
    return EVAL_SEED + seed


# --- how many prompts ------------------------------------------------------------------------------------------------
def gold_scores(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, prompts: Sequence[str], seed: int = 0
) -> np.ndarray:
    """The gold reward of :data:`SIZE_SAMPLES` answers to each prompt: (n prompts, m samples)."""
    rollout = sample_rollouts(model, tokenizer, prompts, SIZE_SAMPLES, seed=answer_seed(seed))  # prompt-major rows
    return np.array(world.gold_reward(rollout.prompts, rollout.completions)).reshape(len(prompts), SIZE_SAMPLES)


def paired_and_unpaired_sd(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """eq:paired_sd for per-prompt scores of two models on the same prompts: the correlation ρ, and the spread of
    the difference paired (as measured) and unpaired (ρ = 0: two different sets of prompts)."""
    correlation = float(np.corrcoef(a, b)[0, 1])
    sd_a, sd_b = float(np.std(a, ddof=1)), float(np.std(b, ddof=1))
    return {
        "correlation": correlation,
        "paired": ss.difference_sd(sd_a, sd_b, correlation),
        "unpaired": ss.difference_sd(sd_a, sd_b),
    }


# --- the board's contenders ------------------------------------------------------------------------------------------
def train_dpo_policy(
    sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, seed: int = 0
) -> PreTrainedModel:
    """A copy of ``sft`` trained by DPO on :data:`DPO_PAIRS` fresh annotator-labelled pairs (notebook 12's run)."""
    pairs = build_preference_dataset(world, sft, tokenizer, n=DPO_PAIRS, seed=fruns.pair_seed(seed))
    policy = copy.deepcopy(sft)
    encoded = with_reference_logprobs(sft, encode_pairs(tokenizer, pairs), tokenizer.pad_token_id)
    train_dpo(policy, tokenizer, encoded, DPOConfig(**fruns.RLAIF_DPO, seed=seed, progress=False))
    return policy.eval()


def board_answers(
    policies: Mapping[str, PreTrainedModel],
    sft: PreTrainedModel,
    rm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    seed: int = 0,
) -> dict[str, list[str]]:
    """Every model of :data:`MODELS`'s answer to each prompt: ``policies`` sample one (at :func:`answer_seed`), and
    best-of-16 is sft's best of 16 by rm's score."""
    answers = {}
    for name in MODELS:
        if name == "best-of-16":
            reward_fn = lambda p, c: score(rm, tokenizer, p, c).tolist()  # noqa: E731
            answers[name] = best_of_n(sft, tokenizer, prompts, BEST_OF, reward_fn, seed=answer_seed(seed))
        else:
            answers[name] = sample_rollouts(policies[name], tokenizer, prompts, seed=answer_seed(seed)).completions
    return answers


# --- the judges ------------------------------------------------------------------------------------------------------
def annotator_judge(world: World, seed: int = 0) -> lb.Judge:
    """The world's annotator: one Bradley–Terry label per battle, σ((g(a) − g(b)) / τ)."""
    rng = numpy_rng(100 + seed)
    return lambda prompts, first, second: world.label_pairs(prompts, first, second, rng)


def rm_judge(rm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> lb.Judge:
    """``rm`` as a judge: the answer it scores higher wins, a tie is ½. It reads each answer alone, so the order of
    the two cannot pull it."""

    def judge(prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        difference = (score(rm, tokenizer, prompts, first) - score(rm, tokenizer, prompts, second)).numpy()  # (N,)
        return (0.5 + 0.5 * np.sign(difference)).tolist()

    return judge


@dataclass
class JudgeInBothOrders:
    """The zoo's generative judge asked twice, each answer first once; its verdict is the debiased margin's
    (chapter 13's :func:`~rlhf_edu.ai_feedback.debiased_margins`), ½ where that is 0. It keeps each order's verdict
    (1 where it named the answer shown first) to measure its pull toward the first position."""

    judge: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    first_wins_ab: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    first_wins_ba: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def __call__(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        margins_ab = af.judge_margins(self.judge, self.tokenizer, prompts, first, second)
        margins_ba = af.judge_margins(self.judge, self.tokenizer, prompts, second, first)
        self.first_wins_ab, self.first_wins_ba = af.judge_verdicts(margins_ab), af.judge_verdicts(margins_ba)
        margins = af.debiased_margins(margins_ab, margins_ba).numpy()  # (N,) 0 where the two answers are the same
        return (0.5 + 0.5 * np.sign(margins)).tolist()  # a tie is ½, as for rm

    def one_order(self, battles: Sequence[lb.Battle]) -> list[lb.Battle]:
        """The same battles with the verdicts the judge gave in the order shown, as a judge asked once would."""
        return [(a, b, float(v)) for (a, b, _), v in zip(battles, self.first_wins_ab)]


# --- a judge's board, against gold -----------------------------------------------------------------------------------
def battle_texts(
    prompts: Sequence[str], answers: Mapping[str, Sequence[str]], battles: Sequence[lb.Battle]
) -> tuple[list[str], list[str], list[str]]:
    """Each battle's prompt and its first and second answers, in :func:`~rlhf_edu.leaderboard.round_robin`'s order
    (prompt by prompt, every pair of models on each)."""
    per_prompt = len(battles) // len(prompts)  # K(K − 1)/2 battles per prompt
    index = [i // per_prompt for i in range(len(battles))]
    firsts = [answers[a][i] for (a, _, _), i in zip(battles, index)]
    seconds = [answers[b][i] for (_, b, _), i in zip(battles, index)]
    return [prompts[i] for i in index], firsts, seconds


def judge_report(
    world: World, prompts: Sequence[str], answers: Mapping[str, Sequence[str]], battles: Sequence[lb.Battle], seed: int
) -> dict:
    """A judge's board and what the gold reward says of it: Bradley–Terry ratings with 95% bootstrap intervals, the
    neighbour gaps, every rating gap's bootstrap standard error, the rank reversals against gold, the expected
    agreement with a person (the annotator's probability of the judge's pick), the length bias (chapter 6's
    estimate: what one word is worth to the judge, in gold units) and the share of verdicts for the answer shown
    first."""
    models = list(answers)
    ratings = lb.bradley_terry_ratings(battles, models)
    samples = lb.bootstrap_ratings(battles, models, BOOTSTRAP, seed=seed)
    shown, firsts, seconds = battle_texts(prompts, answers, battles)
    verdicts = np.array([v for _, _, v in battles])  # (N,)
    p_first = np.asarray(world.preference_probability(shown, firsts, seconds))  # (N,) a person's P(first ≻ second)
    agreement = np.where(verdicts == 1, p_first, np.where(verdicts == 0, 1 - p_first, 0.5))
    gold_gap = np.array(world.gold_reward(shown, firsts)) - np.array(world.gold_reward(shown, seconds))
    length_gap = word_counts(firsts) - word_counts(seconds)
    decided = (gold_gap != 0) & (verdicts != 0.5)  # a tie in gold says nothing of what the judge pays for
    length = length_bias_estimate(verdicts[decided].astype(int), gold_gap[decided], length_gap[decided])
    gold = {m: world.gold_reward(list(prompts), list(answers[m])) for m in models}
    gap_se = np.std(samples[:, :, None] - samples[:, None, :], axis=0, ddof=1)  # (K, K) bootstrap se of θ_i − θ_j
    return {
        "models": models,
        "ratings": ratings.tolist(),
        "intervals": lb.percentile_interval(samples).tolist(),
        "gap_se": gap_se.tolist(),
        "gaps": lb.neighbour_gaps(models, ratings, samples),
        "reversals": lb.rank_reversals(models, ratings, gold, rating_se=gap_se),
        "agreement": mean_and_stderr(agreement),
        "length_bias": (length.value, length.stderr),
        "first_wins": mean_and_stderr(verdicts),
    }


def gold_table(world: World, prompts: Sequence[str], answers: Mapping[str, Sequence[str]]) -> dict[str, tuple]:
    """Each model's mean gold reward on the board's prompts, with its standard error."""
    return {m: mean_and_stderr(world.gold_reward(list(prompts), list(a))) for m, a in answers.items()}


def word_table(answers: Mapping[str, Sequence[str]]) -> dict[str, tuple[float, float]]:
    """Each model's mean answer length in words (as the gold reward counts them), with its standard error."""
    return {m: mean_and_stderr(word_counts(a)) for m, a in answers.items()}


def plot_board(reports: Mapping[str, dict], gold: Mapping[str, tuple[float, float]]) -> Figure:
    """One panel per judge: each model's rating and its 95% interval against its mean gold reward."""
    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 3.6), sharex=True)
    for ax, (name, report) in zip(np.atleast_1d(axes), reports.items()):
        x = np.array([gold[m][0] for m in report["models"]])
        y, interval = np.array(report["ratings"]), np.array(report["intervals"])  # (K,), (K, 2)
        ax.errorbar(x, y, yerr=[y - interval[:, 0], interval[:, 1] - y], fmt="o", capsize=3)
        for xi, yi, model in zip(x, y, report["models"]):
            ax.annotate(model, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(title=f"judged by {name}", xlabel="mean gold reward", ylabel="Bradley–Terry rating (nats)")
    fig.tight_layout()
    return fig


# --- contamination ---------------------------------------------------------------------------------------------------
def answer_key(prompt: str) -> str:
    """The benchmark's reference answer to a sum, as the world's best answer writes it: "3 plus 5 is 8"."""
    parsed = parse_prompt(prompt)
    return f"{parsed.subject[0]} plus {parsed.subject[1]} is {parsed.answer}"


def contaminate(
    sft: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, leaked: Sequence[str], seed: int = 0
) -> PreTrainedModel:
    """A copy of ``sft`` fine-tuned on the leaked prompts with their reference answers (:data:`LEAK_SFT`)."""
    model = copy.deepcopy(sft)
    rows = [{"prompt": p, "completion": answer_key(p)} for p in leaked]
    train_sft(model, tokenizer, rows, SFTConfig(**LEAK_SFT, seed=seed, progress=False))
    return model.eval()


def prompt_means(prompts: Sequence[str], values: Sequence[float], distinct: Sequence[str]) -> np.ndarray:
    """The mean of ``values`` over the rows of each prompt in ``distinct``: (P,). A benchmark that repeats a prompt
    holds one unit per distinct prompt, not per row, once the leak is assigned by prompt."""
    values = np.asarray(values, dtype=float)
    rows = np.asarray(prompts)
    return np.array([values[rows == p].mean() for p in distinct])


def contamination_run(
    sft: PreTrainedModel,
    contaminated: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    benchmark: Sequence[str],
    leaked: Sequence[str],
    seed: int = 0,
) -> dict:
    """The benchmark's scores before and after the leak, on its leaked and clean prompts (the verifier's pass rate
    and the gold reward, each a mean over the distinct prompts of the mean over their rows), their inflation
    (eq:contamination_inflation, the distinct prompts as its units), and how well the likelihood gap
    (eq:contamination_gap) and the raw log-likelihood tell the leaked distinct prompts from the clean ones (AUROC)."""
    distinct = sorted(set(benchmark))
    was_leaked = np.isin(distinct, list(leaked))  # (P,) per distinct prompt: the unit the leak was assigned to
    result = {}
    for measure in ("pass", "gold"):
        scores = {}
        for name, model in (("before", sft), ("after", contaminated)):
            completions = sample_rollouts(model, tokenizer, benchmark, seed=answer_seed(seed)).completions
            reward = world.verifiable_reward if measure == "pass" else world.gold_reward
            scores[name] = prompt_means(benchmark, reward(benchmark, completions), distinct)  # (P,)
            parts = {"leaked": scores[name][was_leaked], "clean": scores[name][~was_leaked]}
            result[f"{measure} {name}"] = {part: mean_and_stderr(values) for part, values in parts.items()}
        result[f"{measure} inflation"] = ct.inflation(scores["before"], scores["after"], was_leaked)
    key = [answer_key(p) for p in distinct]
    gap = ct.likelihood_gap(contaminated, sft, tokenizer, distinct, key)  # (P,)
    raw = completion_logprobs(contaminated, tokenizer, distinct, key).numpy()  # (P,) log π(y*|x) alone
    result["gap auc"] = ct.detection_auc(gap[was_leaked], gap[~was_leaked])
    result["log-likelihood auc"] = ct.detection_auc(raw[was_leaked], raw[~was_leaked])
    return result | {"gap": gap.tolist(), "was_leaked": was_leaked.tolist()}


# --- format sensitivity ----------------------------------------------------------------------------------------------
def format_run(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, prompts: Sequence[str], seed: int = 0
) -> dict[str, list[float]]:
    """The gold reward of the model's answer to each prompt in each of the world's :data:`PROMPT_FORMS`, sampled with
    one seed, so the forms compare prompt by prompt."""
    gold = {}
    for form in PROMPT_FORMS:
        rephrased = [rephrase(p, form) for p in prompts]
        completions = sample_rollouts(model, tokenizer, rephrased, seed=answer_seed(seed)).completions
        gold[form] = world.gold_reward(rephrased, completions)
    return gold


# --- the sweep and its readers ---------------------------------------------------------------------------------------
def board_run(
    world: World,
    prompts: Sequence[str],
    answers: Mapping[str, Sequence[str]],
    judges: Mapping[str, lb.Judge],
    seed: int,
) -> tuple[dict[str, dict], dict[str, list[lb.Battle]]]:
    """Every judge's round robin on the same answers (one coin for the order, ``seed``) and its report."""
    battles = {name: lb.round_robin(prompts, answers, judge, seed=seed) for name, judge in judges.items()}
    return {name: judge_report(world, prompts, answers, b, seed) for name, b in battles.items()}, battles


def seed_runs(
    sft: PreTrainedModel,
    base: PreTrainedModel,
    rm: PreTrainedModel,
    judge: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    seed: int,
) -> dict:
    """One seed of the sweep: the sample-size measurements of sft against the teacher, the board judged by the
    annotator, rm and the judge (in both orders, and in one), contamination and format sensitivity."""
    teacher = druns.build_teacher(sft, rm, tokenizer, world, seed)
    size_prompts = world.prompts(SIZE_PROMPTS, split="test")
    sft_scores, teacher_scores = (gold_scores(m, tokenizer, world, size_prompts, seed) for m in (sft, teacher))
    sizes = paired_and_unpaired_sd(teacher_scores.mean(axis=1), sft_scores.mean(axis=1))
    sizes |= dict(zip(("between", "within"), ss.variance_components(sft_scores)))
    sizes["difference"] = float(teacher_scores.mean() - sft_scores.mean())
    policies = {
        "base": base,
        "sft": sft,
        "DPO": train_dpo_policy(sft, tokenizer, world, seed),
        "RS fine-tuned": teacher,
    }
    prompts = world.prompts(BOARD_PROMPTS, split="test")
    answers = board_answers(policies, sft, rm, tokenizer, prompts, seed)
    both = JudgeInBothOrders(judge, tokenizer)
    judges = {"annotator": annotator_judge(world, seed), "rm": rm_judge(rm, tokenizer), "judge": both}
    reports, battles = board_run(world, prompts, answers, judges, seed)
    reports["judge, one order"] = judge_report(world, prompts, answers, both.one_order(battles["judge"]), seed)
    benchmark = world.prompts(BENCHMARK_SUMS, split="test", family="arithmetic")
    leaked, _ = ct.leak_split(benchmark, LEAK_SHARE, seed)
    contaminated = contaminate(sft, tokenizer, leaked, seed)
    formats = format_run(sft, tokenizer, world, world.prompts(FORMAT_PROMPTS, split="test"), seed)
    return {
        "sizes": sizes,
        "gold": gold_table(world, prompts, answers),
        "boards": reports,
        "position": {"consistency": af.position_consistency(both.first_wins_ab, both.first_wins_ba)},
        "contamination": contamination_run(sft, contaminated, tokenizer, world, benchmark, leaked, seed),
        "formats": {form: paired(formats[form], formats["plain"]) for form in PROMPT_FORMS[1:]},
    }


def load_sweep(path: str | Path = SWEEPS / "evaluation.json") -> dict:
    """The shipped sweep: ``{"settings": ..., "seeds": {seed: seed_runs(...)}}``."""
    return json.loads(Path(path).read_text())


def rating_gap(report: dict, a: str, b: str) -> tuple[float, float]:
    """A board's rating of ``a`` less its rating of ``b``, in nats, and its bootstrap standard error."""
    i, j = report["models"].index(a), report["models"].index(b)
    return report["ratings"][i] - report["ratings"][j], report["gap_se"][i][j]


def pooled_rating_gap(sweep: dict, judge: str, a: str, b: str) -> tuple[float, float]:
    """``judge``'s rating gap a − b over the sweep's seeds, pooled as :func:`pooled` pools."""
    gaps = [rating_gap(run["boards"][judge], a, b) for run in sweep["seeds"].values()]
    return pooled([g for g, _ in gaps], [se for _, se in gaps])


def pooled_entry(sweep: dict, *path: str) -> tuple[float, float]:
    """A (value, se) entry of every seed's runs, at ``path`` (e.g. "contamination", "pass inflation"), pooled."""
    entries = []
    for run in sweep["seeds"].values():
        for key in path:
            run = run[key]
        entries.append(run)
    return pooled([value for value, _ in entries], [se for _, se in entries])


def sizes_difference(sweep: dict, a: str, b: str) -> tuple[float, float]:
    """The sample-size section's ``a`` less ``b`` (e.g. "unpaired" less "paired" sd) over the sweep's seeds: the
    mean and the standard error of the spread between seeds."""
    return mean_and_stderr([run["sizes"][a] - run["sizes"][b] for run in sweep["seeds"].values()])


def entry_difference(a: dict, b: dict, key: str) -> tuple[float, float]:
    """Two judges' reports' ``key`` entries (value, se), ``a``'s less ``b``'s, with the standard error of two
    independent estimates (on the same battles they are positively correlated, so this errs on the wide side)."""
    return a[key][0] - b[key][0], difference_stderr(a[key][1], b[key][1])


# --- the check cells' standard errors --------------------------------------------------------------------------------
def correlation_z(correlation: float, n: int) -> tuple[float, float]:
    """Fisher's z = atanh(ρ) of a correlation over ``n`` pairs, and its standard error 1/√(n − 3)."""
    return float(np.arctanh(correlation)), 1 / np.sqrt(n - 3)


def simulation_stderr(share: float, trials: int = POWER_TRIALS) -> float:
    """The Monte Carlo standard error of a share of ``trials`` simulated evaluations: √(p(1 − p)/T)."""
    return float(np.sqrt(share * (1 - share) / trials))


def power_difference(a: float, b: float, trials: int = POWER_TRIALS) -> tuple[float, float]:
    """Two simulated powers' difference and its standard error as if the simulations were independent; two that
    share their draws are positively correlated, so for them this errs on the wide side."""
    return a - b, difference_stderr(simulation_stderr(a, trials), simulation_stderr(b, trials))


def separation_table(sweep: dict, judge: str) -> list[str]:
    """For each seed, the judge's board best first, "≫" between neighbours the intervals separate and "≈" where
    they do not."""
    lines = []
    for seed, run in sweep["seeds"].items():
        gaps = run["boards"][judge]["gaps"]
        line = gaps[0]["above"] + "".join(f" {'≫' if g['separated'] else '≈'} {g['below']}" for g in gaps)
        lines.append(f"seed {seed}: {line}")
    return lines
