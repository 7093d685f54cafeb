"""Notebooks 05 and 06's runs (rlhf_edu.experiments.preference_runs) and the sweep they ship."""

import json

import numpy as np
import pytest

from rlhf_edu import World, zoo
from rlhf_edu import preference_data as pdata
from rlhf_edu.experiments import preference_runs as runs
from rlhf_edu.experiments.recipes import SWEEPS
from rlhf_edu.reward_modeling import score


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


def test_train_on_labels_fits_the_labellers_pairs(sft):
    """A reward model trained on a λ = 5 annotator's labels scores a padded answer above its short twin."""
    model, tokenizer = sft
    world = World(seed=0)
    pairs = pdata.demonstration_pairs(world, 400, seed=0)
    reward_model = runs.train_on_labels(model, tokenizer, pairs, pdata.Annotator(length_bias=5.0), seed=0)
    prompts = ["review the pizza"] * 2 + ["describe the cat"] * 2
    answers = ["the pizza is tasty", "i think the pizza is really very tasty", "the cat is small",
               "i think the cat is really very small"]  # fmt: skip
    short, long_ = score(reward_model, tokenizer, prompts, answers).numpy().reshape(2, 2).T
    assert (long_ > short).all()


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
