"""Tests for rlhf_edu.objective, each checked against an independent computation."""

import itertools
import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from rlhf_edu.objective import (
    argmax_policy,
    as_tensors,
    best_policy_within_kl,
    beta_for_kl_budget,
    expected_reward,
    kl_divergence,
    kl_regularized_optimum,
    max_kl_budget,
    max_supported_reward,
    optimal_value,
    plot_arms,
    plot_kl_budget,
    plot_kl_regularized_optimum,
    plot_reward_kl_frontier,
    regularized_objective,
    reward_kl_frontier,
)

matplotlib.use("Agg")

F64 = torch.float64


def random_problem(num_actions: int = 6, seed: int = 0, batch: tuple[int, ...] = ()):
    """A reference policy with full support and rewards in [0, 1), float64."""
    generator = torch.Generator().manual_seed(seed)
    ref_probs = torch.softmax(torch.randn(*batch, num_actions, generator=generator, dtype=F64), -1)
    rewards = torch.rand(*batch, num_actions, generator=generator, dtype=F64)
    return ref_probs, rewards


def objective_by_hand(probs, ref_probs, rewards, beta):
    """Σ π r − β Σ π log(π / π_ref), written out without the module, for policies with full support."""
    return (probs * rewards).sum(-1) - beta * (probs * (probs / ref_probs).log()).sum(-1)


