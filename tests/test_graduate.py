"""TRL's trainers on the toy world: the config mapping, two steps of each trainer, and the shipped reward model."""

import math

import numpy as np
import pytest
import torch
import trl
from datasets import Dataset
from trl.data_utils import apply_chat_template

from rlhf_edu import zoo
from rlhf_edu.core.evaluation import PolicyEvaluation
from rlhf_edu.core.preferences import encode_pairs
from rlhf_edu.core.runtime import shifted_seed
from rlhf_edu.core.world import World
from rlhf_edu.direct_alignment import DPOConfig, train_dpo
from rlhf_edu.experiments import graduate
from rlhf_edu.experiments.graduate import train_dpo_trl, train_grpo_trl, trl_dpo_config, trl_grpo_config
from rlhf_edu.policy_gradients import PolicyGradientConfig
from rlhf_edu.reward_modeling import reward_function

PAIRS = Dataset.from_dict(
    {
        "prompt": [
            [{"role": "user", "content": p}]
            for p in ["add 3 and 5", "review the pizza", "describe the cat", "add 2 and 2"]
        ],
        "chosen": [
            [{"role": "assistant", "content": c}]
            for c in ["3 plus 5 is 8", "the pizza is great", "the cat is small", "2 plus 2 is 4"]
        ],
        "rejected": [
            [{"role": "assistant", "content": r}]
            for r in ["3 plus 5 is 9", "the pizza is bad", "the dog is big", "2 plus 2 is 5"]
        ],
    }
)


def changed(model, reference) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))


def test_installed_trl_is_the_tested_version():
    assert trl.__version__ == graduate.TRL_VERSION


@pytest.mark.filterwarnings("ignore:Detected call of")  # the schedules alone, with no optimizer step
@pytest.mark.parametrize("lr_scheduler_type", ["constant", "linear"])
@pytest.mark.parametrize("warmup_ratio", [0.0, 0.1, 0.3])
def test_our_learning_rate_schedule_is_trls_on_the_same_config(lr_scheduler_type, warmup_ratio):
    """Step by step, the rate of our Trainer and of the scheduler TRL's trainer builds from the mapped config."""
    from transformers import get_scheduler

    from rlhf_edu.core.training import Trainer

    ours = DPOConfig(learning_rate=1e-3, warmup_ratio=warmup_ratio, lr_scheduler_type=lr_scheduler_type, progress=False)
    args = trl_dpo_config(ours)
    total_steps = 23
    trainer = Trainer(torch.nn.Linear(2, 1), ours, total_steps)
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=args.learning_rate)
    theirs = get_scheduler(  # as transformers.Trainer.create_scheduler builds it
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.get_warmup_steps(total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    for _ in range(total_steps):
        assert trainer.scheduler.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=1e-15)
        trainer.scheduler.step()
        theirs.step()


def test_dpo_config_maps_field_by_field():
    ours = DPOConfig(
        learning_rate=1e-3,
        batch_size=8,
        num_epochs=2,
        beta=0.3,
        loss_type="hinge",
        warmup_ratio=0.1,
        max_grad_norm=None,
        weight_decay=0.01,
        seed=7,
        max_length=48,
        progress=False,
    )
    theirs = trl_dpo_config(ours, device="cpu")
    assert (theirs.learning_rate, theirs.per_device_train_batch_size, theirs.num_train_epochs) == (1e-3, 8, 2)
    assert (theirs.beta, theirs.loss_type, theirs.seed, theirs.max_length) == (0.3, ["hinge"], 7, 48)
    assert theirs.lr_scheduler_type == "constant_with_warmup" and theirs.warmup_steps == 0.1
    assert theirs.max_grad_norm == 0.0 and theirs.weight_decay == 0.01  # 0: no clipping, as None is ours
    assert not theirs.bf16 and not theirs.gradient_checkpointing and theirs.disable_tqdm


def test_grpo_config_counts_completions_where_ours_counts_prompts():
    ours = PolicyGradientConfig(
        batch_size=16,
        num_generations=8,
        num_mini_batches=2,
        num_steps=5,
        beta=0.02,
        epsilon=0.3,
        loss_type="dr_grpo",
        scale_rewards="none",
        max_completion_length=10,
        num_iterations=3,
        progress=False,
    )
    theirs = trl_grpo_config(ours, device="cpu")
    assert theirs.per_device_train_batch_size * theirs.steps_per_generation == 16 * 8
    assert theirs.generation_batch_size == 16 * 8  # one rollout of 16 prompts × 8 answers, as ours
    # 5 rollouts, each 3 passes of 2 minibatches: 30 optimizer steps, a new rollout every 2 × 3 of them in TRL too
    assert (theirs.max_steps, theirs.num_iterations, theirs.num_generations) == (30, 3, 8)
    assert (theirs.beta, theirs.epsilon, theirs.loss_type, theirs.scale_rewards) == (0.02, 0.3, "dr_grpo", "none")
    assert theirs.max_completion_length == 10 and theirs.temperature == 1.0
    # ours defaults use_bias_correction_kl off, TRL 1.16 on: the bridge passes ours, not TRL's default
    assert (theirs.importance_sampling_level, theirs.delta, theirs.use_bias_correction_kl) == ("token", None, False)
    assert (theirs.mask_truncated_completions, theirs.sapo_temperature_pos, theirs.sapo_temperature_neg) == (
        False,
        1.0,
        1.05,
    )


def test_the_grpo_familys_settings_map_field_by_field():
    ours = PolicyGradientConfig(
        loss_type="sapo",
        importance_sampling_level="sequence",
        sapo_temperature_pos=0.9,
        sapo_temperature_neg=1.3,
        mask_truncated_completions=True,
        use_bias_correction_kl=True,
        progress=False,
    )
    theirs = trl_grpo_config(ours, device="cpu")
    assert (theirs.loss_type, theirs.importance_sampling_level) == ("sapo", "sequence")
    assert (theirs.sapo_temperature_pos, theirs.sapo_temperature_neg) == (0.9, 1.3)
    assert theirs.mask_truncated_completions and theirs.use_bias_correction_kl
    clipped = trl_grpo_config(PolicyGradientConfig(loss_type="bnpo", epsilon_high=0.28, delta=2.0, progress=False))
    assert (clipped.loss_type, clipped.epsilon_high, clipped.delta) == ("bnpo", 0.28, 2.0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("algorithm", "rloo"),
        ("kl_in", "reward"),
        ("kl_estimator", "k1"),
        ("kl_target", 2.0),
        ("ptx_coef", 0.1),
        ("dynamic_sampling", True),
    ],
)
def test_grpo_settings_trl_has_no_field_for_are_refused(field, value):
    config = PolicyGradientConfig(**{field: value}, progress=False)
    with pytest.raises(ValueError, match=f"{field}=.*no GRPOTrainer equivalent"):
        trl_grpo_config(config)


