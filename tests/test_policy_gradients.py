import copy
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlhf_edu import policy_gradients as pg
from rlhf_edu.core.rollouts import sample_rollouts
from rlhf_edu.core.runtime import torch_generator
from rlhf_edu.regularization import rollout_exact_kl
from tests.conftest import logprob_alone, random_model


# --- advantages, against hand-worked values -----------------------------------------------------
def test_grpo_advantages_hand_worked():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    # mean 0.25, Bessel std sqrt((0.75² + 3·0.25²) / 3) = 0.5, so A = (r − 0.25) / 0.5001
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25]]) / 0.5001
    torch.testing.assert_close(pg.grpo_advantages(rewards), expected)
    assert pg.grpo_advantages(rewards)[0, 0].item() == pytest.approx(1.4997, abs=1e-4)
    torch.testing.assert_close(
        pg.grpo_advantages(rewards, scale_rewards="none"), torch.tensor([[0.75, -0.25, -0.25, -0.25]])
    )


def test_grpo_batch_scaling_uses_one_std_over_every_reward():
    rewards = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    batch_std = torch.tensor([1.0, 0.0, 3.0, 3.0]).std()  # Bessel over all four
    torch.testing.assert_close(
        pg.grpo_advantages(rewards, scale_rewards="batch"), torch.tensor([[0.5, -0.5], [0.0, 0.0]]) / (batch_std + 1e-4)
    )


def test_grpo_group_scaling_divides_each_group_by_its_own_std():
    rewards = torch.tensor([[1.0, 0.0], [4.0, 0.0]])  # Bessel std within each group: √0.5 and √8
    expected = torch.tensor(
        [[0.5 / (0.5**0.5 + 1e-4), -0.5 / (0.5**0.5 + 1e-4)], [2 / (8**0.5 + 1e-4), -2 / (8**0.5 + 1e-4)]]
    )
    torch.testing.assert_close(pg.grpo_advantages(rewards), expected)


def test_rloo_advantages_hand_worked():
    torch.testing.assert_close(
        pg.rloo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]])), torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]])
    )


def test_equal_rewards_give_zero_advantages_never_nan():
    rewards = torch.tensor([[2.0, 2.0, 2.0], [0.0, 1.0, 5.0]])
    for advantages in (
        pg.grpo_advantages(rewards),
        pg.rloo_advantages(rewards),
        pg.grpo_advantages(rewards, scale_rewards="none"),
    ):
        assert torch.isfinite(advantages).all()
        assert advantages[0].tolist() == [0.0, 0.0, 0.0]


def test_rloo_is_a_rescaled_group_centred_advantage():
    """eq:RLOO_GRPO_EQUIV: A_RLOO = G/(G−1) · (r − group mean), on any rewards."""
    rewards = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pg.rloo_advantages(rewards), 6 / 5 * pg.grpo_advantages(rewards, scale_rewards="none"))


def test_reinforce_advantages():
    rewards = torch.tensor([[1.0, 3.0], [2.0, 6.0]])
    assert pg.reinforce_advantages(rewards, baseline="none").tolist() == [[1.0, 3.0], [2.0, 6.0]]
    assert pg.reinforce_advantages(rewards, baseline="mean").tolist() == [[-2.0, 0.0], [-1.0, 3.0]]


def brute_force_gae(rewards, values, mask, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l} over the sequence's own tokens, with V = 0 after its last one."""
    B, T = rewards.shape
    advantages = torch.zeros(B, T)
    for b in range(B):
        n = int(mask[b].sum())
        v = values[b, :n].tolist() + [0.0]
        deltas = [rewards[b, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            advantages[b, t] = sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t))
    return advantages


def test_gae_matches_a_brute_force_sum_with_padding():
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 6, generator=generator), torch.randn(3, 6, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    noisy = rewards + 100 * (1 - mask)  # whatever sits in the padding must not leak into a return
    advantages, returns = pg.gae_advantages(noisy, values + 100 * (1 - mask), mask, gamma=0.9, lam=0.8)
    expected = brute_force_gae(rewards, values, mask, 0.9, 0.8)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_gae_defaults_are_no_discount_and_lambda_0_95():
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.2, 0.4, 0.6]])
    mask = torch.ones(1, 3)
    expected = brute_force_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(pg.gae_advantages(rewards, values, mask)[0], expected)


def test_gae_with_lambda_one_and_no_discount_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    advantages, returns = pg.gae_advantages(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert returns.tolist() == [[2.0, 2.0, 2.0]]
    assert advantages.tolist() == [[1.5, 1.0, 0.5]]


# --- per-token losses -------------------------------------------------------------------------------
def test_clipped_surrogate_at_ratio_one_has_the_plain_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    advantages, mask = torch.tensor([2.0]), torch.tensor([[1.0, 1.0, 0.0]])
    losses, _ = pg.clipped_surrogate_loss(logps, logps.detach(), advantages, mask)
    (grad_ppo,) = torch.autograd.grad(losses.sum(), logps)
    (grad_pg,) = torch.autograd.grad(pg.policy_gradient_loss(logps, advantages, mask).sum(), logps)
    torch.testing.assert_close(grad_ppo, grad_pg)
    assert grad_pg.tolist() == [[-2.0, -2.0, 0.0]]


@pytest.mark.parametrize(
    "log_ratio, advantage, clipped",
    [
        (math.log(1.5), 1.0, True),  # ρ above 1+ε and A > 0: no more push up
        (math.log(1.5), -1.0, False),  # ρ above 1+ε but A < 0: the gradient still pulls it back
        (math.log(0.5), -1.0, True),  # ρ below 1−ε and A < 0: no more push down
        (math.log(0.5), 1.0, False),  # ρ below 1−ε but A > 0: still pushed up
    ],
)
def test_a_clipped_token_loses_its_gradient_only_on_the_clipped_side(log_ratio, advantage, clipped):
    old_logps = torch.tensor([[-1.0]])
    logps = (old_logps + log_ratio).requires_grad_()
    losses, metrics = pg.clipped_surrogate_loss(logps, old_logps, torch.tensor([advantage]), torch.ones(1, 1))
    (grad,) = torch.autograd.grad(losses.sum(), logps)
    assert (grad.abs().item() == 0) == clipped
    assert metrics["clip_ratio/region_mean"] == float(clipped)


def test_the_clip_metrics_count_the_tokens_whose_gradient_the_clip_removed():
    # ρ: 0.5 (A < 0: clipped below), 0.9 (inside), 1.5 (A > 0: clipped above), 1.1 (inside),
    # 1.5 with A < 0 (the clip does not act), 0.5 and 1.5 with A = 0 (nothing to clip)
    ratios = torch.tensor([[0.5, 0.9, 1.5], [1.1, 1.5, 0.5], [1.5, 1.0, 1.0]])
    advantages = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    _, metrics = pg.clipped_surrogate_loss(ratios.double().log(), torch.zeros(3, 3), advantages, mask, epsilon=0.2)
    assert metrics == pytest.approx(
        {"clip_ratio/low_mean": 1 / 7, "clip_ratio/high_mean": 1 / 7, "clip_ratio/region_mean": 2 / 7}
    )
    mask[0, 0] = 0  # padding is not counted
    _, metrics = pg.clipped_surrogate_loss(ratios.double().log(), torch.zeros(3, 3), advantages, mask, epsilon=0.2)
    assert metrics["clip_ratio/low_mean"] == 0 and metrics["clip_ratio/high_mean"] == pytest.approx(1 / 6)


def test_epsilon_high_widens_only_the_upper_clip():
    old_logps = torch.zeros(1, 1)
    logps = torch.full((1, 1), math.log(1.25), requires_grad=True)
    _, symmetric = pg.clipped_surrogate_loss(logps, old_logps, torch.tensor([1.0]), torch.ones(1, 1), epsilon=0.2)
    _, wider = pg.clipped_surrogate_loss(
        logps, old_logps, torch.tensor([1.0]), torch.ones(1, 1), epsilon=0.2, epsilon_high=0.28
    )
    assert symmetric["clip_ratio/high_mean"] == 1.0 and wider["clip_ratio/high_mean"] == 0.0


def test_value_loss_clips_a_fall_as_it_clips_a_rise():
    old_values, returns = torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, 2.0]])
    values = torch.tensor([[0.5, 0.5]])
    # V fell 0.5, clipped to a fall of 0.2 (0.8): token 0 toward R: max(2.25, 3.24)/2; token 1 away: max(2.25, 1.44)/2
    torch.testing.assert_close(
        pg.value_loss(values, old_values, returns, torch.ones(1, 2)), torch.tensor([[1.62, 1.125]])
    )
    # a wider clip range lets the fall count in full: max(2.25, 2.25)/2
    assert pg.value_loss(values, old_values, returns, torch.ones(1, 2), cliprange_value=0.6)[0, 0].item() == 1.125