def maximise_numerically(ref_probs, rewards, beta):
    """Maximise eq:rlhf_opt_eq over softmax logits with L-BFGS, sharing no code with the module."""
    logits = torch.zeros_like(ref_probs, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [logits], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = -objective_by_hand(torch.softmax(logits, -1), ref_probs, rewards, beta).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.softmax(logits.detach(), -1)


# --- KL divergence -----------------------------------------------------------------------------------------------


def test_kl_divergence_matches_a_python_loop_including_zeros():
    p = [0.5, 0.0, 0.3, 0.2, 0.0]
    q = [0.1, 0.4, 0.3, 0.1, 0.1]
    by_hand = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
    assert kl_divergence(torch.tensor(p, dtype=F64), torch.tensor(q, dtype=F64)).item() == pytest.approx(
        by_hand, abs=1e-12
    )


def test_kl_divergence_is_inf_where_q_rules_out_an_action_p_takes():
    p = torch.tensor([0.5, 0.5], dtype=F64)
    q = torch.tensor([1.0, 0.0], dtype=F64)
    assert kl_divergence(p, q).item() == math.inf
    assert kl_divergence(q, p).item() == pytest.approx(math.log(2))  # q's zero contributes 0, not NaN


def test_kl_divergence_is_batched_over_leading_dims():
    p, _ = random_problem(5, seed=1, batch=(3, 4))
    q, _ = random_problem(5, seed=2, batch=(3, 4))
    kl = kl_divergence(p, q)
    assert kl.shape == (3, 4)
    for i, j in itertools.product(range(3), range(4)):
        by_hand = sum(a * math.log(a / b) for a, b in zip(p[i, j].tolist(), q[i, j].tolist()))
        assert kl[i, j].item() == pytest.approx(by_hand, abs=1e-12)
    assert kl_divergence(p, p).abs().max() < 1e-15


# --- expected reward and the regularised objective ------------------------------------------------------------------


def test_expected_reward_and_objective_by_hand():
    probs, ref_probs, rewards = [0.25, 0.75], [0.5, 0.5], [1.0, 3.0]
    assert expected_reward(probs, rewards).item() == pytest.approx(0.25 + 2.25)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert regularized_objective(probs, ref_probs, rewards, 0.2).item() == pytest.approx(2.5 - 0.2 * kl, abs=1e-6)


def test_dtype_is_preserved_and_lists_are_accepted():
    ref_probs, rewards = random_problem()
    assert kl_regularized_optimum(ref_probs.float(), rewards.float(), 0.1).dtype == torch.float32
    assert kl_regularized_optimum(ref_probs, rewards, 0.1).dtype == F64
    assert expected_reward(np.array([0.5, 0.5]), [0, 1]).item() == pytest.approx(0.5)  # int rewards, numpy probs


# --- the closed-form optimum --------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 0.3, 1.0])
def test_optimum_matches_numerical_maximisation(beta):
    ref_probs, rewards = random_problem(6, seed=3, batch=(2,))
    assert torch.allclose(
        kl_regularized_optimum(ref_probs, rewards, beta), maximise_numerically(ref_probs, rewards, beta), atol=1e-5
    )


def test_optimum_matches_a_brute_force_grid_on_three_arms():
    ref_probs = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    rewards = torch.tensor([0.0, 1.0, 0.6], dtype=F64)
    beta, step = 0.4, 1 / 400
    grid = [(i * step, j * step, 1 - (i + j) * step) for i in range(1, 400) for j in range(1, 400 - i)]
    grid = torch.tensor(grid, dtype=F64)  # (G, 3), every interior point of the simplex on the grid
    best = grid[objective_by_hand(grid, ref_probs, rewards, beta).argmax()]
    assert torch.allclose(kl_regularized_optimum(ref_probs, rewards, beta), best, atol=step)


def test_optimum_makes_the_regularized_reward_equal_across_actions():
    ref_probs, rewards = random_problem(seed=4)
    beta = 0.25
    optimum = kl_regularized_optimum(ref_probs, rewards, beta)
    # The first-order condition of eq:rlhf_opt_eq: r(a) − β log(π*(a)/π_ref(a)) = β log Z for every a.
    regularized = rewards - beta * (optimum / ref_probs).log()
    assert torch.allclose(regularized, optimal_value(ref_probs, rewards, beta).expand(6), atol=1e-12)


def test_optimal_value_is_the_objective_at_the_optimum_and_beats_random_policies():
    ref_probs, rewards = random_problem(seed=5)
    beta = 0.2
    value = optimal_value(ref_probs, rewards, beta)
    optimum = kl_regularized_optimum(ref_probs, rewards, beta)
    assert value.item() == pytest.approx(regularized_objective(optimum, ref_probs, rewards, beta).item(), abs=1e-12)
    policies = torch.distributions.Dirichlet(torch.ones(6, dtype=F64)).sample((2000,))  # (2000, 6)
    assert (regularized_objective(policies, ref_probs, rewards, beta) <= value + 1e-12).all()


def test_small_beta_gives_the_argmax_on_the_support_of_ref():
    ref_probs = torch.tensor([0.4, 0.0, 0.35, 0.25], dtype=F64)
    rewards = torch.tensor([0.1, 9.0, 0.7, 0.2], dtype=F64)  # the best reward is on an action ref never takes
    one_hot = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=F64)
    assert torch.allclose(kl_regularized_optimum(ref_probs, rewards, 1e-3), one_hot, atol=1e-100)
    assert torch.equal(kl_regularized_optimum(ref_probs, rewards, 1e-300), one_hot)  # no overflow to NaN
    tied = torch.tensor([0.7, 9.0, 0.7, 0.2], dtype=F64)  # a tie splits the mass in proportion to ref
    assert torch.allclose(
        kl_regularized_optimum(ref_probs, tied, 1e-6), torch.tensor([0.4, 0.0, 0.35, 0.0], dtype=F64) / 0.75
    )
    assert optimal_value(ref_probs, rewards, 1e-300).item() == pytest.approx(0.7)