def test_dpo_settings_trl_has_no_field_for_are_refused():
    with pytest.raises(ValueError, match="loss_type='simpo'.*CPOTrainer"):
        trl_dpo_config(DPOConfig(loss_type="simpo", beta=2.0))
    with pytest.raises(ValueError, match="loss_type='ipo'.*averages over tokens"):
        trl_dpo_config(DPOConfig(loss_type="ipo"))
    with pytest.raises(ValueError, match="label_smoothing=0.1 with loss_type='sigmoid' is cDPO"):
        trl_dpo_config(DPOConfig(label_smoothing=0.1))
    with pytest.raises(ValueError, match="rpo_alpha=1.0"):
        trl_dpo_config(DPOConfig(rpo_alpha=1.0))
    with pytest.raises(ValueError, match="num_mini_batches=3 does not divide"):
        trl_grpo_config(PolicyGradientConfig(batch_size=4, num_generations=4, num_mini_batches=3))


def test_a_missing_trl_says_how_to_install_it(monkeypatch):
    def no_trl(name):
        raise ImportError(name)

    monkeypatch.setattr(graduate, "import_module", no_trl)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[trl\]"'):
        graduate.require_trl()


def test_trl_tokenizes_each_pair_as_train_dpo_does():
    model, tokenizer = zoo.load("sft", device="cpu")
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=zoo.load("sft", device="cpu")[0],
        processing_class=tokenizer,
        args=trl_dpo_config(DPOConfig(progress=False)),
        train_dataset=PAIRS,
    )
    for row, pair in zip(trainer.train_dataset, encode_pairs(tokenizer, PAIRS, 64)):
        for side in ("chosen", "rejected"):
            ids, mask = pair[side]["input_ids"], pair[side]["completion_mask"]
            assert row["prompt_ids"] + row[f"{side}_ids"] == ids
            assert len(row[f"{side}_ids"]) == sum(mask)  # the same tokens count as the answer