def test_value_loss_is_the_larger_of_the_clipped_and_unclipped_errors():
    old_values, returns = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -1.0]])
    values = torch.tensor([[0.5, 0.5]])
    # token 0: V moved 0.5 toward R (clip 0.2 → 0.2): max(0.25, 0.64)/2; token 1: moved away: max(2.25, 1.44)/2
    torch.testing.assert_close(
        pg.value_loss(values, old_values, returns, torch.ones(1, 2)), torch.tensor([[0.32, 1.125]])
    )


# --- aggregation: the book's worked example ------------------------------------------------------
def test_aggregation_matches_the_books_worked_example():
    losses = torch.zeros(2, 10)
    losses[0, :5] = torch.tensor([1.0, 1, 1, 1, 10])
    losses[1] = torch.tensor([1.0] * 9 + [10])
    mask = torch.zeros(2, 10)
    mask[0, :5], mask[1] = 1, 1
    assert pg.aggregate_token_losses(losses, mask, "grpo").item() == pytest.approx(2.35)
    assert pg.aggregate_token_losses(losses, mask, "dapo").item() == pytest.approx(2.2)
    assert pg.aggregate_token_losses(losses, mask, "dr_grpo", max_completion_length=10).item() == pytest.approx(1.65)


def test_aggregation_is_per_sequence_by_default_and_dr_grpo_needs_the_length():
    losses, mask = torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert pg.aggregate_token_losses(losses, mask).item() == pg.aggregate_token_losses(losses, mask, "grpo").item() == 2
    with pytest.raises(ValueError, match="^loss_type 'dr_grpo' divides by B × max_completion_length: pass max_comp"):
        pg.aggregate_token_losses(losses, mask, "dr_grpo")


def test_aggregation_gradients_match_the_books_example():
    """Ratio 1, advantage 2, sequences of 4 and 7 tokens, max length 7: the gradient each token's log-prob gets."""
    mask = torch.zeros(2, 7)
    mask[0, :4], mask[1] = 1, 1
    expected = {"grpo": (0.25, 1 / 7), "dr_grpo": (1 / 7, 1 / 7), "dapo": (2 / 11, 2 / 11)}
    for loss_type, (short, long) in expected.items():
        logps = torch.zeros(2, 7, requires_grad=True)
        losses, _ = pg.clipped_surrogate_loss(logps, logps.detach(), torch.tensor([2.0, 2.0]), mask)
        loss = pg.aggregate_token_losses(losses, mask, loss_type, max_completion_length=7)
        (grad,) = torch.autograd.grad(loss, logps)
        # d(−A·ρ)/d log π = −A at ρ = 1, divided by each aggregation's normaliser
        assert (-grad[0, :4]).tolist() == pytest.approx([short] * 4)
        assert (-grad[1]).tolist() == pytest.approx([long] * 7)
        assert grad[0, 4:].abs().sum().item() == 0  # padding gets no gradient


# --- bad input --------------------------------------------------------------------------------
TOKENS = (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))  # three (B, T) tensors of one shape


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pg.rloo_advantages(torch.zeros(3, 1)), "RLOO needs num_generations >= 2"),
        (lambda: pg.grpo_advantages(torch.zeros(3, 1)), "GRPO needs num_generations >= 2"),
        (lambda: pg.grpo_advantages(torch.zeros(2, 2), scale_rewards="prompt"), "unknown scale_rewards 'prompt'"),
        (lambda: pg.reinforce_advantages(torch.zeros(2, 2), baseline="median"), "unknown baseline 'median'"),
        (lambda: pg.grpo_advantages(torch.zeros(4)), "rewards must be a \\(P, G\\) tensor.*got \\(4,\\)"),
        (
            lambda: pg.rloo_advantages(torch.tensor([[1.0, float("nan")]])),
            "^rewards hold NaN or inf: check the reward function's output$",
        ),
        (lambda: pg.aggregate_token_losses(torch.zeros(2, 3), torch.ones(2, 3), "mean"), "unknown loss_type 'mean'"),
        (lambda: pg.aggregate_token_losses(torch.zeros(2, 4), torch.ones(2, 3)), "'losses': \\(2, 4\\)"),
        (lambda: pg.aggregate_token_losses(torch.zeros(2, 3), torch.ones(2, 4)), "'mask': \\(2, 4\\)"),
        (
            lambda: pg.aggregate_token_losses(torch.zeros(2, 3), torch.ones(2, 3), "dr_grpo"),
            "pass max_completion_length",
        ),
        (
            lambda: pg.clipped_surrogate_loss(
                torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), epsilon=0
            ),
            "epsilon must be > 0",
        ),
        (
            lambda: pg.policy_gradient_loss(torch.zeros(2, 3), torch.ones(2), torch.ones(2, 4)),
            "share one \\(B, T\\) shape",
        ),
        (lambda: pg.policy_gradient_loss(torch.zeros(2, 3), torch.ones(3), torch.ones(2, 3)), "one row per completion"),
        (lambda: pg.grpo_advantages([[1.0, 0.0]]), "rewards must be a \\(P, G\\) tensor.*got list"),
        (lambda: pg.grpo_advantages(torch.zeros(2, 2), eps=0.0), "eps must be > 0, got 0"),
        (lambda: pg.gae_advantages(*TOKENS, gamma=1.5), "gamma must be <= 1, got 1.5"),
        (lambda: pg.gae_advantages(*TOKENS, gamma=-0.1), "gamma must be >= 0"),
        (lambda: pg.gae_advantages(*TOKENS, lam=1.5), "lam must be <= 1, got 1.5"),
        (lambda: pg.gae_advantages(*TOKENS, lam=-0.1), "lam must be >= 0"),
        (lambda: pg.value_loss(*TOKENS, torch.ones(2, 3), cliprange_value=0.0), "cliprange_value must be > 0, got 0"),
        (
            lambda: pg.clipped_surrogate_loss(*TOKENS[:2], torch.ones(2), TOKENS[2], epsilon=-1),
            "epsilon must be > 0, got -1: PPO's clip range, try 0.2",
        ),
        (
            lambda: pg.clipped_surrogate_loss(*TOKENS[:2], torch.ones(2), TOKENS[2], epsilon_high=0.0),
            "epsilon_high must be > 0, got 0",
        ),
    ]
    + [  # every per-token argument's shape is checked, and named
        (
            lambda f=f, i=i, a=args: f(*[torch.zeros(2, 4) if j == i else t for j, t in enumerate(a)]),
            f"'{name}': \\(2, 4\\)",
        )
        for f, names, args in (
            (pg.gae_advantages, ("rewards", "values", "mask"), TOKENS),
            (pg.value_loss, ("values", "old_values", "returns", "mask"), TOKENS + (torch.ones(2, 3),)),
        )
        for i, name in enumerate(names)
    ]
    + [
        (
            lambda i=i: pg.clipped_surrogate_loss(
                *[torch.zeros(2, 4) if j == i else t for j, t in enumerate(TOKENS[:2])],
                torch.ones(2),
                torch.zeros(2, 4) if i == 2 else TOKENS[2],
            ),
            f"'{name}': \\(2, 4\\)",
        )
        for i, name in enumerate(("logps", "old_logps", "mask"))
    ],
)
def test_bad_input_is_refused_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the trainer ------------------------------------------------------------------------------------
def count_reward(word: str):
    """A fixed reward: how often ``word`` appears in the answer (a random model rarely says it)."""
    return lambda prompts, completions: [c.split().count(word) for c in completions]


@pytest.mark.parametrize("algorithm", pg.ALGORITHMS)
def test_each_algorithm_raises_a_fixed_reward_on_a_tiny_model(tokenizer, world, algorithm):
    torch.manual_seed(0)
    model = random_model("llama", len(tokenizer))
    config = pg.PolicyGradientConfig(
        algorithm=algorithm,
        learning_rate=1e-2,
        batch_size=8,
        num_generations=4,
        num_steps=12,
        max_completion_length=8,
        beta=0.0,
        progress=False,
    )
    history = pg.train_policy_gradient(model, tokenizer, world.prompts(32), count_reward("tasty"), config)
    rewards = history.steps[:: config.num_iterations]  # one row per rollout
    first, last = (sum(step["reward"] for step in part) / 3 for part in (rewards[:3], rewards[-3:]))
    assert last > 2 * first and last > first + 0.2, history["reward"]
    expected = {
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "entropy",
        "completions/mean_length",
        "completions/clipped_ratio",
    }
    assert expected <= set(history.keys())
    assert "kl" not in history.keys()  # β = 0 and no ref_model: no reference to measure against
    if algorithm == "ppo":
        assert {"loss/value", "policy/approxkl", "policy/clipfrac"} <= set(history.keys())


