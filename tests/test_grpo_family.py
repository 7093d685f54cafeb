"""The GRPO family's loss (token_policy_loss): TRL's own GRPOTrainer._compute_loss, hand-worked cases, the loop."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rlhf_edu import policy_gradients as pg
from rlhf_edu.core import zoo
from rlhf_edu.core.world import World

B, T, MAX_LEN = 5, 6, 8


def random_case(seed: int = 0) -> dict[str, torch.Tensor]:
    """(B, T) float64 log-probs with a ragged mask (row 3 fully masked) and ratios wide enough to clip."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 4, 1, 0, 5])
    mask = (torch.arange(T) < lengths.unsqueeze(1)).double()  # (B, T)
    old_logps = -torch.rand(B, T, generator=generator, dtype=torch.float64) * 2 - 0.1  # (B, T)
    logps = old_logps + torch.randn(B, T, generator=generator, dtype=torch.float64) * 0.4  # ρ from ~0.3 to ~3
    ref_logps = old_logps + torch.randn(B, T, generator=generator, dtype=torch.float64) * 0.3
    advantages = torch.tensor([1.2, -0.7, 0.4, 0.9, -1.5], dtype=torch.float64)  # (B,)
    return {"logps": logps, "old_logps": old_logps, "ref_logps": ref_logps, "advantages": advantages, "mask": mask}


def ours(case: dict[str, torch.Tensor], config: pg.PolicyGradientConfig) -> tuple[float, torch.Tensor, dict]:
    """Our loss, its gradient with respect to logps, and its metrics."""
    logps = case["logps"].clone().requires_grad_()
    loss, metrics = pg.token_policy_loss(
        logps,
        case["old_logps"],
        case["advantages"],
        case["mask"],
        config,
        case["ref_logps"],
        num_items_in_batch=case["mask"].sum(),
    )
    loss.backward()
    return loss.item(), logps.grad, metrics


def trls(case: dict[str, torch.Tensor], config: pg.PolicyGradientConfig) -> tuple[float, torch.Tensor, dict]:
    """TRL's GRPOTrainer._compute_loss on a bare trainer holding only what that method reads."""
    trl = pytest.importorskip("trl")
    trainer = object.__new__(trl.GRPOTrainer)
    epsilon_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    vars(trainer).update(
        loss_type=config.loss_type,
        epsilon_low=config.epsilon,
        epsilon_high=epsilon_high,
        beta=config.beta,
        importance_sampling_level=config.importance_sampling_level,
        args=SimpleNamespace(
            delta=config.delta,
            sapo_temperature_pos=config.sapo_temperature_pos,
            sapo_temperature_neg=config.sapo_temperature_neg,
            use_bias_correction_kl=config.use_bias_correction_kl,
            steps_per_generation=1,
        ),
        max_completion_length=config.max_completion_length,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction: x, num_processes=1),
        current_gradient_accumulation_steps=1,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    logps = case["logps"].clone().requires_grad_()
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logps, torch.zeros_like(logps), None)
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": case["mask"],
        "advantages": case["advantages"],
        "old_per_token_logps": case["old_logps"],
        "ref_per_token_logps": case["ref_logps"],
        "num_items_in_batch": case["mask"].sum(),
    }
    loss = trainer._compute_loss(None, inputs)
    loss.backward()
    return loss.item(), logps.grad, {name: values[0] for name, values in trainer._metrics["train"].items()}


