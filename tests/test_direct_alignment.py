import copy
import math
import re

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import LlamaConfig, LlamaForSequenceClassification

from rlhf_edu.core.collate import collate
from rlhf_edu.core.evaluation import PolicyEvaluation, evaluate_policy
from rlhf_edu.core.logprobs import sequence_logprobs
from rlhf_edu.core.preferences import encode_pairs, pair_loader
from rlhf_edu.core.runtime import numpy_rng
from rlhf_edu.core.training import History
from rlhf_edu.direct_alignment import (
    DPOConfig,
    Run,
    bandit_preferences,
    chosen_nll_loss,
    dpo_batch_loss,
    dpo_loss,
    dpo_metrics,
    evaluation_stderrs,
    implicit_reward,
    plot_displacement,
    plot_frontier,
    precompute_ref_logps,
    reference_logprobs,
    simpo_loss,
    train_and_evaluate,
    train_dpo,
    train_tabular_dpo,
)
from tests.conftest import logprob_alone, random_model

matplotlib.use("Agg")

# Two pairs: the first with h = (−1 − −2) − (−3 − −2) = 2, the second with h = 0 (policy = reference).
POLICY_CHOSEN, POLICY_REJECTED = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -2.0])
REF_CHOSEN, REF_REJECTED = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
BETA = 0.5  # so β·h = 1 on the first pair

NLL_SIGMOID_1 = math.log(1 + math.exp(-1))  # −log σ(1)
NLL_SIGMOID_MINUS_1 = math.log(1 + math.exp(1))  # −log σ(−1)


def log_sigmoid_losses(h_values, beta, eps=0.0):
    return [
        -(1 - eps) * math.log(1 / (1 + math.exp(-beta * h))) - eps * math.log(1 / (1 + math.exp(beta * h)))
        for h in h_values
    ]


@pytest.mark.parametrize(
    "loss_type, label_smoothing, expected",
    [
        ("sigmoid", 0.0, [NLL_SIGMOID_1, math.log(2)]),
        ("sigmoid", 0.1, [0.9 * NLL_SIGMOID_1 + 0.1 * NLL_SIGMOID_MINUS_1, math.log(2)]),
        ("hinge", 0.0, [0.0, 1.0]),  # relu(1 − 1), relu(1 − 0)
        ("ipo", 0.0, [1.0, 1.0]),  # (2 − 1/(2·0.5))², (0 − 1)²
        ("robust", 0.1, [(0.9 * NLL_SIGMOID_1 - 0.1 * NLL_SIGMOID_MINUS_1) / 0.8, math.log(2)]),
    ],
)
def test_dpo_loss_matches_hand_computed_values(loss_type, label_smoothing, expected):
    losses, _, _ = dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, BETA, loss_type, label_smoothing)
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)


def test_dpo_loss_defaults_to_beta_0_1():
    losses, chosen_rewards, _ = dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)
    assert losses.tolist() == pytest.approx([math.log(1 + math.exp(-0.2)), math.log(2)])  # β·h = 0.1 · 2 and 0
    assert chosen_rewards.tolist() == pytest.approx([0.1, 0.0])


def test_policy_equal_to_reference_gives_log_2_and_zero_rewards():
    logps = torch.randn(5)
    losses, chosen_rewards, rejected_rewards = dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.3)
    assert losses.tolist() == pytest.approx([math.log(2)] * 5)
    assert chosen_rewards.abs().max() == 0 and rejected_rewards.abs().max() == 0


def test_rewards_are_the_detached_implicit_rewards():
    policy_chosen = POLICY_CHOSEN.clone().requires_grad_()
    _, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, BETA)
    assert chosen_rewards.tolist() == pytest.approx([0.5, 0.0])  # β·(−1 − −2), β·(−2 − −2)
    assert rejected_rewards.tolist() == pytest.approx([-0.5, 0.0])
    assert not chosen_rewards.requires_grad
    assert implicit_reward(torch.tensor([-1.0]), torch.tensor([-4.0]), beta=0.1).item() == pytest.approx(0.3)


def test_implicit_reward_refuses_log_probs_that_do_not_line_up():
    with pytest.raises(ValueError, match=r"different shapes \[\(2,\), \(3,\)\]: pass one value per pair"):
        implicit_reward(torch.zeros(2), torch.zeros(3), beta=0.1)
    with pytest.raises(TypeError, match="must be torch tensors .*got list"):
        implicit_reward([-1.0], torch.zeros(1), beta=0.1)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_sigmoid_gradient_with_respect_to_h_is_minus_beta_sigma_minus_beta_h(beta):
    h = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0], requires_grad=True)
    zeros = torch.zeros(5)
    losses, _, _ = dpo_loss(h, zeros, zeros, zeros, beta)  # policy_chosen − ref_chosen = h
    losses.sum().backward()
    expected = [-beta / (1 + math.exp(beta * value)) for value in h.tolist()]  # −β·σ(−β·h)
    assert h.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_conservative_dpo_is_the_expected_loss_under_flipped_labels():
    h, eps = torch.linspace(-4, 4, 9), 0.2
    zeros = torch.zeros(9)
    smoothed, _, _ = dpo_loss(h, zeros, zeros, zeros, BETA, label_smoothing=eps)
    assert smoothed.tolist() == pytest.approx(log_sigmoid_losses(h.tolist(), BETA, eps), abs=1e-6)