def test_reused_rollouts_move_the_ratio_away_from_one(tokenizer, world):
    model = random_model("llama", len(tokenizer))
    config = pg.PolicyGradientConfig(
        algorithm="grpo",
        learning_rate=1e-2,
        batch_size=4,
        num_generations=4,
        num_iterations=3,
        num_steps=2,
        max_completion_length=6,
        progress=False,
    )
    length = lambda prompts, completions: [len(c.split()) for c in completions]  # a dense reward: every group varies
    history = pg.train_policy_gradient(model, tokenizer, world.prompts(8), length, config)
    assert len(history["loss"]) == 2 * 3  # three updates per rollout
    moved = history["policy/approxkl"]  # ½ E[(log ρ)²]
    assert moved[0] < 1e-10 and moved[3] < 1e-10  # the first update of each rollout has ρ = 1 (to rounding)
    assert min(moved[1], moved[2], moved[4], moved[5]) > 1e-6  # the updates that reuse it do not


def test_the_kl_penalty_holds_the_policy_near_its_reference(tokenizer, world):
    """Measured after training by rollout_exact_kl on fresh samples, not by the trainer's own ``kl`` metric."""
    reference = random_model("llama", len(tokenizer))
    kls = {}
    for beta in (0.0, 1.0):
        model = copy.deepcopy(reference)
        config = pg.PolicyGradientConfig(
            algorithm="rloo",
            learning_rate=3e-3,
            batch_size=8,
            num_generations=4,
            num_steps=10,
            max_completion_length=8,
            beta=beta,
            progress=False,
        )
        pg.train_policy_gradient(model, tokenizer, world.prompts(32), count_reward("tasty"), config)
        rollout = sample_rollouts(model, tokenizer, world.prompts(64, split="test"), max_new_tokens=8, seed=1)
        kls[beta] = rollout_exact_kl(model, reference, rollout).mean().item()  # nats per completion
    assert kls[1.0] < 0.5 * kls[0.0], kls


def unpadded_rows(rollout):
    """Each row of a rollout without its padding, as ``logprob_alone`` takes it."""
    return [
        {"input_ids": ids[mask.bool()].tolist(), "completion_mask": completion[mask.bool()].tolist()}
        for ids, mask, completion in zip(rollout.input_ids, rollout.attention_mask, rollout.completion_mask)
    ]


def test_the_logged_kl_is_the_summed_k1_of_the_sampled_answers(tokenizer, world):
    """Step 0's ``kl``, recomputed answer by answer with the tests' own log-prob: Σ_t log π(y_t) − log π_ref(y_t)."""
    policy, reference = random_model("llama", len(tokenizer)), random_model("llama", len(tokenizer), seed=1)
    config = small_config(num_steps=1)
    prompts = world.prompts(4)
    history = pg.train_policy_gradient(
        copy.deepcopy(policy), tokenizer, prompts, count_reward("tasty"), config, ref_model=reference
    )
    batch = [prompts[i] for i in torch.randperm(4, generator=torch_generator(config.seed)).tolist()]
    rollout = sample_rollouts(policy, tokenizer, batch, 4, 8, seed=0)  # step 0's samples: seed·100003 + 0
    rows = unpadded_rows(rollout)
    k1 = [logprob_alone(policy, row) - logprob_alone(reference, row) for row in rows]  # (B,) Σ_t k1 per answer
    assert history["kl"][0] == pytest.approx(float(np.mean(k1)), abs=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"algorithm": "trpo"}, "unknown algorithm 'trpo'"),
        ({"loss_type": "mean"}, "unknown loss_type 'mean'"),
        ({"kl_estimator": "k4"}, "unknown kl_estimator 'k4'"),
        ({"scale_rewards": "prompt"}, "unknown scale_rewards 'prompt'"),
        (
            {"algorithm": "rloo", "num_generations": 1},
            "^num_generations must be >= 2, got 1: rloo compares each answer with the others to its prompt$",
        ),
        ({"epsilon_high": 0.0}, "^epsilon_high must be > 0, got 0$"),
        ({"algorithm": "grpo", "num_generations": 1}, "num_generations must be >= 2"),
        ({"epsilon": 0.0}, "^epsilon must be > 0, got 0: PPO's clip range, try 0.2$"),
        ({"beta": -0.1}, "^beta must be >= 0, got -0.1: the KL penalty's weight; 0 switches it off$"),
        ({"temperature": 0.0}, "^temperature must be > 0, got 0: sample at 1.0 to learn from π$"),
        ({"kl_in": "advantage"}, "^unknown kl_in 'advantage': use one of 'reward', 'loss'$"),
        ({"batch_size": 3, "num_generations": 2, "num_mini_batches": 4}, "does not divide the 6 rows"),
        ({"kl_target": 0.0}, "^kl_target must be > 0, got 0: the KL in nats per completion to hold, or None for a"),
        ({"kl_target": -1.0}, "kl_target must be > 0"),
        ({"kl_target": 6.0, "beta": 0.0}, "beta must be > 0, got 0: the adaptive β starts here"),
        ({"kl_horizon": 0}, "kl_horizon must be >= 1"),
        ({"ptx_coef": -0.1}, "^ptx_coef must be >= 0, got -0.1: the pretraining term's weight γ; 0 switches it off$"),
        ({"ptx_batch_size": 0}, "ptx_batch_size must be >= 1"),
    ],
)
def test_bad_configs_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pg.PolicyGradientConfig(**kwargs)


@pytest.mark.parametrize(
    "reward_fn, message",
    [
        (lambda p, c: [1.0] * (len(c) - 1), "reward_fn returned 7 scores for 8 completions"),
        (lambda p, c: [float("nan")] + [0.0] * (len(c) - 1), "reward_fn returned nan for prompt '.*'"),
    ],
)
def test_bad_rewards_are_refused_naming_the_prompt(tokenizer, world, reward_fn, message):
    model = random_model("llama", len(tokenizer))
    config = pg.PolicyGradientConfig(
        batch_size=2, num_generations=4, num_steps=1, max_completion_length=4, progress=False
    )
    with pytest.raises(ValueError, match=message):
        pg.train_policy_gradient(model, tokenizer, world.prompts(2), reward_fn, config)


class ColumnValues(torch.nn.Module):
    """A stub value model whose value at each column of the input is that column's number."""

    def forward(self, input_ids, attention_mask, position_ids):
        columns = torch.arange(input_ids.shape[1], dtype=torch.float).expand(input_ids.shape)  # (B, T)
        return SimpleNamespace(logits=columns.unsqueeze(-1))  # (B, T, 1)


