"""Tests for rlhf_edu.bandit: real completions as arms, and a softmax policy that learns the closed-form π*."""

import math

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.text import Text

from rlhf_edu import bandit
from rlhf_edu.bandit import completion_bandit, plot_bandit_runs, reinforce_surrogate, train_bandit
from rlhf_edu.objective import kl_regularized_optimum, optimal_value
from tests.conftest import logprob_alone, random_model
from tests.test_objective import objective_by_hand, random_problem

matplotlib.use("Agg")

F64 = torch.float64


# --- the bandit trainer -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "reinforce"])
def test_train_bandit_reaches_the_optimum(method):
    ref_probs, rewards = random_problem(8, seed=9)
    run = train_bandit(ref_probs, rewards, 0.1, method)
    assert (run.probs - run.optimum).abs().sum() / 2 < 1e-3
    assert torch.allclose(run.optimum, kl_regularized_optimum(ref_probs, rewards, 0.1))
    assert set(run.history) == {"objective", "kl", "expected_reward", "tv_to_optimum"}
    assert all(values.shape == (2001,) for values in run.history.values())
    assert run.history["kl"][0].item() == pytest.approx(0.0, abs=1e-12)  # training starts at π_ref
    assert run.history["objective"][-1].item() == pytest.approx(optimal_value(ref_probs, rewards, 0.1).item(), abs=1e-6)


def test_reinforce_gradient_is_unbiased_even_with_two_samples():
    ref_probs, rewards = random_problem(4, seed=11)
    beta = 0.3
    logits = torch.randn(4, generator=torch.Generator().manual_seed(0), dtype=F64, requires_grad=True)
    exact = torch.autograd.grad(objective_by_hand(torch.softmax(logits, -1), ref_probs, rewards, beta), logits)[0]
    generator = torch.Generator().manual_seed(0)
    estimates = torch.stack(
        [
            torch.autograd.grad(reinforce_surrogate(logits, ref_probs, rewards, beta, 2, generator), logits)[0]
            for _ in range(4000)
        ]
    )  # (4000, 4)
    standard_error = estimates.std(0) / len(estimates) ** 0.5
    # Dividing the mean-baseline estimate by N instead of N − 1 would halve it: ~20 standard errors off here.
    assert ((estimates.mean(0) - exact).abs() <= 4 * standard_error).all()


def test_reinforce_is_reproducible_with_a_seed():
    ref_probs, rewards = random_problem(5, seed=10)
    first, second = (train_bandit(ref_probs, rewards, 0.5, "reinforce", steps=20, seed=3) for _ in range(2))
    assert torch.equal(first.probs, second.probs)


# --- RLHF as a bandit over completions ----------------------------------------------------------------------------


def logprob_by_hand(model, tokenizer, prompt, completion):
    """log π(y | x) from one unpadded forward pass per sequence, without the package's collate or logprobs."""
    user = [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, return_dict=False)
    ids = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": completion}], return_dict=False)
    completion_mask = [int(t >= len(prompt_ids)) for t in range(len(ids))]
    return logprob_alone(model, {"input_ids": ids, "completion_mask": completion_mask})


def test_completion_bandit_renormalises_the_model_probabilities_of_its_arms(model, tokenizer, world):
    prompt = "review the pizza"
    completions, ref_probs, rewards = completion_bandit(model, tokenizer, world, prompt, k=6, max_new_tokens=5)
    assert len(completions) >= 2 and len(set(completions)) == len(completions)
    logps = torch.tensor([logprob_by_hand(model, tokenizer, prompt, c) for c in completions], dtype=F64)
    assert torch.allclose(ref_probs, logps.exp() / logps.exp().sum(), rtol=1e-4, atol=0)
    assert rewards.tolist() == world.gold_reward([prompt] * len(completions), completions)
    assert ref_probs.dtype == rewards.dtype == F64 and (ref_probs.diff() <= 0).all()  # most likely arm first


