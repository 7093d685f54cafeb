"""Tests for rlhf_edu.mdp: the corridor, value iteration and the discounted return, each checked by hand."""

import math

import pytest
import torch

from rlhf_edu.mdp import LEFT, RIGHT, Corridor, discounted_return, run_episode, value_iteration

F64 = torch.float64


def test_discounted_return_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    assert discounted_return(rewards, 0.5).item() == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    assert discounted_return(rewards, 1.0).item() == pytest.approx(6.0)
    assert discounted_return(rewards, 0.0).item() == pytest.approx(1.0)  # only r_0 counts when γ = 0
    batch = torch.stack([rewards, rewards.flip(0)])  # (2, 3)
    assert discounted_return(batch, 0.5).tolist() == pytest.approx([2.75, 3 + 1 + 0.25])


def test_transitions_move_one_cell_and_pay_only_on_arrival():
    next_state, reward = Corridor(num_cells=3, goal_reward=2.0).transitions()
    assert next_state.tolist() == [[0, 1], [0, 2], [2, 2]]  # a wall at cell 0; the goal (cell 2) is absorbing
    assert reward.tolist() == [[0.0, 0.0], [0.0, 2.0], [0.0, 0.0]]


def test_value_iteration_on_a_three_cell_corridor_by_hand():
    gamma = 0.9
    values, policy = value_iteration(Corridor(num_cells=3), gamma)
    # From cell 1 one step right reaches the goal (reward 1); from cell 0 that takes two steps.
    assert values.tolist() == pytest.approx([gamma, 1.0, 0.0])
    assert policy[:2].tolist() == [RIGHT, RIGHT]


def test_an_episode_of_the_greedy_policy_earns_its_value():
    corridor = Corridor(num_cells=6, goal_reward=2.0)
    for gamma in [0.5, 0.9, 0.999]:
        values, policy = value_iteration(corridor, gamma)
        rewards = run_episode(corridor, policy, start=1)
        assert rewards.tolist() == [0.0, 0.0, 0.0, 2.0]
        assert discounted_return(rewards, gamma).item() == pytest.approx(values[1].item())
    walls = run_episode(corridor, torch.full((6,), LEFT), max_steps=7)  # a policy that never reaches the goal
    assert walls.tolist() == [0.0] * 7


def test_without_discounting_every_path_to_the_goal_is_worth_the_same():
    values, _ = value_iteration(Corridor(num_cells=6, goal_reward=2.0), 1.0)
    assert values.tolist() == pytest.approx([2.0] * 5 + [0.0])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: discounted_return([1.0, 2.0], 1.5),
            ValueError,
            "gamma must be <= 1, got 1.5: γ is the per-step discount, try 0.99",
        ),
        (lambda: discounted_return([1.0, math.inf], 0.9), ValueError, "rewards must be finite"),
        (lambda: discounted_return(2.0, 0.9), ValueError, "rewards must be at least 1-D.*wrap it in a list"),
        (lambda: value_iteration(Corridor(3), "0.9"), TypeError, "gamma must be a number, got '0.9'"),
        (lambda: Corridor(num_cells=1), ValueError, "num_cells must be >= 2, got 1: a Corridor needs a start"),
        (lambda: discounted_return([1.0, 2.0], -0.1), ValueError, "gamma must be >= 0, got -0.1"),
        (
            lambda: run_episode(Corridor(3), torch.tensor([RIGHT, RIGHT])),
            ValueError,
            r"one action per cell, shape \(3,\), got \(2,\)",
        ),
        (
            lambda: run_episode(Corridor(3), torch.tensor([RIGHT] * 3), start=2),
            ValueError,
            r"start must be a cell in \[0, 2\), got 2",
        ),
        (
            lambda: run_episode(Corridor(3), torch.tensor([RIGHT] * 3), max_steps=0),
            ValueError,
            "max_steps must be >= 1, got 0",
        ),
    ],
)
def test_bad_input_says_what_is_wrong(call, error, message):
    with pytest.raises(error, match=message):
        call()
