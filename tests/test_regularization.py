import copy
import math
import re

import numpy as np
import pytest
import torch

from rlhf_edu import regularization as reg
from rlhf_edu.core.logprobs import token_logprobs
from rlhf_edu.core.rollouts import sample_rollouts
from rlhf_edu.core.runtime import torch_generator
from rlhf_edu.regularization import (
    AdaptiveKLController,
    FixedKLController,
    completion_logits,
    exact_token_kl,
    kl_estimate,
    reversed_k3,
    rollout_exact_kl,
    sequence_kl,
)
from tests.conftest import random_model


def test_kl_estimators_against_the_exact_kl_of_a_small_categorical():
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = (p * (p / q).log()).sum().item()  # KL(p‖q) ≈ 0.396
    samples = torch.multinomial(p, 400_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logps, ref_logps = p.log()[samples], q.log()[samples]
    means = {k: kl_estimate(logps, ref_logps, k).mean().item() for k in ("k1", "k2", "k3")}
    stderr = {k: (kl_estimate(logps, ref_logps, k).std() / len(samples) ** 0.5).item() for k in means}
    assert abs(means["k1"] - exact) < 4 * stderr["k1"]  # unbiased
    assert abs(means["k3"] - exact) < 4 * stderr["k3"]  # unbiased
    assert abs(means["k2"] - exact) > 10 * stderr["k2"]  # biased this far from the reference
    assert (kl_estimate(logps, ref_logps, "k3") >= 0).all() and (kl_estimate(logps, ref_logps, "k2") >= 0).all()


def test_k3_with_the_ratio_reversed_would_be_biased():
    """The book's reference code uses π/π_ref inside k3; on samples from π that estimates something else."""
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = (p * (p / q).log()).sum().item()
    reversed_k3 = (p * ((p / q) - 1 - (p / q).log())).sum().item()  # its exact mean under π
    assert abs(reversed_k3 - exact) > 0.1
    expected_k3 = (p * ((q / p) - 1 - (q / p).log())).sum().item()
    assert expected_k3 == pytest.approx(exact)  # the right direction's mean is the KL exactly


def test_estimators_by_hand():
    logps, ref_logps = torch.tensor([-1.0]), torch.tensor([-2.0])  # log r = −1
    assert kl_estimate(logps, ref_logps, "k1").item() == pytest.approx(1.0)
    assert kl_estimate(logps, ref_logps, "k2").item() == pytest.approx(0.5)
    assert kl_estimate(logps, ref_logps, "k3").item() == pytest.approx(0.36787944)  # e^−1 − 1 + 1


def test_bad_estimator_and_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown estimator 'k4': use one of 'k1', 'k2', 'k3'"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="must have one shape"):
        kl_estimate(torch.zeros(2), torch.zeros(3))


def test_the_forward_kl_optimum_beats_every_nearby_policy():
    from rlhf_edu.objective import expected_reward, kl_divergence
    from rlhf_edu.regularization import forward_kl_regularized_optimum

    ref_probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    rewards = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    beta = 0.7
    objective = lambda p: expected_reward(p, rewards) - beta * kl_divergence(ref_probs, p)  # E[r] − β·KL(π_ref‖π)
    best = forward_kl_regularized_optimum(ref_probs, rewards, beta)
    assert best.sum().item() == pytest.approx(1.0, abs=1e-12)
    grid = torch.linspace(0.01, 0.98, 98, dtype=torch.float64)  # brute force over the simplex
    candidates = torch.stack([torch.stack([a, b, 1 - a - b]) for a in grid for b in grid if a + b < 0.995])
    assert objective(best) >= objective(candidates).max() - 1e-9
    stationary = rewards + beta * ref_probs / best  # r(a) + β·π_ref(a)/π(a) is one λ for every action
    torch.testing.assert_close(stationary, stationary.mean().expand(3))


@pytest.mark.parametrize(
    "ref_probs, rewards, beta, expected, atol",
    [
        # 0.125/(λ − 1) + 0.375/(λ − 0.5) = 1 at λ = 1.25, the bracket's first middle and the third action's reward;
        # every number here is exact in binary, so the bisection must return λ itself and π exactly
        ([0.25, 0.75, 0.0], [1.0, 0.5, 1.25], 0.5, [0.5, 0.5, 0.0], 0.0),
        # 0.5/λ + 0.5/(λ + 1) = 1 at λ = 1/√2; the bracket's first middle, 1/2, is the third action's reward
        ([0.5, 0.5, 0.0], [0.0, -1.0, 0.5], 1.0, [2**-0.5, 1 - 2**-0.5, 0.0], 1e-12),
    ],
)
def test_the_forward_kl_optimum_by_hand_beside_an_action_the_reference_rules_out(
    ref_probs, rewards, beta, expected, atol
):
    """π(a) = β·π_ref(a)/(λ − r(a)); an action with π_ref = 0 gets 0, whatever its reward."""
    best = reg.forward_kl_regularized_optimum(torch.tensor(ref_probs), torch.tensor(rewards), beta)
    torch.testing.assert_close(best, torch.tensor(expected, dtype=torch.float64), atol=atol, rtol=0)


def test_the_forward_kl_optimum_solves_each_row_of_a_batch_alone():
    ref_probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)
    rewards = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], dtype=torch.float64)
    batch = reg.forward_kl_regularized_optimum(ref_probs, rewards, 0.7)
    assert batch.shape == (2, 3)
    for row in range(2):
        alone = reg.forward_kl_regularized_optimum(ref_probs[row], rewards[row], 0.7)
        torch.testing.assert_close(batch[row], alone, atol=1e-12, rtol=0)