def test_robust_loss_is_unbiased_for_the_clean_loss_under_label_noise():
    h, eps = torch.linspace(-4, 4, 9), 0.2
    zeros = torch.zeros(9)
    as_labelled, _, _ = dpo_loss(h, zeros, zeros, zeros, BETA, "robust", eps)
    flipped, _, _ = dpo_loss(-h, zeros, zeros, zeros, BETA, "robust", eps)
    # A label is right with probability 1 − ε; averaged over the noise, the loss is the clean DPO loss.
    expected_under_noise = (1 - eps) * as_labelled + eps * flipped
    assert expected_under_noise.tolist() == pytest.approx(log_sigmoid_losses(h.tolist(), BETA), abs=1e-5)


@pytest.mark.parametrize(
    "loss_type, eps, expected_pull",
    [
        ("sigmoid", 0.0, lambda x, eps: 1 / (1 + math.exp(x))),  # σ(−βh)
        ("sigmoid", 0.2, lambda x, eps: 1 / (1 + math.exp(x)) - eps),  # cDPO: DPO's pull less ε
        ("robust", 0.2, lambda x, eps: 1 / (1 + math.exp(x)) + eps / (1 - 2 * eps)),  # never below ε/(1−2ε)
    ],
)
def test_each_loss_pulls_a_pair_as_its_docstring_says(loss_type, eps, expected_pull):
    beta_h = torch.tensor([-3.0, 0.0, math.log((1 - eps) / eps) if eps else 1.0, 8.0], requires_grad=True)
    zeros = torch.zeros(4)
    losses, _, _ = dpo_loss(beta_h, zeros, zeros, zeros, beta=1.0, loss_type=loss_type, label_smoothing=eps)
    losses.sum().backward()
    assert (-beta_h.grad).tolist() == pytest.approx([expected_pull(x, eps) for x in beta_h.tolist()], abs=1e-6)


def test_cdpo_stops_at_a_finite_margin_and_the_robust_loss_goes_below_zero():
    eps, zeros = 0.1, torch.zeros(3)
    target = torch.tensor([math.log((1 - eps) / eps)] * 3, requires_grad=True)
    dpo_loss(target, zeros, zeros, zeros, 1.0, "sigmoid", eps)[0].sum().backward()
    assert target.grad.abs().max() < 1e-6  # cDPO's pull vanishes at βh = log((1 − ε)/ε)
    robust, _, _ = dpo_loss(torch.tensor([0.0, 2.0, 20.0]), zeros, zeros, zeros, 1.0, "robust", eps)
    assert robust[0] > 0 > robust[1] > robust[2]
    assert robust[2].item() == pytest.approx(-20 * eps / (1 - 2 * eps), abs=1e-3)  # −ε·βh/(1 − 2ε) far out


def test_simpo_matches_hand_computed_values():
    losses, chosen_rewards, rejected_rewards = simpo_loss(
        torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0]), beta=2.0, gamma=0.5
    )
    # margins: 2·(−1 − −2) − 0.5 = 1.5 and 2·(−2 − −1) − 0.5 = −2.5
    assert losses.tolist() == pytest.approx([math.log(1 + math.exp(-1.5)), math.log(1 + math.exp(2.5))])
    assert chosen_rewards.tolist() == [-2.0, -4.0] and rejected_rewards.tolist() == [-4.0, -2.0]
    by_default, _, _ = simpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0]))  # β = 2, γ = 0.5
    assert by_default.tolist() == losses.tolist()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"beta": 0.0}, ValueError, "beta must be > 0, got 0: it is the KL penalty's weight"),
        ({"beta": -0.1}, ValueError, "beta must be > 0"),
        ({"label_smoothing": 0.5}, ValueError, r"label_smoothing must be in \[0, 0.5\)"),
        ({"label_smoothing": -0.1}, ValueError, r"label_smoothing must be in \[0, 0.5\)"),
        ({"loss_type": "kto"}, ValueError, "unknown loss_type 'kto': use one of 'sigmoid', 'hinge', 'ipo', 'robust'"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, ValueError, "applies to loss_type 'sigmoid' or 'robust' only"),
        (
            {"label_smoothing": "0.1"},
            TypeError,
            r"^label_smoothing must be a number, got '0\.1' \(str\): the assumed share of flipped labels, e\.g\. 0\.1$",
        ),
    ],
)
def test_bad_loss_arguments_are_refused_with_a_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, **kwargs)


def test_tensors_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"different shapes \[\(2,\), \(3,\)\]: pass one value per pair"):
        dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, torch.zeros(3))
    with pytest.raises(ValueError, match="different shapes"):
        simpo_loss(torch.zeros(2), torch.zeros(2, 1))
    with pytest.raises(TypeError, match="must be torch tensors.*got list"):
        dpo_loss([-1.0], POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": 0}, "beta must be > 0"),
        ({"loss_type": "dpo"}, "unknown loss_type 'dpo': use one of 'sigmoid', 'hinge', 'ipo', 'robust', 'simpo'"),
        ({"label_smoothing": 0.6}, "label_smoothing must be in"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        (
            {"rpo_alpha": -0.5},
            r"^rpo_alpha must be >= 0, got -0\.5: the weight α of the chosen answers' NLL \(the RPO paper uses 1\.0\), "
            "or None for none$",
        ),
    ],
)
def test_dpo_config_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DPOConfig(**kwargs)


# --- tabular DPO ---------------------------------------------------------------------------------------
REF_PROBS = np.array([0.4, 0.3, 0.2, 0.1])
REWARDS = np.array([0.0, 1.0, 0.5, 2.0])