def test_token_values_reads_each_value_before_its_token(tokenizer, world):
    """V of completion token t is read at column P + t − 1, where the policy predicts it, not at the token itself."""
    rollout = sample_rollouts(random_model("llama", len(tokenizer)), tokenizer, world.prompts(3), 2, 6, seed=0)
    P, N = rollout.prompt_width, rollout.logps.shape[1]
    expected = (P - 1 + torch.arange(N, dtype=torch.float)).expand(len(rollout), N) * rollout.mask  # (B, N)
    torch.testing.assert_close(pg.token_values(ColumnValues(), rollout), expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # RoPE, and GPT-2's learned absolute positions
def test_token_values_of_a_row_do_not_depend_on_the_rows_beside_it(tokenizer, world, arch):
    """A critic sees the same values in a padded batch as alone: padding is masked, positions count real tokens."""
    policy = random_model(arch, len(tokenizer))
    critic = pg.value_model_from(policy)
    rollout = sample_rollouts(
        policy, tokenizer, ["add 3 and 5", "review the soup and describe the big cat"], 2, 6, seed=0
    )
    together = pg.token_values(critic, rollout)  # (B, N): left-padded prompts, right-padded completions
    for row in range(len(rollout)):
        ids = rollout.input_ids[row][rollout.attention_mask[row].bool()].unsqueeze(0)  # (1, T_row), no padding
        with torch.no_grad():
            alone = critic(input_ids=ids).logits[0, :, 0]  # (T_row,)
        n = int(rollout.mask[row].sum())
        prompt_length = ids.shape[1] - n
        torch.testing.assert_close(
            together[row, :n], alone[prompt_length - 1 : prompt_length - 1 + n], atol=1e-5, rtol=0
        )
        assert together[row, n:].abs().sum() == 0


def test_a_critic_starts_from_the_policys_backbone_with_one_value_per_token(tokenizer):
    policy = random_model("llama", len(tokenizer))
    critic = pg.value_model_from(policy)
    assert critic.config.num_labels == 1 and not critic.training
    for (name, theirs), ours in zip(policy.base_model.state_dict().items(), critic.base_model.state_dict().values()):
        assert torch.equal(theirs, ours), name
    critic.base_model.embed_tokens.weight.data.zero_()  # a copy: training the critic leaves the policy alone
    assert policy.base_model.embed_tokens.weight.abs().sum() > 0


def test_ppo_advantages_are_whitened_gae_hand_worked():
    """Two answers, scores 1 and 3, V = 0, γ = λ = 1: GAE is the reward-to-go, then whitened over the 3 real tokens."""
    config = pg.PolicyGradientConfig(algorithm="ppo", beta=0.0, gamma=1.0, lam=1.0, num_generations=2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    advantages, returns = pg.compute_advantages(
        torch.tensor([1.0, 3.0]), torch.zeros(2, 2), mask, config, values=torch.zeros(2, 2)
    )
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0], [3.0, 0.0]]))  # reward-to-go: the value targets
    # mean 5/3, std √(8/9) over the tokens 1, 1, 3: (1 − 5/3)/√(8/9) = −1/√2, (3 − 5/3)/√(8/9) = √2
    root2 = math.sqrt(2)
    torch.testing.assert_close(advantages, torch.tensor([[-1 / root2, -1 / root2], [root2, 0.0]]))


def test_ppo_advantages_take_the_kl_off_every_token_and_subtract_the_values():
    config = pg.PolicyGradientConfig(algorithm="ppo", beta=0.5, gamma=1.0, lam=1.0, num_generations=1)
    mask, kl, values = torch.ones(1, 2), torch.tensor([[0.2, 0.4]]), torch.tensor([[0.5, 0.25]])
    _, returns = pg.compute_advantages(torch.tensor([1.0]), kl, mask, config, values)
    # per-token rewards −0.1 and −0.2 + 1; reward-to-go 0.7 and 0.8 are the returns (advantages + values)
    torch.testing.assert_close(returns, torch.tensor([[0.7, 0.8]]))


def test_minibatches_split_the_rows_anew_on_every_pass():
    generator = torch_generator(0)
    passes = [pg.minibatches(16, 4, generator) for _ in range(3)]
    for minibatches in passes:
        assert [len(rows) for rows in minibatches] == [4] * 4
        assert sorted(torch.cat(minibatches).tolist()) == list(range(16))  # every row, once a pass
    assert len({tuple(torch.cat(m).tolist()) for m in passes}) == 3  # a new order each pass
    again = torch_generator(0)
    assert all(torch.equal(a, b) for a, b in zip(passes[0], pg.minibatches(16, 4, again)))  # seeded
    assert [rows.tolist() for rows in pg.minibatches(6, 1, generator)] == [list(range(6))]


def test_the_trainer_updates_on_every_row_of_each_minibatch(tokenizer, world, monkeypatch):
    seen = []
    rl_loss = pg.rl_loss

    def spy(logps, experience, config, values=None, ptx_nll=None):
        seen.append(list(zip(experience.rollout.prompts, experience.rollout.completions)))
        assert logps.shape == experience.mask.shape == experience.old_logps.shape
        return rl_loss(logps, experience, config, values, ptx_nll)

    monkeypatch.setattr(pg, "rl_loss", spy)
    config = small_config(algorithm="ppo", num_iterations=2, num_mini_batches=4, num_steps=2)
    history = pg.train_policy_gradient(
        random_model("llama", len(tokenizer)), tokenizer, world.prompts(8), count_reward("tasty"), config
    )
    assert len(history["loss"]) == len(seen) == 2 * 2 * 4  # rollouts × passes × minibatches
    assert all(len(rows) == 4 for rows in seen)
    for step in range(2):
        rollout_passes = [sum(seen[8 * step + 4 * i : 8 * step + 4 * (i + 1)], []) for i in range(2)]
        assert sorted(rollout_passes[0]) == sorted(rollout_passes[1])  # both passes cover the rollout's 16 rows
        assert len(rollout_passes[0]) == 16 and rollout_passes[0] != rollout_passes[1]  # in a new order


def test_an_experience_indexes_every_field_by_row():
    experience = pg.Experience(
        torch.ones(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.tensor([1.0, 2.0, 3.0]), returns=torch.eye(3, 2)
    )
    part = experience[torch.tensor([2, 0])]
    assert part.advantages.tolist() == [3.0, 1.0] and part.returns.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert part.old_values is None and part.rollout is None and part.mask.shape == (2, 2)


def test_at_another_temperature_the_ratio_compares_log_probs_at_temperature_one(tokenizer, world):
    """The loss scores at temperature 1, so π_old is re-scored at 1 and the first update's ratio is exactly 1."""
    policy = random_model("llama", len(tokenizer))
    config = small_config(algorithm="grpo", temperature=2.0, num_iterations=2, beta=0.0)
    rollout = sample_rollouts(policy, tokenizer, world.prompts(2), 4, 8, temperature=2.0, seed=0)
    old_logps, ref_logps, _ = pg.score_rollout(policy, None, None, rollout, config)
    rows = unpadded_rows(rollout)
    expected = torch.tensor([logprob_alone(policy, row) for row in rows])  # (B,) log π(y|x) at temperature 1
    torch.testing.assert_close(old_logps.sum(dim=1), expected, atol=1e-4, rtol=0)
    assert (old_logps.sum(dim=1) - rollout.logps.sum(dim=1)).abs().max() > 0.1  # not the sampling log-probs
    assert ref_logps is old_logps  # no reference: π_old stands in, and the KL is 0
    length = lambda prompts, completions: [len(c.split()) for c in completions]  # dense: every group varies
    history = pg.train_policy_gradient(policy, tokenizer, world.prompts(4), length, config)
    approx_kl = history["policy/approxkl"]
    assert approx_kl[0] < 1e-10 and approx_kl[2] < 1e-10 and min(approx_kl[1], approx_kl[3]) > 1e-8


def test_the_entropy_metric_is_the_sampling_distributions_entropy(tokenizer, world):
    policy = random_model("llama", len(tokenizer))
    rollout = sample_rollouts(policy, tokenizer, world.prompts(2), 2, 5, temperature=1.5, seed=0)
    with torch.no_grad():
        logits = policy(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            position_ids=(rollout.attention_mask.cumsum(1) - 1).clamp(min=0),
        ).logits  # (B, T, V)
    P, N = rollout.prompt_width, rollout.logps.shape[1]
    probs = (logits[:, P - 1 : P - 1 + N] / 1.5).softmax(-1)  # (B, N, V) the distributions tokens were drawn from
    entropies = -(probs * probs.log()).sum(-1)  # (B, N), by hand
    expected = (entropies * rollout.mask).sum() / rollout.mask.sum()
    config = small_config(num_generations=2, temperature=1.5)
    metrics = pg.rollout_metrics(rollout, torch.zeros(4), None, config)
    assert metrics["entropy"] == pytest.approx(expected.item(), abs=1e-4)
    assert "kl" not in metrics


def test_num_epochs_is_refused_with_what_to_set_instead():
    with pytest.raises(ValueError, match="num_epochs=3 has no meaning for an RL run.*num_steps.*num_iterations"):
        pg.PolicyGradientConfig(num_epochs=3)


def test_shaped_rewards_put_the_score_on_the_last_token():
    kl = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    shaped = pg.shaped_rewards(torch.tensor([2.0, 3.0]), kl, mask, beta=0.1)
    torch.testing.assert_close(shaped, torch.tensor([[-0.05, -0.05, 1.95], [2.9, 0.0, 0.0]]))


# --- chapter 4's bandit, with the same functions -----------------------------------------------------
BANDIT_REF = torch.tensor([0.45, 0.23, 0.18, 0.09, 0.05])
BANDIT_REWARDS = torch.tensor([1.0, 1.0, 3.0, 1.0, 0.0])


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return (p.double() - q.double()).abs().sum().item() / 2


@pytest.mark.parametrize("algorithm", pg.ALGORITHMS)
@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_every_algorithm_lands_on_the_closed_form_optimum(algorithm, beta):
    from rlhf_edu.objective import kl_regularized_optimum

    run = pg.train_tabular_policy_gradient(BANDIT_REF, BANDIT_REWARDS, beta, algorithm)
    optimum = kl_regularized_optimum(BANDIT_REF, BANDIT_REWARDS, beta)
    assert tv(BANDIT_REF, optimum) > 0.2  # far from the start, so landing there is a real result
    assert tv(run.probs, optimum) < 0.02, run.probs
    assert run.history["tv_to_optimum"][-1] == pytest.approx(tv(run.probs, optimum), abs=1e-6)


def test_grpo_with_k3_in_the_loss_lands_on_the_other_kls_optimum():
    from rlhf_edu.objective import kl_regularized_optimum
    from rlhf_edu.regularization import forward_kl_regularized_optimum

    beta = 0.3
    run = pg.train_tabular_policy_gradient(BANDIT_REF, BANDIT_REWARDS, beta, "grpo", kl_estimator="k3")
    forward = forward_kl_regularized_optimum(BANDIT_REF, BANDIT_REWARDS, beta)
    reverse = kl_regularized_optimum(BANDIT_REF, BANDIT_REWARDS, beta)
    assert tv(forward, reverse) > 0.05
    assert tv(run.probs, forward) < 0.02 < 0.05 < tv(run.probs, reverse)


def test_rloos_gradient_estimate_is_unbiased_and_a_mean_baseline_cuts_the_variance():
    estimates = {
        name: pg.tabular_gradient_estimates(
            BANDIT_REF, BANDIT_REWARDS, 0.5, algorithm, num_trials=400, num_generations=8
        )
        for name, algorithm in (("rloo", "rloo"), ("reinforce", "reinforce"))
    }
    rloo, exact = estimates["rloo"]
    error = (rloo.mean(0) - exact).norm()
    standard_error = rloo.std(0).norm() / math.sqrt(len(rloo))
    assert error < 3 * standard_error, (rloo.mean(0), exact)
    reinforce, _ = estimates["reinforce"]  # the batch mean includes the sample itself: shrunk by (G − 1)/G
    torch.testing.assert_close(reinforce.mean(0), exact * 7 / 8, atol=float(4 * standard_error), rtol=0)


def test_tabular_bad_input_names_the_fix():
    with pytest.raises(
        ValueError, match="^ref_probs must be > 0 everywhere: θ starts at log π_ref; drop the impossible"
    ):
        pg.train_tabular_policy_gradient(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0]), 0.5, "rloo")
    with pytest.raises(ValueError, match="unknown algorithm 'dpo'"):
        pg.train_tabular_policy_gradient(BANDIT_REF, BANDIT_REWARDS, 0.5, "dpo")
    with pytest.raises(ValueError, match="beta must be > 0"):
        pg.train_tabular_policy_gradient(BANDIT_REF, BANDIT_REWARDS, 0.0, "rloo")
    with pytest.raises(
        ValueError, match="^train_tabular_policy_gradient takes one prompt.*got ref_probs \\(2, 5\\), rewards"
    ):
        pg.train_tabular_policy_gradient(BANDIT_REF.expand(2, -1), BANDIT_REWARDS, 0.5, "rloo")