def test_the_forward_kl_optimum_sums_to_one_where_lambda_is_a_few_floats_above_the_best_reward():
    """r = (10⁶, 0) and β = 10⁻⁹: λ − 10⁶ ≈ 5·10⁻¹⁰ is a few float64 steps, so Σ β·π_ref/(λ − r) lands well off 1."""
    best = reg.forward_kl_regularized_optimum(torch.tensor([0.5, 0.5]), torch.tensor([1e6, 0.0]), 1e-9)
    assert best.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert best[0].item() == pytest.approx(1.0, abs=1e-12)


def test_the_forward_kl_optimum_stays_at_the_reference_for_a_large_beta():
    from rlhf_edu.regularization import forward_kl_regularized_optimum

    ref_probs = torch.tensor([0.6, 0.4])
    torch.testing.assert_close(
        forward_kl_regularized_optimum(ref_probs, torch.tensor([0.0, 1.0]), 1e6).float(), ref_probs, atol=1e-5, rtol=0
    )


# --- reversed k3: what it estimates --------------------------------------------------------------------
def categorical_sums(p: list[float], q: list[float]) -> dict[str, float]:
    """KL(p‖q), KL(q‖p) and χ²(p‖q), summed term by term."""
    return {
        "kl": sum(a * math.log(a / b) for a, b in zip(p, q)),
        "kl_other_way": sum(b * math.log(b / a) for a, b in zip(p, q)),
        "chi2": sum((a - b) ** 2 / b for a, b in zip(p, q)),
    }


@pytest.mark.parametrize(
    "p, q, larger",
    [
        ([0.6, 0.3, 0.1], [0.2, 0.5, 0.3], True),  # π puts mass where π_ref has little: χ² − KL exceeds the KL
        ([0.01, 0.99], [0.5, 0.5], False),  # π drops mass that π_ref holds: χ² − KL falls short of it
    ],
)
def test_reversed_k3_has_mean_chi2_minus_kl_under_pi(p, q, larger):
    sums = categorical_sums(p, q)
    values = [a / b - 1 - math.log(a / b) for a, b in zip(p, q)]  # ρ − 1 − log ρ at each outcome, ρ = p/q
    brute_force_mean = sum(a * v for a, v in zip(p, values))  # E_π, outcome by outcome
    logps, ref_logps = torch.tensor(p, dtype=torch.float64).log(), torch.tensor(q, dtype=torch.float64).log()
    per_outcome = reversed_k3(logps, ref_logps)
    assert per_outcome.tolist() == pytest.approx(values, rel=1e-12)
    assert brute_force_mean == pytest.approx(sums["chi2"] - sums["kl"], rel=1e-12)
    assert (brute_force_mean > sums["kl"]) is larger  # neither a bound above nor below
    # Under π_ref instead it is k3 for the other direction, KL(π_ref‖π), exactly.
    assert sum(b * v for b, v in zip(q, values)) == pytest.approx(sums["kl_other_way"], rel=1e-12)


