"""Graduate to TRL: this project's DPO and GRPO recipes, run through TRL's own trainers.

A config of :mod:`rlhf_edu.direct_alignment` or :mod:`rlhf_edu.policy_gradients`
becomes TRL's config field by field (:func:`trl_dpo_config`, :func:`trl_grpo_config`);
:func:`train_dpo_trl` and :func:`train_grpo_trl` then train with ``trl.DPOTrainer`` and
``trl.GRPOTrainer`` on the same model, data and reward, and return the same
:class:`~rlhf_edu.core.training.History` as :func:`~rlhf_edu.direct_alignment.train_dpo`
and :func:`~rlhf_edu.policy_gradients.train_policy_gradient` do, so that one plot and
one evaluator read both. :data:`METRICS` says which logged names mean the same thing.

TRL is optional: ``pip install -e ".[trl]"`` installs it at the tested version.
Nothing else in the package imports it.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

import datasets
import matplotlib.pyplot as plt
import numpy as np
import torch
from datasets import Dataset
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..core import zoo
from ..core.evaluation import PolicyEvaluation, evaluate_policy
from ..core.logprobs import check_language_model
from ..core.preferences import build_preference_dataset
from ..core.runtime import get_device, shifted_seed
from ..core.stats import difference_stderr, mean_and_stderr
from ..core.training import History, TrainingConfig, make_loader, transformers_schedule
from ..core.validation import check_texts
from ..core.world import World
from ..core.zoo import no_progress_bars
from ..direct_alignment import DPOConfig, train_dpo
from ..policy_gradients import PolicyGradientConfig, train_policy_gradient

TRL_VERSION = "1.16.0"  # the version the tests and the TRL notebook run; pyproject's [trl] extra pins it
# this project's DPO losses that TRL 1.16 computes the same way under the same name; its "ipo" divides each
# log-ratio by the answer's length, where ours (direct_alignment.dpo_loss) takes summed log-probs
TRL_DPO_LOSS_TYPES = ("sigmoid", "hinge", "robust")

# (trainer, this project's metric, TRL's, same definition?, what it is, or how the two differ): either History
# reads the same names, so one plot shows both
METRICS = (
    ("both", "loss", "loss", True, "the minimised loss of the step"),
    ("both", "grad_norm", "grad_norm", True, "before clipping"),
    ("DPO", "rewards/chosen", "rewards/chosen", True, "β·(log π − log π_ref) of the chosen answers"),
    ("DPO", "rewards/rejected", "rewards/rejected", True, "the same, of the rejected answers"),
    ("DPO", "rewards/accuracies", "rewards/accuracies", True, "share of pairs ranked as labelled"),
    ("DPO", "rewards/margins", "rewards/margins", True, "mean chosen − rejected implicit reward"),
    ("DPO", "logps/chosen", "logps/chosen", True, "the chosen answers' log-probability, summed over their tokens"),
    ("DPO", "logps/rejected", "logps/rejected", True, "the same, of the rejected answers"),
    ("GRPO", "reward", "reward", True, "mean score of the step's completions"),
    (
        "GRPO",
        "reward_std",
        "reward_std",
        False,
        "ours: the std within each prompt's group, averaged over groups; "
        "TRL's: the std over all of the step's completions",
    ),
    ("GRPO", "frac_reward_zero_std", "frac_reward_zero_std", True, "share of groups whose answers all tie"),
    ("GRPO", "completions/mean_length", "completions/mean_length", True, "tokens, end of turn included"),
    ("GRPO", "completions/clipped_ratio", "completions/clipped_ratio", True, "share cut at max_completion_length"),
    ("GRPO", "clip_ratio/region_mean", "clip_ratio/region_mean", True, "share of tokens where the clip is active"),
    ("GRPO", "kl", "kl", False, "ours: Σ_t k1 per completion (nats); TRL's: the mean per-token k3"),
    (
        "GRPO",
        "entropy",
        "entropy",
        True,
        "mean entropy of the distributions the tokens come from (TRL's: at the update, the same on a first update)",
    ),
)


def require_trl() -> ModuleType:
    """Import and return ``trl``, or raise ImportError saying how to install it."""
    try:
        return import_module("trl")
    except ImportError:
        raise ImportError(
            f'this needs TRL, which is optional: pip install -e ".[trl]" (trl=={TRL_VERSION} and '
            "accelerate), then restart the kernel"
        ) from None


def trl_training_args(
    config: TrainingConfig, output_dir: str | None = None, device: str | torch.device | None = None
) -> dict[str, Any]:
    """The ``transformers.TrainingArguments`` fields that every TRL config takes from a :class:`TrainingConfig`.

    The optimizer and schedule are the same (AdamW, the same warm-up and schedule, the same
    clipping); TRL's own defaults that differ from this project's are set back: no
    activation (gradient) checkpointing, float32 on the CPU (bf16 where ours would use it), a log line
    every step, no checkpoints saved and no tracker. TRL's seed is :func:`~rlhf_edu.core.runtime.shifted_seed`
    of ours, so ``RLHF_EDU_SEED_OFFSET`` moves both trainers.
    """
    device = get_device(device)
    return {
        "output_dir": output_dir or str(Path(tempfile.gettempdir()) / "rlhf_edu_trl"),  # nothing is saved there
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_epochs,
        "warmup_steps": config.warmup_ratio,  # a value below 1 is a share of the steps in transformers 5
        "lr_scheduler_type": transformers_schedule(config),
        "max_grad_norm": config.max_grad_norm or 0.0,  # 0 switches clipping off in transformers' Trainer
        "weight_decay": config.weight_decay,
        "seed": shifted_seed(config.seed),  # moved by RLHF_EDU_SEED_OFFSET, as every seed of ours is
        "disable_tqdm": not config.progress,
        "use_cpu": device.type == "cpu",
        "bf16": device.type == "cuda" and torch.cuda.is_bf16_supported(),
        "activation_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
    }


def trl_dpo_config(config: DPOConfig, output_dir: str | None = None, device: str | torch.device | None = None):
    """TRL's ``DPOConfig`` for this project's :class:`~rlhf_edu.direct_alignment.DPOConfig`, field by field.

    ``batch_size`` is TRL's ``per_device_train_batch_size`` (pairs per step). TRL runs the
    reference beside the policy at every step, where :func:`~rlhf_edu.direct_alignment.train_dpo`
    scores each pair once before training: the same numbers (``precompute_ref_log_probs=True``
    would do it ours' way, behind a progress bar of its own). Settings TRL has no field for are refused.
    """
    if config.loss_type not in TRL_DPO_LOSS_TYPES:
        raise ValueError(
            f"loss_type={config.loss_type!r} has no DPOTrainer equivalent here: use one of "
            f"{', '.join(TRL_DPO_LOSS_TYPES)} (TRL's 'ipo' averages over tokens, ours sums them; "
            "SimPO is TRL's CPOTrainer)"
        )
    if config.loss_type == "sigmoid" and config.label_smoothing:
        raise ValueError(
            f"label_smoothing={config.label_smoothing} with loss_type='sigmoid' is cDPO, which TRL's "
            "sigmoid loss does not smooth: use loss_type='robust', or label_smoothing=0"
        )
    if config.rpo_alpha is not None:
        raise ValueError(f"rpo_alpha={config.rpo_alpha} is not mapped to TRL: set it to None")
    trl = require_trl()
    return trl.DPOConfig(
        **trl_training_args(config, output_dir, device),
        per_device_train_batch_size=config.batch_size,
        beta=config.beta,
        loss_type=[config.loss_type],
        label_smoothing=config.label_smoothing,
        max_length=config.max_length,
    )


def trl_grpo_config(
    config: PolicyGradientConfig, output_dir: str | None = None, device: str | torch.device | None = None
):
    """TRL's ``GRPOConfig`` for a GRPO :class:`~rlhf_edu.policy_gradients.PolicyGradientConfig`, field by field.

    Two counts are said differently: TRL's batch counts completions, ours prompts, so
    ``per_device_train_batch_size`` = ``batch_size · num_generations / num_mini_batches``,
    with ``steps_per_generation`` = ``num_mini_batches``; and ``num_steps`` rollouts are
    TRL's ``max_steps`` = ``num_steps · num_mini_batches · num_iterations`` updates. Settings with no TRL field
    (another algorithm, β moved into the reward, an adaptive β, a pretraining term, DAPO's dynamic sampling) are
    refused. ``use_bias_correction_kl`` is passed as ours holds it (TRL 1.16 defaults it to True, ours to False).
    """
    refused = {
        "algorithm": config.algorithm != "grpo",
        "kl_in": config.kl_in not in (None, "loss"),
        "kl_estimator": config.kl_estimator != "k3",
        "kl_target": config.kl_target is not None,
        "ptx_coef": config.ptx_coef > 0,
        "dynamic_sampling": config.dynamic_sampling,
    }
    if any(refused.values()):
        name = next(name for name, bad in refused.items() if bad)
        raise ValueError(
            f"{name}={getattr(config, name)!r} has no GRPOTrainer equivalent: GRPO with a fixed β on "
            "the k3 estimator in the loss is what maps (the config's defaults)"
        )
    completions = config.batch_size * config.num_generations
    if completions % config.num_mini_batches:
        raise ValueError(
            f"num_mini_batches={config.num_mini_batches} does not divide the step's {completions} "
            "completions: pick a divisor"
        )
    trl = require_trl()
    args = trl_training_args(config, output_dir, device) | {"num_train_epochs": 1}
    return trl.GRPOConfig(
        **args,
        per_device_train_batch_size=completions // config.num_mini_batches,
        steps_per_generation=config.num_mini_batches,
        # TRL samples anew every steps_per_generation × num_iterations optimizer steps, as ours does per rollout
        max_steps=config.num_steps * config.num_mini_batches * config.num_iterations,
        num_generations=config.num_generations,
        num_iterations=config.num_iterations,
        beta=config.beta,
        epsilon=config.epsilon,
        epsilon_high=config.epsilon_high,
        loss_type=config.loss_type,
        importance_sampling_level=config.importance_sampling_level,
        delta=config.delta,
        sapo_temperature_pos=config.sapo_temperature_pos,
        sapo_temperature_neg=config.sapo_temperature_neg,
        mask_truncated_completions=config.mask_truncated_completions,
        use_bias_correction_kl=config.use_bias_correction_kl,
        scale_rewards=config.scale_rewards,
        temperature=config.temperature,
        max_completion_length=config.max_completion_length,
    )


def history_from_trl(log_history: Sequence[dict[str, float]]) -> History:
    """A :class:`History` of TRL's per-step logs (``trainer.state.log_history``), steps counted from 0 as ours."""
    history = History()
    for entry in log_history:
        if "loss" in entry and "train_runtime" not in entry:  # the run's closing summary is no step
            history.log(**{k: v for k, v in entry.items() if isinstance(v, (int, float))} | {"step": entry["step"] - 1})
    return history


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No progress bars from ``datasets`` (TRL tokenizes its data with ``Dataset.map``) inside the block.

    Nor transformers' warning that TRL itself calls a renamed method (``is_gradient_checkpointing``):
    it is about TRL's code, not the reader's.
    """
    enabled = datasets.utils.is_progress_bar_enabled()
    datasets.utils.disable_progress_bars()
    try:
        with no_progress_bars(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            yield
    finally:
        if enabled:
            datasets.utils.enable_progress_bars()


def run_quietly(trainer, progress: bool) -> None:
    """``trainer.train()``; with ``progress`` off, without the callbacks that print every step's logs."""
    if not progress:
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
    trainer.train()


def loader_order(num_rows: int, config: TrainingConfig) -> list[int]:
    """The row indices in the order this project's trainers draw them for ``config`` (its seed and batch size).

    One epoch of :func:`~rlhf_edu.core.training.make_loader`'s shuffled batches, flattened; a
    config that reorders otherwise (more epochs, or batches grouped by length) is refused.
    """
    if config.num_epochs != 1 or getattr(config, "group_by_length", False):
        raise ValueError(
            f"the same order is one shuffled epoch: this config has num_epochs={config.num_epochs} and "
            f"group_by_length={getattr(config, 'group_by_length', False)}; use num_epochs=1 and "
            "group_by_length=False, or let TRL shuffle (same_order=False)"
        )
    return [i for batch in make_loader(list(range(num_rows)), list, config) for i in batch]


def train_dpo_trl(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    config: DPOConfig,
    ref_model: PreTrainedModel | None = None,
    same_order: bool = True,
) -> History:
    """Train ``policy`` with TRL's ``DPOTrainer`` on ``dataset``'s prompt/chosen/rejected columns; return the History.

    The reference is ``ref_model``, or a frozen copy of the policy as it starts, as in
    :func:`~rlhf_edu.direct_alignment.train_dpo`. With ``same_order``, TRL takes the pairs in
    the order :func:`~rlhf_edu.direct_alignment.train_dpo` draws them for ``config.seed``
    (:func:`loader_order`, read in sequence), so the two runs see the same batches; without it,
    TRL shuffles with its own sampler. TRL patches the forward of the models it trains (a
    fused LM head), so give each trainer its own freshly loaded model.
    """
    check_language_model(policy, tokenizer, "policy")
    trl = require_trl()
    ref_model = ref_model if ref_model is not None else copy.deepcopy(policy)
    pairs, args = dataset.select_columns(["prompt", "chosen", "rejected"]), trl_dpo_config(config)
    if same_order:
        pairs, args.train_sampling_strategy = pairs.select(loader_order(len(pairs), config)), "sequential"
    with quiet_datasets():
        trainer = trl.DPOTrainer(
            model=policy, ref_model=ref_model, args=args, train_dataset=pairs, processing_class=tokenizer
        )
        run_quietly(trainer, config.progress)
    policy.eval()
    return history_from_trl(trainer.state.log_history)


@contextmanager
def reference_from(policy: PreTrainedModel) -> Iterator[None]:
    """Inside the block, ``policy.config._name_or_path`` is a folder holding the policy as it is now.

    TRL's ``GRPOTrainer`` builds its reference by loading the checkpoint that path names, not
    from the model in memory: a policy trained since it was loaded (by DPO, say) would get the
    stale checkpoint as its reference, and a model built in memory none at all. Pointing at a
    fresh save makes the reference the policy as it starts, as in
    :func:`~rlhf_edu.policy_gradients.train_policy_gradient`.
    """
    original = policy.config._name_or_path
    with tempfile.TemporaryDirectory(prefix="rlhf_edu_reference_") as folder:
        with no_progress_bars():
            policy.save_pretrained(folder)
        policy.config._name_or_path = folder
        try:
            yield
        finally:
            policy.config._name_or_path = original


def train_grpo_trl(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    reward_fn: Callable[..., list[float]],
    config: PolicyGradientConfig,
) -> History:
    """Train ``policy`` with TRL's ``GRPOTrainer`` on ``prompts``, scored by ``reward_fn``; return the History.

    ``reward_fn`` has TRL's ``reward_funcs`` signature (:meth:`~rlhf_edu.core.world.World.reward_function`).
    Each step takes ``config.batch_size`` prompts in a shuffled order and samples
    ``num_generations`` answers to each, as :func:`~rlhf_edu.policy_gradients.train_policy_gradient` does,
    and the reference (for ``beta`` > 0) is the policy as it starts (:func:`reference_from`).
    """
    check_language_model(policy, tokenizer, "policy")
    prompts = check_texts(prompts, "prompts")
    trl = require_trl()
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    with quiet_datasets():
        with reference_from(policy):
            trainer = trl.GRPOTrainer(
                model=policy,
                reward_funcs=reward_fn,
                args=trl_grpo_config(config),
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        run_quietly(trainer, config.progress)
    policy.eval()
    return history_from_trl(trainer.state.log_history)


def gold_difference(first: PolicyEvaluation, second: PolicyEvaluation, paired: bool = False) -> tuple[float, float]:
    """The gold reward of ``first`` minus that of ``second``, with its standard error.

    By default the two are treated as independent samples: √(se₁² + se₂²). With ``paired``,
    the error is that of the per-prompt differences, which needs the same prompts in the same
    order; what the prompts themselves contribute (some are easier) then cancels.
    """
    if paired:
        if first.prompts != second.prompts:
            raise ValueError("paired=True compares answers prompt by prompt: evaluate both on the same prompts")
        return mean_and_stderr(np.subtract(first.gold_rewards, second.gold_rewards))
    (mean_a, se_a), (mean_b, se_b) = mean_and_stderr(first.gold_rewards), mean_and_stderr(second.gold_rewards)
    return mean_a - mean_b, float(np.hypot(se_a, se_b))


# --- one recipe, two trainers -----------------------------------------------------------------------
NUM_PAIRS = 1024  # DPO: pairs sampled from the starting model (a few are dropped: identical or unfinished answers)
# Held-out prompts each side-by-side is judged on (gold reward ± about 0.05 per evaluation). Twice pipeline's
# STAGE_EVAL_PROMPTS: the two trainers run one recipe, so the gap between them is small and needs the smaller
# standard error, and a side-by-side evaluates only three models. trl_side_by_side.json was computed with this size.
SIDE_BY_SIDE_EVAL_PROMPTS = 512
SIDE_BY_SIDE_PATH = Path(__file__).parent / "sweeps" / "trl_side_by_side.json"


def dpo_recipe(seed: int = 0, progress: bool = True) -> DPOConfig:
    """The TRL notebook's DPO settings: notebook 12's β = 0.1, one epoch, pairs in a shuffled order (TRL's way)."""
    return DPOConfig(beta=0.1, num_epochs=1, group_by_length=False, seed=seed, progress=progress)


def grpo_recipe(seed: int = 0, progress: bool = True) -> PolicyGradientConfig:
    """The TRL notebook's GRPO settings: 16 prompts × 8 answers per step for 30 steps, β = 0.04, on the gold reward."""
    return PolicyGradientConfig(
        algorithm="grpo",
        learning_rate=3e-4,
        batch_size=16,
        num_generations=8,
        beta=0.04,
        num_steps=30,
        max_completion_length=12,
        seed=seed,
        progress=progress,
    )


@dataclass
class SideBySide:
    """One recipe run twice from the same model, by this project's trainer and by TRL's, and judged the same way.

    ``start``, ``ours`` and ``trl`` are :func:`~rlhf_edu.core.evaluation.evaluate_policy`
    on the same held-out prompts with the same seed, each against the starting model.
    """

    name: str
    start: PolicyEvaluation
    ours: PolicyEvaluation
    trl: PolicyEvaluation
    histories: dict[str, History]  # "ours", "trl"
    seconds: dict[str, float]  # training time of each

    def difference(self, paired: bool = False) -> tuple[float, float]:
        """Ours minus TRL's gold reward, with its standard error (:func:`gold_difference`)."""
        return gold_difference(self.ours, self.trl, paired)

    def gain(self, which: str, paired: bool = False) -> tuple[float, float]:
        """What ``which`` ("ours" or "trl") gained in gold reward over the start, with its standard error
        (paired by prompt with ``paired``: every model answers the same prompts with the same seed)."""
        return gold_difference(getattr(self, which), self.start, paired)

    def table(self) -> str:
        """A markdown table: gold reward ± standard error, KL to the start and training time of each model."""
        rows = ["| model | gold reward | KL to start (nats) | training (s) |", "|---|---|---|---|"]
        for label, key in (("start", "start"), ("rlhf_edu", "ours"), ("TRL", "trl")):
            evaluation = getattr(self, key)
            mean, stderr = mean_and_stderr(evaluation.gold_rewards)
            seconds = f"{self.seconds[key]:.0f}" if key in self.seconds else "—"
            rows.append(f"| {label} | {mean:.3f} ± {stderr:.3f} | {evaluation.kl:.2f} | {seconds} |")
        return "\n".join(rows)

    def plot(self, *names: str, smooth: int = 5) -> Figure:
        """Each metric in ``names`` from both runs on one panel, smoothed over ``smooth`` steps; returns the Figure."""
        figure, grid = plt.subplots(1, len(names), figsize=(3.4 * len(names), 2.7), squeeze=False)
        for key in ("ours", "trl"):
            self.histories[key].plot(*names, smooth=smooth, axes=list(grid[0]))
        for ax in grid[0]:
            ax.legend(["rlhf_edu", "TRL"], fontsize=8)
        figure.suptitle(f"{self.name}: one recipe, two trainers (running mean over {smooth} steps)", fontsize=10)
        figure.tight_layout()
        return figure

    def summary(self) -> dict[str, float]:
        """The numbers a sweep keeps: each model's gold reward, its standard error and its KL, and the times."""
        out = {}
        for key in ("start", "ours", "trl"):
            mean, stderr = mean_and_stderr(getattr(self, key).gold_rewards)
            out |= {f"{key}/gold": mean, f"{key}/gold_stderr": stderr, f"{key}/kl": getattr(self, key).kl}
        return out | {f"{key}/seconds": value for key, value in self.seconds.items()}


TrainFn = Callable[[PreTrainedModel, PreTrainedTokenizerBase], History]  # (policy, tokenizer) -> History


def side_by_side(
    name: str,
    model: str,
    trainers: dict[str, TrainFn],
    world: World,
    eval_prompts: Sequence[str],
    device: str | torch.device | None = None,
) -> SideBySide:
    """Train a fresh ``zoo.load(model)`` with each of ``trainers`` ("ours", "trl"); evaluate each against the start.

    Each trainer gets its own freshly loaded model: TRL patches the forward of the models it
    trains, so a copy of one would still run the original's weights.
    """
    start_model, tokenizer = zoo.load(model, device=device)
    start = evaluate_policy(start_model, start_model, tokenizer, world, eval_prompts)
    evaluations, histories, seconds = {}, {}, {}
    for key, trainer in trainers.items():
        policy, _ = zoo.load(model, device=device)
        began = time.perf_counter()
        histories[key] = trainer(policy, tokenizer)
        seconds[key] = time.perf_counter() - began
        evaluations[key] = evaluate_policy(policy, start_model, tokenizer, world, eval_prompts)
    return SideBySide(name, start, evaluations["ours"], evaluations["trl"], histories, seconds)


def dpo_side_by_side(
    model: str,
    dataset: Dataset,
    config: DPOConfig,
    world: World,
    eval_prompts: Sequence[str],
    device: str | torch.device | None = None,
    same_order: bool = True,
) -> SideBySide:
    """:func:`~rlhf_edu.direct_alignment.train_dpo` and :func:`train_dpo_trl` on the same pairs, from ``model``
    (in the same order, unless ``same_order`` is False)."""
    trainers = {
        "ours": lambda policy, tokenizer: train_dpo(policy, tokenizer, dataset, config),
        "trl": lambda policy, tokenizer: train_dpo_trl(policy, tokenizer, dataset, config, same_order=same_order),
    }
    return side_by_side("DPO", model, trainers, world, eval_prompts, device)


def grpo_side_by_side(
    model: str,
    prompts: Sequence[str],
    reward_fn: Callable[..., list[float]],
    config: PolicyGradientConfig,
    world: World,
    eval_prompts: Sequence[str],
    device: str | torch.device | None = None,
) -> SideBySide:
    """:func:`~rlhf_edu.policy_gradients.train_policy_gradient` and :func:`train_grpo_trl` on the same prompts
    and reward, from ``model``. ``reward_fn`` has TRL's signature; ours calls it as ``reward_fn(prompts, completions)``.
    """
    trainers = {
        "ours": lambda policy, tokenizer: train_policy_gradient(policy, tokenizer, prompts, reward_fn, config),
        "trl": lambda policy, tokenizer: train_grpo_trl(policy, tokenizer, prompts, reward_fn, config),
    }
    return side_by_side("GRPO", model, trainers, world, eval_prompts, device)


def run_recipes(
    model: str = "sft",
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
    num_eval_prompts: int = SIDE_BY_SIDE_EVAL_PROMPTS,
    own_order: bool = False,
) -> dict[str, SideBySide]:
    """The TRL notebook's side-by-sides from ``model``, all judged by the gold reward on the same held-out prompts.

    DPO trains on :data:`NUM_PAIRS` pairs sampled from ``model`` and labelled by the world's
    annotator, both trainers taking them in the same order; GRPO on the training prompts
    with the world's gold reward as its reward function (the world's stand-in for a
    verifiable reward, and TRL's ``reward_funcs``). ``own_order`` adds ``"dpo_own_order"``:
    DPO again, with TRL shuffling the pairs with its own sampler.
    """
    world = World(seed=0)
    start, tokenizer = zoo.load(model, device=device)
    pairs = build_preference_dataset(world, start, tokenizer, n=NUM_PAIRS, seed=0)
    grpo = grpo_recipe(seed, progress)
    prompts, eval_prompts = world.prompts(grpo.num_steps * grpo.batch_size), world.prompts(num_eval_prompts, "test")
    results = {
        "dpo": dpo_side_by_side(model, pairs, dpo_recipe(seed, progress), world, eval_prompts, device),
        "grpo": grpo_side_by_side(model, prompts, world.reward_function("gold"), grpo, world, eval_prompts, device),
    }
    if own_order:
        results["dpo_own_order"] = dpo_side_by_side(
            model, pairs, dpo_recipe(seed, progress), world, eval_prompts, device, same_order=False
        )
    return results


def load_side_by_side_sweep(path: str | Path = SIDE_BY_SIDE_PATH) -> dict[str, list[dict[str, float]]]:
    """The runs of :func:`side_by_side_sweep`: ``{"dpo": [one summary per seed], "grpo": [...]}``."""
    return json.loads(Path(path).read_text())["runs"]


def seed_spread(
    runs: Sequence[dict[str, float]], metric: str = "gold", paired: bool = True
) -> dict[str, tuple[float, float]]:
    """Over the seeds of a sweep: the mean ``metric`` ("gold" or "kl") of each trainer and of their difference.

    Each value is (mean over seeds, standard error over seeds), so the training seed's own
    noise is in it, not only the evaluation's. ``paired`` takes the difference's error from
    the per-seed differences, which is right only where one seed gives both trainers the
    same draw (DPO in the same order: the same batches). Where each trainer draws its own
    with the seed (TRL's sampler, GRPO's samples), seed s of one has nothing in common with
    seed s of the other: pass ``paired=False`` for the unpaired √(se_ours² + se_trl²).
    """
    ours, theirs = np.array([r[f"ours/{metric}"] for r in runs]), np.array([r[f"trl/{metric}"] for r in runs])
    spread = {"ours": mean_and_stderr(ours), "trl": mean_and_stderr(theirs)}
    unpaired = (float(np.mean(ours - theirs)), difference_stderr(spread["ours"][1], spread["trl"][1]))
    return spread | {"ours - trl": mean_and_stderr(ours - theirs) if paired else unpaired}


def side_by_side_sweep(
    out: str | Path = SIDE_BY_SIDE_PATH,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    device: str | torch.device | None = None,
) -> Path:
    """:func:`run_recipes` with each training seed in ``seeds``, summarised to JSON at ``out``; returns the path.

    The TRL notebook reads it to say how far apart two trainers land when only the seed differs.
    About 2 minutes a seed on one CPU thread (measured with two seeds running side by side on 2 cores).
    """
    runs = {}
    for seed in seeds:
        for name, result in run_recipes(seed=seed, progress=False, device=device, own_order=True).items():
            runs.setdefault(name, []).append(result.summary() | {"seed": seed})
    out = Path(out)
    out.write_text(json.dumps({"trl": TRL_VERSION, "runs": runs}, indent=1) + "\n")
    return out