def test_a_bandit_run_repeats_from_its_seed_and_records_every_step():
    runs = [pg.train_tabular_policy_gradient(BANDIT_REF, BANDIT_REWARDS, 0.5, num_steps=5) for _ in range(2)]
    assert torch.equal(runs[0].probs, runs[1].probs)  # GRPO by default, seeded
    assert sorted(runs[0].history) == ["expected_reward", "kl", "objective", "tv_to_optimum"]
    assert all(len(values) == 6 for values in runs[0].history.values())  # before each step, and after the last
    assert abs(runs[0].history["kl"][0]) < 1e-6  # it starts at π_ref
    torch.testing.assert_close(runs[0].optimum, pg.kl_regularized_optimum(BANDIT_REF, BANDIT_REWARDS, 0.5))
    other = pg.train_tabular_policy_gradient(BANDIT_REF, BANDIT_REWARDS, 0.5, "grpo", num_steps=5, seed=1)
    assert not torch.equal(other.probs, runs[0].probs)


def test_a_bandit_run_says_which_algorithm_its_bar_counts(monkeypatch):
    seen = []
    real_trainer = pg.Trainer
    monkeypatch.setattr(pg, "Trainer", lambda *args, **kwargs: seen.append(kwargs) or real_trainer(*args, **kwargs))
    pg.train_tabular_policy_gradient(BANDIT_REF, BANDIT_REWARDS, 0.5, "rloo", num_steps=1)
    assert seen == [{"desc": "bandit (rloo)"}]


def test_the_bandits_ppo_trains_its_value_and_the_others_have_none():
    for algorithm in pg.ALGORITHMS:
        policy = pg.TabularPolicy(BANDIT_REF)
        config = pg.tabular_config(algorithm, 0.5)
        actions, experience = pg.tabular_rollout(policy, BANDIT_REF, BANDIT_REWARDS, config, torch_generator(0))
        assert (experience.returns is not None) == (experience.old_values is not None) == (algorithm == "ppo")
        pg.tabular_loss(policy, actions, experience, config)[0].backward()
        assert (policy.value.grad is not None and policy.value.grad != 0) == (algorithm == "ppo"), algorithm


# --- the β sweep and the pictures ------------------------------------------------------------------
def test_a_beta_sweep_trains_copies_and_round_trips_through_json(tokenizer, world, tmp_path):
    policy = random_model("llama", len(tokenizer))
    before = [p.detach().clone() for p in policy.parameters()]
    config = pg.PolicyGradientConfig(
        algorithm="rloo",
        learning_rate=1e-2,
        batch_size=2,
        num_generations=2,
        num_steps=2,
        max_completion_length=4,
        progress=False,
        eval_steps=1,
    )
    eval_fn = lambda model: {"gold_reward": 0.5}
    runs = pg.beta_sweep(policy, tokenizer, world.prompts(4), count_reward("tasty"), [0.1, 1.0], config, eval_fn)
    assert all(torch.equal(p, b) for p, b in zip(policy.parameters(), before))  # the reference stays as it was
    assert sorted(runs) == [0.1, 1.0] and len(runs[0.1]["loss"]) == 2 and runs[1.0]["gold_reward"] == [0.5, 0.5]
    assert runs[0.1]["beta"] == [0.1, 0.1] and runs[1.0]["beta"] == [1.0, 1.0]
    loaded, settings = pg.load_sweep(pg.save_sweep(runs, tmp_path / "sweep.json", algorithm="rloo"))
    assert settings == {"algorithm": "rloo"}
    assert {b: h.steps for b, h in loaded.items()} == {b: h.steps for b, h in runs.items()}


def test_the_shipped_sweep_holds_every_beta_with_its_evaluations():
    from rlhf_edu.experiments.recipes import SWEEP_BETAS, SWEEP_CONFIG, SWEEP_PATH

    runs, settings = pg.load_sweep(SWEEP_PATH)
    assert tuple(sorted(runs)) == SWEEP_BETAS
    assert {k: settings[k] for k in SWEEP_CONFIG} == SWEEP_CONFIG
    for history in runs.values():
        assert len(history["loss"]) == SWEEP_CONFIG["num_steps"]
        assert len(history["gold_reward"]) == SWEEP_CONFIG["num_steps"] // SWEEP_CONFIG["eval_steps"]
        assert {"eval/reward", "eval/kl", "gold/correctness"} <= set(history.keys())


def test_the_clip_picture_is_flat_exactly_where_the_clip_removes_the_gradient():
    figure = pg.plot_clipped_objective(epsilon=0.2)
    positive, negative = figure.axes[0].lines[0], figure.axes[0].lines[2]  # A = +1 and A = −1 (solid lines)
    ratio, up = positive.get_xdata(), positive.get_ydata()
    down = negative.get_ydata()
    assert np.allclose(up[ratio > 1.2], 1.2) and np.allclose(up[ratio < 1.2], ratio[ratio < 1.2], atol=1e-6)
    assert np.allclose(down[ratio < 0.8], -0.8) and np.allclose(down[ratio > 0.8], -ratio[ratio > 0.8], atol=1e-6)


def test_a_sweep_picture_has_one_line_per_beta_in_each_panel():
    from rlhf_edu.core.training import History

    runs = {b: History([{"eval/reward": b, "gold_reward": 1.0, "eval/kl": 1 / b}] * 3) for b in (0.1, 1.0)}
    figure = pg.plot_sweep(runs, highlight=0.1)
    assert [len(ax.lines) for ax in figure.axes] == [2, 2, 2]
    assert figure.axes[0].lines[0].get_linewidth() > figure.axes[0].lines[1].get_linewidth()