def closed_form_optimum(ref_probs, rewards, beta):
    weights = ref_probs * np.exp(rewards / beta)
    return weights / weights.sum()


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_tabular_dpo_lands_on_the_closed_form_optimum(beta):
    result = train_tabular_dpo(REF_PROBS, REWARDS, beta, num_pairs=50_000, seed=1)
    expected = closed_form_optimum(REF_PROBS, REWARDS, beta)
    assert result.optimum == pytest.approx(expected, abs=1e-6)
    assert 0.5 * np.abs(result.probs - expected).sum() < 0.02
    assert result.distance[-1] == pytest.approx(0.5 * np.abs(result.probs - expected).sum())  # total variation
    assert result.ref_probs.tolist() == REF_PROBS.tolist() and result.rewards.tolist() == REWARDS.tolist()
    assert result.distance[-1] < 0.2 * result.distance[0]


def test_tabular_dpo_with_annotator_temperature_finds_the_optimum_for_beta_times_tau():
    result = train_tabular_dpo(REF_PROBS, REWARDS, beta=2.0, tau=0.5, num_pairs=50_000, seed=2)
    assert 0.5 * np.abs(result.probs - closed_form_optimum(REF_PROBS, REWARDS, 1.0)).sum() < 0.02
    assert result.distance[-1] > 0.05  # and not the optimum for β itself


def test_tabular_ipo_regresses_log_ratio_gaps_to_preference_odds():
    # IPO's fixed point for a pair labelled with probability p: β·h = p − 1/2, not the reward gap.
    result = train_tabular_dpo([0.5, 0.5], [0.0, 1.0], beta=1.0, loss_type="ipo", num_pairs=100_000, seed=3)
    h = np.log(result.probs[1] / result.probs[0])  # the reference is uniform, so h is the log-odds of the policy
    assert h == pytest.approx(1 / (1 + math.exp(-1)) - 0.5, abs=0.02)


def test_tabular_cdpo_lands_where_the_smoothed_label_odds_put_it():
    # cDPO on pairs whose arm 1 won a share p of the time: σ(βh) = (1 − ε)·p + ε·(1 − p) at the minimum.
    eps, ref, rewards = 0.2, np.array([0.5, 0.5]), np.array([0.0, 1.0])
    result = train_tabular_dpo(ref, rewards, beta=1.0, label_smoothing=eps, seed=3)
    chosen, _ = bandit_preferences(ref, rewards, 20_000, numpy_rng(3))  # the run's own pairs
    p = (chosen == 1).mean()
    q = (1 - eps) * p + eps * (1 - p)
    assert np.log(result.probs[1] / result.probs[0]) == pytest.approx(math.log(q / (1 - q)), abs=1e-4)


def test_tabular_dpo_takes_adam_steps_on_the_mean_loss_over_all_its_pairs():
    beta, lr = 0.5, 0.05
    result = train_tabular_dpo(REF_PROBS, REWARDS, beta, num_pairs=3000, num_steps=40, learning_rate=lr, seed=5)
    # The same run pair by pair, with no pair scored once for all its copies.
    chosen, rejected = (torch.tensor(arms) for arms in bandit_preferences(REF_PROBS, REWARDS, 3000, numpy_rng(5)))
    ref_logps = torch.tensor(np.log(REF_PROBS))
    logits = ref_logps.clone().requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(40):
        logps = logits.log_softmax(dim=0)
        h = (logps[chosen] - ref_logps[chosen]) - (logps[rejected] - ref_logps[rejected])
        optimizer.zero_grad()
        (-F.logsigmoid(beta * h)).mean().backward()
        optimizer.step()
    assert result.probs == pytest.approx(logits.detach().softmax(dim=0).numpy(), abs=1e-12)


def test_tabular_dpo_defaults_are_the_settings_its_messages_suggest():
    default = train_tabular_dpo(REF_PROBS, REWARDS, beta=1.0)
    spelled_out = train_tabular_dpo(
        REF_PROBS, REWARDS, beta=1.0, num_pairs=20_000, num_steps=300, learning_rate=0.1, tau=1.0, seed=0
    )
    assert len(default.distance) == 300 and default.probs.tolist() == spelled_out.probs.tolist()


def test_tabular_dpo_computes_in_float64_whatever_it_is_given():
    ref_probs = torch.tensor([0.5, 0.25, 0.125, 0.125])  # float32 (these values are exact in float64 too)
    # and rewards as a verifier's pass/fail booleans
    given = train_tabular_dpo(ref_probs, [True, False, False, True], beta=1.0, num_pairs=2000, num_steps=20)
    exact = train_tabular_dpo(ref_probs.double().tolist(), [1.0, 0.0, 0.0, 1.0], beta=1.0, num_pairs=2000, num_steps=20)
    assert given.probs.dtype == np.float64 and given.probs.tolist() == exact.probs.tolist()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"num_pairs": 0},
            ValueError,
            "num_pairs must be >= 1, got 0: the number of sampled preference pairs, e.g. 20000",
        ),
        ({"num_steps": 0}, ValueError, "num_steps must be >= 1, got 0: the number of Adam steps, e.g. 300"),
        ({"learning_rate": 0}, ValueError, "learning_rate must be > 0, got 0: Adam's step size, e.g. 0.1"),
        ({"tau": 0}, ValueError, "tau must be > 0, got 0: the annotator's noise temperature; 1 makes DPO land on π*"),
        (
            {"ref_probs": [1.0, 0.0]},
            ValueError,
            "ref_probs must be positive and sum to 1: DPO can never move an arm π_ref gives 0",
        ),
    ],
)
def test_tabular_dpo_refuses_bad_arguments_by_name_with_a_fix(kwargs, error, message):
    arguments = {"ref_probs": [0.5, 0.5], "rewards": [0.0, 1.0], "beta": 1.0, "num_pairs": 100, "num_steps": 1}
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        train_tabular_dpo(**(arguments | kwargs))