def test_argmax_policy_is_the_small_beta_limit_restricted_to_the_support_of_ref():
    ref_probs = torch.tensor([[0.4, 0.0, 0.35, 0.25], [0.1, 0.2, 0.3, 0.4]], dtype=F64)
    rewards = torch.tensor([[0.1, 9.0, 0.7, 0.7], [1.0, 0.0, 1.0, 0.5]], dtype=F64)  # out of reach, then ties
    assert max_supported_reward(ref_probs, rewards).tolist() == [[0.7], [1.0]]
    by_hand = torch.tensor([[0.0, 0.0, 0.35, 0.25], [0.1, 0.0, 0.3, 0.0]], dtype=F64)
    by_hand /= by_hand.sum(-1, keepdim=True)
    assert torch.allclose(argmax_policy(ref_probs, rewards), by_hand, atol=1e-15)
    assert torch.allclose(kl_regularized_optimum(ref_probs, rewards, 1e-4), by_hand, atol=1e-12)


def test_one_ref_policy_broadcasts_over_a_batch_of_prompts():
    ref_probs, _ = random_problem(5, seed=12)
    _, rewards = random_problem(5, seed=13, batch=(3,))
    optimum = kl_regularized_optimum(ref_probs, rewards, 0.2)
    assert optimum.shape == (3, 5) and optimal_value(ref_probs, rewards, 0.2).shape == (3,)
    for prompt in range(3):
        assert torch.allclose(optimum[prompt], kl_regularized_optimum(ref_probs, rewards[prompt], 0.2))


def test_large_beta_gives_ref():
    ref_probs, rewards = random_problem(seed=6, batch=(3,))
    assert torch.allclose(kl_regularized_optimum(ref_probs, rewards, 1e8), ref_probs, atol=1e-8)
    assert torch.allclose(optimal_value(ref_probs, rewards, 1e8), expected_reward(ref_probs, rewards), atol=1e-7)


# --- the reward-KL frontier and the KL budget ---------------------------------------------------------------------


def test_frontier_kl_and_reward_rise_as_beta_falls():
    ref_probs, rewards = random_problem(seed=7, batch=(2,))
    betas = torch.logspace(1, -2, 25, dtype=F64)  # decreasing
    kl, reward = reward_kl_frontier(ref_probs, rewards, betas)
    assert kl.shape == reward.shape == (25, 2)
    assert (kl.diff(dim=0) > 0).all() and (reward.diff(dim=0) > 0).all()
    optimum = kl_regularized_optimum(ref_probs, rewards, betas[3].item())
    assert torch.allclose(kl[3], kl_divergence(optimum, ref_probs))
    assert torch.allclose(reward[3], expected_reward(optimum, rewards))


@pytest.mark.parametrize("kl_budget", [1e-4, 0.05, 0.5, 1.5])
def test_beta_for_kl_budget_spends_the_budget(kl_budget):
    ref_probs, rewards = random_problem(seed=8)
    beta = beta_for_kl_budget(ref_probs, rewards, kl_budget)
    assert isinstance(beta, float)
    kl = kl_divergence(kl_regularized_optimum(ref_probs, rewards, beta), ref_probs).item()
    assert kl == pytest.approx(kl_budget, abs=1e-6)


def test_beta_for_kl_budget_works_in_float32():
    ref_probs, rewards = random_problem(seed=8)
    beta = beta_for_kl_budget(ref_probs.float(), rewards.float(), 0.3)
    assert kl_divergence(kl_regularized_optimum(ref_probs, rewards, beta), ref_probs).item() == pytest.approx(
        0.3, abs=1e-6
    )


def test_beta_for_kl_budget_rejects_unreachable_budgets():
    ref_probs = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    rewards = torch.tensor([0.0, 1.0, 0.5], dtype=F64)
    with pytest.raises(ValueError, match=r"most KL any β can spend is 1\.38629 nats.*β → 0"):  # −log 0.25
        beta_for_kl_budget(ref_probs, rewards, 2.0)
    with pytest.raises(ValueError, match="kl_budget must be > 0, got 0: it is in nats"):
        beta_for_kl_budget(ref_probs, rewards, 0.0)
    with pytest.raises(ValueError, match="one prompt"):
        beta_for_kl_budget(ref_probs.expand(2, 3), rewards, 0.1)