SETTINGS = [
    {"loss_type": loss_type, "importance_sampling_level": level, "beta": beta, "use_bias_correction_kl": corrected}
    for loss_type, level, beta in itertools.product(pg.LOSS_TYPES, pg.IMPORTANCE_SAMPLING_LEVELS, (0.0, 0.04))
    for corrected in ((False, True) if beta > 0 else (False,))
] + [
    {"loss_type": "dapo", "epsilon_high": 0.28},
    {"loss_type": "grpo", "epsilon_high": 0.28, "delta": 1.5, "beta": 0.04},
    {"loss_type": "bnpo", "delta": 1.3, "importance_sampling_level": "sequence"},
    {"loss_type": "dr_grpo", "epsilon": 0.1, "epsilon_high": 0.3, "delta": 1.35},
    {"loss_type": "cispo", "epsilon_high": 1.2, "beta": 0.04, "use_bias_correction_kl": True},
    {"loss_type": "cispo", "epsilon_high": 5.0},
    {"loss_type": "sapo", "sapo_temperature_pos": 0.8, "sapo_temperature_neg": 2.0},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_the_loss_and_its_gradient_are_trls(settings):
    config = pg.PolicyGradientConfig(max_completion_length=MAX_LEN, progress=False, **settings)
    case = random_case()
    loss, grad, metrics = ours(case, config)
    trl_loss, trl_grad, trl_metrics = trls(case, config)
    assert loss == pytest.approx(trl_loss, abs=1e-6)
    torch.testing.assert_close(grad, trl_grad, atol=1e-6, rtol=0)
    shared = metrics.keys() & trl_metrics.keys()
    assert shared == metrics.keys()  # every metric we report is one TRL logs
    assert {name: metrics[name] for name in shared} == pytest.approx({name: trl_metrics[name] for name in shared})
    if config.loss_type in pg.CLIPPED_LOSS_TYPES:
        assert trl_metrics["clip_ratio/region_mean"] > 0  # the case does clip, so the clip is tested


# --- hand-worked values: two rows of two tokens ---------------------------------------------------------
def hand_case(ratios: list[list[float]], advantages: list[float], mask: list[list[float]] | None = None) -> tuple:
    """Log-probs whose ratios to old log-probs of 0 are ``ratios``, as float64 tensors."""
    logps = torch.tensor(ratios, dtype=torch.float64).log()
    mask = torch.ones_like(logps) if mask is None else torch.tensor(mask, dtype=torch.float64)
    return logps, torch.zeros_like(logps), torch.tensor(advantages, dtype=torch.float64), mask


def hand_loss(ratios, advantages, mask=None, **settings) -> float:
    config = pg.PolicyGradientConfig(beta=0.0, max_completion_length=4, progress=False, **settings)
    return pg.token_policy_loss(*hand_case(ratios, advantages, mask), config)[0].item()


RATIOS, ADVANTAGES, MASK = [[1.5, 0.5], [1.1, 0.9]], [2.0, -1.0], [[1.0, 1.0], [1.0, 0.0]]


def test_grpo_clips_then_averages_each_sequence_then_the_sequences():
    # row 0 (A = 2): min(1.5·2, 1.2·2) = 2.4 and min(0.5·2, 0.8·2) = 1.0; row 1 (A = −1): min(−1.1, −1.1) = −1.1
    expected = -((2.4 + 1.0) / 2 + (-1.1) / 1) / 2
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="grpo") == pytest.approx(expected)
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="sapo") != pytest.approx(expected)  # no hard clip


def test_bnpo_and_dapo_average_the_tokens_and_dr_grpo_divides_by_a_constant():
    token_sum = -(2.4 + 1.0 - 1.1)  # the same clipped terms as above, three real tokens
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="bnpo") == pytest.approx(token_sum / 3)
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="dapo") == pytest.approx(token_sum / 3)
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="dr_grpo") == pytest.approx(token_sum / (2 * 4))  # B · L


def test_dapo_and_cispo_divide_by_the_generation_batchs_tokens_when_given():
    config = pg.PolicyGradientConfig(loss_type="dapo", beta=0.0, progress=False)
    loss, _ = pg.token_policy_loss(*hand_case(RATIOS, ADVANTAGES, MASK), config, num_items_in_batch=10)
    assert loss.item() == pytest.approx(-(2.4 + 1.0 - 1.1) / 10)  # 3 tokens here, 10 in the whole batch


def test_clip_higher_lets_a_positive_advantage_push_further():
    # ε_high = 0.6: row 0's first token keeps min(1.5·2, 1.6·2) = 3.0 rather than 2.4
    expected = -((3.0 + 1.0) / 2 + (-1.1) / 1) / 2
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="grpo", epsilon_high=0.6) == pytest.approx(expected)


def test_delta_caps_only_the_unclipped_ratio():
    # A = −1 and ρ = 3: PPO's −min(−3, −1.2) = 3 grows with ρ; δ = 2 caps it at −min(−2, −1.2) = 2
    ratios, advantages = [[3.0, 1.0], [0.5, 1.0]], [-1.0, 1.0]
    # row 1 (A = 1): min(0.5, 0.8) = 0.5 and min(1, 1) = 1, untouched by δ
    assert hand_loss(ratios, advantages, loss_type="grpo") == pytest.approx(-((-3.0 - 1.0) / 2 + (0.5 + 1.0) / 2) / 2)
    expected = -((-2.0 - 1.0) / 2 + (0.5 + 1.0) / 2) / 2
    assert hand_loss(ratios, advantages, loss_type="grpo", delta=2.0) == pytest.approx(expected)