def test_reinforce_without_a_baseline_uses_the_reward_itself():
    config = pg.PolicyGradientConfig(algorithm="reinforce", baseline="none", beta=0.0, num_generations=2)
    advantages, returns = pg.compute_advantages(torch.tensor([1.0, 3.0]), torch.zeros(2, 1), torch.ones(2, 1), config)
    assert advantages.tolist() == [1.0, 3.0] and returns is None
    with pytest.raises(ValueError, match="unknown baseline 'median'"):
        pg.PolicyGradientConfig(baseline="median")


# --- chapter 8's regularizers in the trainer: an adaptive β and the pretraining term ---------------------
class Untouchable(list):
    """A corpus that fails the moment anything reads it."""

    def __iter__(self):
        raise AssertionError("the corpus was read")

    __getitem__ = __len__ = __iter__


def small_config(**kwargs):
    return pg.PolicyGradientConfig(
        **{
            "algorithm": "rloo",
            "learning_rate": 1e-2,
            "batch_size": 4,
            "num_generations": 4,
            "num_steps": 4,
            "max_completion_length": 8,
            "beta": 0.1,
            "progress": False,
            **kwargs,
        }
    )


def test_a_fixed_beta_run_is_unchanged_by_the_new_options_and_logs_its_beta(tokenizer, world):
    runs = []
    for kwargs, ptx_texts in (({}, None), ({"kl_target": None, "ptx_coef": 0.0}, Untouchable(["the cat is small ."]))):
        model = random_model("llama", len(tokenizer))
        runs.append(
            pg.train_policy_gradient(
                model,
                tokenizer,
                world.prompts(16),
                count_reward("tasty"),
                small_config(algorithm="grpo", num_iterations=2, **kwargs),
                ptx_texts=ptx_texts,
            )
        )
    assert runs[0].steps == runs[1].steps  # same numbers, and the corpus was never read at ptx_coef = 0
    assert runs[0]["beta"] == [0.1] * 8 and "loss/ptx" not in runs[0].keys()


def test_an_adaptive_beta_moves_by_ziegler_et_als_rule_toward_its_target(tokenizer, world):
    runs = {}
    for target in (None, 1e-4, 1e3):  # fixed; a target far below the KL; far above it
        model = random_model("llama", len(tokenizer))
        config = small_config(kl_target=target, kl_horizon=16)  # 16 rows a step: β moves up to 20% a step
        runs[target] = pg.train_policy_gradient(model, tokenizer, world.prompts(16), count_reward("tasty"), config)
    assert runs[1e-4]["loss"][0] == runs[None]["loss"][0]  # step 0 runs at the starting β, as a fixed run would
    for target in (1e-4, 1e3):
        betas, kls = runs[target]["beta"], runs[target]["kl"]
        for t in range(len(betas) - 1):  # each step's β follows from the last step's β and its measured KL
            error = min(max(kls[t] / target - 1, -0.2), 0.2)
            assert betas[t + 1] == pytest.approx(betas[t] * (1 + error * 16 / 16), rel=1e-12)
            assert (betas[t + 1] > betas[t]) == (kls[t] > target)  # up while the KL overshoots, down below
    assert runs[1e3]["beta"] == pytest.approx([0.1 * 0.8**t for t in range(4)])  # KL ≪ target: the clip at −0.2
    assert runs[1e-4]["beta"][-1] > runs[1e3]["beta"][-1]
    assert runs[None]["beta"] == [0.1] * 4


def scored_experience(policy, ref_model, tokenizer, prompts, config, value_model=None):
    """One rollout of ``prompts``, scored and with its advantages, as the trainer's loop builds it."""
    rollout = sample_rollouts(policy, tokenizer, prompts, config.num_generations, config.max_completion_length, seed=0)
    rewards = torch.tensor([float(c.split().count("tasty")) + 0.1 * len(c.split()) for c in rollout.completions])
    old_logps, ref_logps, values = pg.score_rollout(policy, ref_model, value_model, rollout, config)
    kl = pg.kl_estimate(old_logps, ref_logps, "k1") * rollout.mask
    advantages, returns = pg.compute_advantages(rewards, kl, rollout.mask, config, values)
    return pg.Experience(rollout.mask, old_logps, ref_logps, advantages, returns, values, rollout)


def test_the_pretraining_term_adds_gamma_times_the_corpus_gradient(tokenizer, world):
    policy = random_model("llama", len(tokenizer))
    config = small_config(ptx_coef=0.5, ptx_batch_size=4)
    experience = scored_experience(policy, copy.deepcopy(policy), tokenizer, world.prompts(4), config)
    ptx_batch = next(pg.ptx_batches(policy, tokenizer, world.pretraining_corpus(8), config))
    assert ptx_batch["input_ids"].shape[0] == 4

    def gradient(loss):
        policy.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in policy.parameters()])

    plain_loss, plain_metrics = pg.rl_loss(pg.rollout_logps(policy, experience.rollout), experience, config)
    plain = gradient(plain_loss)
    nll, _ = pg.language_modeling_loss(policy, ptx_batch)
    with_ptx_loss, metrics = pg.rl_loss(pg.rollout_logps(policy, experience.rollout), experience, config, ptx_nll=nll)
    with_ptx = gradient(with_ptx_loss)
    nll, _ = pg.language_modeling_loss(policy, ptx_batch)
    assert with_ptx_loss.item() == pytest.approx(plain_loss.item() + 0.5 * nll.item(), abs=1e-6)
    assert metrics["loss/ptx"] == pytest.approx(nll.item()) and "loss/ptx" not in plain_metrics
    torch.testing.assert_close(with_ptx - plain, 0.5 * gradient(nll), atol=1e-6, rtol=1e-5)
    assert (with_ptx - plain).abs().max() > 1e-3  # the term really moves the gradient


def test_a_ptx_run_logs_its_term_each_update_and_lowers_the_corpus_nll(tokenizer, world):
    corpus = world.pretraining_corpus(64)
    runs = {}
    for ptx_coef in (0.0, 4.0):
        model = random_model("llama", len(tokenizer))
        config = small_config(ptx_coef=ptx_coef, ptx_batch_size=16, num_steps=6, beta=0.0)
        runs[ptx_coef] = pg.train_policy_gradient(
            model, tokenizer, world.prompts(16), count_reward("tasty"), config, ptx_texts=corpus
        )
    assert len(runs[4.0]["loss/ptx"]) == len(runs[4.0]["loss"]) == 6
    assert runs[4.0]["loss/ptx"][-1] < runs[4.0]["loss/ptx"][0] - 0.1  # the policy learns the corpus's language
    assert runs[4.0]["loss"][0] - runs[0.0]["loss"][0] == pytest.approx(4.0 * runs[4.0]["loss/ptx"][0], abs=1e-5)


def test_a_ptx_coef_without_a_corpus_is_refused(tokenizer, world):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(ValueError, match="ptx_coef=0.5 weighs a pretraining term, but no ptx_texts were passed"):
        pg.train_policy_gradient(model, tokenizer, world.prompts(4), count_reward("tasty"), small_config(ptx_coef=0.5))
    with pytest.raises(TypeError, match="ptx_texts must be a list of texts"):
        pg.train_policy_gradient(
            model,
            tokenizer,
            world.prompts(4),
            count_reward("tasty"),
            small_config(ptx_coef=0.5),
            ptx_texts="the cat is small .",
        )


def test_the_bandit_refuses_an_adaptive_beta_and_a_corpus():
    for overrides in ({"kl_target": 1.0}, {"ptx_coef": 1.0}):
        with pytest.raises(ValueError, match="^a bandit run keeps β fixed, so its optimum is π\\*, and has no text to"):
            pg.train_tabular_policy_gradient([0.5, 0.5], [0.0, 1.0], 0.5, "rloo", **overrides)


def test_each_algorithm_takes_its_own_advantage_and_its_own_per_token_loss():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 3.0, 5.0, 5.0])  # two prompts, four answers each
    kl, mask = torch.zeros(8, 2), torch.ones(8, 2)
    own = {
        "reinforce": pg.reinforce_advantages(rewards.view(2, 4)),
        "rloo": pg.rloo_advantages(rewards.view(2, 4)),
        "grpo": pg.grpo_advantages(rewards.view(2, 4)),
    }
    logps = torch.tensor([[-1.0, -2.0]] * 8)
    old_logps = logps + 0.5  # ρ = e^−0.5: the clip acts where A < 0
    for algorithm, expected in own.items():
        config = pg.PolicyGradientConfig(algorithm=algorithm, beta=0.0)
        advantages, returns = pg.compute_advantages(rewards, kl, mask, config)
        torch.testing.assert_close(advantages, expected.flatten())
        experience = pg.Experience(mask, old_logps, logps, advantages)
        loss, metrics = pg.rl_loss(logps, experience, config)
        if algorithm == "grpo":
            per_token, _ = pg.clipped_surrogate_loss(logps, old_logps, advantages, mask)
        else:
            per_token = pg.policy_gradient_loss(logps, advantages, mask)
        assert loss.item() == pytest.approx(pg.aggregate_token_losses(per_token, mask).item()), algorithm
        assert ("policy/approxkl" in metrics) == (algorithm == "grpo")


