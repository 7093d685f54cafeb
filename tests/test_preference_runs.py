"""Notebooks 05 and 06's runs (rlhf_edu.experiments.preference_runs) and the sweep they ship."""

import json

import numpy as np
import pytest
import torch

from rlhf_edu import World, zoo
from rlhf_edu import preference_data as pdata
from rlhf_edu.experiments import preference_runs as runs
from rlhf_edu.experiments.recipes import SWEEPS
from rlhf_edu.reward_modeling import RewardConfig, reward_model_from, score, train_reward_model


@pytest.fixture(scope="module")
def sft():
    return zoo.load("sft")


def test_the_shipped_preferences_sweep_is_the_recipe():
    """preferences.json holds what recipes.preferences_sweep writes: its settings, and every seed's every setting."""
    sweep = json.loads((SWEEPS / "preferences.json").read_text())
    settings = sweep["settings"]
    assert settings["reward_model"] == runs.REWARD_MODEL and settings["rl"] == runs.LENGTH_RL
    assert settings["pooled_epochs"] == runs.POOLED_EPOCHS
    assert settings["shares"] == list(runs.SHARES) and settings["length_biases"] == list(runs.LENGTH_BIASES)
    assert list(sweep["seeds"]) == [str(s) for s in runs.SEEDS] == [str(s) for s in settings["seeds"]]
    for seed in sweep["seeds"].values():
        assert list(seed["shares"]) == [str(s) for s in runs.SHARES]
        for gains in seed["shares"].values():
            assert set(gains) == {"warm", "facts"} and all(len(v) == runs.EVAL_PROMPTS for v in gains.values())
        assert list(seed["length_bias"]) == [str(b) for b in runs.LENGTH_BIASES]
        for result in seed["length_bias"].values():
            assert set(result) == {"best_of_n", "rl"}
            assert all(set(m) == {"words", "gold", "concision"} for m in result.values())


def test_answer_measures_are_the_worlds():
    world = World(seed=0)
    prompts, answers = ["review the pizza", "add 3 and 5"], ["the pizza is tasty and tasty", "3 plus 5 is 8"]
    measures = runs.answer_measures(world, prompts, answers)
    assert measures["words"].tolist() == [6.0, 5.0]
    assert measures["gold"].tolist() == world.gold_reward(prompts, answers)
    assert measures["concision"].tolist() == world.gold_components(prompts, answers)["concision"]


def test_best_of_all_n_picks_each_prompts_top_scored_answer(sft):
    """With n = N, best-of-n is the top-scored answer of each prompt: checked against an argmax by hand."""
    model, tokenizer = sft
    world = World(seed=0)
    reward_model, _ = zoo.load("rm")
    sample = runs.held_out_sample(world, model, tokenizer)
    measures = runs.best_of_n_measures(world, reward_model, tokenizer, sample)
    scores = score(reward_model, tokenizer, sample.prompts, sample.completions).numpy().reshape(-1, runs.BEST_OF)
    top = scores.argmax(axis=1)  # ties are measure-zero for float scores
    words = pdata.word_counts(sample.completions).reshape(-1, runs.BEST_OF)
    assert measures["words"] == pytest.approx(words[np.arange(len(top)), top])
    assert len(measures["gold"]) == runs.EVAL_PROMPTS


def test_train_on_labels_is_chapter_7s_trainer_on_the_labellers_labels(sft):
    """train_on_labels trains chapter 7's reward model on the pairs as ``labeller`` labels them again: the weights of
    that recipe written out by hand, and other weights for another labeller's labels.

    (What the labels teach is the notebooks' claim, from the sweep's seeds: one small run's ranking of two answers
    moves with the CPU's kernels, and is no test of this function.)"""
    model, tokenizer = sft
    pairs = pdata.demonstration_pairs(World(seed=0), 100, seed=0)
    labeller = pdata.Annotator(length_bias=5.0)
    trained = runs.train_on_labels(model, tokenizer, pairs, labeller, seed=0)
    by_hand = reward_model_from(model, seed=0)
    config = RewardConfig(**runs.REWARD_MODEL, seed=0, progress=False)
    train_reward_model(by_hand, tokenizer, pdata.relabel(pairs, labeller, seed=0), config)
    other = runs.train_on_labels(model, tokenizer, pairs, pdata.Annotator(length_bias=0.0), seed=0)
    weights = [(a, b, c) for a, b, c in zip(trained.parameters(), by_hand.parameters(), other.parameters())]
    assert all(torch.equal(a, b) for a, b, _ in weights)
    assert not all(torch.equal(a, c) for a, _, c in weights)


def test_the_sweep_read_back_for_the_sliders():
    """share_gains and length_curves are the JSON's values, seed by seed; the plots draw one curve per line asked."""
    sweep = runs.load_sweep()
    gains, curves = runs.share_gains(sweep), runs.length_curves(sweep)
    seed, share = str(runs.SEEDS[1]), runs.SHARES.index(0.5)
    assert gains["warm"].shape == (len(runs.SEEDS), len(runs.SHARES))
    assert gains["warm"][1, share] == pytest.approx(np.mean(sweep["seeds"][seed]["shares"]["0.5"]["warm"]))
    assert (
        curves["rl"]["words"][1, -1] == sweep["seeds"][seed]["length_bias"][str(runs.LENGTH_BIASES[-1])]["rl"]["words"]
    )
    figure = runs.plot_share_sweep(gains, runs.SHARES, 0.5)
    assert len(figure.axes[0].containers) == len(gains)  # one errorbar per group
    figure = runs.plot_length_sweep(curves, runs.LENGTH_BIASES, runs.LENGTH_BIASES[2])
    assert [len(ax.containers) for ax in figure.axes] == [2] * len(runs.MEASURES)