def test_tabular_dpo_checks_its_loss_before_sampling_a_pair(monkeypatch):
    from rlhf_edu import direct_alignment

    def sample(*args):
        raise AssertionError("pairs were sampled before the loss was checked")

    monkeypatch.setattr(direct_alignment, "bandit_preferences", sample)
    with pytest.raises(ValueError, match="unknown loss_type 'kto'"):
        train_tabular_dpo([0.5, 0.5], [0.0, 1.0], beta=1.0, loss_type="kto")


class GridDraws:
    """A stand-in for a NumPy generator: every pair is (first, second), the uniform draws an even grid of [0, 1)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def choice(self, num_arms, size, p):
        return np.array([[self.first] * size[1], [self.second] * size[1]])

    def random(self, n):
        return np.arange(n) / n


def test_bandit_preferences_let_the_first_arm_win_on_draws_below_its_bradley_terry_probability():
    ref_probs, rewards = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    for first, second in ((0, 1), (1, 0)):  # whichever arm comes first, arm 0 wins σ(1 − 0) of the draws (τ = 1)
        chosen, rejected = bandit_preferences(ref_probs, rewards, 1000, GridDraws(first, second))
        assert (chosen == 0).mean() == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-3)
        assert ((chosen == 0) == (rejected == 1)).all()
    # An arm with reward −∞ never wins, not even on a draw of exactly 0.
    chosen, _ = bandit_preferences(ref_probs, np.array([0.0, -np.inf]), 1000, GridDraws(1, 0))
    assert (chosen == 0).all()


def test_bandit_preferences_follow_bradley_terry_on_reference_pairs():
    chosen, rejected = bandit_preferences(
        np.array([0.25, 0.75]), np.array([0.0, 1.0]), 200_000, np.random.default_rng(0), tau=0.5
    )
    assert (chosen != rejected).all()
    assert len(chosen) / 200_000 == pytest.approx(2 * 0.25 * 0.75, abs=0.01)  # pairs of two different arms
    assert (chosen == 1).mean() == pytest.approx(1 / (1 + math.exp(-1 / 0.5)), abs=0.01)  # σ((1 − 0) / τ)


def test_tabular_dpo_refuses_bad_reference():
    with pytest.raises(ValueError, match="one entry per arm"):
        train_tabular_dpo([0.5, 0.5], [0.0, 1.0, 2.0], beta=1.0)
    with pytest.raises(ValueError, match="positive and sum to 1"):
        train_tabular_dpo([1.0, 0.0], [0.0, 1.0], beta=1.0)


# --- DPO on a language model ---------------------------------------------------------------------------
PAIRS = Dataset.from_dict(
    {
        "prompt": ["add 3 and 5", "review the soup", "describe the cat", "add 1 and 1"],
        "chosen": ["3 plus 5 is 8", "the soup is tasty", "the cat is small and grey", "1 plus 1 is 2"],
        "rejected": ["3 plus 5 is 9 9", "the soup is bland", "the cat is big", "1 plus 1 is 3 and 4 and 5"],
    }
)


class ForwardCounter:
    """Counts forward calls of a model through a hook."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(self.count)

    def count(self, *args):
        self.calls += 1


def config(**kwargs):
    return DPOConfig(**{"learning_rate": 1e-2, "batch_size": 2, "num_epochs": 5, "progress": False, **kwargs})


def test_train_dpo_raises_the_margin_on_every_architecture(model, tokenizer):
    history = train_dpo(model, tokenizer, PAIRS, config(num_epochs=10))
    assert history["rewards/margins"][0] == pytest.approx(0, abs=1e-4)  # step 0: the policy is its own reference
    assert history.mean("rewards/margins", last=4) > 0.5
    assert history.mean("rewards/accuracies", last=4) == 1.0
    assert history.mean("loss", last=4) < 0.5 * math.log(2)
    expected = {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    }
    assert expected <= set(history.keys())


def test_dpo_metrics_keep_each_side_under_its_own_name():
    chosen_logps, rejected_logps = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -5.0])
    chosen_rewards, rejected_rewards = torch.tensor([0.5, 0.0]), torch.tensor([-0.5, 0.2])
    metrics = dpo_metrics(chosen_logps, rejected_logps, chosen_rewards, rejected_rewards)
    assert metrics == pytest.approx(
        {
            "logps/chosen": -1.5,
            "logps/rejected": -4.0,  # each side's mean, never the other's
            "rewards/chosen": 0.25,
            "rewards/rejected": -0.15,
            "rewards/accuracies": 0.5,  # the second pair is ordered the wrong way round
            "rewards/margins": (1.0 - 0.2) / 2,
        }
    )


def test_a_tie_of_implicit_rewards_is_not_an_accurate_pair():
    # Two pairs tie, as every pair does at step 0, where the policy is its own reference; one is ordered right.
    chosen_rewards, rejected_rewards = torch.zeros(3), torch.tensor([0.0, -1.0, 0.0])
    metrics = dpo_metrics(torch.full((3,), -1.0), torch.full((3,), -2.0), chosen_rewards, rejected_rewards)
    assert metrics["rewards/accuracies"] == pytest.approx(1 / 3)  # as TRL counts it: r_c > r_r