@pytest.mark.parametrize("loss_type, label_smoothing", [("sigmoid", 0.0), ("hinge", 0.0), ("robust", 0.1)])
def test_full_batch_dpo_follows_the_same_trajectory_in_both_trainers(loss_type, label_smoothing):
    """One batch of every pair, three epochs: the same loss and the same AdamW give the same losses step by step."""
    config = DPOConfig(
        batch_size=len(PAIRS),
        num_epochs=3,
        learning_rate=1e-3,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        group_by_length=False,
        progress=False,
    )
    ours, tokenizer = zoo.load("sft", device="cpu")
    theirs, _ = zoo.load("sft", device="cpu")
    ours_losses = train_dpo(ours, tokenizer, PAIRS, config)["loss"]
    trl_losses = train_dpo_trl(theirs, tokenizer, PAIRS, config, same_order=False)["loss"]  # one batch: any order
    assert len(ours_losses) == len(trl_losses) == 3
    assert ours_losses == pytest.approx(trl_losses, abs=1e-4)
    assert ours_losses[-1] < ours_losses[0] - 0.01  # the policy moved, so later steps test more than the start


def test_with_the_same_order_both_dpo_trainers_see_the_same_batches():
    """Eight pairs, two a step: TRL reads them in train_dpo's order, so the losses agree step by step."""
    demos = World(seed=0).sft_dataset(8)
    pairs = Dataset.from_dict(
        {
            "prompt": demos["prompt"],
            "chosen": demos["completion"],
            "rejected": demos["completion"][1:] + demos["completion"][:1],
        }
    )
    config = DPOConfig(batch_size=2, learning_rate=1e-3, group_by_length=False, seed=3, progress=False)
    ours, tokenizer = zoo.load("sft", device="cpu")
    ours_losses = train_dpo(ours, tokenizer, pairs, config)["loss"]
    same = train_dpo_trl(zoo.load("sft", device="cpu")[0], tokenizer, pairs, config)["loss"]
    shuffled = train_dpo_trl(zoo.load("sft", device="cpu")[0], tokenizer, pairs, config, same_order=False)["loss"]
    assert len(ours_losses) == len(same) == len(shuffled) == 4
    # the same batches: the same losses, up to rounding that the later steps amplify
    assert same[:3] == pytest.approx(ours_losses[:3], abs=1e-4) and same == pytest.approx(ours_losses, abs=1e-3)
    assert max(abs(a - b) for a, b in zip(shuffled[:3], ours_losses[:3])) > 1e-3  # TRL's own sampler: other batches
    assert sorted(graduate.loader_order(8, config)) == list(range(8))


def test_trls_own_order_is_only_another_permutation(monkeypatch):
    """TRL's own sampler changes nothing but the order: read in sequence, its permutation gives the same run.

    The permutation comes from the seed another way than train_dpo's loader draws its own, so seed s
    gives the two trainers unrelated orders, and their runs of one seed are not paired (the TRL notebook).
    """
    from accelerate.data_loader import SeedableRandomSampler

    demos = World(seed=0).sft_dataset(8)
    pairs = Dataset.from_dict(
        {
            "prompt": demos["prompt"],
            "chosen": demos["completion"],
            "rejected": demos["completion"][1:] + demos["completion"][:1],
        }
    )
    config = DPOConfig(batch_size=2, learning_rate=1e-3, group_by_length=False, seed=3, progress=False)
    tokenizer = zoo.load("sft", device="cpu")[1]
    own = train_dpo_trl(zoo.load("sft", device="cpu")[0], tokenizer, pairs, config, same_order=False)["loss"]
    torch.manual_seed(shifted_seed(config.seed))  # what TRL's Trainer seeds with before it builds the sampler
    permutation = list(SeedableRandomSampler(range(len(pairs))))
    ours = graduate.loader_order(len(pairs), config)
    monkeypatch.setattr(graduate, "loader_order", lambda num_rows, config: permutation)
    read_in_sequence = train_dpo_trl(zoo.load("sft", device="cpu")[0], tokenizer, pairs, config)["loss"]
    assert own == read_in_sequence and len(own) == 4
    assert permutation != ours


@pytest.mark.parametrize("overrides", [{"num_epochs": 2}, {"group_by_length": True}])
def test_the_same_order_is_one_shuffled_epoch(overrides):
    with pytest.raises(ValueError, match="the same order is one shuffled epoch.*same_order=False"):
        graduate.loader_order(8, DPOConfig(**({"group_by_length": False} | overrides)))


def test_two_steps_of_trl_dpo_on_the_zoo_sft_model():
    policy, tokenizer = zoo.load("sft", device="cpu")
    start, _ = zoo.load("sft", device="cpu")
    config = DPOConfig(batch_size=2, learning_rate=1e-3, group_by_length=False, progress=False)
    history = train_dpo_trl(policy, tokenizer, PAIRS, config)
    assert history["step"] == [0, 1]
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-5)  # the policy starts as its reference
    assert {"rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"} <= set(history.keys())
    assert changed(policy, start) and not policy.training