def test_reversed_k3_on_samples_from_pi_misses_the_kl():
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    estimates = reversed_k3(p.log()[samples], q.log()[samples])
    sums = categorical_sums(p.tolist(), q.tolist())
    stderr = (estimates.std() / len(samples) ** 0.5).item()
    assert abs(estimates.mean().item() - (sums["chi2"] - sums["kl"])) < 4 * stderr
    assert estimates.mean().item() - sums["kl"] > 50 * stderr


# --- the exact per-token KL ------------------------------------------------------------------------------
def brute_force_token_kl(logits, ref_logits, mask):
    """Σ_v p(v)·(log p(v) − log q(v)) at every position, one position and one word at a time."""
    B, T, V = logits.shape
    kl = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            z, w = logits[b, t].tolist(), ref_logits[b, t].tolist()
            log_z, log_w = math.log(sum(math.exp(x) for x in z)), math.log(sum(math.exp(x) for x in w))
            kl[b, t] = sum(math.exp(z[v] - log_z) * ((z[v] - log_z) - (w[v] - log_w)) for v in range(V))
    return kl


def test_exact_token_kl_matches_a_brute_force_sum():
    generator = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
    ref_logits = 2 * torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    kl = exact_token_kl(logits, ref_logits, mask)
    torch.testing.assert_close(kl, brute_force_token_kl(logits, ref_logits, mask))
    assert (kl[mask.bool()] > 0).all() and (kl[~mask.bool()] == 0).all()
    torch.testing.assert_close(sequence_kl(logits, ref_logits, mask), kl.sum(dim=1))


def test_exact_token_kl_is_zero_for_one_model_and_under_the_mask():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(1))
    assert exact_token_kl(logits, logits.clone(), torch.ones(2, 5)).abs().max().item() == 0
    shifted = logits + 3.0  # the same distributions: a softmax ignores a constant
    assert exact_token_kl(logits, shifted, torch.ones(2, 5)).abs().max().item() < 1e-6
    far = exact_token_kl(logits, -50 * logits, torch.zeros(2, 5))  # the mask wins over any logits
    assert far.abs().max().item() == 0


def test_exact_token_kl_never_goes_negative():
    generator = torch.Generator().manual_seed(2)
    for scale in (0.01, 1.0, 10.0):
        logits, ref_logits = (scale * torch.randn(4, 6, 9, generator=generator) for _ in range(2))
        assert (exact_token_kl(logits, ref_logits, torch.ones(4, 6)) >= 0).all()