def test_first_step_logs_the_policy_log_probs_of_each_side(tokenizer):
    policy = random_model("llama", len(tokenizer))
    with torch.no_grad():  # before any update: what the first step sees
        chosen = sequence_logprobs(policy, **collate(tokenizer, PAIRS["prompt"], PAIRS["chosen"]))
        rejected = sequence_logprobs(policy, **collate(tokenizer, PAIRS["prompt"], PAIRS["rejected"]))
    assert abs(chosen.mean() - rejected.mean()) > 1.0  # the sides differ, so a swap cannot pass
    history = train_dpo(policy, tokenizer, PAIRS, config(batch_size=4, num_epochs=1))  # one step, every pair
    assert history["logps/chosen"][0] == pytest.approx(chosen.mean().item(), abs=1e-4)
    assert history["logps/rejected"][0] == pytest.approx(rejected.mean().item(), abs=1e-4)


def test_reference_log_probs_are_computed_once_before_training(tokenizer):
    policy, ref_model = random_model("llama", len(tokenizer)), random_model("llama", len(tokenizer), seed=1)
    policy_calls, ref_calls = ForwardCounter(policy), ForwardCounter(ref_model)
    history = train_dpo(policy, tokenizer, PAIRS, config(num_epochs=3), ref_model=ref_model)
    assert ref_calls.calls == 1  # 8 rows in one no-grad batch, however many epochs
    assert policy_calls.calls == len(history["loss"]) == 3 * 2  # one forward pass per step: chosen and rejected
    assert not ref_model.training


def test_without_ref_model_the_starting_policy_is_the_reference(tokenizer):
    policy = random_model("gpt2", len(tokenizer))
    counter = ForwardCounter(policy)
    history = train_dpo(policy, tokenizer, PAIRS, config(num_epochs=1))
    assert counter.calls == 1 + 2  # one reference pass, then two steps
    assert history["rewards/chosen"][0] == pytest.approx(0, abs=1e-5)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-5)


def test_precomputed_reference_columns_are_used_instead_of_a_pass(tokenizer):
    ref_model, policy = random_model("qwen2", len(tokenizer), seed=1), random_model("qwen2", len(tokenizer), seed=2)
    with_reference = precompute_ref_logps(ref_model, tokenizer, PAIRS)
    with torch.no_grad():
        ref_chosen = sequence_logprobs(ref_model, **collate(tokenizer, PAIRS["prompt"], PAIRS["chosen"]))
        ref_rejected = sequence_logprobs(ref_model, **collate(tokenizer, PAIRS["prompt"], PAIRS["rejected"]))
        policy_chosen = sequence_logprobs(policy, **collate(tokenizer, PAIRS["prompt"], PAIRS["chosen"]))
        policy_rejected = sequence_logprobs(policy, **collate(tokenizer, PAIRS["prompt"], PAIRS["rejected"]))
    assert with_reference["ref_chosen_logps"] == pytest.approx(ref_chosen.tolist(), abs=1e-5)
    counter = ForwardCounter(policy)
    history = train_dpo(policy, tokenizer, with_reference, config(batch_size=4, num_epochs=1))
    assert counter.calls == 1  # the training step only
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    assert history["loss"][0] == pytest.approx(np.mean(log_sigmoid_losses(h.tolist(), 0.1)), abs=1e-5)


def test_simpo_trains_without_any_reference(tokenizer):
    policy = random_model("llama", len(tokenizer))
    counter = ForwardCounter(policy)
    history = train_dpo(policy, tokenizer, PAIRS, config(loss_type="simpo", beta=2.0, num_epochs=10))
    assert counter.calls == len(history["loss"])  # no reference pass
    assert history.mean("rewards/margins", last=4) > history["rewards/margins"][0]


def test_reference_logprobs_match_one_answer_at_a_time(tokenizer):
    model = random_model("llama", len(tokenizer))
    counter = ForwardCounter(model)
    chosen, rejected = reference_logprobs(model, encode_pairs(tokenizer, PAIRS), tokenizer.pad_token_id, batch_size=3)
    assert counter.calls == 3  # 8 answers, 3 at a time
    with torch.no_grad():
        alone = {
            side: [
                sequence_logprobs(model, **collate(tokenizer, [p], [c])).item()
                for p, c in zip(PAIRS["prompt"], PAIRS[side])
            ]
            for side in ("chosen", "rejected")
        }
    assert chosen == pytest.approx(alone["chosen"], abs=1e-5)
    assert rejected == pytest.approx(alone["rejected"], abs=1e-5)