def test_cispo_weighs_log_pi_by_the_capped_detached_ratio():
    # ε_max = 1.2 caps ρ = 1.5 at 1.2; the loss is −Σ w·A·log π over 3 tokens (tokens / num_items: the minibatch's)
    log = math.log
    expected = -(1.2 * 2 * log(1.5) + 0.5 * 2 * log(0.5) + 1.1 * -1 * log(1.1)) / 3
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="cispo", epsilon_high=1.2) == pytest.approx(expected)
    logps, old_logps, advantages, mask = hand_case(RATIOS, ADVANTAGES, MASK)
    logps.requires_grad_()
    config = pg.PolicyGradientConfig(loss_type="cispo", epsilon_high=1.2, beta=0.0, progress=False)
    pg.token_policy_loss(logps, old_logps, advantages, mask, config)[0].backward()
    # the weight is detached: d/dlog π = −w·A / 3, so the capped token still gets a gradient (PPO's clip gives 0)
    expected_grad = torch.tensor([[-1.2 * 2 / 3, -0.5 * 2 / 3], [1.1 / 3, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logps.grad, expected_grad)


def test_sapo_gates_the_ratio_softly_with_a_temperature_per_sign():
    def gate(ratio, tau):  # σ(τ(ρ − 1))·4/τ
        return 4 / tau / (1 + math.exp(-tau * (ratio - 1)))

    row0 = (gate(1.5, 1.0) * 2 + gate(0.5, 1.0) * 2) / 2  # A = 2 > 0: τ_pos = 1
    row1 = gate(1.1, 1.05) * -1 / 1  # A = −1: τ_neg = 1.05
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="sapo") == pytest.approx(-(row0 + row1) / 2)


def test_the_sequence_level_ratio_is_the_exp_of_the_mean_log_ratio():
    # row 0: ρ = exp((log 1.5 + log 0.5) / 2) = √0.75 ≈ 0.866, inside the clip, so −A·ρ on both tokens;
    # row 1: one real token, ρ = 1.1, A = −1: −min(−1.1, −1.1) = 1.1
    rho = math.sqrt(1.5 * 0.5)
    expected = -((2 * rho + 2 * rho) / 2 + (-1.1) / 1) / 2
    assert hand_loss(RATIOS, ADVANTAGES, MASK, loss_type="grpo", importance_sampling_level="sequence") == (
        pytest.approx(expected)
    )


def test_bias_correction_weighs_the_kl_by_the_ratio():
    logps, old_logps, advantages, mask = hand_case([[2.0]], [0.0])  # A = 0: only the KL is left
    ref_logps = torch.zeros(1, 1, dtype=torch.float64)  # log π_ref − log π = −log 2: k3 = ½ − 1 + log 2
    k3 = 0.5 - 1 + math.log(2)
    for corrected, expected in ((False, 0.1 * k3), (True, 0.1 * 2.0 * k3)):
        config = pg.PolicyGradientConfig(beta=0.1, use_bias_correction_kl=corrected, progress=False)
        loss, _ = pg.token_policy_loss(logps, old_logps, advantages, mask, config, ref_logps)
        assert loss.item() == pytest.approx(expected)


def test_the_kl_in_the_loss_needs_the_reference():
    config = pg.PolicyGradientConfig(beta=0.1, progress=False)
    with pytest.raises(ValueError, match="^beta=0.1 puts β·KL in the loss: pass ref_logps, or set beta=0$"):
        pg.token_policy_loss(*hand_case([[1.0]], [1.0]), config)


def test_clip_shares_count_tokens_or_sequences():
    config = pg.PolicyGradientConfig(beta=0.0, progress=False)
    _, shares = pg.token_policy_loss(*hand_case(RATIOS, ADVANTAGES, MASK), config)
    # only row 0's ρ = 1.5 with A > 0 is clipped (high): 1 of 3 real tokens
    assert shares == pytest.approx(
        {"clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 1 / 3, "clip_ratio/region_mean": 1 / 3}
    )
    config = pg.PolicyGradientConfig(beta=0.0, loss_type="cispo", epsilon_high=1.2, progress=False)
    assert pg.token_policy_loss(*hand_case(RATIOS, ADVANTAGES, MASK), config)[1] == {"cispo_clip_ratio": 1 / 3}


# --- settings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"loss_type": "gspo"}, "^unknown loss_type 'gspo': use one of 'grpo', 'bnpo'"),
        ({"importance_sampling_level": "row"}, "^unknown importance_sampling_level 'row': use one of 'token'"),
        ({"epsilon_high": 0.1}, "^epsilon_high=0.1 is below epsilon=0.2: the upper clip 1 \\+ epsilon_high is"),
        ({"delta": 1.2}, "^delta must be > 1.2, got 1.2: INTELLECT-2's cap on ρ"),
        ({"delta": 1.25, "epsilon_high": 0.28}, "^delta must be > 1.28, got 1.25"),
        ({"delta": 2.0, "loss_type": "sapo"}, "^delta=2.0 caps the clipped surrogate's ratio, and loss_type='sapo'"),
        ({"sapo_temperature_pos": 0.0}, "^sapo_temperature_pos must be > 0, got 0: SAPO's gate temperature"),
        ({"sapo_temperature_neg": -1.0}, "^sapo_temperature_neg must be > 0, got -1"),
        ({"algorithm": "ppo", "num_generations": 1, "dynamic_sampling": True}, "^dynamic_sampling=True keeps"),
        ({"max_sampling_rounds": 0}, "^max_sampling_rounds must be >= 1, got 0"),
    ],
)
def test_settings_the_family_cannot_use_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        pg.PolicyGradientConfig(progress=False, **settings)