def test_two_steps_of_trl_grpo_with_the_world_dataset_and_reward():
    """TRL's own GRPOTrainer, fed World.rl_dataset and World.reward_function directly."""
    world = World(seed=0)
    policy, tokenizer = zoo.load("sft", device="cpu")
    start, _ = zoo.load("sft", device="cpu")
    config = PolicyGradientConfig(
        batch_size=4, num_generations=4, num_steps=2, max_completion_length=8, seed=0, progress=False
    )
    trainer = trl.GRPOTrainer(
        model=policy,
        processing_class=tokenizer,
        args=trl_grpo_config(config),
        reward_funcs=[world.reward_function("gold"), world.reward_function("verifier")],
        train_dataset=world.rl_dataset(16, family="arithmetic"),
    )
    trainer.train()
    history = graduate.history_from_trl(trainer.state.log_history)
    assert history["step"] == [0, 1] and changed(policy, start)
    for name in ("gold_reward", "verifier_reward"):
        assert all(np.isfinite(history[f"rewards/{name}/mean"]))
    gold, verifier = history["rewards/gold_reward/mean"], history["rewards/verifier_reward/mean"]
    assert history["reward"] == pytest.approx([g + v for g, v in zip(gold, verifier)], abs=1e-5)  # weights of 1


def test_train_grpo_trl_logs_what_train_policy_gradient_logs():
    world = World(seed=0)
    policy, tokenizer = zoo.load("sft", device="cpu")
    config = PolicyGradientConfig(batch_size=2, num_generations=4, num_steps=2, max_completion_length=8, progress=False)
    history = train_grpo_trl(policy, tokenizer, world.prompts(4), world.reward_function("gold"), config)
    shared = {ours for trainer, ours, _, _, _ in graduate.METRICS if trainer != "DPO"}
    assert shared <= set(history.keys())


def test_trl_grpo_takes_the_policy_in_memory_as_its_reference():
    """Not the checkpoint on disk: a policy changed since it was loaded starts at KL 0 from its reference."""
    world = World(seed=0)
    policy, tokenizer = zoo.load("sft", device="cpu")
    with torch.no_grad():
        policy.lm_head.weight.mul_(1.5)  # now far from the shipped sft on disk
    name = policy.config._name_or_path
    config = PolicyGradientConfig(
        batch_size=2, num_generations=4, num_steps=1, max_completion_length=8, beta=0.04, progress=False
    )
    history = train_grpo_trl(policy, tokenizer, world.prompts(2), world.reward_function("gold"), config)
    assert history["kl"] == [pytest.approx(0.0, abs=1e-6)]  # the first step samples from the reference itself
    assert policy.config._name_or_path == name


def test_the_shipped_reward_model_scores_in_trl_as_here():
    """GRPOTrainer scores with a reward model by its chat template and logits[:, 0]: the same numbers as ours."""
    rm, tokenizer = zoo.load("rm", device="cpu")
    prompts = [[{"role": "user", "content": p}] for p in ["review the pizza", "add 3 and 5", "describe the cat"]]
    completions = [
        [{"role": "assistant", "content": c}]
        for c in ["the pizza is great", "3 plus 5 is 8", "the cat is small and soft"]
    ]
    texts = [apply_chat_template({"messages": p + c}, tokenizer)["text"] for p, c in zip(prompts, completions)]
    inputs = tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        theirs = rm(**inputs).logits[:, 0]  # (B,)
    ours = reward_function(rm, tokenizer)(prompts, completions)
    assert theirs.tolist() == pytest.approx(ours, abs=1e-5)
    policy, _ = zoo.load("sft", device="cpu")
    config = PolicyGradientConfig(batch_size=2, num_generations=2, num_steps=1, max_completion_length=8, progress=False)
    trainer = trl.GRPOTrainer(
        model=policy,
        processing_class=tokenizer,
        reward_funcs=rm,
        args=trl_grpo_config(config),
        train_dataset=World(seed=0).rl_dataset(4),
    )
    trainer.train()
    assert np.isfinite(graduate.history_from_trl(trainer.state.log_history)["rewards/rm/mean"]).all()


def test_history_from_trl_drops_the_summary_and_counts_from_zero():
    logs = [
        {"loss": 0.7, "step": 1, "epoch": 0.5},
        {"loss": 0.6, "step": 2, "note": "text"},
        {"train_runtime": 1.0, "loss": 0.65, "step": 2},
    ]
    history = graduate.history_from_trl(logs)
    assert history["step"] == [0, 1] and history["loss"] == [0.7, 0.6] and "note" not in history.keys()


