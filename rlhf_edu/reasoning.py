"""Reasoning training and inference-time scaling (chapter 14): verifiable rewards, samples as compute, sharpening.

Each question is answered on the world's sums, where the verifier knows the right answer:

1. **Inference-time scaling at an equal sample budget.** With k answers per prompt, how often is
   the chosen one right? pass@k (:func:`~rlhf_edu.core.stats.pass_at_k`) chooses with the
   verifier itself, an oracle a deployed model does not have; majority vote
   (:func:`majority_vote`, self-consistency) needs no verifier at all; best-of-k
   (:func:`~rlhf_edu.core.stats.best_of_n_per_prompt`) needs a learned one, a reward model.
   :func:`scaling_curves` computes every curve from the same N samples per prompt, each by an
   estimator that averages over all k-subsets, so the curves are not one noisy draw.
2. **Does RL teach new answers or sharpen old ones?** :func:`rlvr` runs GRPO against the
   verifier; :func:`answer_sample` measures pass@k, the entropy of the sampling distributions and
   the share of distinct answers (:func:`distinct_answer_share`) before and after;
   :func:`sharpening_runs` repeats it over seeds.
3. **The GRPO family.** :data:`GRPO_VARIANTS` names each variant by TRL's ``GRPOConfig`` fields;
   their one loss is :func:`~rlhf_edu.policy_gradients.token_policy_loss`, and
   :func:`gradient_weight` reads off how hard each pushes a token at a given ratio.
4. **Pitfalls**, as toggles with their measured effect: :func:`group_advantage_weight` (the
   std-normalised advantage's difficulty bias), :func:`token_weights` (the per-sequence mean's
   length bias) and :func:`kl_gradient_placements` (where the KL sits, and whose gradient it gives).
5. **Thinking as inference-time compute.** :func:`thinking_runs` trains on sums of three numbers
   answered directly or step by step, and sets a process reward model against an outcome one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .core.logprobs import check_language_model
from .core.rollouts import RewardFn, Rollout, sample_rollouts
from .core.runtime import MAX_NEW_TOKENS, numpy_rng
from .core.stats import best_of_n_per_prompt, mean_and_stderr, pass_at_k_by_prompt
from .core.training import History
from .core.validation import check_int, check_texts
from .core.world import NUMBERS, World, normalize_text, parse_prompt
from .policy_gradients import (
    PolicyGradientConfig,
    aggregate_token_losses,
    grpo_advantages,
    token_policy_loss,
    train_policy_gradient,
)
from .regularization import completion_logits, exact_token_kl, kl_estimate

# --- final answers and majority vote ----------------------------------------------------------------------------------
Answer = int | None  # a completion's final answer: its last number, or None where it states none

KS = (1, 2, 4, 8, 16, 32, 64)  # the sample budgets the notebook compares


def final_answer(completion: str) -> Answer:
    """The last number an answer states, as the verifier reads it ("3 plus 5 is 8" → 8); None where there is none."""
    numbers = [int(w) for w in normalize_text(completion).split() if w in NUMBERS]
    return numbers[-1] if numbers else None


def check_answers(answers: Sequence[Answer], name: str = "answers") -> list[Answer]:
    """``answers`` as a non-empty list of ints or None, or a ValueError/TypeError naming what is wrong."""
    if isinstance(answers, str) or not isinstance(answers, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a list of final answers (ints, or None for no answer), got {answers!r}")
    answers = list(answers)
    if not answers:
        raise ValueError(f"{name} is empty: a vote needs at least one answer; sample k >= 1 answers per prompt")
    bad = [a for a in answers if a is not None and not isinstance(a, int | np.integer)]
    if bad:
        raise TypeError(f"{name} holds {bad[0]!r}: final answers are ints (or None), e.g. from final_answer")
    return [None if a is None else int(a) for a in answers]


def majority_vote(answers: Sequence[Answer], rng: np.random.Generator | int = 0) -> Answer:
    """Self-consistency (Wang et al. 2022): the most common final answer among ``answers``; returns it.

    The tie rule: an answer with no number (None) does not vote; among answers tied for the
    most votes, one is drawn uniformly at random (``rng``, a generator or a seed). With no
    vote at all the result is None, which is never right.
    """
    votes = Counter(a for a in check_answers(answers) if a is not None)
    if not votes:
        return None
    top = max(votes.values())
    tied = [a for a, count in votes.items() if count == top]  # in the order they first appear
    return tied[int(numpy_rng(rng, "rng").integers(len(tied)))]


def majority_vote_accuracy(answers: Sequence[Answer], truth: int, k: int) -> float:
    """The chance that :func:`majority_vote` over k of ``answers`` (drawn without replacement) is ``truth``.

    Exact, over all C(N, k) subsets with the tie rule's uniform draw, without enumerating them:
    for each count m of right answers drawn, the other answers' counts enter through the
    generating function Π_a [Σ_{j<m} C(c_a, j) x^j + C(c_a, m) x^m y] (an answer with fewer
    than m votes loses; one with exactly m ties, marked by y), and the answers without a
    number through Σ_j C(c_∅, j) x^j. The coefficient of x^{k−m} y^t counts the subsets where
    t answers tie with the truth, which then wins with chance 1/(1 + t).
    """
    answers = check_answers(answers)
    k = check_int(k, "k", low=1, fix="majority vote over at least one answer")
    if k > len(answers):
        raise ValueError(f"k = {k} is larger than the {len(answers)} answers sampled: sample at least k per prompt")
    counts = Counter(answers)
    right = counts.pop(truth, 0)
    silent = counts.pop(None, 0)
    silent_poly = np.array([math.comb(silent, j) for j in range(silent + 1)], dtype=np.float64)[:, None]  # (c_∅+1, 1)
    total = 0.0
    for m in range(1, min(right, k) + 1):
        poly = silent_poly  # (x degree, y degree): coefficients over (votes drawn, answers tied with the truth)
        for count in counts.values():
            poly = _times_answer(poly, count, m)
        if k - m < poly.shape[0]:
            ties = poly[k - m]  # (t,) subsets of the other k − m draws with t tied answers
            total += math.comb(right, m) * float(ties @ (1.0 / (1.0 + np.arange(len(ties)))))
    return total / math.comb(len(answers), k)


def _times_answer(poly: np.ndarray, count: int, m: int) -> np.ndarray:
    """``poly`` (x degree, y degree) times one answer's factor Σ_{j<m} C(count, j) x^j + C(count, m) x^m y."""
    X, Y = poly.shape
    product = np.zeros((X + m, Y + 1))
    for j in range(min(count, m - 1) + 1):  # fewer votes than the truth's m: this answer loses
        product[j : j + X, :Y] += math.comb(count, j) * poly
    product[m : m + X, 1:] += math.comb(count, m) * poly  # exactly m votes: a tie (C is 0 when count < m)
    return product


