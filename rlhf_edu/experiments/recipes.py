"""Which chapter trainer builds which zoo checkpoint: the recipes behind ``rlhf-edu zoo build``.

The zoo in :mod:`rlhf_edu.core.zoo` only loads and saves checkpoints; the core never
imports a chapter. The recipes sit here, above every chapter, and each one is the
chapter's own trainer called with fixed settings and seeds:

- ``base``: a fresh model pretrained on the world corpus (:func:`rlhf_edu.pretraining.pretrain`);
- ``sft``: ``base`` instruction-tuned on the world's demonstrations (:func:`rlhf_edu.instruction_tuning.train_sft`);
- ``rm``: a reward model on the ``sft`` backbone, trained on pairs sampled from ``sft``
  (:func:`rlhf_edu.reward_modeling.train_reward_model`).

Beside them, :func:`rl_beta_sweep` is the recipe of the small RL sweep that notebook 11
ships precomputed (``rlhf-edu sweep``): RLOO against ``rm`` from ``sft`` at several β;
and :func:`regularization_runs` that of notebook 8's runs (``rlhf-edu sweep regularization``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..ai_feedback import train_judge
from ..core import zoo
from ..core.evaluation import gold_eval_fn
from ..core.preferences import build_preference_dataset
from ..core.runtime import Preset, get_device, get_preset
from ..core.training import History, save_histories
from ..core.world import World
from ..direct_alignment import DPOConfig, precompute_ref_logps, train_dpo
from ..instruction_tuning import SFTConfig, train_sft
from ..policy_gradients import PolicyGradientConfig, beta_sweep, save_sweep, train_policy_gradient
from ..pretraining import PretrainingConfig, perplexity, pretrain
from ..reward_modeling import (
    HELD_OUT_PAIRS,
    RewardConfig,
    accuracy_vs_pairs,
    evaluate_reward_model,
    reward_function,
    reward_model_from,
    train_reward_model,
)

Built = tuple[PreTrainedModel, PreTrainedTokenizerBase]


def build_base(preset: Preset | None = None, device: torch.device | None = None) -> Built:
    """The zoo's ``base`` recipe: a fresh model pretrained on the world corpus."""
    preset = get_preset(preset)
    model, tokenizer = zoo.new_model(preset, seed=0)
    model.to(get_device(device))
    corpus = World(seed=0, preset=preset).pretraining_corpus()
    pretrain(model, tokenizer, corpus, PretrainingConfig(batch_size=preset.batch_size, seed=0))
    return model, tokenizer


def build_sft(preset: Preset | None = None, device: torch.device | None = None) -> Built:
    """The zoo's ``sft`` recipe: the ``base`` model instruction-tuned on the world's demonstrations."""
    preset = get_preset(preset)
    model, tokenizer = zoo.load("base", preset, device)
    dataset = World(seed=0, preset=preset).sft_dataset()
    train_sft(model, tokenizer, dataset, SFTConfig(seed=0, progress=False))
    return model, tokenizer