def test_max_kl_budget_is_minus_log_the_ref_mass_on_the_best_supported_actions():
    ref_probs = torch.tensor([0.4, 0.0, 0.35, 0.25], dtype=F64)
    rewards = torch.tensor([0.1, 9.0, 0.7, 0.7], dtype=F64)  # the 9.0 is out of π_ref's reach; two arms tie at 0.7
    assert max_kl_budget(ref_probs, rewards).item() == pytest.approx(-math.log(0.6), abs=1e-12)
    ref_batch, reward_batch = random_problem(5, seed=14, batch=(3,))
    by_hand = [-math.log(ref_batch[i, reward_batch[i].argmax()].item()) for i in range(3)]
    assert max_kl_budget(ref_batch, reward_batch).tolist() == pytest.approx(by_hand, abs=1e-12)
    nearly_argmax = kl_regularized_optimum(ref_batch, reward_batch, 1e-5)  # the frontier's far end
    assert kl_divergence(nearly_argmax, ref_batch).tolist() == pytest.approx(by_hand, abs=1e-9)


def test_best_policy_within_kl_beats_a_brute_force_grid_on_three_arms():
    ref_probs = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    rewards = torch.tensor([0.0, 1.0, 0.6], dtype=F64)
    step = 1 / 400
    grid = torch.tensor(
        [(i * step, j * step, 1 - (i + j) * step) for i in range(401) for j in range(401 - i)], dtype=F64
    )  # (G, 3), the simplex, edges included
    grid_kl = (torch.xlogy(grid, grid) - grid * ref_probs.log()).sum(-1)  # (G,) written out, not the module's
    for kl_budget in [0.02, 0.2, 0.8]:
        policy, beta = best_policy_within_kl(ref_probs, rewards, kl_budget)
        reward = expected_reward(policy, rewards).item()
        grid_best = (grid @ rewards)[grid_kl <= kl_budget].max().item()
        assert grid_best <= reward + 1e-12  # no policy on the grid within the budget does better
        assert grid_best >= reward - 0.01  # and the grid gets close, so the reward is reachable
        assert kl_divergence(policy, ref_probs).item() == pytest.approx(kl_budget, abs=1e-6)  # it spends it all
        assert torch.allclose(policy, kl_regularized_optimum(ref_probs, rewards, beta))


def test_best_policy_within_kl_at_the_ends_of_the_budget():
    ref_probs = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    rewards = torch.tensor([0.0, 1.0, 1.0], dtype=F64)  # two best arms: the argmax policy splits them as π_ref does
    policy, beta = best_policy_within_kl(ref_probs, rewards, 0.0)
    assert torch.equal(policy, ref_probs) and beta == math.inf
    for kl_budget in [math.log(2), 5.0]:  # log 2 is exactly max_kl_budget here
        policy, beta = best_policy_within_kl(ref_probs, rewards, kl_budget)
        assert torch.equal(policy, torch.tensor([0.0, 0.5, 0.5], dtype=F64)) and beta == 0.0


# --- pictures -----------------------------------------------------------------------------------------------------


def bar_widths(ax, container: int) -> list[float]:
    return [bar.get_width() for bar in ax.containers[container]]


def test_plot_arms_draws_each_policy_arm_by_arm_first_on_top():
    ref_probs, rewards = random_problem(4, seed=15)
    optimum = kl_regularized_optimum(ref_probs, rewards, 0.2)
    fig = plot_arms(list("abcd"), {"ref": ref_probs, "opt": optimum}, rewards)
    ax = fig.axes[0]
    assert bar_widths(ax, 0) == pytest.approx(ref_probs.tolist())
    assert bar_widths(ax, 1) == pytest.approx(optimum.tolist())
    heights = [bar.get_y() for bar in ax.containers[0]]
    assert heights == sorted(heights, reverse=True)  # the first arm on top
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{a}  (r = {r:.2f})" for a, r in zip("abcd", rewards)]
    with pytest.raises(ValueError, match="one label, one reward"):
        plot_arms(list("abc"), {"ref": ref_probs}, rewards)