# --- one sample of answers, and the scaling curves --------------------------------------------------------------------
@dataclass
class AnswerSample:
    """N answers from one policy to each of M verifiable prompts, and what the chapter measures on them.

    ``completions`` are (M · N,) prompt by prompt; ``answers`` and ``correct`` are (M, N);
    ``entropy`` and ``length`` are (M,) per-prompt means over the answers' tokens.
    """

    prompts: list[str]  # (M,)
    completions: list[str]  # (M · N,) prompt 0's answers first
    answers: list[list[Answer]]  # (M, N) final answers
    truths: list[int]  # (M,) each prompt's right answer
    correct: np.ndarray  # (M, N) 1.0 where the verifier says right
    entropy: np.ndarray  # (M,) mean entropy of the distributions each token was drawn from
    length: np.ndarray  # (M,) mean completion length in tokens

    @property
    def num_samples(self) -> int:
        return self.correct.shape[1]

    @property
    def repeated_prompts(self) -> list[str]:
        """(M · N,) each prompt once per answer, aligned with ``completions``: what a scorer takes."""
        return [p for p in self.prompts for _ in range(self.num_samples)]


def answer_sample(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    verifier: RewardFn,
    num_samples: int = 64,
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> AnswerSample:
    """Sample ``num_samples`` answers per prompt at temperature 1 and read them: returns an :class:`AnswerSample`."""
    prompts = check_texts(prompts, "prompts")
    rollout = sample_rollouts(policy, tokenizer, prompts, num_samples, max_new_tokens, seed=seed)
    M, N = len(prompts), num_samples
    correct = np.asarray(verifier(rollout.prompts, rollout.completions), dtype=np.float64).reshape(M, N)
    mask = rollout.mask  # (M · N, T)
    token_entropy = ((rollout.entropies * mask).sum(1) / mask.sum(1).clamp(min=1)).view(M, N)  # (M, N)
    return AnswerSample(
        prompts=prompts,
        completions=rollout.completions,
        answers=[[final_answer(c) for c in rollout.completions[i * N : (i + 1) * N]] for i in range(M)],
        truths=[parse_prompt(p).answer for p in prompts],
        correct=correct,
        entropy=token_entropy.mean(1).double().cpu().numpy(),
        length=mask.sum(1).view(M, N).mean(1).double().cpu().numpy(),
    )


def majority_vote_by_prompt(sample: AnswerSample, ks: Sequence[int] = KS) -> dict[int, np.ndarray]:
    """:func:`majority_vote_accuracy` of each prompt for each k: ``{k: (M,)}``."""
    return {k: np.array([majority_vote_accuracy(a, t, k) for a, t in zip(sample.answers, sample.truths)]) for k in ks}


# What each strategy needs at test time, to choose one of its k answers.
NEEDS_AT_TEST_TIME = {
    "pass@k": "the verifier itself: an oracle, the ceiling of any way to choose",
    "majority vote": "nothing but the answers: no verifier, no reward model",
    "best-of-k": "a learned verifier, a reward model that scores every answer",
}


def scaling_curves(
    sample: AnswerSample, scores: dict[str, np.ndarray] | None = None, ks: Sequence[int] = KS
) -> dict[str, dict[int, np.ndarray]]:
    """Every strategy's accuracy at each k, per prompt, from the same sample: ``{strategy: {k: (M,)}}``.

    ``"pass@k"`` (Chen et al.'s unbiased estimator), ``"majority vote"`` (exact over the
    k-subsets) and, for each named (M, N) matrix in ``scores``, ``"best-of-k: <name>"`` (the
    order-statistics estimator of chapter 10, on the verifier's 0/1). Averaged over prompts,
    each is the mean accuracy; their spread over prompts gives its standard error.
    """
    curves = {"pass@k": pass_at_k_by_prompt(sample.correct, ks), "majority vote": majority_vote_by_prompt(sample, ks)}
    for name, matrix in (scores or {}).items():
        curves[f"best-of-k: {name}"] = {k: best_of_n_per_prompt(matrix, sample.correct, k) for k in ks}
    return curves


def plot_scaling_curves(
    curves: dict[str, dict[int, np.ndarray]], k_max: int | None = None, ax: Axes | None = None
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """Mean accuracy against k, one line per strategy, ± one standard error over prompts; up to ``k_max``."""
    ax = ax if ax is not None else plt.subplots(figsize=(6, 3.6))[1]
    for i, (name, curve) in enumerate(curves.items()):
        ks = [k for k in curve if k_max is None or k <= k_max]
        means, errors = zip(*(mean_and_stderr(curve[k]) for k in ks))
        ax.errorbar(ks, means, yerr=errors, fmt="o-", ms=3, capsize=2, color=f"C{i}", label=name)
    ax.set(xscale="log", xlabel="k, answers sampled per prompt", ylabel="accuracy", ylim=(0, 1.02))
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.legend(fontsize=8, loc="upper left")
    ax.figure.tight_layout()
    return ax.figure


# --- sharpening: RL from verifiable rewards ---------------------------------------------------------------------------
def distinct_answer_share(sample: AnswerSample) -> np.ndarray:
    """Each prompt's number of distinct final answers over its N answers (None counts as one), (M,)."""
    return np.array([len(set(answers)) / len(answers) for answers in sample.answers])


# Notebook 11's RLVR run, with no KL: RLVR commonly drops the reference (DAPO, Dr. GRPO), β = 0.
RLVR_CONFIG = {
    "algorithm": "grpo",
    "learning_rate": 1e-3,
    "batch_size": 16,
    "num_generations": 8,
    "num_steps": 40,
    "beta": 0.0,
    "max_completion_length": 12,
}


def rlvr(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    world: World,
    seed: int = 0,
    eval_fn: Callable[[PreTrainedModel], dict[str, float]] | None = None,
    **overrides,
) -> tuple[PreTrainedModel, History]:
    """GRPO against the world's verifier on ``prompts``, from a copy of ``policy``: ``(trained copy, History)``.

    The settings are :data:`RLVR_CONFIG`, changed by ``overrides`` (any
    :class:`~rlhf_edu.policy_gradients.PolicyGradientConfig` field, e.g. ``loss_type``).
    """
    check_language_model(policy, tokenizer, "policy")
    config = PolicyGradientConfig(**(RLVR_CONFIG | {"seed": seed, "progress": False} | overrides))
    model = copy.deepcopy(policy)
    history = train_policy_gradient(model, tokenizer, prompts, world.verifiable_reward, config, eval_fn=eval_fn)
    return model, history


def gained_and_lost(runs: dict, k: int = 64) -> dict[str, tuple[int, int]]:
    """Per seed of :func:`sharpening_runs`, the prompts RLVR gained and lost at pass@k: ``{seed: (gained, lost)}``.

    Gained: no right answer among the k before (pass@k = 0), at least one after; lost: the
    other way round. New answers show as gains; sharpening as losses.
    """
    before = np.array(runs["before"]["pass_at_k"][str(k)])
    counts = {}
    for seed, summary in runs["seeds"].items():
        after = np.array(summary["pass_at_k"][str(k)])
        counts[seed] = (int(((before == 0) & (after > 0)).sum()), int(((before > 0) & (after == 0)).sum()))
    return counts


def crossover_k(before: dict[int, np.ndarray], after: dict[int, np.ndarray]) -> int | None:
    """The smallest k where the mean pass@k before RL is at least the mean after; None where it never is."""
    return next((k for k in sorted(before) if before[k].mean() >= after[k].mean()), None)


def answer_summary(sample: AnswerSample, ks: Sequence[int] = KS) -> dict:
    """What the sharpening question reads off one :class:`AnswerSample`, as plain numbers for a JSON file.

    ``pass_at_k``: ``{k: [per-prompt pass@k]}``; ``entropy``, ``distinct_share`` and ``length``:
    per-prompt lists too, so that two samples on the same prompts compare prompt by prompt.
    """
    return {
        "pass_at_k": {str(k): v.tolist() for k, v in pass_at_k_by_prompt(sample.correct, ks).items()},
        "entropy": sample.entropy.tolist(),
        "distinct_share": distinct_answer_share(sample).tolist(),
        "length": sample.length.tolist(),
    }


def sharpening_runs(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    seeds: Sequence[int],
    num_prompts: int = 128,
    num_samples: int = 64,
    **overrides,
) -> dict:
    """RLVR (:func:`rlvr`) once per seed from ``policy``, each measured before and after on the same held-out sums.

    Trains on 200 training-split sums; measures ``num_samples`` answers to each of
    ``num_prompts`` test-split sums (sampling seed 1 throughout, so every policy answers the
    same prompts with the same random stream). Returns ``{"before": summary, "seeds":
    {seed: summary | {"history": per-step reward, entropy and length}}}``, with
    :func:`answer_summary`'s summaries.
    """
    train_prompts = world.prompts(200, family="arithmetic")
    test_prompts = world.prompts(num_prompts, split="test", family="arithmetic")
    ks = [k for k in KS if k <= num_samples]
    measure = lambda model: answer_summary(  # noqa: E731
        answer_sample(model, tokenizer, test_prompts, world.verifiable_reward, num_samples, seed=1), ks
    )
    runs = {"before": measure(policy), "seeds": {}}
    for seed in seeds:
        model, history = rlvr(policy, tokenizer, train_prompts, world, seed=seed, **overrides)
        trace = {name: history[name] for name in ("reward", "entropy", "completions/mean_length")}
        runs["seeds"][str(seed)] = measure(model) | {"history": trace}
    return runs


def summary_mean(summary: dict, name: str, k: int | None = None) -> float:
    """The mean over prompts of ``name`` in one :func:`answer_summary`: ``"pass_at_k"`` (at ``k``), ``"entropy"``,
    ``"distinct_share"`` or ``"length"``."""
    return float(np.mean(summary[name][str(k)] if name == "pass_at_k" else summary[name]))


def seed_difference(runs: dict, name: str, k: int | None = None) -> tuple[np.ndarray, float, float]:
    """Each seed's mean ``name`` after RLVR minus before, from :func:`sharpening_runs`: ``(per-seed, mean, stderr)``.

    ``name`` and ``k`` as :func:`summary_mean` reads them; the standard error is over seeds,
    which is where a run's luck lives.
    """
    before = summary_mean(runs["before"], name, k)
    per_seed = np.array([summary_mean(summary, name, k) - before for summary in runs["seeds"].values()])
    return (per_seed, *mean_and_stderr(per_seed))


# --- the GRPO family on the RLVR task ---------------------------------------------------------------------------------
# Each variant as TRL's GRPOConfig spells it, on top of RLVR_CONFIG; every one takes two passes over each rollout
# (μ = num_iterations = 2), so that the second pass is off-policy and the ratios, clips and gates have work to do.
GRPO_VARIANTS = {
    "grpo": {"loss_type": "grpo"},  # DeepSeekMath: the per-sequence mean, std-scaled advantages
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"},  # a constant normaliser, no std
    "dapo": {"loss_type": "dapo", "epsilon_high": 0.28, "dynamic_sampling": True, "mask_truncated_completions": True},
    "gspo": {"importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4},  # the paper's ε
    "cispo": {"loss_type": "cispo", "epsilon_high": 5.0},  # ε_max as ScaleRL recommends
    "sapo": {"loss_type": "sapo"},  # TRL's default temperatures, 1.0 and 1.05
}

GRPO_FAMILY_SETTINGS = {"num_iterations": 2, "num_steps": 30, "eval_steps": 10}


def pass_at_k_eval_fn(
    world: World, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], num_samples: int = 16, seed: int = 1
) -> Callable[[PreTrainedModel], dict[str, float]]:
    """An ``eval_fn`` for a trainer: mean pass@1 and pass@``num_samples`` on ``prompts`` (``eval/pass@k``)."""

    def eval_fn(model: PreTrainedModel) -> dict[str, float]:
        sample = answer_sample(model, tokenizer, prompts, world.verifiable_reward, num_samples, seed=seed)
        curve = pass_at_k_by_prompt(sample.correct, (1, num_samples))
        return {f"eval/pass@{k}": float(v.mean()) for k, v in curve.items()}

    return eval_fn


def grpo_family_runs(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, seeds: Sequence[int]
) -> dict[str, History]:
    """Each of :data:`GRPO_VARIANTS` by :func:`rlvr` once per seed, on 64 held-out sums: ``{"name/seed": History}``.

    Each history has a row per update (``num_iterations`` a rollout) with its rollout's ``reward``,
    ``entropy`` and ``completions/mean_length``, held-out ``eval/pass@1`` and ``eval/pass@16``
    every ``eval_steps`` rollouts, and a last row with the evaluation after training.
    """
    train_prompts = world.prompts(200, family="arithmetic")
    eval_fn = pass_at_k_eval_fn(world, tokenizer, world.prompts(64, split="test", family="arithmetic"))
    runs = {}
    for name, variant in GRPO_VARIANTS.items():
        for seed in seeds:
            settings = GRPO_FAMILY_SETTINGS | variant
            model, history = rlvr(policy, tokenizer, train_prompts, world, seed, eval_fn, **settings)
            history.log(step=len(history.steps), **eval_fn(model))  # the last evaluation, after the last update
            runs[f"{name}/{seed}"] = history
    return runs


def variant_curve(
    histories: dict[str, History], variant: str, name: str, num_iterations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One variant's ``name`` per rollout, over its seeds: ``(rollouts, mean, stderr)``, three (S,) arrays.

    A history logs a row per update, ``num_iterations`` of them per rollout; each rollout's
    first row counts once, so a rollout's metrics are not counted twice.
    """
    rows = []
    for run, history in histories.items():
        if run.split("/")[0] == variant:
            by_rollout = {}
            for step in history.steps:
                if name in step:
                    by_rollout.setdefault(int(step["step"]) // num_iterations, step[name])
            rows.append(by_rollout)
    rollouts = np.array(sorted(rows[0]))
    values = np.array([[row[r] for r in rollouts] for row in rows])  # (seeds, S)
    return rollouts, values.mean(0), values.std(0, ddof=1) / math.sqrt(len(values))


def plot_variant_comparison(
    histories: dict[str, History],
    metrics: Sequence[str],
    num_iterations: int,
    highlight: str | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """One panel per metric of :func:`grpo_family_runs`, one line per variant (mean over seeds, :func:`variant_curve`)
    against the rollout; ``highlight`` one variant in bold, with ± 1 standard error shaded."""
    if axes is None:
        axes = plt.subplots(1, len(metrics), figsize=(3.75 * len(metrics), 3))[1]
    variants = list(dict.fromkeys(run.split("/")[0] for run in histories))
    for i, variant in enumerate(variants):
        bold = highlight is None or variant == highlight
        for ax, metric in zip(axes, metrics):
            rollouts, mean, se = variant_curve(histories, variant, metric, num_iterations)
            style = "o-" if metric.startswith("eval") else "-"
            ax.plot(
                rollouts,
                mean,
                style,
                ms=3,
                color=f"C{i}",
                lw=2.4 if bold else 1,
                alpha=1 if bold else 0.35,
                label=variant,
            )
            if bold:
                ax.fill_between(rollouts, mean - se, mean + se, color=f"C{i}", alpha=0.2)
    for ax, metric in zip(axes, metrics):
        ax.set(xlabel="rollout (step)", title=metric)
    axes[0].legend(fontsize=8)
    axes[0].figure.tight_layout()
    return axes[0].figure


def variant_final(histories: dict[str, History], name: str) -> dict[str, tuple[float, float]]:
    """Each variant's last logged ``name`` over its seeds, from :func:`grpo_family_runs`: ``{variant: (mean, se)}``."""
    finals: dict[str, list[float]] = {}
    for run, history in histories.items():
        finals.setdefault(run.split("/")[0], []).append(history[name][-1])
    return {variant: mean_and_stderr(values) for variant, values in finals.items()}


def gradient_weight(ratios: torch.Tensor, advantage: float, **variant) -> torch.Tensor:
    """How hard each variant pushes a token at ratio ρ: −∂loss/∂log π_θ ÷ A, one per ratio in ``ratios`` (R,).

    Read off autograd through :func:`~rlhf_edu.policy_gradients.token_policy_loss`, one
    one-token completion per ratio (log π_old = 0, log π_θ = log ρ). The plain policy gradient
    has weight ρ (the ratio's own slope); a clip sets it to 0 where it bites, CISPO caps it, and
    SAPO's gate bends it down smoothly. ``variant`` holds :data:`GRPO_VARIANTS`-style settings.
    """
    config = PolicyGradientConfig(**(RLVR_CONFIG | variant))
    logps = ratios.double().log().unsqueeze(1).requires_grad_()  # (R, 1)
    old_logps, mask = torch.zeros_like(logps), torch.ones_like(logps)  # (R, 1) each
    advantages = torch.full((len(ratios),), float(advantage), dtype=torch.float64)  # (R,)
    loss, _ = token_policy_loss(
        logps,
        old_logps,
        advantages,
        mask,
        dataclasses.replace(config, loss_type="bnpo") if config.loss_type in ("grpo", "dr_grpo", "dapo") else config,
    )
    (grad,) = torch.autograd.grad(loss * len(ratios), logps)  # undo the mean over the R rows
    return -grad[:, 0] / advantage


def plot_gradient_weights(
    variants: dict[str, dict], highlight: str | None = None, axes: Sequence[Axes] | None = None
) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
    """:func:`gradient_weight` against ρ for A = +1 and A = −1, one line per variant; ``highlight`` one in bold."""
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)[1]
    ratios = torch.linspace(0.3, 2.5, 441)  # (R,)
    for ax, advantage in zip(axes, (1.0, -1.0)):
        for i, (name, variant) in enumerate(variants.items()):
            bold = highlight is None or name == highlight
            weights = gradient_weight(ratios, advantage, **variant)
            width = 1.2 + 1.1 * (len(variants) - 1 - i)  # the first drawn widest, so lines that coincide all show
            ax.plot(ratios, weights, color=f"C{i}", lw=width, alpha=0.9 if bold else 0.35, label=name)
        ax.plot(ratios, ratios, color="grey", ls=":", lw=1, label="no clip: ρ")
        ax.set(xlabel="ρ = π_θ / π_old", title=f"A = {advantage:+g}")
    axes[0].set_ylabel("gradient weight on ∇log π")
    axes[0].legend(fontsize=8)
    axes[0].figure.tight_layout()
    return axes[0].figure


# --- pitfalls, each a toggle with its measured effect -----------------------------------------------------------------
def group_advantage_weight(num_generations: int, scale_rewards: str = "group") -> dict[int, float]:
    """Σ_i |A_i| of a group of G binary rewards with c right, for c = 1 … G − 1: ``{c: weight}``.

    It is how much one prompt pushes the gradient, by :func:`~rlhf_edu.policy_gradients.grpo_advantages`
    itself. Undivided (``"none"``, Dr. GRPO) the weight is 2c(G − c)/G, small for a prompt the
    policy almost never or almost always solves; divided by the group's std (``"group"``) it
    grows as √(c(G − c)) instead, which lifts those extreme prompts the most (the std makes
    Σ_i A_i² the same, G − 1, for every group). That is the difficulty bias Dr. GRPO names.
    """
    G = check_int(num_generations, "num_generations", low=2, fix="a group needs at least two answers")
    weights = {}
    for c in range(1, G):
        rewards = torch.tensor([[1.0] * c + [0.0] * (G - c)], dtype=torch.float64)  # (1, G)
        weights[c] = grpo_advantages(rewards, scale_rewards).abs().sum().item()
    return weights


def token_weights(lengths: Sequence[int], loss_type: str = "grpo", max_completion_length: int = 12) -> list[float]:
    """The weight each token of each completion gets in one loss, by ``loss_type``'s normaliser; one per completion.

    Read off autograd: the gradient of :func:`~rlhf_edu.policy_gradients.aggregate_token_losses`
    with respect to each per-token loss. The per-sequence mean (``"grpo"``) gives a token
    of a short answer more weight than one of a long answer (1/|y|), so a long wrong answer
    is punished less per token; a constant normaliser (``"dr_grpo"``) weighs every token alike.
    """
    lengths = [check_int(n, "lengths", fix="completion lengths in tokens, each at least 1") for n in lengths]
    T = max(lengths)
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])  # (B, T)
    losses = torch.zeros_like(mask, requires_grad=True)  # (B, T)
    aggregate_token_losses(losses, mask, loss_type, max_completion_length).backward()
    return [losses.grad[i, 0].item() for i in range(len(lengths))]