def build_reward_model(preset: Preset | None = None, device: torch.device | None = None) -> Built:
    """The zoo's ``rm`` recipe: a reward model on the ``sft`` backbone, trained on pairs sampled from ``sft``.

    On the way it measures held-out accuracy against the number of training pairs
    (:func:`~rlhf_edu.reward_modeling.accuracy_vs_pairs`) and keeps the curve in
    ``model.config.accuracy_vs_pairs``.
    """
    preset = get_preset(preset)
    policy, tokenizer = zoo.load("sft", preset, device)
    world = World(seed=0, preset=preset)
    train_pairs = build_preference_dataset(world, policy, tokenizer, seed=0)
    test_pairs = build_preference_dataset(world, policy, tokenizer, n=HELD_OUT_PAIRS, split="test", seed=0)
    # The book trains one epoch. Notebook 07 measures what the 8 here buy on this backbone: +1.7 ± 1.1 points of
    # expected held-out accuracy, under 2 standard errors.
    config = RewardConfig(learning_rate=1e-3, batch_size=32, num_epochs=8, warmup_ratio=0.05, seed=0)
    model = reward_model_from(policy, seed=0)
    train_reward_model(model, tokenizer, train_pairs, config)
    sizes = [len(train_pairs) // 2**k for k in (4, 3, 2, 1)]  # 1/16, 1/8, 1/4 and 1/2 of the pairs
    curve = accuracy_vs_pairs(policy, tokenizer, world, train_pairs, test_pairs, sizes, config)
    curve["num_pairs"].append(len(train_pairs))
    for name, value in evaluate_reward_model(model, tokenizer, world, test_pairs).items():
        curve[name].append(value)
    model.config.accuracy_vs_pairs = curve  # saved in config.json: the notebook plots it without retraining
    return model, tokenizer


def build_judge(preset: Preset | None = None, device: torch.device | None = None) -> Built:
    """The zoo's ``judge`` recipe: ``sft`` fine-tuned into a generative judge on the pairs and labels ``rm`` learned
    from, each pair in both orders (:func:`~rlhf_edu.ai_feedback.train_judge`), so the two compare at equal labels."""
    preset = get_preset(preset)
    policy, tokenizer = zoo.load("sft", preset, device)
    train_pairs = build_preference_dataset(World(seed=0, preset=preset), policy, tokenizer, seed=0)
    judge, _ = train_judge(policy, tokenizer, train_pairs)
    return judge, tokenizer


RECIPES: dict[str, Callable[..., Built]] = {
    "base": build_base,
    "sft": build_sft,
    "rm": build_reward_model,
    "judge": build_judge,
}
assert tuple(RECIPES) == zoo.CHECKPOINTS, "every zoo checkpoint needs a recipe, in build order"


@contextmanager
def one_thread() -> Iterator[None]:
    """PyTorch on one CPU thread inside the block: the same reduction order every time, so reruns repeat bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build(
    names: list[str] | None = None,
    preset: str | Preset | None = None,
    device: str | None = None,
    out_dir: str | Path | None = None,
) -> list[Path]:
    """Rebuild checkpoints (default: all, in dependency order) and save them; return their folders.

    Each recipe is seeded, so on the same hardware a rebuild reproduces the shipped
    weights; on other hardware it reaches the same quality (a test checks that).
    """
    for name in names or []:
        zoo.check_checkpoint_name(name)
    saved = []
    with one_thread():
        for name in names or list(RECIPES):
            model, tokenizer = RECIPES[name](preset=get_preset(preset), device=get_device(device))
            saved.append(zoo.save(model, tokenizer, name, preset, out_dir))
    return saved


SWEEP_PATH = Path(__file__).parent / "sweeps" / "rloo_rm_beta.json"
SWEEP_BETAS = (0.01, 0.03, 0.1, 0.3, 1.0)
SWEEP_CONFIG = {
    "algorithm": "rloo",
    "learning_rate": 1e-3,
    "batch_size": 16,
    "num_generations": 4,
    "num_steps": 40,
    "eval_steps": 5,
    "seed": 0,
}


def rl_beta_sweep(
    betas: tuple[float, ...] = SWEEP_BETAS,
    out: str | Path = SWEEP_PATH,
    preset: str | Preset | None = None,
    device: str | None = None,
    **overrides,
) -> Path:
    """Notebook 11's β sweep: RLOO from ``sft`` against ``rm``, one run per β, written to ``out``; returns the path.

    Every run trains on the same 500 world prompts and is judged every ``eval_steps``
    steps on 64 held-out ones by :func:`~rlhf_edu.core.evaluation.gold_eval_fn` (gold
    reward, components, KL to ``sft``, the RM's score). About 40 s per β on one CPU thread.
    """
    preset = get_preset(preset)
    policy, tokenizer = zoo.load("sft", preset, get_device(device))
    rm, rm_tokenizer = zoo.load("rm", preset, get_device(device))
    world = World(seed=0, preset=preset)
    rm_fn = reward_function(rm, rm_tokenizer)
    settings = SWEEP_CONFIG | overrides
    eval_fn = gold_eval_fn(world, tokenizer, world.prompts(64, split="test"), policy, rm_fn)
    with one_thread():
        runs = beta_sweep(
            policy,
            tokenizer,
            world.prompts(500),
            rm_fn,
            betas,
            PolicyGradientConfig(progress=False, **settings),
            eval_fn,
        )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return save_sweep(runs, out, preset=preset.name, **settings)


REGULARIZATION_PATH = Path(__file__).parent / "sweeps" / "regularization.json"
# Each run is notebook 11's sweep run (SWEEP_CONFIG: RLOO against rm from sft, 40 steps) with these changes.
REGULARIZATION_RUNS = {
    "kl_in_reward": {"beta": 0.1},  # RLOO's own place: −β·Σk1 in the score
    "kl_in_loss": {"beta": 0.1, "kl_in": "loss"},  # the same β as +β·k3 per token in the loss
    "fixed_0.01": {"beta": 0.01},
    "adaptive": {"beta": 0.1, "kl_target": 3.0, "kl_horizon": 64},  # starts where kl_in_reward stays
    "ptx": {"beta": 0.01, "ptx_coef": 0.02},  # fixed_0.01 with InstructGPT's pretraining term
    **{f"grpo_{beta}": {"algorithm": "grpo", "beta": beta} for beta in (0.01, 0.03, 0.1, 0.3)},
}
DPO_BETAS = (0.03, 0.1, 0.3, 1.0)
DPO_SETTINGS = {"learning_rate": 5e-4, "batch_size": 32, "num_epochs": 1, "seed": 0}  # notebook 12's


def regularization_runs(
    out: str | Path = REGULARIZATION_PATH, preset: str | Preset | None = None, device: str | None = None
) -> Path:
    """Notebook 8's runs, written to ``out``; returns the path. About 9 minutes on one CPU thread.

    Every run starts from ``sft`` and is judged on the same 64 held-out prompts (gold
    reward, components, KL to ``sft``, the RM's score) and on 200 unseen world sentences
    (``eval/perplexity``): the RL runs of :data:`REGULARIZATION_RUNS` every 5 steps, and
    one DPO run per β in :data:`DPO_BETAS` once, after training, under ``dpo_<β>``.
    ``sft`` holds the evaluation of the starting point, and ``base`` the perplexity of
    the model that SFT started from.
    """
    preset = get_preset(preset)
    policy, tokenizer = zoo.load("sft", preset, get_device(device))
    rm, rm_tokenizer = zoo.load("rm", preset, get_device(device))
    world = World(seed=0, preset=preset)
    rm_fn = reward_function(rm, rm_tokenizer)
    corpus = world.pretraining_corpus(preset.num_pretrain + 200)  # pretraining's own texts, then 200 unseen
    scores = gold_eval_fn(world, tokenizer, world.prompts(64, split="test"), policy, rm_fn)

    def eval_fn(model: PreTrainedModel) -> dict[str, float]:
        return scores(model) | {"eval/perplexity": perplexity(model, tokenizer, corpus[-200:])}

    with one_thread():
        base, _ = zoo.load("base", preset, get_device(device))
        runs = {
            "base": History([{"step": 0.0, "eval/perplexity": perplexity(base, tokenizer, corpus[-200:])}]),
            "sft": History([{"step": 0.0, **eval_fn(policy)}]),
        }
        for name, overrides in REGULARIZATION_RUNS.items():
            config = PolicyGradientConfig(progress=False, **(SWEEP_CONFIG | overrides))
            runs[name] = train_policy_gradient(
                copy.deepcopy(policy),
                tokenizer,
                world.prompts(500),
                rm_fn,
                config,
                ref_model=policy,
                eval_fn=eval_fn,
                ptx_texts=corpus[:-200] if config.ptx_coef > 0 else None,
            )
        pairs = precompute_ref_logps(policy, tokenizer, build_preference_dataset(world, policy, tokenizer, seed=0))
        for beta in DPO_BETAS:
            model = copy.deepcopy(policy)
            train_dpo(model, tokenizer, pairs, DPOConfig(beta=beta, progress=False, **DPO_SETTINGS))
            runs[f"dpo_{beta}"] = History([{"step": 0.0, "beta": beta, **eval_fn(model)}])
    return save_histories(
        runs,
        out,
        preset=preset.name,
        base=SWEEP_CONFIG,
        rl_runs=REGULARIZATION_RUNS,
        dpo_betas=list(DPO_BETAS),
        dpo=DPO_SETTINGS,
    )


SWEEPS = Path(__file__).parent / "sweeps"
PIPELINE_BETAS = (0.0, 0.01, 0.2)  # beside the three-stage run's own β (0.05): the RL stage's β slider
FEW_PAIRS = 8  # the weaker reward model trains on 1/8 of the pairs
# Gao et al.'s RL runs: β = 0, and a tenth of the stage's learning rate, so that the KL grows step by step (at the
# stage's 1e-3 and β = 0 it is 70 nats away within 20 steps, too fast to trace a curve)
OVEROPTIMIZATION = {"beta": 0.0, "learning_rate": 1e-4, "eval_steps": 5}
BEST_OF_N = (1, 2, 4, 8, 16, 32, 64)
BEST_OF_N_PROMPTS = 128


def multi_round_run(
    out: str | Path = SWEEPS,
    preset: str | Preset | None = None,
    device: str | None = None,
    sizes: dict[str, int] | None = None,
) -> Path:
    """Notebook 04b's multi-round run (:func:`~rlhf_edu.experiments.pipeline.run_multi_round`, 3 rounds).

    Saved as ``multi_round.json``; about 5 minutes on one CPU thread.
    """
    from .pipeline import run_multi_round

    Path(out).mkdir(parents=True, exist_ok=True)
    with one_thread():
        report = run_multi_round(3, preset=preset, sizes=sizes, progress=False, device=device)
    return report.save(Path(out) / "multi_round.json")


def pipeline_runs(
    out: str | Path = SWEEPS,
    preset: str | Preset | None = None,
    device: str | None = None,
    sizes: dict[str, int] | None = None,
    work_dir: str | Path | None = None,
) -> list[Path]:
    """Notebook 04b's full-size three-stage runs, written to the folder ``out``; returns the files.

    About 20 minutes on one CPU thread.

    - ``three_stage.json``: :func:`~rlhf_edu.experiments.pipeline.run_three_stage` at the preset's sizes (or ``sizes``);
    - ``pipeline_rl.json``: the RL stage again, from the run's ``sft`` against its ``rm``, at each β of
      :data:`PIPELINE_BETAS` (the run's own β is in ``three_stage.json``); Gao et al.'s RL runs
      (:data:`OVEROPTIMIZATION`) against ``rm`` and against a reward model trained the same way on
      1/:data:`FEW_PAIRS` of the pairs (``overopt_rm``, ``overopt_rm_few``); and best-of-n from ``sft`` by each
      reward model (``bon_rm``, ``bon_rm_few``: one row per n of :data:`BEST_OF_N`, with d = √KL_bon, the
      proxy and the gold reward of the pick), on :data:`BEST_OF_N_PROMPTS` held-out prompts.
    """
    import tempfile

    from ..overoptimization import best_of_n_overoptimization
    from ..rejection_sampling import sample_and_score
    from .pipeline import (
        load_stage,
        reward_model_stage,
        rl_config,
        rl_stage,
        run_three_stage,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir or tempfile.mkdtemp(prefix="rlhf-edu-pipeline-"))
    with one_thread():
        report = run_three_stage(
            preset=preset, sizes=sizes, out=work / "three-stage", overwrite=True, progress=False, device=device
        )
        paths = [report.save(out / "three_stage.json")]
        sft, tokenizer = load_stage(work / "three-stage", "sft")
        rm, _ = load_stage(work / "three-stage", "rm")
        world, sizes = World(seed=0, preset=get_preset(preset)), report.sizes
        rm_few, few_metrics = reward_model_stage(sft, tokenizer, world, sizes["preference"] // FEW_PAIRS, 0, False)
        runs = {}
        settings = [
            *((f"beta_{b}", rm, {"beta": b}) for b in PIPELINE_BETAS),
            ("overopt_rm", rm, OVEROPTIMIZATION),
            ("overopt_rm_few", rm_few, OVEROPTIMIZATION),
        ]
        for name, model, overrides in settings:
            config = rl_config(
                report.settings["rl_algorithm"],
                num_prompts=sizes["rl"],
                seed=0,
                progress=False,
                **{"beta": report.settings["beta"]} | overrides,
            )
            _, curve, _ = rl_stage(sft, tokenizer, world, reward_function(model, tokenizer), config, sizes["rl"])
            runs[name] = History(curve)
        prompts = world.prompts(BEST_OF_N_PROMPTS, split="test")
        completions, gold = sample_and_score(sft, tokenizer, prompts, max(BEST_OF_N), world.gold_reward)
        flat_prompts = [p for p in prompts for _ in range(max(BEST_OF_N))]
        flat = [c for row in completions for c in row]
        for name, model in (("bon_rm", rm), ("bon_rm_few", rm_few)):
            proxy = np.asarray(reward_function(model, tokenizer)(flat_prompts, flat)).reshape(gold.shape)
            curve = best_of_n_overoptimization(proxy, gold, BEST_OF_N)
            runs[name] = History(
                [{key: float(values[i]) for key, values in curve.items()} for i in range(len(BEST_OF_N))]
            )
    paths.append(
        save_histories(
            runs,
            out / "pipeline_rl.json",
            preset=report.preset,
            betas=list(PIPELINE_BETAS),
            stage_beta=report.settings["beta"],
            overoptimization=OVEROPTIMIZATION,
            rm=report.stage("rm").notes,
            rm_few=few_metrics,
            best_of_n_prompts=BEST_OF_N_PROMPTS,
        )
    )
    return paths


PIPELINE_SEEDS = (0, 1, 2, 3, 4)


def pipeline_seed_runs(
    out: str | Path = SWEEPS,
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] = PIPELINE_SEEDS,
) -> Path:
    """The three-stage pipeline once per seed of :data:`PIPELINE_SEEDS`, as ``three_stage_seeds.json`` in ``out``.

    One run is one seed on one machine: its RL stage's gain can change sign with the seed
    or the CPU's kernels. Notebook 04b and the README report the stages over these seeds,
    with their spread. About 5 minutes a seed on one CPU thread.
    """
    from .pipeline import run_three_stage, save_reports

    Path(out).mkdir(parents=True, exist_ok=True)
    with one_thread():
        reports = [run_three_stage(preset=preset, seed=seed, progress=False, device=device) for seed in seeds]
    return save_reports(reports, Path(out) / "three_stage_seeds.json")


def trl_side_by_side_runs(
    out: str | Path = SWEEPS, preset: str | Preset | None = None, device: str | None = None
) -> Path:
    """The TRL notebook's five-seed runs of both recipes by both trainers, as ``trl_side_by_side.json`` in ``out``.

    :func:`~rlhf_edu.experiments.graduate.side_by_side_sweep` from the shipped ``sft``; it needs the
    ``[trl]`` extra. About 2 minutes a seed on one CPU thread.
    """
    from .graduate import side_by_side_sweep

    name = get_preset(preset).name
    if name != "tiny":
        raise ValueError(f"the TRL side-by-side starts from the shipped tiny zoo, not preset {name!r}: drop --preset")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with one_thread():
        return side_by_side_sweep(out / "trl_side_by_side.json", device=device)


def save_json(data: dict, out: str | Path) -> Path:
    """Write a sweep's ``data`` (its settings and every seed's values) to ``out`` as JSON; returns the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


REASONING_SEEDS = tuple(range(10))


def reasoning_sweep(
    out: str | Path = SWEEPS / "reasoning.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] = REASONING_SEEDS,
) -> Path:
    """Notebook 14's sharpening question: RLVR from ``sft`` once per seed, pass@k before and after; returns the path.

    :func:`~rlhf_edu.reasoning.sharpening_runs` with :data:`~rlhf_edu.reasoning.RLVR_CONFIG`;
    every seed's per-prompt values are in the JSON. About a minute a seed on one CPU thread.
    """
    from ..reasoning import KS, RLVR_CONFIG, sharpening_runs

    preset = get_preset(preset)
    policy, tokenizer = zoo.load("sft", preset, get_device(device))
    with one_thread():
        runs = sharpening_runs(policy, tokenizer, World(seed=0, preset=preset), seeds)
    settings = {"preset": preset.name, "rlvr": RLVR_CONFIG, "seeds": list(seeds), "ks": list(KS), "eval_prompts": 128}
    return save_json({"settings": settings, **runs}, out)


GRPO_FAMILY_SEEDS = (0, 1, 2)


def grpo_family_sweep(
    out: str | Path = SWEEPS / "grpo_family.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] = GRPO_FAMILY_SEEDS,
) -> Path:
    """Notebook 14's GRPO family on the RLVR task: each variant once per seed from ``sft``; returns the path.

    :func:`~rlhf_edu.reasoning.grpo_family_runs`, written with :func:`save_histories`
    under ``"variant/seed"``. About a minute a run on one CPU thread.
    """
    from ..reasoning import GRPO_FAMILY_SETTINGS, GRPO_VARIANTS, RLVR_CONFIG, grpo_family_runs

    preset = get_preset(preset)
    policy, tokenizer = zoo.load("sft", preset, get_device(device))
    with one_thread():
        runs = grpo_family_runs(policy, tokenizer, World(seed=0, preset=preset), seeds)
    return save_histories(
        runs,
        out,
        preset=preset.name,
        rlvr=RLVR_CONFIG | GRPO_FAMILY_SETTINGS,
        variants=GRPO_VARIANTS,
        seeds=list(seeds),
        eval_prompts=64,
    )


THINKING_SEEDS = (0, 1, 2)


def thinking_sweep(
    out: str | Path = SWEEPS / "thinking.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] = THINKING_SEEDS,
) -> Path:
    """Notebook 14's sums of three numbers, each answer style trained from ``sft`` once per seed; returns the path.

    :func:`~rlhf_edu.reasoning.thinking_runs`: SFT, RLVR, and a PRM against an ORM, with every
    seed's per-prompt values in the JSON. About 5 minutes a seed on one CPU thread.
    """
    from ..reasoning import THINKING_KS, THINKING_RLVR, THINKING_SFT, thinking_runs

    preset = get_preset(preset)
    policy, tokenizer = zoo.load("sft", preset, get_device(device))
    with one_thread():
        runs = thinking_runs(policy, tokenizer, World(seed=0, preset=preset), seeds)
    settings = {
        "preset": preset.name,
        "sft": THINKING_SFT,
        "rlvr": THINKING_RLVR,
        "ks": list(THINKING_KS),
        "seeds": list(seeds),
        "eval_prompts": 64,
        "samples": 16,
    }
    return save_json({"settings": settings, "seeds": runs}, out)


def preferences_sweep(
    out: str | Path = SWEEPS / "preferences.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] | None = None,
) -> Path:
    """Notebooks 05 and 06's sliders: a reward model trained per setting and seed, and what it does to a policy.

    Per seed: the pairs are ``sft``'s (:func:`build_preference_dataset` at that seed), relabelled by
    :func:`~rlhf_edu.experiments.preference_runs.share_runs`'s populations (each group's best-of-n gain, per
    prompt) and by :func:`~rlhf_edu.experiments.preference_runs.length_bias_runs`' length-biased annotators (best-of-n
    and RLOO). About 5 minutes a seed on one CPU thread; returns the path.
    """
    from . import preference_runs as runs

    seeds = runs.SEEDS if seeds is None else seeds
    preset = get_preset(preset)
    sft, tokenizer = zoo.load("sft", preset, get_device(device))
    world = World(seed=0, preset=preset)
    results = {}
    with one_thread():
        sample = runs.held_out_sample(world, sft, tokenizer)
        for seed in seeds:
            pairs = build_preference_dataset(world, sft, tokenizer, seed=seed)
            results[str(seed)] = {
                "shares": runs.share_runs(sft, tokenizer, world, pairs, sample, seed),
                "length_bias": runs.length_bias_runs(sft, tokenizer, world, pairs, sample, seed),
            }
    settings = {
        "preset": preset.name,
        "reward_model": runs.REWARD_MODEL,
        "pooled_epochs": runs.POOLED_EPOCHS,
        "rl": runs.LENGTH_RL,
        "best_of": runs.BEST_OF,
        "eval_prompts": runs.EVAL_PROMPTS,
        "shares": list(runs.SHARES),
        "length_biases": list(runs.LENGTH_BIASES),
        "seeds": list(seeds),
    }
    return save_json({"settings": settings, "seeds": results}, out)


def ai_feedback_sweep(
    out: str | Path = SWEEPS / "ai_feedback.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] | None = None,
) -> Path:
    """Notebook 13's slider and claims: per seed, DPO on fresh pairs labelled by the annotator, ``rm``, the judge
    and mixes of the judge and the annotator, and SFT on a constitution's revisions
    (:func:`~rlhf_edu.experiments.feedback_runs.seed_runs`). About 2 to 3 minutes a seed on one CPU thread."""
    from . import feedback_runs as runs

    seeds = runs.SEEDS if seeds is None else seeds
    preset = get_preset(preset)
    device = get_device(device)
    sft, tokenizer = zoo.load("sft", preset, device)
    rm, _ = zoo.load("rm", preset, device)
    judge, _ = zoo.load("judge", preset, device)
    world = World(seed=0, preset=preset)
    results = {}
    with one_thread():
        for seed in seeds:
            pairs = build_preference_dataset(world, sft, tokenizer, n=runs.RLAIF_PAIRS, seed=runs.pair_seed(seed))
            results[str(seed)] = runs.seed_runs(sft, rm, judge, tokenizer, world, pairs, seed)
    settings = {
        "preset": preset.name,
        "rlaif_pairs": runs.RLAIF_PAIRS,
        "dpo": runs.RLAIF_DPO,
        "judge_shares": list(runs.JUDGE_SHARES),
        "eval_prompts": runs.EVAL_PROMPTS,
        "constitution_rows": runs.CONSTITUTION_ROWS,
        "constitution_sft": runs.CONSTITUTION_SFT,
        "seeds": list(seeds),
    }
    return save_json({"settings": settings, "seeds": results}, out)


def distillation_sweep(
    out: str | Path = SWEEPS / "distillation.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] | None = None,
) -> Path:
    """Notebook 15's slider and claims: per seed, a teacher, every student and kind of distillation, SFT on filtered
    and unfiltered synthetic data, and self-training (:func:`~rlhf_edu.experiments.distillation_runs.seed_runs`).
    About 3 minutes a seed on one CPU thread (8½ minutes for the three)."""
    from . import distillation_runs as runs

    seeds = runs.SEEDS if seeds is None else seeds
    preset = get_preset(preset)
    device = get_device(device)
    sft, tokenizer = zoo.load("sft", preset, device)
    base, _ = zoo.load("base", preset, device)
    rm, _ = zoo.load("rm", preset, device)
    world = World(seed=0, preset=preset)
    with one_thread():
        results = {str(seed): runs.seed_runs(sft, base, rm, tokenizer, world, seed) for seed in seeds}
    settings = {
        "preset": preset.name,
        "teacher": {"prompts": runs.TEACHER_PROMPTS, "samples": runs.TEACHER_SAMPLES, "sft": runs.TEACHER_SFT},
        "distillation": runs.DISTILLATION,
        "train_prompts": runs.TRAIN_PROMPTS,
        "eval_prompts": runs.EVAL_PROMPTS,
        "sizes": list(runs.SIZES),
        "quality_sft": runs.QUALITY_SFT,
        "self_training": {
            "prompts": runs.SELF_PROMPTS,
            "generations": runs.GENERATIONS,
            "samples": runs.SELF_SAMPLES,
            "temperature": runs.SELF_TEMPERATURE,
            "sft": runs.SELF_SFT,
            "real_shares": list(runs.REAL_SHARES),
        },
        "seeds": list(seeds),
    }
    return save_json({"settings": settings, "seeds": results}, out)


def evaluation_sweep(
    out: str | Path = SWEEPS / "evaluation.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] | None = None,
) -> Path:
    """Notebook 16's claims across seeds: per seed, the sample-size measurements, the leaderboard judged by the
    annotator, rm and the judge, contamination and format sensitivity
    (:func:`~rlhf_edu.experiments.evaluation_runs.seed_runs`). About 1¾ minutes a seed on one CPU thread."""
    from . import evaluation_runs as runs

    seeds = runs.SEEDS if seeds is None else seeds
    preset = get_preset(preset)
    device = get_device(device)
    sft, tokenizer = zoo.load("sft", preset, device)
    base, _ = zoo.load("base", preset, device)
    rm, _ = zoo.load("rm", preset, device)
    judge, _ = zoo.load("judge", preset, device)
    world = World(seed=0, preset=preset)
    with one_thread():
        results = {str(seed): runs.seed_runs(sft, base, rm, judge, tokenizer, world, seed) for seed in seeds}
    settings = {
        "preset": preset.name,
        "models": list(runs.MODELS),
        "board_prompts": runs.BOARD_PROMPTS,
        "best_of": runs.BEST_OF,
        "dpo_pairs": runs.DPO_PAIRS,
        "bootstrap": runs.BOOTSTRAP,
        "size": {"prompts": runs.SIZE_PROMPTS, "samples": runs.SIZE_SAMPLES},
        "contamination": {"sums": runs.BENCHMARK_SUMS, "leak_share": runs.LEAK_SHARE, "sft": runs.LEAK_SFT},
        "format_prompts": runs.FORMAT_PROMPTS,
        "seeds": list(seeds),
    }
    return save_json({"settings": settings, "seeds": results}, out)


def overoptimization_sweep(
    out: str | Path = SWEEPS / "overoptimization.json",
    preset: str | Preset | None = None,
    device: str | None = None,
    seeds: tuple[int, ...] | None = None,
) -> Path:
    """Notebook 17's cures and blind spot across seeds: per seed, the reward models, the best-of-n grid over the
    ensemble's K and λ, and five PPO runs (:func:`~rlhf_edu.experiments.overoptimization_runs.seed_runs`). About
    22 minutes a seed on one CPU thread."""
    from . import overoptimization_runs as runs

    seeds = runs.SEEDS if seeds is None else seeds
    preset = get_preset(preset)
    device = get_device(device)
    sft, tokenizer = zoo.load("sft", preset, device)
    world = World(seed=0, preset=preset)
    with one_thread():
        results = {str(seed): runs.seed_runs(sft, tokenizer, world, seed) for seed in seeds}
    return save_json({"settings": overoptimization_settings(preset.name, seeds), "seeds": results}, out)


def overoptimization_settings(preset: str, seeds: Sequence[int]) -> dict:
    """The settings :func:`overoptimization_sweep` records beside its results."""
    from . import overoptimization_runs as runs

    return {
        "preset": preset,
        "pairs": runs.PAIRS,
        "big_pairs": runs.BIG_PAIRS,
        "members": runs.MEMBERS,
        "lambdas": list(runs.LAMBDAS),
        "bon": {"prompts": runs.BON_PROMPTS, "samples": runs.BON_SAMPLES, "ns": list(runs.NS)},
        "rl": {
            "prompts": runs.RL_PROMPTS,
            **OVEROPTIMIZATION,
            "cure_beta": runs.CURE_BETA,
            "ensemble_lambda": runs.ENSEMBLE_LAMBDA,
        },
        "blind_spot": {"word": runs.BLIND_WORD, "bonus": runs.BLIND_BONUS},
        "seeds": list(seeds),
    }