def test_rl_loss_passes_each_setting_to_its_piece():
    """Clip-higher, the approximate KL, Dr. GRPO's length, and PPO's value clip and token mean, each by hand."""
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    logps, old_logps = torch.full((2, 3), -1.0), torch.full((2, 3), -1.4)  # ρ = e^0.4 ≈ 1.49: above 1 + 0.2
    experience = pg.Experience(mask, old_logps, old_logps, torch.tensor([1.0, 1.0]))
    config = pg.PolicyGradientConfig(beta=0.0, epsilon_high=0.6, loss_type="dr_grpo", max_completion_length=6)
    loss, metrics = pg.rl_loss(logps, experience, config)
    # clip-higher leaves ρ = e^0.4 unclipped: −ρA on 4 tokens, over B·L = 2·6
    assert loss.item() == pytest.approx(-4 * math.exp(0.4) / 12, rel=1e-5)
    assert metrics["policy/approxkl"] == pytest.approx(0.5 * 0.4**2, rel=1e-5)  # ½·E[(log ρ)²]
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])  # V moved 0.5 and 1 from V_old = 0, toward R = 1
    ppo = pg.Experience(mask, old_logps, old_logps, torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3))
    # ½·max((V − R)², (clip(V) − R)²) per token: at c = 0.2 both rows' V clip to 0.2, so 0.32 on every token; at
    # c = 0.6 the first row's errors are 0.125 each and the second's 0.08, and the mean is over the 4 real tokens
    for cliprange_value, expected in ((0.2, 0.32), (0.6, (3 * 0.125 + 0.08) / 4)):
        config = pg.PolicyGradientConfig(algorithm="ppo", beta=0.0, cliprange_value=cliprange_value, vf_coef=1.0)
        _, metrics = pg.rl_loss(logps, ppo, config, values=values)
        assert metrics["loss/value"] == pytest.approx(expected, rel=1e-5)


def test_kl_in_moves_the_penalty_between_reward_and_loss():
    """kl_in="loss" leaves the scores alone and adds β·k per token; kl_in="reward" takes β·Σk1 off the scores."""
    rewards, kl = torch.tensor([1.0, 2.0]), torch.tensor([[0.5, 0.25], [1.0, 0.0]])  # (B,), (B, T)
    mask = torch.ones(2, 2)
    for algorithm in ("rloo", "grpo"):
        in_reward = pg.PolicyGradientConfig(
            algorithm=algorithm, beta=0.2, num_generations=2, kl_in="reward", scale_rewards="none"
        )
        in_loss = dataclasses.replace(in_reward, kl_in="loss")
        # the scores are 1 − 0.2·0.75 = 0.85 and 2 − 0.2·1 = 1.8: centred, ∓0.475 (GRPO), ∓0.95 (RLOO's r − other)
        expected = torch.tensor([-0.475, 0.475]) * (2 if algorithm == "rloo" else 1)
        torch.testing.assert_close(pg.compute_advantages(rewards, kl, mask, in_reward)[0], expected)
        expected = torch.tensor([-0.5, 0.5]) * (2 if algorithm == "rloo" else 1)  # the rewards alone
        torch.testing.assert_close(pg.compute_advantages(rewards, kl, mask, in_loss)[0], expected)
        logps, ref_logps = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
        experience = pg.Experience(torch.ones(1, 2), logps, ref_logps, torch.zeros(1))
        plain, _ = pg.rl_loss(logps, experience, in_reward)
        penalised, _ = pg.rl_loss(logps, experience, in_loss)
        k3 = (ref_logps - logps).exp() - 1 - (ref_logps - logps)  # (1, 2) by hand
        assert torch.isclose(penalised - plain, 0.2 * k3.mean()), algorithm
    assert pg.PolicyGradientConfig(algorithm="grpo").kl_in == "loss"
    assert pg.PolicyGradientConfig(algorithm="rloo").kl_in == pg.PolicyGradientConfig(algorithm="ppo").kl_in == "reward"
    with pytest.raises(ValueError, match="kl_in"):
        pg.PolicyGradientConfig(kl_in="advantage")


# --- two policies on the same prompts, compared prompt by prompt -------------------------------------------
def test_pass_at_k_per_prompt_keeps_what_pass_at_k_curve_averages(tokenizer, world):
    from rlhf_edu.core.evaluation import pass_at_k_curve

    model = random_model("llama", len(tokenizer))
    prompts = ["add 3 and 5", "add 1 and 1", "add 2 and 4"]

    def first_of_four(prompts, completions):
        return [float(i % 4 == 0) for i in range(len(completions))]  # 4 of each prompt's 16 samples are "right"

    per_prompt = pg.pass_at_k_per_prompt(model, tokenizer, prompts, first_of_four, ks=(1, 4, 16), max_new_tokens=3)
    curve = pass_at_k_curve(model, tokenizer, prompts, first_of_four, ks=(1, 4, 16), max_new_tokens=3)
    assert {k: v.shape for k, v in per_prompt.items()} == {1: (3,), 4: (3,), 16: (3,)}
    assert {k: pytest.approx(v.mean()) for k, v in per_prompt.items()} == curve
    assert per_prompt[1].tolist() == pytest.approx([0.25] * 3) and per_prompt[4][0] == pytest.approx(1 - 495 / 1820)


def test_paired_difference_is_taken_prompt_by_prompt_within_a_family():
    from rlhf_edu.core.evaluation import PolicyEvaluation

    prompts = ["add 3 and 5", "describe the cat", "add 1 and 1", "describe the dog"]
    first = PolicyEvaluation(prompts, ["x"] * 4, [2.0, 1.0, 4.0, 1.0], {"correctness": [1.0, 1.0, 1.0, 0.5]}, 0.0)
    second = PolicyEvaluation(prompts, ["y"] * 4, [1.0, 1.0, 1.0, 0.0], {"correctness": [0.0, 0.5, 1.0, 0.0]}, 0.0)
    assert pg.paired_difference(first, second) == pytest.approx((1.25, np.std([1, 0, 3, 1], ddof=1) / 2))
    assert pg.paired_difference(first, second, "correctness", "describe") == pytest.approx((0.5, 0.0))
    assert pg.paired_difference(first, second, "correctness", "arithmetic")[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="^a paired difference compares prompt by prompt: evaluate both policies on"):
        pg.paired_difference(first, PolicyEvaluation(prompts[::-1], ["y"] * 4, [0.0] * 4, {}, 0.0))
    with pytest.raises(ValueError, match="unknown family 'poetry'"):
        pg.paired_difference(first, second, "correctness", "poetry")


def test_the_progress_bar_says_that_it_counts_updates(tokenizer, world, monkeypatch):
    seen = {}
    real_trainer = pg.Trainer

    def spy(modules, config, total_steps, desc="training"):
        seen.update(total=total_steps, desc=desc)
        return real_trainer(modules, config, total_steps, desc=desc)

    monkeypatch.setattr(pg, "Trainer", spy)
    config = pg.PolicyGradientConfig(
        algorithm="ppo",
        batch_size=2,
        num_generations=2,
        num_steps=2,
        num_mini_batches=2,
        max_completion_length=3,
        progress=False,
    )
    pg.train_policy_gradient(
        random_model("llama", len(tokenizer)), tokenizer, world.prompts(4), lambda p, c: [1.0] * len(c), config
    )
    assert seen == {"total": 4, "desc": "RL (ppo), updates (2 a step)"}
    pg.train_policy_gradient(
        random_model("llama", len(tokenizer)),
        tokenizer,
        world.prompts(4),
        lambda p, c: [1.0] * len(c),
        dataclasses.replace(config, num_mini_batches=1),
    )
    assert seen == {"total": 2, "desc": "RL (ppo)"}  # one update a step: nothing to say