def test_cispo_takes_an_epsilon_high_below_epsilon_as_its_absolute_cap():
    pg.PolicyGradientConfig(loss_type="cispo", epsilon_high=0.1, progress=False)  # a cap on ρ, not 1 + ε


# --- the loop: truncated completions and dynamic sampling ---------------------------------------------------
@pytest.fixture(scope="module")
def world():
    return World()


def short_run(world, reward_fn, prompts, **settings):
    policy, tokenizer = zoo.load("sft", device="cpu")
    defaults = {"batch_size": 2, "num_generations": 4, "num_steps": 2, "max_completion_length": 12, "beta": 0.0}
    config = pg.PolicyGradientConfig(progress=False, **(defaults | settings))
    return pg.train_policy_gradient(policy, tokenizer, prompts, reward_fn, config)


def test_mask_truncated_completions_zeroes_the_unfinished_rows(world):
    policy, tokenizer = zoo.load("sft", device="cpu")
    rollout = pg.sample_rollouts(policy, tokenizer, world.prompts(4), 4, max_new_tokens=6, seed=0)
    assert 0 < rollout.finished.sum() < len(rollout)  # six tokens: some answers finish, some are cut
    on = pg.PolicyGradientConfig(mask_truncated_completions=True, progress=False)
    masked = pg.loss_mask(rollout, on)
    assert masked[~rollout.finished].sum() == 0
    torch.testing.assert_close(masked[rollout.finished], rollout.mask[rollout.finished])
    assert torch.equal(pg.loss_mask(rollout, pg.PolicyGradientConfig(progress=False)), rollout.mask)


def test_the_loop_hands_the_loss_the_truncation_mask(world, monkeypatch):
    seen = []
    rl_loss = pg.rl_loss

    def spy(logps, experience, config, values=None, ptx_nll=None):
        seen.append((experience.mask, experience.rollout))
        return rl_loss(logps, experience, config, values, ptx_nll)

    monkeypatch.setattr(pg, "rl_loss", spy)
    short_run(
        world, world.reward_function(), world.prompts(4), mask_truncated_completions=True, max_completion_length=6
    )
    assert not all(rollout.finished.all() for _, rollout in seen)  # some answers were cut at six tokens
    for mask, rollout in seen:
        assert mask[~rollout.finished].sum() == 0 and torch.equal(
            mask[rollout.finished], rollout.mask[rollout.finished]
        )


def test_dynamic_sampling_never_trains_on_a_group_whose_rewards_are_equal(world, monkeypatch):
    prompts = world.prompts(6)
    flat = set(prompts[::2])  # every answer to these prompts scores the same

    def reward(prompts, completions):
        return [0.0 if p in flat else float(len(c)) for p, c in zip(prompts, completions)]

    trained = []
    rl_loss = pg.rl_loss

    def spy(logps, experience, config, values=None, ptx_nll=None):
        trained.append(list(experience.rollout.prompts))
        return rl_loss(logps, experience, config, values, ptx_nll)

    monkeypatch.setattr(pg, "rl_loss", spy)
    history = short_run(world, reward, prompts, dynamic_sampling=True, max_sampling_rounds=3)
    assert trained and not flat & {p for rows in trained for p in rows}
    assert all(len(rows) == 2 * 4 for rows in trained)  # the batch was filled from further prompts
    assert history["dynamic_sampling/kept_groups"] == [2.0, 2.0]
    assert all(n >= 2 for n in history["dynamic_sampling/sampled_groups"])


def test_dynamic_sampling_with_no_informative_group_skips_the_update(world):
    history = short_run(world, lambda p, c: [1.0] * len(c), world.prompts(4), dynamic_sampling=True)
    assert "loss" not in history.keys()  # no update at all
    assert history["dynamic_sampling/kept_groups"] == [0.0, 0.0]
    assert history["dynamic_sampling/sampled_groups"] == [8.0, 8.0]  # 4 rounds of 2 prompts, each step
