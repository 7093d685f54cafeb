"""The TRL notebook's exercises (``graduate_to_trl.ipynb``): GRPO's counts in TRL's terms, TRL's DPO config, a
pairing by seed. Its ids are "trl.1" to "trl.3": the notebook belongs to no chapter, so its ids carry no number."""

from __future__ import annotations

from typing import Any

from ..experiments.graduate import dpo_recipe, load_side_by_side_sweep, seed_spread, trl_dpo_config, trl_grpo_config
from ..policy_gradients import PolicyGradientConfig
from .checks import Case, Exercise, Prediction, close, register

DPO_FIELDS = (  # what exercise 2 asks for; the rest of TRL's config (output_dir, seed, ...) is free
    "learning_rate",
    "per_device_train_batch_size",
    "num_train_epochs",
    "beta",
    "loss_type",
    "lr_scheduler_type",
    "bf16",
    "activation_checkpointing",
    "logging_steps",
)
RESOLVED = "resolved: beyond 3 standard errors"


def _trl_counts(config: PolicyGradientConfig) -> tuple[int, int, int]:
    """``trl_grpo_config``'s three counts: (per_device_train_batch_size, steps_per_generation, max_steps)."""
    mapped = trl_grpo_config(config)  # imports TRL on the first call (seconds)
    return mapped.per_device_train_batch_size, mapped.steps_per_generation, mapped.max_steps


def _count_cases() -> list[Case]:
    """The recipe, rollouts cut into 2, 4 and one-completion updates, a cut inside a group, a single rollout."""

    def grpo(batch_size: int, num_generations: int, num_mini_batches: int, num_steps: int) -> PolicyGradientConfig:
        return PolicyGradientConfig(
            batch_size=batch_size,
            num_generations=num_generations,
            num_mini_batches=num_mini_batches,
            num_steps=num_steps,
            progress=False,
        )

    return [
        Case("the notebook's recipe: 16 prompts × 8 answers, one update a rollout, 30 rollouts", (grpo(16, 8, 1, 30),)),
        Case("8 prompts × 4 answers in 2 updates a rollout, 50 rollouts", (grpo(8, 4, 2, 50),)),
        Case("16 prompts × 8 answers in 4 updates a rollout, 10 rollouts", (grpo(16, 8, 4, 10),)),
        Case("3 prompts × 4 answers in 2 updates: the cut falls inside a prompt's group", (grpo(3, 4, 2, 20),)),
        Case("4 prompts × 2 answers in 8 updates: one completion an update", (grpo(4, 2, 8, 5),)),
        Case("a single rollout of 1 prompt × 2 answers", (grpo(1, 2, 1, 1),)),
    ]


def _dpo_fields_differ(answer: Any, expected: Any) -> str | None:
    """Name the first asked-for field of ``answer`` that is not ``trl_dpo_config``'s, or None if none is."""
    if type(answer).__name__ != "DPOConfig" or not hasattr(answer, "loss_type"):
        return f"answer is a {type(answer).__name__}, where a trl.DPOConfig is wanted"
    wrong = next((f for f in DPO_FIELDS if getattr(answer, f) != getattr(expected, f)), None)
    return None if wrong is None else f"its {wrong} is not what this project's recipe maps to"


def _wrongly_paired_z() -> float:
    """TRL's own-order DPO against ours over the shipped five seeds, paired by seed: mean / s.e. of the differences."""
    mean, stderr = seed_spread(load_side_by_side_sweep()["dpo_own_order"], paired=True)["ours - trl"]
    return mean / stderr


register(
    Exercise(
        "trl.1",
        success="TRL's batch is a rollout's batch_size × num_generations completions over num_mini_batches updates; "
        "steps_per_generation is num_mini_batches, and max_steps counts updates",
        hints=(
            "does TRL count in prompts or in completions, and in rollouts or in updates? How many completions does "
            "one update see here?",
            "section 2's one count said differently, taken to mini-batches: here `batch_size` counts prompts a "
            "rollout and `num_steps` rollouts, while TRL counts completions and optimizer updates; one rollout "
            "(`num_generations` answers to each prompt) is cut into `num_mini_batches` updates of equal size, by "
            "completions, so a cut may fall inside a prompt's group",
        ),
        reference=_trl_counts,
        cases=_count_cases,
    ),
    Exercise(
        "trl.2",
        success="field by field, TRL's DPO config is this project's recipe",
        hints=(
            "which of `dpo_recipe()`'s fields does TRL name the same way, and which under another name? Start from "
            'trl.DPOConfig(output_dir="/tmp/dpo", ...); the check names the first field that differs',
            "section 2: a config here names a field as TRL does where TRL has one; the rest are TRL's (transformers') "
            "training arguments: the per-device batch, the epochs, the scheduler, the precision, activation "
            "checkpointing and the logging interval, several of whose defaults are not this project's. TRL's "
            "`loss_type` takes a list of loss names",
        ),
        expected=lambda: trl_dpo_config(dpo_recipe()),
        compare=_dpo_fields_differ,
    ),
    Exercise(
        "trl.3",
        success="paired by seed, TRL's own-order runs sit about 4.2 standard errors above ours: a pairing that "
        "nothing supports, against the unpaired 1.5",
        hints=(
            "paired by seed, what one number does each seed give, and where does the standard error then come from?",
            "section 5's paired comparison: the per-seed differences d_s = `ours/gold` − `trl/gold` (rlhf_edu − "
            "TRL), their mean, and the standard error of a mean, s/√n, with s the differences' sample standard "
            "deviation (n − 1 in its denominator); the answer counts the mean in those errors, sign kept",
        ),
        expected=_wrongly_paired_z,
        compare=close(0.01),
        prediction=Prediction(
            (RESOLVED, "not resolved: within 3 standard errors"),
            lambda z: RESOLVED if abs(z) > 3 else "not resolved: within 3 standard errors",
            "paired by seed, the difference looks resolved (about −4.2 standard errors), because these five "
            "per-seed differences happen to agree closely; but that is not the right reading. TRL's sampler gives "
            "seed s an order unrelated to ours, so seed s pairs nothing, and the error that fits is the unpaired "
            "one: by it the difference is 1.5 standard errors, not resolved",
        ),
    ),
)