KL_PLACEMENTS = ("k1 in the reward", "k2 in the loss", "k3 in the loss", "k3 × ratio in the loss")


@torch.no_grad()
def visited_logits(
    policy: PreTrainedModel, ref_model: PreTrainedModel, rollout: Rollout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' logits at every real completion position of ``rollout``: two (K, V) tensors, K = Σ lengths.

    Each row is one prefix the policy visited; there the token distribution is known exactly,
    which is what :func:`kl_gradient_placements` needs.
    """
    keep = rollout.mask.bool()  # (B, N)
    return completion_logits(policy.eval(), rollout)[keep], completion_logits(ref_model.eval(), rollout)[keep]


def kl_gradient_placements(logits: torch.Tensor, ref_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The expected gradient of the KL term (β = 1) with respect to ``logits`` (P, V), by placement; and the exact one.

    On-policy (π_old = π, so the ratio ρ = π/π_old is 1 in value but carries a gradient), one
    sampled token y contributes w(y)·∇log π(y), with ∇_logits log π(y) = e_y − π, and

    - ``k1 in the reward``: w = k1 = log π(y)/π_ref(y), held constant (REINFORCE on −β·k1);
    - ``k2 in the loss``: ∇ ½(log π − log π_ref)² gives w = k1 again, sample by sample;
    - ``k3 in the loss``: ∂k3/∂log π gives w = 1 − π_ref/π, whose mean is ∇KL(π_ref‖π), the other direction;
    - ``k3 × ratio in the loss``: ∂(ρ·k3)/∂log π gives w = k3 + 1 − π_ref/π = k1 (DeepSeek-V3.2's correction).

    Each expectation E_{y~π}[w(y)·(e_y − π)] is summed over the whole vocabulary, so nothing is
    sampled. ``"exact"`` is autograd's gradient of chapter 8's exact token KL(π‖π_ref).
    Returns ``{name: (P, V)}``.
    """
    logits = logits.detach().double().requires_grad_()  # (P, V)
    ref_logits = ref_logits.detach().double()  # (P, V)
    mask = torch.ones(logits.shape[0], 1, dtype=torch.float64)  # (P, 1): one position per row
    exact_token_kl(logits.unsqueeze(1), ref_logits.unsqueeze(1), mask).sum().backward()
    logps = torch.log_softmax(logits.detach(), -1)  # (P, V) log π(y) for every y
    ref_logps = torch.log_softmax(ref_logits, -1)  # (P, V)
    probs = logps.exp()  # (P, V)
    k1 = kl_estimate(logps, ref_logps, "k1")  # (P, V)
    k3_slope = 1 - (ref_logps - logps).exp()  # (P, V) ∂k3/∂log π
    weights = {
        "k1 in the reward": k1,
        "k2 in the loss": k1,
        "k3 in the loss": k3_slope,
        "k3 × ratio in the loss": kl_estimate(logps, ref_logps, "k3") + k3_slope,
    }

    def expected(w: torch.Tensor) -> torch.Tensor:  # E_y[w(y)(e_y − π)] = π ⊙ w − π · E_π[w]
        return probs * w - probs * (probs * w).sum(-1, keepdim=True)  # (P, V)

    return {name: expected(w) for name, w in weights.items()} | {"exact": logits.grad}


def relative_bias(placements: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each placement's ‖E[ĝ] − ∇KL(π‖π_ref)‖ / ‖∇KL(π‖π_ref)‖, from :func:`kl_gradient_placements`."""
    exact = placements["exact"]
    return {name: ((g - exact).norm() / exact.norm()).item() for name, g in placements.items() if name != "exact"}


def reverse_kl_gradient(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """∇_logits KL(π_ref‖π), (P, V): π − π_ref, the gradient whose direction k3 in the loss follows."""
    return torch.softmax(logits.double(), -1) - torch.softmax(ref_logits.double(), -1)


# --- thinking as inference-time compute: three numbers, answered directly or step by step -----------------------------
THINKING_SFT = {"num_demonstrations": 1000, "num_epochs": 4}  # each style's demonstrations, and passes over them

THINKING_RLVR = {"num_steps": 30, "max_completion_length": 16}  # the steps format needs 12 tokens with its end

THINKING_KS = (1, 2, 4, 8, 16)

THINKING_PROMPTS = {"train": 200, "test": 64, "judges": 300}  # RLVR's sums, held-out sums, the PRM's and ORM's sums


def thinking_runs(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, seeds: Sequence[int]
) -> dict:
    """Sums of three numbers, per seed: SFT on each answer style, then RLVR, then a PRM against an ORM; a dict.

    From ``policy`` (``sft``, which has seen only two-number sums), for each style of
    :data:`~rlhf_edu.core.world.MULTI_STEP_STYLES`: fine-tune on the world's demonstrations
    (:data:`THINKING_SFT`), measure 16 answers to each of 64 held-out three-number sums,
    run :func:`rlvr` (:data:`THINKING_RLVR`), measure again. Then, on the ``steps`` model's
    answers, a process reward model (labels per step) and an outcome reward model (one label
    per answer), each trained on 1,200 of its answers, choose best-of-k among the same 16.
    Returns ``{seed: {"direct": {"sft": summary, "rlvr": summary}, "steps": {...},
    "best_of_k": {strategy: {k: [per prompt]}}}}``, with :func:`answer_summary`'s summaries.
    """
    from .core.training import TrainingConfig
    from .core.world import MULTI_STEP, MULTI_STEP_STYLES
    from .instruction_tuning import SFTConfig, train_sft
    from .reward_modeling import (
        correctness_probability,
        orm_dataset,
        outcome_reward_model_from,
        prm_dataset,
        prm_score,
        train_outcome_reward_model,
        train_process_reward_model,
    )

    train_prompts = world.prompts(THINKING_PROMPTS["train"], family=MULTI_STEP)
    test_prompts = world.prompts(THINKING_PROMPTS["test"], split="test", family=MULTI_STEP)
    measure = lambda model: answer_sample(  # noqa: E731
        model, tokenizer, test_prompts, world.verifiable_reward, num_samples=16, seed=1
    )
    runs = {}
    for seed in seeds:
        run, students = {}, {}
        for style in MULTI_STEP_STYLES:
            student = copy.deepcopy(policy)
            demos = world.multi_step_sft_dataset(THINKING_SFT["num_demonstrations"], style)
            train_sft(
                student, tokenizer, demos, SFTConfig(num_epochs=THINKING_SFT["num_epochs"], seed=seed, progress=False)
            )
            trained, _ = rlvr(student, tokenizer, train_prompts, world, seed, **THINKING_RLVR)
            run[style] = {
                "sft": answer_summary(measure(student), THINKING_KS),
                "rlvr": answer_summary(measure(trained), THINKING_KS),
            }
            students[style] = student
        steps_model, config = (
            students["steps"],
            TrainingConfig(learning_rate=1e-3, num_epochs=2, seed=seed, progress=False),
        )
        prm = outcome_reward_model_from(steps_model, seed=seed)
        train_process_reward_model(
            prm, tokenizer, prm_dataset(world, steps_model, tokenizer, THINKING_PROMPTS["judges"], seed=seed), config
        )
        orm = outcome_reward_model_from(steps_model, seed=seed)
        orm_data = orm_dataset(world, steps_model, tokenizer, THINKING_PROMPTS["judges"], seed=seed, family=MULTI_STEP)
        train_outcome_reward_model(orm, tokenizer, orm_data, config)
        sample = measure(steps_model)
        shape = sample.correct.shape
        scores = {
            "PRM (min over steps)": prm_score(prm, tokenizer, sample.repeated_prompts, sample.completions).numpy(),
            "ORM": correctness_probability(orm, tokenizer, sample.repeated_prompts, sample.completions).numpy(),
        }
        curves = scaling_curves(sample, {name: s.reshape(shape) for name, s in scores.items()}, THINKING_KS)
        run["best_of_k"] = {name: {str(k): v.tolist() for k, v in curve.items()} for name, curve in curves.items()}
        runs[str(seed)] = run
    return runs