@pytest.mark.parametrize(
    "shapes, message",
    [
        (
            ((2, 3), (2, 3), (2, 3)),
            "logits must be (B, T, V), one distribution per position, got shape (2, 3): "
            "pass the model's logits at the completion positions",
        ),
        (
            ((2, 3, 5), (2, 3, 6), (2, 3)),
            "ref_logits (2, 3, 6) must have the shape of logits (2, 3, 5): "
            "score the same tokens with a model of the same vocabulary",
        ),
        (
            ((2, 3, 5), (2, 3, 5), (2, 4)),
            "mask (2, 4) must be (B, T) = (2, 3), one entry per position of logits: "
            "pass the completion mask of the same tokens",
        ),
    ],
)
def test_exact_token_kl_refuses_mismatched_shapes(shapes, message):
    logits, ref_logits, mask = (torch.zeros(shape) for shape in shapes)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        exact_token_kl(logits, ref_logits, mask)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_exact_token_kl_of_half_precision_logits_is_summed_in_float32(dtype):
    """The half-precision logits are exact inputs; their KL is computed in float32, whatever the mask's dtype."""
    generator = torch.Generator().manual_seed(3)
    logits, ref_logits = ((4 * torch.randn(2, 3, 50, generator=generator)).to(dtype) for _ in range(2))
    mask = torch.ones(2, 3)
    kl = exact_token_kl(logits, ref_logits, mask)
    assert kl.dtype == torch.float32
    expected = brute_force_token_kl(logits.double(), ref_logits.double(), mask)  # (2, 3) float64
    torch.testing.assert_close(kl.double(), expected, atol=1e-5, rtol=1e-5)
    for other in (mask.double(), mask.bool(), mask.long()):
        assert exact_token_kl(logits, ref_logits, other).dtype == torch.float32


# --- the exact KL of a rollout ------------------------------------------------------------------------
def two_models_and_a_rollout(tokenizer, world, num_prompts=4, num_generations=2):
    policy, ref_model = random_model("llama", len(tokenizer)), random_model("llama", len(tokenizer), seed=1)
    prompts = world.prompts(num_prompts)
    return policy, ref_model, sample_rollouts(policy, tokenizer, prompts, num_generations, max_new_tokens=6, seed=0)


