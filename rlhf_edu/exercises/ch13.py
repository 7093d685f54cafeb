"""Notebook 13's exercises (graduate to TRL): GRPO's counts in TRL's terms, TRL's DPO config, a pairing by seed."""

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
        Case("notebook 13's recipe: 16 prompts × 8 answers, one update a rollout, 30 rollouts", (grpo(16, 8, 1, 30),)),
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
        "13.1",
        success="TRL's batch is a rollout's batch_size × num_generations completions over num_mini_batches updates; "
        "steps_per_generation is num_mini_batches, and max_steps counts updates",
        hints=(
            "count completions, not prompts, and updates, not rollouts: TRL's batch is what one update sees, and "
            "its max_steps counts every update",
            "`trl_grpo_config` (section 2): a rollout holds batch_size · num_generations completions, cut into "
            "num_mini_batches updates of equal size; steps_per_generation is how many updates one rollout feeds, "
            "and num_steps rollouts make max_steps updates",
        ),
        reference=_trl_counts,
        cases=_count_cases,
    ),
    Exercise(
        "13.2",
        success="field by field, TRL's DPO config is this project's recipe",
        hints=(
            'start from trl.DPOConfig(output_dir="/tmp/dpo", ...) and name each setting as TRL does; the check '
            "names the first field that differs",
            "`trl_dpo_config` maps it: batch_size is per_device_train_batch_size, num_epochs is num_train_epochs, "
            "TRL's loss_type is a list of loss names (one here), the schedule is lr_scheduler_type, bf16 and "
            "activation_checkpointing are switched as this project runs, and logging_steps counts steps between log "
            "lines",
        ),
        expected=lambda: trl_dpo_config(dpo_recipe()),
        compare=_dpo_fields_differ,
    ),
    Exercise(
        "13.3",
        success="paired by seed, TRL's own-order runs sit about 4.2 standard errors above ours: a pairing that "
        "nothing supports, against the unpaired 1.5",
        hints=(
            "pairing by seed makes one number per seed, ours minus TRL's gold reward, and takes the standard error "
            "from the spread of those five numbers alone",
            '`seed_spread` (section 5) gives, under "ours - trl", the mean difference and its standard error; its '
            "`paired` setting says whether that error comes from the per-seed differences (std with ddof = 1, over "
            "√5). The answer is the mean over the error, signed as rlhf_edu − TRL",
        ),
        expected=_wrongly_paired_z,
        compare=close(0.01),
        prediction=Prediction(
            (RESOLVED, "not resolved: within 3 standard errors"),
            lambda z: RESOLVED if abs(z) > 3 else "not resolved: within 3 standard errors",
            "the per-seed differences of these five runs happen to agree closely, so a paired error is small; but "
            "TRL's sampler gives seed s an order unrelated to ours, so seed s pairs nothing, and the error that fits "
            "is the unpaired one, by which the difference is not resolved",
        ),
    ),
)