def test_plot_kl_regularized_optimum_marks_the_optimum_on_the_frontier():
    ref_probs, rewards = random_problem(5, seed=16)
    fig = plot_kl_regularized_optimum(list("abcde"), ref_probs, rewards, 0.3)
    bars, frontier = fig.axes
    optimum = kl_regularized_optimum(ref_probs, rewards, 0.3)
    assert bar_widths(bars, 1) == pytest.approx(optimum.tolist())
    point = frontier.lines[-1]
    assert point.get_xdata()[0] == pytest.approx(kl_divergence(optimum, ref_probs).item())
    assert point.get_ydata()[0] == pytest.approx(expected_reward(optimum, rewards).item())
    assert f"J = {optimal_value(ref_probs, rewards, 0.3).item():.3f}" in bars.get_title()


def test_plot_kl_budget_marks_the_best_policy_within_the_budget():
    ref_probs, rewards = random_problem(5, seed=17)
    fig = plot_kl_budget(ref_probs, rewards, 0.4)
    point = fig.axes[0].lines[-1]
    beta = beta_for_kl_budget(ref_probs, rewards, 0.4)
    assert point.get_xdata()[0] == pytest.approx(0.4, abs=1e-6)
    assert point.get_ydata()[0] == pytest.approx(
        expected_reward(kl_regularized_optimum(ref_probs, rewards, beta), rewards).item()
    )
    assert f"β = {beta:.3g}" in fig.axes[0].get_title()


def test_plot_reward_kl_frontier_draws_the_frontier_and_its_two_references():
    ref_probs, rewards = random_problem(5, seed=19)
    betas = torch.logspace(1, -2, 9, dtype=F64)
    fig = plot_reward_kl_frontier(ref_probs, rewards, betas)
    frontier, at_ref, best = fig.axes[0].lines
    kl, reward = reward_kl_frontier(ref_probs, rewards, betas)
    assert frontier.get_xdata().tolist() == pytest.approx(kl.tolist())
    assert frontier.get_ydata().tolist() == pytest.approx(reward.tolist())
    assert at_ref.get_ydata()[0] == pytest.approx(expected_reward(ref_probs, rewards).item())
    assert best.get_ydata()[0] == pytest.approx(rewards.max().item())


def one_ax():
    """A fresh figure with one empty Axes, to check that a plot draws on it rather than on a new figure."""
    fig, ax = plt.subplots()
    assert not ax.lines and not ax.containers
    return fig, ax


def test_plot_arms_draws_on_the_given_ax():
    ref_probs, rewards = random_problem(3, seed=20)
    fig, ax = one_ax()
    assert plot_arms(list("abc"), {"ref": ref_probs}, rewards, ax=ax) is fig
    assert len(ax.containers) == 1 and plt.get_fignums() == [fig.number]


def test_plot_reward_kl_frontier_draws_on_the_given_ax():
    ref_probs, rewards = random_problem(3, seed=21)
    fig, ax = one_ax()
    assert plot_reward_kl_frontier(ref_probs, rewards, torch.logspace(1, -1, 5), ax=ax) is fig
    assert len(ax.lines) == 3 and plt.get_fignums() == [fig.number]


def test_plot_kl_budget_draws_on_the_given_ax():
    ref_probs, rewards = random_problem(3, seed=22)
    fig, ax = one_ax()
    assert plot_kl_budget(ref_probs, rewards, 0.2, torch.logspace(1, -1, 5), ax=ax) is fig
    assert len(ax.lines) == 4 and ax.get_title().startswith("budget 0.20") and plt.get_fignums() == [fig.number]


def test_plot_kl_regularized_optimum_draws_on_the_given_axes():
    ref_probs, rewards = random_problem(3, seed=23)
    fig, axes = plt.subplots(1, 2)
    assert plot_kl_regularized_optimum(list("abc"), ref_probs, rewards, 0.5, axes=axes) is fig
    bars, frontier = axes
    assert len(bars.containers) == 2 and len(frontier.lines) == 4 and plt.get_fignums() == [fig.number]
    with pytest.raises(ValueError, match="draws two panels: pass axes as a pair.*got 1 axes"):
        plot_kl_regularized_optimum(list("abc"), ref_probs, rewards, 0.5, axes=[bars])