def test_completion_logits_are_the_ones_token_logprobs_reads(tokenizer, world):
    policy, _, rollout = two_models_and_a_rollout(tokenizer, world)
    assert rollout.attention_mask[:, 0].min() == 0  # prompts of different lengths: left padding is in play
    with torch.no_grad():
        logits = completion_logits(policy, rollout)  # (B, N, V)
        logps, mask = token_logprobs(policy, rollout.input_ids, rollout.attention_mask, rollout.completion_mask)
    targets = rollout.input_ids[:, rollout.prompt_width :]  # (B, N)
    gathered = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1) * rollout.mask
    torch.testing.assert_close(gathered, logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(mask, rollout.mask)


def test_completion_logits_of_a_left_padded_row_are_those_of_the_row_alone(tokenizer, world):
    """GPT-2 learns a vector per absolute position: left padding must not move a token's position."""
    model = random_model("gpt2", len(tokenizer))
    rollout = sample_rollouts(model, tokenizer, world.prompts(4), 2, max_new_tokens=6, seed=0)
    assert rollout.attention_mask[:, 0].min() == 0  # left padding is in play
    with torch.no_grad():
        logits = completion_logits(model, rollout)  # (B, N, V)
        for b in range(len(rollout)):
            ids = rollout.input_ids[b][rollout.attention_mask[b].bool()].unsqueeze(0)  # (1, T) no padding
            n = int(rollout.mask[b].sum())
            alone = model(input_ids=ids).logits[0, -n - 1 : -1]  # (n, V) the logits before each completion token
            torch.testing.assert_close(logits[b, :n], alone, atol=1e-5, rtol=0)


def test_rollout_exact_kl_matches_each_row_scored_alone(tokenizer, world):
    policy, ref_model, rollout = two_models_and_a_rollout(tokenizer, world)
    kl = rollout_exact_kl(policy, ref_model, rollout)  # (B,)
    for b in range(len(rollout)):
        ids = rollout.input_ids[b][rollout.attention_mask[b].bool()].unsqueeze(0)  # (1, T) no padding
        n = int(rollout.mask[b].sum())
        with torch.no_grad():  # the logits before each of the n completion tokens, unpadded
            z, w = (model(input_ids=ids).logits[:, -n - 1 : -1].double() for model in (policy, ref_model))
        alone = brute_force_token_kl(z, w, torch.ones(1, n)).sum().item()
        assert kl[b].item() == pytest.approx(alone, abs=1e-5)
    assert rollout_exact_kl(policy, policy, rollout).abs().max().item() < 1e-6


def test_rollout_exact_kl_agrees_with_summed_k1_at_a_lower_variance(tokenizer, world):
    """The chain rule: both have mean KL(π(y|x) ‖ π_ref(y|x)); the exact sum drops the noise of each token's draw."""
    policy, ref_model, rollout = two_models_and_a_rollout(tokenizer, world, num_prompts=32, num_generations=8)
    exact = rollout_exact_kl(policy, ref_model, rollout)  # (B,)
    with torch.no_grad():
        ref_logps, _ = token_logprobs(ref_model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask)
    k1 = (kl_estimate(rollout.logps, ref_logps, "k1") * rollout.mask).sum(dim=1)  # (B,)
    stderr = (k1.var() / len(k1) + exact.var() / len(k1)).sqrt().item()
    assert abs(exact.mean().item() - k1.mean().item()) < 4 * stderr
    assert exact.var().item() < 0.1 * k1.var().item()  # about 1000× lower on these two random models
    assert (exact >= 0).all() and (k1 < 0).any()


def test_rollout_exact_kl_leaves_the_models_as_they_were(tokenizer, world):
    policy, ref_model, rollout = two_models_and_a_rollout(tokenizer, world)
    policy.train()
    kl = rollout_exact_kl(policy, ref_model, rollout)
    assert policy.training and not ref_model.training and not kl.requires_grad


def test_rollout_exact_kl_runs_both_models_in_eval_mode_without_gradients(tokenizer, world):
    policy, ref_model, rollout = two_models_and_a_rollout(tokenizer, world)
    seen = []
    for name, model in (("policy", policy), ("ref_model", ref_model)):
        model.train()
        model.register_forward_pre_hook(
            lambda module, args, name=name: seen.append((name, module.training, torch.is_grad_enabled()))
        )
    rollout_exact_kl(policy, ref_model, rollout)
    assert seen == [("policy", False, False), ("ref_model", False, False)]
    assert policy.training and ref_model.training  # each handed back in the mode it came in


def test_rollout_exact_kl_names_the_argument_that_is_wrong(tokenizer):
    policy, ref_model = random_model("llama", len(tokenizer)), random_model("llama", len(tokenizer), seed=1)
    with pytest.raises(TypeError, match="^policy must be a Hugging Face model, got str"):
        rollout_exact_kl("policy", ref_model, None)
    with pytest.raises(TypeError, match="^ref_model must be a Hugging Face model, got str"):
        rollout_exact_kl(policy, "ref_model", None)
    with pytest.raises(TypeError, match=r"^rollout must be a Rollout \(from sample_rollouts\), got dict$"):
        rollout_exact_kl(policy, ref_model, {"input_ids": torch.zeros(1, 3)})


# --- the KL coefficient's controllers ----------------------------------------------------------------
def test_the_adaptive_controller_follows_ziegler_et_al_by_hand():
    controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=1000)
    # KL = 3 × target: e = clip(3 − 1) = 0.2, so β grows by 1 + 0.2 · 100/1000
    assert controller.update(18.0, 100) == pytest.approx(0.1 * 1.02)
    # KL = 6.6: e = 0.1, inside the clip
    assert controller.update(6.6, 100) == pytest.approx(0.1 * 1.02 * 1.01)
    # KL = 0: e = clip(−1) = −0.2; with n_steps = 250, β shrinks by 1 − 0.2 · 0.25
    assert controller.update(0.0, 250) == pytest.approx(0.1 * 1.02 * 1.01 * 0.95)
    before = controller.value
    assert controller.update(6.0, 100) == before  # on target: no change
    assert controller.value == before


def test_the_adaptive_controller_holds_a_toy_kl_near_its_target():
    """A toy plant whose KL falls as β rises (KL = 1/β): the controller settles β where KL = target."""
    controller = AdaptiveKLController(init_kl_coef=0.05, target=2.0, horizon=64)
    for _ in range(400):
        controller.update(1 / controller.value, 32)
    assert controller.value == pytest.approx(0.5, rel=0.05)


