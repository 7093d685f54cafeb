"""Any policy against the world: its samples, their gold reward and components, and its KL to a reference.

Best-of-N, policy gradients and DPO are all judged the same way: sample one answer per
held-out prompt at temperature 1, score the answers with the world's hidden gold
reward (and each of its components, to see which one a policy won or lost on), and
measure how far the policy moved from its reference,

    KL(π ‖ π_ref) = E_{x, y ~ π(·|x)} [ log π(y|x) − log π_ref(y|x) ]        (eq:kl_distance_regularization)

estimated by the mean log-ratio over those same samples. Plotted against each other,
gold reward and KL draw a reward–KL frontier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .logprobs import batch_sequence_logprobs
from .rollouts import Rollout, sample_rollouts
from .runtime import MAX_NEW_TOKENS, SCORING_BATCH_SIZE
from .scoring import score_rows
from .stats import mean_and_stderr, pass_at_k_by_prompt
from .validation import check_choice, check_int, check_texts
from .world import FAMILIES, World, parse_prompt


@dataclass
class PolicyEvaluation:
    """A policy's samples on fixed prompts, their gold rewards and components, and the KL to a reference on them."""

    prompts: list[str]
    completions: list[str]
    gold_rewards: list[float]  # one per sample: Σ_k w_k · c_k
    components: dict[str, list[float]]  # component name -> one c_k per sample, as World.gold_components gives them
    kl: float  # KL(π ‖ π_ref) in nats, estimated on the samples: the mean of log_ratios
    log_ratios: list[float] = field(default_factory=list)  # one log π(y|x) − log π_ref(y|x) per sample, if kept

    @property
    def gold_reward(self) -> float:
        """The mean gold reward of the samples."""
        return float(np.mean(self.gold_rewards))

    def component_means(self, family: str | None = None) -> dict[str, float]:
        """The mean of each gold component over the samples, in the world's order.

        ``family`` ("arithmetic", "review" or "describe") keeps that family's prompts only.
        """
        keep = np.ones(len(self.prompts), bool)  # pragma: no mutate (indexing by None keeps every value too)
        if family is not None:
            check_choice(family, "family", FAMILIES)
            keep = np.array([parse_prompt(p).family == family for p in self.prompts])
            if not keep.any():
                raise ValueError(f"no {family} prompt among the {len(self.prompts)} evaluated: evaluate more prompts")
        return {name: float(np.mean(np.asarray(values)[keep])) for name, values in self.components.items()}


def rollout_rows(rollout: Rollout) -> list[dict[str, list[int]]]:
    """Each sample of ``rollout`` as an encoded row (``input_ids``, ``completion_mask``), padding dropped."""
    rows = []
    for ids, real, completion in zip(
        rollout.input_ids.cpu(), rollout.attention_mask.cpu(), rollout.completion_mask.cpu()
    ):
        keep = real.bool()
        rows.append({"input_ids": ids[keep].tolist(), "completion_mask": completion[keep].tolist()})
    return rows


def rollout_log_ratios(
    rollout: Rollout, ref_model: PreTrainedModel, pad_token_id: int, batch_size: int = SCORING_BATCH_SIZE
) -> torch.Tensor:
    """log π(y|x) − log π_ref(y|x) for each sample of a rollout from π: a (N,) float64 tensor on the CPU.

    log π(y|x) is the sum of the sampling log-probs the rollout kept, so only the
    reference runs; it scores exactly the sampled tokens, a cut-off answer included.
    The terms are heavy-tailed (a sample the reference finds unlikely carries tens of
    nats), so a KL measured on a few hundred of them needs its standard error.
    """
    policy_logps = rollout.logps.sum(dim=1).cpu()  # (N,) log π(y|x), summed while sampling
    ref_logps = score_rows(ref_model, rollout_rows(rollout), pad_token_id, batch_sequence_logprobs, batch_size)  # (N,)
    return policy_logps.double() - ref_logps.double()


def rollout_kl(
    rollout: Rollout, ref_model: PreTrainedModel, pad_token_id: int, batch_size: int = SCORING_BATCH_SIZE
) -> float:
    """KL(π‖π_ref) on a rollout sampled from π at temperature 1: the mean of :func:`rollout_log_ratios`."""
    return rollout_log_ratios(rollout, ref_model, pad_token_id, batch_size).mean().item()