# --- the loop's glue, each piece seen -----------------------------------------------------------------------
def test_beta_sweep_measures_every_run_against_the_policy_and_passes_the_corpus(tokenizer, world):
    policy = random_model("llama", len(tokenizer))
    config = small_config(num_steps=1, ptx_coef=0.5, ptx_batch_size=2)
    runs = pg.beta_sweep(
        policy, tokenizer, world.prompts(4), count_reward("tasty"), [0.0], config, ptx_texts=world.pretraining_corpus(4)
    )
    assert "kl" in runs[0.0].keys()  # at β = 0 too: the policy is every run's reference
    assert "loss/ptx" in runs[0.0].keys()


def test_the_loop_samples_with_the_configs_temperature_and_a_seed_per_step(tokenizer, world, monkeypatch):
    calls = []
    real = pg.sample_rollouts

    def spy(model, tokenizer, prompts, num_generations, max_new_tokens, temperature, seed):
        calls.append((num_generations, max_new_tokens, temperature, seed))
        return real(model, tokenizer, prompts, num_generations, max_new_tokens, temperature, seed=seed)

    monkeypatch.setattr(pg, "sample_rollouts", spy)
    config = small_config(num_steps=2, temperature=0.7, max_completion_length=5, seed=3)
    pg.train_policy_gradient(
        random_model("llama", len(tokenizer)), tokenizer, world.prompts(8), count_reward("x"), config
    )
    assert calls == [(4, 5, 0.7, 3 * 100_003), (4, 5, 0.7, 3 * 100_003 + 1)]


def test_a_run_repeats_exactly_from_its_seed_and_moves_with_it(tokenizer, world):
    def run(seed, global_seed=0):
        config = small_config(num_steps=2, num_iterations=2, num_mini_batches=2, seed=seed)
        length = lambda prompts, completions: [len(c.split()) for c in completions]
        model = random_model("llama", len(tokenizer))
        torch.manual_seed(global_seed)  # the global generator is none of the run's business
        return pg.train_policy_gradient(model, tokenizer, world.prompts(8), length, config)

    first = run(0)
    assert run(0, global_seed=1).steps == first.steps
    assert run(1)["loss"] != first["loss"]


def test_an_eval_step_logs_the_evaluation_beside_the_rollouts_metrics(tokenizer, world):
    policy = random_model("llama", len(tokenizer))
    seen = []
    eval_fn = lambda model: seen.append(model) or {"gold_reward": 0.25}
    config = small_config(num_steps=3, eval_steps=2)
    history = pg.train_policy_gradient(policy, tokenizer, world.prompts(8), count_reward("x"), config, eval_fn=eval_fn)
    assert seen == [policy, policy]  # steps 0 and 2, on the policy being trained
    assert history["gold_reward"] == [0.25, 0.25] and len(history["reward"]) == 3


def test_ppos_critic_learns_within_a_rollout(tokenizer, world):
    """The value model is trained with the policy: its loss on one rollout falls after the first pass.

    An untrained critic would give the same loss on every pass: it sees the same tokens each time. (It falls
    little after that, as the value clip holds V within ``cliprange_value`` of the rollout's V_old.)
    """
    config = small_config(algorithm="ppo", num_steps=1, num_iterations=4, learning_rate=1e-2, vf_coef=1.0)
    length = lambda prompts, completions: [len(c.split()) for c in completions]
    history = pg.train_policy_gradient(
        random_model("llama", len(tokenizer)), tokenizer, world.prompts(4), length, config
    )
    value_losses = history["loss/value"]
    assert max(value_losses[1:]) < value_losses[0] - 0.1, value_losses


def test_rollout_metrics_by_hand():
    rollout = SimpleNamespace(
        mask=torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]),
        entropies=torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]),
        finished=torch.tensor([True, True, False, True]),
    )
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0])  # two prompts: stds √2 and 0
    kl = torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.0], [0.4, 0.0, 0.0]])
    metrics = pg.rollout_metrics(rollout, rewards, kl, small_config(num_generations=2))
    assert metrics == pytest.approx(
        {
            "reward": 2.0,
            "reward_std": math.sqrt(2) / 2,
            "frac_reward_zero_std": 0.5,
            "kl": 1.0 / 4,
            "entropy": 10.5 / 9,
            "completions/mean_length": 9 / 4,
            "completions/clipped_ratio": 0.25,
        }
    )
    alone = pg.rollout_metrics(rollout, rewards, None, small_config(algorithm="ppo", num_generations=1))
    assert alone["reward_std"] == 0.0 and alone["frac_reward_zero_std"] == 1.0 and "kl" not in alone


def test_the_pretraining_batches_are_seeded_and_refuse_texts_beyond_max_length(tokenizer, world):
    policy = random_model("llama", len(tokenizer))
    corpus = world.pretraining_corpus(16)
    first = [next(pg.ptx_batches(policy, tokenizer, corpus, small_config(ptx_batch_size=4, seed=s))) for s in (0, 0, 1)]
    assert torch.equal(first[0]["input_ids"], first[1]["input_ids"])
    assert not torch.equal(first[0]["input_ids"], first[2]["input_ids"])
    with pytest.raises(ValueError, match="max_length"):
        next(pg.ptx_batches(policy, tokenizer, corpus, small_config(ptx_batch_size=4, max_length=3)))


def test_the_trainer_names_what_it_refuses(tokenizer, world):
    policy = random_model("llama", len(tokenizer))
    reward_model = pg.value_model_from(policy)  # a model of the wrong kind: no language-model head
    with pytest.raises(TypeError, match="^ref_model is a LlamaForTokenClassification, which has no language-model"):
        pg.train_policy_gradient(policy, tokenizer, world.prompts(2), count_reward("x"), small_config(), reward_model)
    with pytest.raises(TypeError, match="^policy"):
        pg.train_policy_gradient(reward_model, tokenizer, world.prompts(2), count_reward("x"), small_config())
    with pytest.raises(ValueError, match="^prompts is empty"):
        pg.train_policy_gradient(policy, tokenizer, [], count_reward("x"), small_config())


def test_pass_at_k_per_prompt_samples_from_its_seed_within_max_new_tokens(tokenizer, world):
    model = random_model("llama", len(tokenizer))
    prompts = ["add 3 and 5", "add 1 and 1"]
    seen = []

    def one_word_for_add(prompts, completions):
        seen.append(list(prompts))
        return [0.5 if len(c.split()) <= 1 and p.startswith("add") else 0.0 for p, c in zip(prompts, completions)]

    default = pg.pass_at_k_per_prompt(
        model, tokenizer, prompts, one_word_for_add, num_samples=4, ks=(1,), max_new_tokens=1
    )
    assert seen[0] == [p for p in prompts for _ in range(4)]  # the verifier reads the prompts
    assert default[1].tolist() == [0.0, 0.0]  # a score of 0.5 is not "correct": correct means above 0.5
    verifier = lambda prompts, completions: [float(len(c.split()) <= 1) for c in completions]
    at_one = pg.pass_at_k_per_prompt(model, tokenizer, prompts, verifier, num_samples=4, ks=(1,), max_new_tokens=1)
    assert at_one[1].tolist() == [1.0, 1.0]  # one new token at most: every answer is at most one word
    even = lambda prompts, completions: [float(len(c) % 2 == 0) for c in completions]  # verdicts that vary
    runs = [
        pg.pass_at_k_per_prompt(model, tokenizer, prompts, even, 32, (1,), seed=s, max_new_tokens=6) for s in (0, 0, 1)
    ]
    default = pg.pass_at_k_per_prompt(model, tokenizer, prompts, even, 32, (1,), max_new_tokens=6)
    assert runs[0][1].tolist() == runs[1][1].tolist() == default[1].tolist()  # seeded, and seed 0 by default
    assert runs[0][1].tolist() != runs[2][1].tolist()
    with pytest.raises(ValueError, match="^prompts is empty"):
        pg.pass_at_k_per_prompt(model, tokenizer, [], even)


def test_tabular_gradient_estimates_are_seeded_and_need_two_trials():
    first = pg.tabular_gradient_estimates(BANDIT_REF, BANDIT_REWARDS, 0.5, "rloo", num_trials=3)
    again = pg.tabular_gradient_estimates(BANDIT_REF, BANDIT_REWARDS, 0.5, "rloo", num_trials=3)
    torch.testing.assert_close(first[0], again[0])
    assert pg.tabular_gradient_estimates(BANDIT_REF, BANDIT_REWARDS, 0.5, "rloo")[0].shape == (500, 5)  # the default
    with pytest.raises(
        ValueError, match="num_trials must be >= 2, got 1: the spread of an estimate needs at least two"
    ):
        pg.tabular_gradient_estimates(BANDIT_REF, BANDIT_REWARDS, 0.5, "rloo", num_trials=1)