def test_pair_loader_groups_pairs_by_their_longer_answer():
    lengths = np.random.default_rng(0).integers(5, 40, size=200)
    pairs = [
        {
            "chosen": {"input_ids": [1] * n, "completion_mask": [1] * n},
            "rejected": {"input_ids": [1] * (n // 2), "completion_mask": [1] * (n // 2)},
            "index": i,
        }
        for i, n in enumerate(lengths)
    ]

    def epoch(loader):
        return [batch["index"].tolist() for batch in loader]

    def padded_tokens(loader):  # chosen side: every row of a batch pads to its longest answer
        return sum(len(batch["index"]) * batch["input_ids"].shape[1] for batch in loader)

    loader = pair_loader(pairs, 0, config(batch_size=16))  # DPOConfig groups by length by default
    first_epoch, second_epoch = epoch(loader), epoch(loader)
    assert sorted(sum(first_epoch, [])) == sorted(sum(second_epoch, [])) == list(range(200))
    assert sorted(map(len, first_epoch)) == [8] + [16] * 12
    assert first_epoch != second_epoch  # a new batch order every epoch
    assert epoch(pair_loader(pairs, 0, config(batch_size=16))) == first_epoch  # seeded
    assert padded_tokens(loader) < 1.1 * sum(lengths)
    random_batches = pair_loader(pairs, 0, config(batch_size=16, group_by_length=False))
    assert padded_tokens(random_batches) > 1.3 * sum(lengths)  # random batches of 16 pad to about 1.5× the tokens


def test_encoded_pairs_train_exactly_like_the_dataset_and_are_left_as_they_were(tokenizer):
    pairs = encode_pairs(tokenizer, PAIRS)
    before = copy.deepcopy(pairs)
    from_dataset = train_dpo(random_model("llama", len(tokenizer)), tokenizer, PAIRS, config(num_epochs=2))
    from_pairs = train_dpo(random_model("llama", len(tokenizer)), tokenizer, pairs, config(num_epochs=2))
    assert from_pairs.steps == from_dataset.steps
    assert pairs == before  # the reference log-probs went into new dicts, not the caller's
    with pytest.raises(TypeError, match="pass a datasets.Dataset.*or the non-empty list that encode_pairs"):
        train_dpo(random_model("llama", len(tokenizer)), tokenizer, [dict(row) for row in PAIRS], config())
    with pytest.raises(ValueError, match="max_length is 8"):
        train_dpo(random_model("llama", len(tokenizer)), tokenizer, pairs, config(max_length=8))


def test_train_and_evaluate_encodes_the_pairs_once(tokenizer, world, monkeypatch):
    from rlhf_edu import direct_alignment

    calls = []
    monkeypatch.setattr(
        direct_alignment, "encode_pairs", lambda *args, **kwargs: calls.append(1) or encode_pairs(*args, **kwargs)
    )
    train_and_evaluate(
        random_model("llama", len(tokenizer)),
        tokenizer,
        PAIRS,
        [config(beta=0.1, num_epochs=1), config(beta=1.0, num_epochs=1)],
        world,
        ["add 1 and 2"],
    )
    assert len(calls) == 1


def sequence_classifier(tokenizer):
    """A tiny reward-model-shaped network: one score per text, and no language-model head."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        num_labels=1,
    )
    return LlamaForSequenceClassification(config)


@pytest.mark.parametrize("role", ["policy", "ref_model"])
def test_a_model_without_a_language_model_head_is_refused_by_its_role(tokenizer, role):
    with pytest.raises(
        TypeError, match=f"^{role} is a LlamaForSequenceClassification, which has no language-model head"
    ):
        if role == "policy":
            train_dpo(sequence_classifier(tokenizer), tokenizer, PAIRS, config())
        else:
            precompute_ref_logps(sequence_classifier(tokenizer), tokenizer, PAIRS)


def test_precomputed_reference_log_probs_refuse_overlong_answers_and_score_in_batches(tokenizer):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(ValueError, match="tokens long but max_length is 8: raise max_length"):
        precompute_ref_logps(model, tokenizer, PAIRS, max_length=8)
    counter = ForwardCounter(model)
    precompute_ref_logps(model, tokenizer, PAIRS, batch_size=3)
    assert counter.calls == 3  # 8 answers, 3 at a time


def test_one_pair_is_enough_to_train_on(tokenizer):
    history = train_dpo(random_model("llama", len(tokenizer)), tokenizer, PAIRS.select([0]), config(num_epochs=1))
    assert history["loss"] == pytest.approx([math.log(2)], abs=1e-5)  # one step, against the policy's own start


def test_the_progress_bar_names_the_loss(tokenizer, capsys):
    train_dpo(
        random_model("llama", len(tokenizer)), tokenizer, PAIRS, config(loss_type="hinge", num_epochs=1, progress=True)
    )
    assert "DPO (hinge)" in capsys.readouterr().err


def rows_of(batch):
    """The encoded rows of a right-padded batch, padding dropped."""
    return [
        {"input_ids": ids[real.bool()].tolist(), "completion_mask": completion[real.bool()].tolist()}
        for ids, real, completion in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    ]


@pytest.mark.parametrize(
    "settings",
    [{"loss_type": "sigmoid", "label_smoothing": 0.2}, {"loss_type": "simpo", "beta": 2.5, "simpo_gamma": 1.0}],
)
def test_a_batch_loss_is_the_mean_of_its_pairs_losses_by_hand(tokenizer, settings):
    policy = random_model("llama", len(tokenizer))
    batch = one_batch(tokenizer)
    loss, _ = dpo_batch_loss(policy, config(**settings), batch)
    rows = rows_of(batch)
    if settings["loss_type"] == "simpo":  # −log σ(β·(ȳ_c − ȳ_r) − γ), ȳ the per-token mean log-prob
        means = [logprob_alone(policy, row) / sum(row["completion_mask"]) for row in rows]
        margins = [2.5 * (c - r) - 1.0 for c, r in zip(means[:4], means[4:])]
        expected = [math.log(1 + math.exp(-m)) for m in margins]
    else:  # cDPO with ε = 0.2 and β = 0.1 on the summed log-probs
        logps = [logprob_alone(policy, row) for row in rows]
        h = [
            (c - ref_c) - (r - ref_r)
            for c, r, ref_c, ref_r in zip(
                logps[:4], logps[4:], batch["ref_chosen_logps"].tolist(), batch["ref_rejected_logps"].tolist()
            )
        ]
        expected = log_sigmoid_losses(h, 0.1, 0.2)
    assert loss.item() == pytest.approx(np.mean(expected), abs=1e-5)


def test_train_dpo_refuses_wrong_datasets(tokenizer):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(ValueError, match="no rejected column.*need prompt, chosen and rejected"):
        train_dpo(model, tokenizer, PAIRS.remove_columns("rejected"), config())
    with pytest.raises(ValueError, match="dataset is empty"):
        train_dpo(model, tokenizer, PAIRS.select([]), config())
    with pytest.raises(ValueError, match="max_length is 8"):
        train_dpo(model, tokenizer, PAIRS, config(max_length=8))


# --- evaluation ----------------------------------------------------------------------------------------
def test_train_and_evaluate_trains_one_copy_per_config_and_leaves_the_sft_model_alone(tokenizer, world):
    sft_model = random_model("llama", len(tokenizer))
    before = [p.detach().clone() for p in sft_model.parameters()]
    prompts = world.prompts(6, split="test")
    runs = train_and_evaluate(sft_model, tokenizer, PAIRS, [config(beta=0.1), config(beta=1.0)], world, prompts)
    assert [run.config.beta for run in runs] == [0.1, 1.0]
    for run in runs:
        assert run.evaluation.prompts == prompts and len(run.evaluation.completions) == 6
        assert run.evaluation.gold_reward == pytest.approx(
            np.mean(world.gold_reward(prompts, run.evaluation.completions))
        )
        assert np.isfinite(run.evaluation.kl) and len(run.history["loss"]) == 2 * 5
    assert all(torch.equal(p, b) for p, b in zip(sft_model.parameters(), before))


def test_every_run_is_evaluated_on_samples_drawn_with_the_seed(tokenizer, world):
    sft_model, cfg = random_model("llama", len(tokenizer)), config(num_epochs=1)
    prompts = ["add 1 and 2", "review the soup"]
    policy = copy.deepcopy(sft_model)
    train_dpo(policy, tokenizer, PAIRS, cfg)  # what the run trains, replayed
    expected = {seed: evaluate_policy(policy, sft_model, tokenizer, world, prompts, seed=seed) for seed in (0, 7)}
    assert expected[0].completions != expected[7].completions  # the seed shows in the samples
    for seed, given in ((0, {}), (7, {"seed": 7})):  # 0 unless told
        (run,) = train_and_evaluate(sft_model, tokenizer, PAIRS, [cfg], world, prompts, **given)
        assert run.evaluation.completions == expected[seed].completions
        assert run.evaluation.log_ratios == pytest.approx(expected[seed].log_ratios, abs=1e-6)


def test_runs_use_the_reference_columns_they_are_given_else_compute_them_once(tokenizer, world):
    sft_model, prompts = random_model("llama", len(tokenizer)), ["add 1 and 2"]
    counter = ForwardCounter(sft_model)  # the copies that train count apart
    train_and_evaluate(sft_model, tokenizer, PAIRS.select([0]), [config(), config(beta=1.0)], world, prompts)
    assert counter.calls == 1 + 2  # one reference pass for both runs, then each run's KL
    ref_model = random_model("llama", len(tokenizer), seed=1)
    counter.calls = 0
    (run,) = train_and_evaluate(
        sft_model, tokenizer, precompute_ref_logps(ref_model, tokenizer, PAIRS), [config(batch_size=4)], world, prompts
    )
    assert counter.calls == 1  # the KL only
    with torch.no_grad():
        sft_chosen = sequence_logprobs(sft_model, **collate(tokenizer, PAIRS["prompt"], PAIRS["chosen"]))
        ref_chosen = sequence_logprobs(ref_model, **collate(tokenizer, PAIRS["prompt"], PAIRS["chosen"]))
    # Step 0 measures the implicit reward against the given reference, not the SFT model.
    assert run.history["rewards/chosen"][0] == pytest.approx(0.1 * (sft_chosen - ref_chosen).mean().item(), abs=1e-5)


def test_runs_keep_the_terms_of_their_kl(tokenizer, world):
    runs = train_and_evaluate(
        random_model("llama", len(tokenizer)),
        tokenizer,
        PAIRS,
        [config(num_epochs=1)],
        world,
        world.prompts(5, split="test"),
    )
    log_ratios = runs[0].evaluation.log_ratios
    assert len(log_ratios) == 5 and np.mean(log_ratios) == pytest.approx(runs[0].evaluation.kl)


def test_displacement_plot_shows_log_ratio_changes_against_the_margin():
    history = History()
    for step in range(4):
        history.log(**{"rewards/chosen": -0.1 * step, "rewards/rejected": -0.3 * step})
    figure = plot_displacement(history, beta=0.1, smooth=1)
    over_steps, against_margin = figure.axes
    chosen, rejected, margin = (line.get_ydata() for line in over_steps.lines[:3])
    assert chosen.tolist() == pytest.approx([0, -1, -2, -3]) and rejected.tolist() == pytest.approx([0, -3, -6, -9])
    assert margin.tolist() == pytest.approx([0, 2, 4, 6])
    assert against_margin.lines[0].get_xdata().tolist() == pytest.approx([0, 2, 4, 6])


def test_frontier_plot_has_one_point_per_run_and_the_sft_model_at_zero_kl():
    sft = PolicyEvaluation(["p"], ["c"], [1.0], {}, 0.0)
    runs = [
        Run(DPOConfig(beta=beta), PolicyEvaluation(["p"], ["c"], [gold], {}, kl), History())
        for beta, gold, kl in ((0.1, 1.5, 3.0), (1.0, 1.2, 0.5))
    ]
    ax = plot_frontier(runs, sft, highlight=1.0).axes[0]
    points = [line.get_xydata().tolist() for line in ax.lines if line.get_marker() in ("s", "o")]
    assert points == [[[0.0, 1.0]], [[3.0, 1.5]], [[0.5, 1.2]]]  # SFT and the two runs
    assert [c.get_offsets().tolist() for c in ax.collections if c.get_offsets().size == 2][-1] == [[0.5, 1.2]]
    assert ax.get_legend_handles_labels()[1] == ["SFT (β → ∞)", "DPO β=0.1", "DPO β=1"]


def test_frontier_points_carry_the_standard_errors_of_their_kl_and_gold():
    sft = PolicyEvaluation(["p"] * 4, ["c"] * 4, [1.0, 2.0, 1.0, 2.0], {}, 0.0, [0.0] * 4)
    evaluation = PolicyEvaluation(["p"] * 4, ["c"] * 4, [1.0, 3.0, 1.0, 3.0], {}, 2.0, [1.0, 3.0, 1.0, 3.0])
    assert evaluation_stderrs(evaluation) == pytest.approx((math.sqrt(4 / 3) / 2, math.sqrt(4 / 3) / 2))
    assert evaluation_stderrs(PolicyEvaluation(["p"], ["c"], [1.0], {}, 0.0)) == (0.0, 0.0)
    ax = plot_frontier([Run(DPOConfig(beta=0.1), evaluation, History())], sft).axes[0]
    bars = [collection.get_segments() for collection in ax.collections if hasattr(collection, "get_segments")]
    spans = sorted(
        round(float(np.ptp(segment[:, axis])), 6)
        for segments in bars
        for segment in segments
        for axis in (0, 1)
        if np.ptp(segment[:, axis]) > 0
    )
    assert spans == pytest.approx([math.sqrt(1 / 3), math.sqrt(4 / 3), math.sqrt(4 / 3)])  # ± 1 s.e.: twice it long


@pytest.mark.parametrize(
    "gold_rewards, log_ratios, expected",
    [
        ([1.0, 3.0], [0.0, 2.0], (1.0, 1.0)),  # two samples: s = √2, s/√2 = 1
        ([1.0, 3.0, 2.0], [], (0.0, math.sqrt(1 / 3))),  # the KL's terms were not kept
        ([1.0, 3.0], [0.5], (0.0, 1.0)),  # fewer than two terms of the KL
    ],
)
def test_each_stderr_needs_two_values_of_its_own(gold_rewards, log_ratios, expected):
    n = len(gold_rewards)
    evaluation = PolicyEvaluation(["p"] * n, ["c"] * n, gold_rewards, {}, 0.0, log_ratios)
    assert evaluation_stderrs(evaluation) == pytest.approx(expected)


def test_tabular_result_plots_three_bars_per_arm():
    result = train_tabular_dpo(REF_PROBS, REWARDS, beta=1.0, num_steps=5)
    ax = result.plot().axes[0]
    assert len(ax.patches) == 3 * len(REF_PROBS)
    assert [p.get_height() for p in ax.patches[8:]] == pytest.approx(result.optimum.tolist())


# --- DPO's NLL regularizer (eq:dpo_nll), TRL's rpo_alpha ----------------------------------------------
def test_chosen_nll_is_the_length_normalised_negative_log_prob():
    nll = chosen_nll_loss(torch.tensor([-6.0, -2.0]), torch.tensor([3, 4]))
    assert nll.tolist() == pytest.approx([2.0, 0.5])
    with pytest.raises(ValueError, match="chosen_logps \\(2,\\) and chosen_lengths \\(3,\\) must have one shape"):
        chosen_nll_loss(torch.zeros(2), torch.ones(3))


def one_batch(tokenizer):
    pairs = precompute_ref_logps(random_model("llama", len(tokenizer), seed=1), tokenizer, PAIRS)
    return next(iter(pair_loader(encode_pairs(tokenizer, pairs), tokenizer.pad_token_id, config(batch_size=4))))


@pytest.mark.parametrize("loss_type, beta", [("sigmoid", 0.1), ("ipo", 0.1), ("simpo", 2.0)])
def test_rpo_alpha_adds_alpha_times_the_chosen_nll_and_nothing_at_zero(tokenizer, loss_type, beta):
    policy = random_model("llama", len(tokenizer))
    batch = one_batch(tokenizer)
    losses = {
        alpha: dpo_batch_loss(policy, config(loss_type=loss_type, beta=beta, rpo_alpha=alpha), batch)
        for alpha in (None, 0.0, 0.7)
    }
    assert losses[0.0][0].item() == losses[None][0].item()  # α = 0 is DPO exactly
    assert "nll_loss" not in losses[None][1] and "nll_loss" in losses[0.0][1]  # logged, as TRL does, unless None
    # By hand: −log π(y_c|x)/|y_c| for each chosen answer, from one answer at a time, averaged over the pairs.
    by_hand = []
    for row in encode_pairs(tokenizer, PAIRS):
        chosen = row["chosen"]
        by_hand.append(-logprob_alone(policy, chosen) / sum(chosen["completion_mask"]))
    assert losses[0.7][1]["nll_loss"] == pytest.approx(np.mean(by_hand), abs=1e-5)
    assert losses[0.7][0].item() - losses[None][0].item() == pytest.approx(0.7 * np.mean(by_hand), abs=1e-5)


def test_a_dpo_run_with_rpo_alpha_logs_the_nll_and_keeps_the_chosen_answers_likelier(tokenizer):
    runs = {
        alpha: train_dpo(
            random_model("llama", len(tokenizer)), tokenizer, PAIRS, config(num_epochs=10, rpo_alpha=alpha)
        )
        for alpha in (None, 1.0)
    }
    assert len(runs[1.0]["nll_loss"]) == len(runs[1.0]["loss"])
    # Step 0: the policy is its own reference, so the DPO part is log 2 and the rest is α × the NLL.
    assert runs[1.0]["loss"][0] == pytest.approx(math.log(2) + runs[1.0]["nll_loss"][0], abs=1e-5)
    assert runs[1.0].mean("logps/chosen", last=4) > runs[None].mean("logps/chosen", last=4)