def evaluate_policy(
    policy: PreTrainedModel,
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: World,
    prompts: Sequence[str],
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> PolicyEvaluation:
    """Sample one answer per prompt from ``policy`` (temperature 1); return its gold reward, components and KL.

    The evaluation keeps the KL's terms, one per sample (``log_ratios``), so that two
    policies sampled with the same seed on the same prompts compare sample by sample.
    The KL of a model to itself is 0, and is returned as such without a scoring pass.
    """
    prompts = list(prompts)
    rollout = sample_rollouts(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    completions = rollout.completions
    log_ratios = (
        torch.zeros(len(prompts), dtype=torch.float64)  # pragma: no mutate (zeros are exact in any dtype)
        if policy is ref_model
        else rollout_log_ratios(rollout, ref_model, tokenizer.pad_token_id)
    )  # (N,)
    return PolicyEvaluation(
        prompts,
        completions,
        world.gold_reward(prompts, completions),
        world.gold_components(prompts, completions),
        log_ratios.mean().item(),
        log_ratios.tolist(),
    )


def gold_eval_fn(
    world: World,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    ref_model: PreTrainedModel,
    reward_fn: Callable[[list[str], list[str]], Sequence[float]] | None = None,
    seed: int = 0,
    monitors: Mapping[str, Callable[[list[str], list[str]], Sequence[float]]] | None = None,
) -> Callable[[PreTrainedModel], dict[str, float]]:
    """An ``eval_fn(policy) -> metrics`` for a trainer: :func:`evaluate_policy` on fixed ``prompts``.

    Its metrics are ``gold_reward`` and its standard error ``gold_reward_se``, one
    ``gold/<component>`` per gold component, ``eval/kl`` (to ``ref_model``) and, when
    ``reward_fn`` is given (the proxy the policy is trained on), ``eval/reward``: its mean
    score on the same samples. The same seed each time, so two calls differ only because
    the policy did. Each of ``monitors`` (``{name: fn(prompts, completions) -> one value per answer}``: a
    held-out judge, a word's count) adds ``monitor/<name>``, its mean on the same
    samples, and ``monitor/<name>_se``, that mean's standard error.
    """
    prompts = check_texts(prompts, "prompts")
    monitors = {} if monitors is None else monitors
    if not isinstance(monitors, Mapping) or not all(isinstance(k, str) and callable(f) for k, f in monitors.items()):
        raise TypeError(f"monitors must map names to functions fn(prompts, completions), got {monitors!r}")

    def eval_fn(policy: PreTrainedModel) -> dict[str, float]:
        evaluation = evaluate_policy(policy, ref_model, tokenizer, world, prompts, seed=seed)
        metrics = dict(zip(("gold_reward", "gold_reward_se"), mean_and_stderr(evaluation.gold_rewards)))
        metrics["eval/kl"] = evaluation.kl
        metrics |= {f"gold/{name}": value for name, value in evaluation.component_means().items()}
        if reward_fn is not None:
            metrics["eval/reward"] = float(np.mean(reward_fn(evaluation.prompts, evaluation.completions)))
        for name, monitor in monitors.items():
            values = list(monitor(evaluation.prompts, evaluation.completions))  # (N,) one value an answer
            if len(values) != len(prompts):
                raise ValueError(f"monitor {name!r} gave {len(values)} values for {len(prompts)} answers: one each")
            metrics[f"monitor/{name}"], metrics[f"monitor/{name}_se"] = mean_and_stderr(values)
        return metrics

    return eval_fn


def pass_at_k_curve(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    verifier: Callable[[list[str], list[str]], Sequence[float]],
    num_samples: int = 16,
    ks: Sequence[int] = (1, 2, 4, 8, 16),
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[int, float]:
    """pass@k on ``prompts`` for each k in ``ks``: ``num_samples`` answers per prompt at temperature 1, judged by
    ``verifier`` (1 for right), with the unbiased estimator :func:`~rlhf_edu.core.stats.pass_at_k`, averaged."""
    prompts = check_texts(prompts, "prompts")
    rollout = sample_rollouts(policy, tokenizer, prompts, num_samples, max_new_tokens, seed=seed)
    correct = np.asarray(verifier(rollout.prompts, rollout.completions)).reshape(len(prompts), num_samples) > 0.5
    return {k: float(v.mean()) for k, v in pass_at_k_by_prompt(correct.astype(np.float64), ks).items()}


def sample_table(evaluations: dict[str, PolicyEvaluation], n: int = 5) -> str:
    """The first ``n`` prompts, each followed by every policy's completion and its gold reward, as plain text."""
    check_int(n, "n", fix="the number of prompts to show, e.g. 5")
    if not evaluations:
        raise ValueError("evaluations is empty: pass {name: evaluate_policy(...)} for at least one policy")
    first = next(iter(evaluations.values()))
    if any(evaluation.prompts[:n] != first.prompts[:n] for evaluation in evaluations.values()):
        raise ValueError("the evaluations were sampled on different prompts: evaluate every policy on the same list")
    width = max(map(len, evaluations))
    lines = []
    for i, prompt in enumerate(first.prompts[:n]):
        lines.append(prompt)
        for name, evaluation in evaluations.items():
            lines.append(f"  {name:<{width}}  {evaluation.gold_rewards[i]:+.2f}  {evaluation.completions[i]}")
    return "\n".join(lines)