def test_as_tensors_returns_its_inputs_in_order_and_keeps_tensors_as_they_are():
    probs = torch.tensor([0.25, 0.75], dtype=F64, requires_grad=True)
    checked_probs, rewards = as_tensors(probs=probs, rewards=[0, 1])
    assert checked_probs is probs  # no copy, so gradients still reach the caller's tensor
    assert rewards.dtype == torch.get_default_dtype() and rewards.tolist() == [0.0, 1.0]


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "beta, message",
    [
        (0.0, "beta must be > 0, got 0"),
        (-1.0, "beta must be > 0, got -1"),
        (math.nan, "beta is NaN"),
        (math.inf, "beta must be finite, got inf"),
    ],
)
def test_bad_beta(beta, message):
    ref_probs, rewards = random_problem()
    with pytest.raises(ValueError, match=f"{message}: β is the KL penalty weight, try 0.1"):
        kl_regularized_optimum(ref_probs, rewards, beta)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: kl_divergence([0.5, 0.6], [0.5, 0.5]), ValueError, "p must sum to 1 over the last"),
        (lambda: kl_divergence([0.5, 0.5], [1.5, -0.5]), ValueError, r"q has a negative entry \(-0.5\)"),
        (lambda: expected_reward([0.5, 0.5], [1.0, 2.0, 3.0]), ValueError, r"shapes do not match.*\(2,\).*\(3,\)"),
        (
            lambda: regularized_objective([0.5, 0.5], [[1.0, 0.0]] * 3, [[1.0, 2.0]] * 2, 0.1),
            ValueError,
            "shapes do not match",
        ),
        (lambda: expected_reward("0.5 0.5", [1.0, 2.0]), TypeError, "probs must be a tensor.*got str"),
        (lambda: expected_reward([0.5, 0.5], None), TypeError, "rewards must be a tensor.*got NoneType"),
        (lambda: expected_reward(1.0, 1.0), ValueError, "probs must be at least 1-D"),
        (lambda: expected_reward([0.5, 0.5], [1.0, math.nan]), ValueError, "rewards must be finite"),
        (
            lambda: kl_regularized_optimum([0.5, 0.5], [1.0, 2.0], "0.1"),
            TypeError,
            "beta must be a number, got '0.1' \\(str\\)",
        ),
        (
            lambda: reward_kl_frontier([0.5, 0.5], [1.0, 2.0], 0.1),
            TypeError,
            "betas must be a 1-D sequence.*single number 0.1",
        ),
        (lambda: max_kl_budget([0.5, 0.5], [1.0, 2.0, 3.0]), ValueError, "shapes do not match"),
        (
            lambda: best_policy_within_kl([0.5, 0.5], [1.0, 2.0], -0.1),
            ValueError,
            "kl_budget must be >= 0, got -0.1: it is how many nats",
        ),
        (
            lambda: best_policy_within_kl([[0.5, 0.5]], [1.0, 2.0], 0.1),
            ValueError,
            r"best_policy_within_kl takes one prompt.*ref_probs \(1, 2\), rewards \(2,\)",
        ),
        (lambda: argmax_policy([0.5, 0.5], [[1.0, 2.0, 3.0]]), ValueError, "shapes do not match"),
        (lambda: plot_reward_kl_frontier([0.5, 0.6], [1.0, 2.0]), ValueError, "ref_probs must sum to 1"),
        (lambda: best_policy_within_kl([0.5, 0.5], [1.0, 2.0], "0.1"), TypeError, "kl_budget must be a number"),
    ],
)
def test_bad_input_says_what_is_wrong(call, error, message):
    with pytest.raises(error, match=message):
        call()