def test_completion_bandit_keeps_each_distinct_sentence_once(tokenizer, world, monkeypatch):
    model = random_model("llama", len(tokenizer))
    samples = ["the pizza is good", "", "the pizza is bad", "the pizza is good", "  "]
    monkeypatch.setattr(bandit, "generate_completions", lambda *args, **kwargs: samples)
    completions, ref_probs, _ = completion_bandit(model, tokenizer, world, "review the pizza", k=5)
    assert sorted(completions) == ["the pizza is bad", "the pizza is good"]  # sampled twice, still one arm
    ratio = math.exp(
        logprob_by_hand(model, tokenizer, "review the pizza", completions[0])
        - logprob_by_hand(model, tokenizer, "review the pizza", completions[1])
    )
    assert (ref_probs[0] / ref_probs[1]).item() == pytest.approx(ratio, rel=1e-4)
    monkeypatch.setattr(bandit, "generate_completions", lambda *args, **kwargs: ["the pizza is good"] * 4)
    with pytest.raises(ValueError, match="1 distinct non-empty completion.*raise k"):
        completion_bandit(model, tokenizer, world, "review the pizza", k=4)
    with pytest.raises(ValueError, match="k must be >= 2"):
        completion_bandit(model, tokenizer, world, "review the pizza", k=1)


# --- pictures -----------------------------------------------------------------------------------------------------


def short_runs():
    ref_probs, rewards = random_problem(4, seed=18)
    runs = {method: train_bandit(ref_probs, rewards, 0.5, method, steps=30) for method in ("exact", "reinforce")}
    return runs, optimal_value(ref_probs, rewards, 0.5).item()


def test_plot_bandit_runs_draws_one_curve_per_run_and_the_optimal_value():
    runs, optimal = short_runs()
    fig = plot_bandit_runs(runs, optimal=optimal)
    distance, values = fig.axes
    assert len(distance.lines) == 2 and len(values.lines) == 3
    assert values.lines[0].get_ydata().tolist() == pytest.approx(runs["exact"].history["objective"].tolist())
    assert "max J (closed form)" in [t.get_text() for t in fig.findobj(Text)]


def test_plot_bandit_runs_draws_on_the_given_axes():
    runs, _ = short_runs()
    fig, axes = plt.subplots(1, 2)
    assert plot_bandit_runs(runs, axes=axes) is fig
    assert [len(ax.lines) for ax in axes] == [2, 2] and plt.get_fignums() == [fig.number]
    with pytest.raises(ValueError, match="plot_bandit_runs draws two panels"):
        plot_bandit_runs(runs, axes=[*axes, axes[0]])


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: train_bandit([0.5, 0.5], [1.0, 2.0], 0.1, "ppo"), ValueError, "unknown method 'ppo': use one of"),
        (lambda: train_bandit([0.5, 0.5], [1.0, 2.0], 0.1, lr=1e6), ValueError, "lr must be <= 10, got 1e\\+06"),
        (lambda: train_bandit([0.5, 0.5], [1.0, 2.0], 0.1, lr="0.1"), TypeError, "lr must be a number"),
        (lambda: train_bandit([1.0, 0.0], [1.0, 2.0], 0.1), ValueError, "needs ref_probs > 0"),
        (lambda: train_bandit([0.5, 0.5], [1.0, 2.0], 0.1, steps=0), ValueError, "steps must be >= 1, got 0"),
        (lambda: train_bandit([0.5, 0.5], [1.0, 2.0], 0.0), ValueError, "beta must be > 0"),
        (lambda: train_bandit([[0.5, 0.5]], [1.0, 2.0], 0.1), ValueError, "train_bandit takes one prompt"),
        (
            lambda: train_bandit([0.5, 0.5], [1.0, 2.0], 0.1, "reinforce", num_samples=1),
            ValueError,
            "num_samples must be >= 2, got 1: the mean baseline needs two samples",
        ),
        (
            lambda: train_bandit([0.5, 0.5], [1.0, 2.0], 0.1, num_samples=2.5),
            TypeError,
            "num_samples must be an integer, got 2.5",
        ),
        (
            lambda: reinforce_surrogate(torch.zeros(2), [0.5, 0.5], [1.0, 2.0], 0.1, 1),
            ValueError,
            "num_samples must be >= 2",
        ),
        (
            lambda: reinforce_surrogate(torch.zeros(3), [0.5, 0.5], [1.0, 2.0], 0.1, 8),
            ValueError,
            "shapes do not match",
        ),
        (
            lambda: reinforce_surrogate(torch.zeros(2, 2), [0.5, 0.5], [1.0, 2.0], 0.1, 8),
            ValueError,
            r"reinforce_surrogate takes one prompt.*logits \(2, 2\)",
        ),
        (
            lambda: reinforce_surrogate(torch.tensor([0.0, math.nan]), [0.5, 0.5], [1.0, 2.0], 0.1, 8),
            ValueError,
            "logits must be finite",
        ),
    ],
)
def test_bad_input_says_what_is_wrong(call, error, message):
    with pytest.raises(error, match=message):
        call()