def test_gold_difference_is_the_difference_of_means_with_independent_errors():
    def evaluation(rewards):
        return PolicyEvaluation(["x"] * len(rewards), ["y"] * len(rewards), rewards, {}, 0.0)

    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]
    difference, stderr = graduate.gold_difference(evaluation(a), evaluation(b))
    assert difference == pytest.approx(2.0)
    se_a, se_b = np.std(a, ddof=1) / 2, np.std(b, ddof=1) / 2  # s / √n with n = 4
    assert stderr == pytest.approx(math.sqrt(se_a**2 + se_b**2))


def test_a_paired_difference_cancels_what_the_prompts_share():
    def evaluation(prompts, rewards):
        return PolicyEvaluation(prompts, ["y"] * len(rewards), rewards, {}, 0.0)

    prompts = ["a", "b", "c", "d"]
    easy_and_hard = evaluation(prompts, [3.0, 0.0, 3.0, 0.0])
    shifted = evaluation(prompts, [2.0, -1.0, 2.0, -1.0])  # one less on every prompt
    assert graduate.gold_difference(easy_and_hard, shifted, paired=True) == pytest.approx((1.0, 0.0))
    assert graduate.gold_difference(easy_and_hard, shifted)[1] > 1.0  # unpaired, the prompts' spread stays in
    with pytest.raises(ValueError, match="same prompts"):
        graduate.gold_difference(easy_and_hard, evaluation(["x"] * 4, [0.0] * 4), paired=True)


def test_side_by_side_gives_each_trainer_its_own_fresh_model():
    world = World(seed=0)
    seen = []

    def trainer(policy, tokenizer):
        seen.append(policy)
        return graduate.History()

    result = graduate.side_by_side(
        "test", "sft", {"ours": trainer, "trl": trainer}, world, world.prompts(4, "test"), device="cpu"
    )
    assert seen[0] is not seen[1] and not changed(seen[0], seen[1])
    assert result.difference()[0] == 0.0  # the same weights and seed: the same samples
    assert "| rlhf_edu |" in result.table() and set(result.seconds) == {"ours", "trl"}


def test_seed_spread_averages_over_seeds_with_their_own_error():
    runs = [
        {"ours/gold": 2.0, "trl/gold": 1.0},
        {"ours/gold": 3.0, "trl/gold": 3.0},
        {"ours/gold": 4.0, "trl/gold": 2.0},
    ]
    spread = graduate.seed_spread(runs)
    assert spread["ours"] == pytest.approx((3.0, 1 / math.sqrt(3)))  # s = 1 over 3 seeds
    assert graduate.seed_spread([r | {"ours/kl": 1.0, "trl/kl": 2.0} for r in runs], "kl")["ours - trl"] == (-1.0, 0.0)
    assert spread["ours - trl"] == pytest.approx((1.0, 1 / math.sqrt(3)))  # differences 1, 0, 2
    unpaired = graduate.seed_spread(runs, paired=False)["ours - trl"]  # √(se_ours² + se_trl²), se_trl = 1/√3 too
    assert unpaired == pytest.approx((1.0, math.sqrt(2 / 3)))


def test_trl_takes_the_shifted_seed(monkeypatch):
    monkeypatch.setenv("RLHF_EDU_SEED_OFFSET", "1000")
    assert trl_dpo_config(DPOConfig(seed=7, progress=False), device="cpu").seed == 1007


def test_the_shipped_sweep_holds_five_seeds_of_each_run():
    runs = graduate.load_side_by_side_sweep()
    assert set(runs) == {"dpo", "grpo", "dpo_own_order"}
    assert all([r["seed"] for r in v] == [0, 1, 2, 3, 4] for v in runs.values())


def test_side_by_side_plots_both_runs_on_each_panel():
    import matplotlib

    matplotlib.use("Agg")
    history = graduate.History([{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}])
    evaluation = PolicyEvaluation(["x"], ["y"], [1.0], {}, 0.0)
    result = graduate.SideBySide("DPO", evaluation, evaluation, evaluation, {"ours": history, "trl": history}, {})
    figure = result.plot("loss", smooth=1)
    assert [len(ax.lines) for ax in figure.axes] == [2]


def test_the_sweep_recipe_refuses_another_preset():
    from rlhf_edu.experiments import recipes

    with pytest.raises(ValueError, match="tiny zoo, not preset 'small'"):
        recipes.trl_side_by_side_runs(preset="small")