def test_the_fixed_controller_keeps_its_value():
    controller = FixedKLController(0.04)
    assert controller.update(100.0, 512) == controller.value == 0.04
    assert controller.update(float("nan"), 0) == 0.04  # it reads nothing


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: AdaptiveKLController(0.1, target=0.0, horizon=100),
            ValueError,
            "target must be > 0, got 0: the KL in nats per completion to hold, e.g. 6 as in Ziegler et al.",
        ),
        (
            lambda: AdaptiveKLController(0.1, target=-1.0, horizon=100),
            ValueError,
            "target must be > 0, got -1: the KL in nats per completion to hold, e.g. 6 as in Ziegler et al.",
        ),
        (
            lambda: AdaptiveKLController(0.1, target=6.0, horizon=0),
            ValueError,
            "horizon must be > 0, got 0: the number of samples over which β may change by about 20%, e.g. 10000",
        ),
        (
            lambda: AdaptiveKLController(0.1, target=6.0, horizon=-5),
            ValueError,
            "horizon must be > 0, got -5: the number of samples over which β may change by about 20%, e.g. 10000",
        ),
        (
            lambda: AdaptiveKLController(-0.1, target=6.0, horizon=100),
            ValueError,
            "init_kl_coef must be > 0, got -0.1: β is scaled by factors, so one that starts at 0 stays there: "
            "start above 0",
        ),
        (
            lambda: AdaptiveKLController(0.0, target=6.0, horizon=100),
            ValueError,
            "init_kl_coef must be > 0, got 0: β is scaled by factors, so one that starts at 0 stays there: "
            "start above 0",
        ),
        (
            lambda: AdaptiveKLController(0.1, 6.0, 100).update(float("nan"), 8),
            ValueError,
            "current_kl is NaN: the mean KL of the batch just sampled",
        ),
        (
            lambda: AdaptiveKLController(0.1, 6.0, 100).update(1.0, 0),
            ValueError,
            "n_steps must be >= 1, got 0: the number of samples the KL was measured on (the batch size)",
        ),
        (
            lambda: AdaptiveKLController(0.1, 6.0, 100).update(1.0, 500),
            ValueError,
            "n_steps=500 is at least 5 × horizon=100, so one update could scale β to 0 or below: "
            "use a horizon well above the batch size",
        ),
        (
            lambda: FixedKLController(-0.1),
            ValueError,
            "kl_coef must be >= 0, got -0.1: the KL penalty's weight β; 0 switches it off",
        ),
        (
            lambda: reversed_k3(torch.zeros(2), torch.zeros(3)),
            ValueError,
            "logps (2,) and ref_logps (3,) must have one shape",
        ),
        (
            lambda: reg.gaussian_estimator_table(("a",)),
            TypeError,
            "shifts must be a number, got 'a' (str): each shift μ is a real number",
        ),
        (
            lambda: reg.gaussian_estimator_table((1.0,), num_samples=0),
            ValueError,
            "num_samples must be >= 1, got 0",
        ),
        (
            lambda: reg.runs_mean_and_stderr([1.0], 0.1),
            ValueError,
            "len(values) must be >= 2, got 1: judge at least two runs together",
        ),
    ],
)
def test_bad_input_is_refused_with_the_whole_message(call, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()


def test_gaussian_table_matches_the_closed_forms():
    """q = N(0,1), p = N(μ,1): k1 = μ²/2 − μx has std μ; E k2 = μ²/2 + μ⁴/8; E reversed k3 = e^{μ²} − 1 − μ²/2."""
    num_samples = 400_000
    for row in reg.gaussian_estimator_table((0.1, 1.0), num_samples=num_samples, seed=1):
        mu = row["mu"]
        assert row["kl"] == mu**2 / 2
        assert math.isclose(row["k1/std"], 2 / mu, rel_tol=0.01)
        expected_bias = {
            "k1": 0.0,
            "k3": 0.0,
            "k2": mu**2 / 4,
            "reversed k3": (math.exp(mu**2) - 1 - mu**2) / row["kl"],
        }
        for name, bias in expected_bias.items():
            se = row[f"{name}/std"] / num_samples**0.5  # the standard error of the mean, relative to the KL
            assert abs(row[f"{name}/bias"] - bias) < 4 * se, (mu, name, row[f"{name}/bias"], bias)
    far = reg.gaussian_estimator_table((1.0,), num_samples=num_samples)[0]
    assert far["k3/std"] < far["k1/std"] and far["k2/bias"] > 0.2 and far["reversed k3/bias"] > 1.0


def test_gaussian_table_is_the_closed_form_on_its_own_seeded_draws():
    """k1 = μ²/2 − μx exactly, so on the table's draws x ~ N(0, 1) its relative error is −2·x̄/μ and its spread 2·s/μ.

    By default each shift takes 1 000 000 float64 draws from one generator seeded with 0, as notebook 08 prints them.
    """
    generator = torch_generator(0)
    for row in reg.gaussian_estimator_table():
        x = torch.randn(1_000_000, generator=generator, dtype=torch.float64)  # (S,) this shift's draws
        assert row["k1/bias"] == pytest.approx(-2 * x.mean().item() / row["mu"], rel=1e-9, abs=1e-12)
        assert row["k1/std"] == pytest.approx(2 * x.std().item() / row["mu"], rel=1e-9)
    seeded = reg.gaussian_estimator_table((0.5,), num_samples=1000, seed=4)
    assert seeded == reg.gaussian_estimator_table((0.5,), num_samples=1000, seed=4)
    assert seeded != reg.gaussian_estimator_table((0.5,), num_samples=1000, seed=5)


def sharper_copy_and_rollout(tokenizer, world, scale: float, n: int, max_new_tokens: int):
    """A random policy, a copy whose output layer is ``scale`` times sharper, and n answers to each of n prompts."""
    policy = random_model("llama", len(tokenizer))
    ref_model = copy.deepcopy(policy)
    with torch.no_grad():
        ref_model.lm_head.weight.mul_(scale)
    return policy, ref_model, sample_rollouts(policy, tokenizer, world.prompts(n), n, max_new_tokens, seed=0)


def test_estimator_comparison_finds_the_bias_of_k2_and_reversed_k3_only(tokenizer, world):
    """Against a sharper copy of π (its output layer × 8), on rows sampled from π: k1 and k3 agree with the exact KL
    within 4 standard errors, k2 and the reversed k3 are biased upward, and the exact KL has the smallest spread."""
    policy, ref_model, rollout = sharper_copy_and_rollout(tokenizer, world, 8.0, 16, max_new_tokens=6)
    stats = reg.estimator_comparison(policy, ref_model, rollout)
    assert list(stats) == ["exact", *reg.ESTIMATOR_NAMES]
    assert stats["exact"]["mean"] > 1.0, stats["exact"]
    for name in ("k1", "k3"):
        assert abs(stats[name]["bias"]) < 4 * stats[name]["se"], (name, stats[name])
        assert stats[name]["std"] > 2 * stats["exact"]["std"], (name, stats)
    for name in ("k2", "reversed k3"):
        assert stats[name]["bias"] > 3 * stats[name]["se"], (name, stats[name])
    same = reg.estimator_comparison(policy, policy, rollout)
    assert all(abs(s["mean"]) < 1e-5 for s in same.values()), same


def test_the_shipped_regularization_runs_are_the_recipes():
    """experiments/sweeps/regularization.json holds what recipes.regularization_runs writes, with the same settings."""
    from rlhf_edu.core.training import load_histories
    from rlhf_edu.experiments.recipes import (
        DPO_BETAS,
        DPO_SETTINGS,
        REGULARIZATION_PATH,
        REGULARIZATION_RUNS,
        SWEEP_CONFIG,
    )

    runs, settings = load_histories(REGULARIZATION_PATH)
    assert settings["base"] == SWEEP_CONFIG and settings["rl_runs"] == REGULARIZATION_RUNS
    assert settings["dpo_betas"] == list(DPO_BETAS) and settings["dpo"] == DPO_SETTINGS
    assert list(runs) == ["base", "sft", *REGULARIZATION_RUNS, *(f"dpo_{beta}" for beta in DPO_BETAS)]
    for name in REGULARIZATION_RUNS:
        history = runs[name]
        assert len(history["loss"]) == SWEEP_CONFIG["num_steps"], name
        assert len(history["eval/perplexity"]) == SWEEP_CONFIG["num_steps"] // SWEEP_CONFIG["eval_steps"], name
        assert {"kl", "beta", "gold_reward", "eval/kl", "eval/reward"} <= set(history.keys()), name
    assert "loss/ptx" in runs["ptx"].keys() and "loss/ptx" not in runs["fixed_0.01"].keys()
    assert runs["adaptive"]["beta"][0] == REGULARIZATION_RUNS["adaptive"]["beta"]
    assert len(set(runs["adaptive"]["beta"])) > 10  # it moved
    assert set(runs["kl_in_reward"]["beta"]) == {0.1}
    for beta in DPO_BETAS:
        assert runs[f"dpo_{beta}"].steps[0]["beta"] == beta


def test_estimator_comparison_keeps_each_rows_values_and_their_median(tokenizer, world):
    policy, ref_model, rollout = sharper_copy_and_rollout(tokenizer, world, 4.0, 4, max_new_tokens=5)
    stats = reg.estimator_comparison(policy, ref_model, rollout)
    for name, s in stats.items():
        assert s["values"].shape == (16,) and s["values"].dtype == np.float64, name
        assert s["mean"] == pytest.approx(s["values"].mean()) and s["median"] == pytest.approx(np.median(s["values"]))
        assert s["std"] == pytest.approx(np.std(s["values"], ddof=1)), name  # the spread of one completion's value
    assert np.allclose(stats["exact"]["values"], rollout_exact_kl(policy, ref_model, rollout).double().numpy())
    errors = stats["k1"]["values"] - stats["exact"]["values"]
    assert stats["k1"]["bias"] == pytest.approx(errors.mean(), abs=1e-5)


def test_runs_mean_and_stderr_takes_the_spread_with_one_evaluations_noise_as_its_floor():
    assert reg.runs_mean_and_stderr([1.0, 2.0, 3.0, 4.0], 0.1) == pytest.approx((2.5, np.std([1, 2, 3, 4], ddof=1) / 2))
    assert reg.runs_mean_and_stderr([2.0, 2.0, 2.0, 2.0], 0.1) == pytest.approx((2.0, 0.05))  # the floor 0.1/√4
    assert reg.runs_mean_and_stderr([1.0, 3.0], 0.0) == pytest.approx((2.0, 1.0))  # two runs suffice: s = √2, /√2
    # runs kept in half precision are averaged in float64: (1000 + 1000.5 + 1001.5)/3, not float16's 1000.5
    half = np.array([1000.0, 1000.5, 1001.5], dtype=np.float16)
    mean, stderr = reg.runs_mean_and_stderr(half, 0.0)
    assert mean == pytest.approx(3002 / 3, rel=1e-12) and stderr == pytest.approx(math.sqrt(7 / 12) / math.sqrt(3))


def test_the_frontier_draws_error_bars_where_it_is_given_standard_errors():
    series = {"a": {0.1: (1.0, 2.0), 0.3: (0.5, 1.8)}, "b": {1: (0.0, 1.5), 2: (0.2, 1.7)}}
    figure = reg.plot_frontier_of_runs(
        series, (0.0, 1.5), highlight=0.1, gold_stderr={"a": 0.1, "b": {1: 0.0, 2: 0.05}}
    )
    bars = [c for c in figure.axes[0].containers if getattr(c, "has_yerr", False)]
    assert len(bars) == 2 and "±1 s.e." in figure.axes[0].get_title()
    plain = reg.plot_frontier_of_runs(series, (0.0, 1.5))
    assert not any(getattr(c, "has_yerr", False) for c in plain.axes[0].containers)
