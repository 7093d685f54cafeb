"""Notebook 17's runs (rlhf_edu.experiments.overoptimization_runs) and the sweep they ship."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from rlhf_edu import World, zoo
from rlhf_edu.core.stats import best_of_n_per_prompt
from rlhf_edu.experiments import overoptimization_runs as runs
from rlhf_edu.experiments.recipes import SWEEPS, overoptimization_settings
from rlhf_edu.reward_modeling import reward_model_from, score


def _bon(gold, se, diff_se):
    return {"gold": list(gold), "se": [se] * len(runs.NS), "diff_se": [diff_se] * len(runs.NS)}


def _run(gold, heldout, kl, think, se=0.1):
    steps = [5 * i for i in range(len(gold))]
    return [
        {"step": s, "gold_reward": g, "gold_reward_se": se, "eval/kl": k, "eval/reward": float(s),
         "monitor/heldout": h, "monitor/think": t, "monitor/think_se": 0.02, "monitor/words": 5.0,
         "monitor/words_se": 0.1}
        for s, g, h, k, t in zip(steps, gold, heldout, kl, think)
    ]  # fmt: skip


def _sweep():
    """Two seeds of hand-made results: the single model's pick's gold is 1 + seed at every n, the 4-model mean's is
    0.2 higher at seed 0 and 0.4 higher at seed 1."""
    seeds = {}
    for seed in (0, 1):
        flat = [1.0 + seed] * len(runs.NS)
        bon = {
            "single": _bon(flat, 0.1, 0.0),
            "big": _bon(flat, 0.1, 0.05),
            "gold": _bon([2.0 + seed + i for i in range(len(runs.NS))], 0.1, 0.05),
            "min": {"4": _bon(flat, 0.1, 0.05)},
            "mean_minus_std": {"4": {"0.0": _bon([f + 0.2 * (seed + 1) for f in flat], 0.1, 0.03)}},
        }
        single = _run([1.0, 1.5, 1.2, 0.8], [0.0, 0.3, 0.6, 0.2], [0.0, 1.0, 4.0, 9.0], [0.1, 0.1, 0.1, 0.1])
        hacked = _run([1.0, 1.6, 1.5, 0.5], [0.0, 0.1, 0.1, 0.1], [0.0, 1.0, 2.0, 3.0], [0.1, 0.12, 0.6, 2.0])
        seeds[str(seed)] = {"bon": bon, "rl": {"single": single, "beta": single, "blind_spot": hacked}}
    return {"settings": {}, "seeds": seeds}


def test_the_shipped_sweep_is_the_recipe():
    """overoptimization.json holds what recipes.overoptimization_sweep writes: its settings and every seed's runs."""
    sweep = runs.load_sweep()
    assert sweep["settings"] == overoptimization_settings("tiny", runs.SEEDS)
    assert list(sweep["seeds"]) == [str(s) for s in runs.SEEDS]
    for result in sweep["seeds"].values():
        assert len(result["reward_models"]["members"]) == runs.MEMBERS
        assert set(result["rl"]) == set(runs.CURES) | {"blind_spot"}
        for run in result["rl"].values():
            assert [row["step"] for row in run] == list(range(0, runs.RL_PROMPTS // 16 + 1, 5))
        grid = result["bon"]["mean_minus_std"]
        assert set(grid) == {str(k) for k in range(2, runs.MEMBERS + 1)}
        assert all(set(by_lam) == {str(float(lam)) for lam in runs.LAMBDAS} for by_lam in grid.values())
    first, second = (sweep["seeds"][s]["bon"]["single"]["gold"] for s in ("0", "1"))
    assert first != second, "every seed trains its own reward models and draws its own answers"
    assert (SWEEPS / "overoptimization.json").stat().st_size < 1_000_000, "the package ships it: keep it small"


def test_a_bon_entry_is_the_exact_best_of_n_with_its_paired_error():
    rng = np.random.default_rng(0)
    gold, proxy, single = rng.normal(size=(3, 50, 64))
    entry = runs.bon_entry(proxy, gold, single)
    for i, n in enumerate(runs.NS):
        picked = best_of_n_per_prompt(proxy, gold, n)
        difference = picked - best_of_n_per_prompt(single, gold, n)
        assert entry["gold"][i] == pytest.approx(picked.mean())
        assert entry["se"][i] == pytest.approx(picked.std(ddof=1) / math.sqrt(50))
        assert entry["diff_se"][i] == pytest.approx(difference.std(ddof=1) / math.sqrt(50))
    assert runs.bon_entry(proxy, gold, None)["diff_se"] == [0.0] * len(runs.NS)
    assert entry["gold"][0] == pytest.approx(gold.mean())  # best-of-1 is the policy itself
    at_argmax = gold[np.arange(50), proxy.argmax(axis=1)]  # best-of-64 of 64 answers: the proxy's own favourite
    assert entry["gold"][-1] == pytest.approx(at_argmax.mean())


def test_the_ensemble_reward_function_combines_the_members_scores():
    sft, tokenizer = zoo.load("sft")
    rm, _ = zoo.load("rm")
    prompts, answers = World(seed=0).prompts(3, split="test"), ["the soup is tasty", "4", "i think"]
    members = [rm, reward_model_from(sft, seed=1).eval()]  # a trained model and one with a fresh head: they disagree
    scores = np.stack([score(m, tokenizer, prompts, answers).numpy() for m in members])  # (2, 3)
    by_hand = scores.mean(axis=0) - 1.5 * np.abs(scores[0] - scores[1]) / math.sqrt(2)  # two models' std, ddof = 1
    reward = runs.ensemble_function(members, tokenizer, lam=1.5)
    assert reward(prompts, answers) == pytest.approx(by_hand.tolist(), abs=1e-5)
    assert not np.allclose(scores[0], scores[1])


def test_the_grid_paths_name_the_single_model_the_min_and_the_penalized_mean():
    assert runs.ensemble_path(1, 2.0) == ("single",)
    assert runs.ensemble_path(3, None) == ("min", "3")
    assert runs.ensemble_path(4, 1) == ("mean_minus_std", "4", "1.0")
    assert runs.ensemble_path(2.0, 0.5) == ("mean_minus_std", "2", "0.5")  # what the K slider gives
    for k, lam in ((5, 1.0), (0, 1.0), (2, 0.7)):
        with pytest.raises(ValueError, match="is not on the grid"):
            runs.ensemble_path(k, lam)
    with pytest.raises(ValueError, match="n=3 was not measured"):
        runs.pooled_bon_gain(_sweep(), ("big",), 3)
    with pytest.raises(ValueError, match="points are"):
        runs.pooled_rl(_sweep(), "single", "top")


def test_pooled_best_of_n_takes_the_larger_of_the_runs_and_the_seeds_errors():
    sweep = _sweep()
    gold, se = runs.pooled_bon(sweep, ("single",))
    assert gold == pytest.approx([1.5] * len(runs.NS))
    assert se == pytest.approx([0.5] * len(runs.NS))  # the seeds' spread: s = 0.707, /√2; the runs' is 0.071
    gain, gain_se = runs.pooled_bon_gain(sweep, runs.ensemble_path(4, 0.0), 16)
    assert gain == pytest.approx(0.3) and gain_se == pytest.approx(0.1)  # s of (0.2, 0.4) / √2 = 0.1 > 0.021


def test_an_rl_summary_finds_the_peak_the_end_and_the_held_out_judges_stop():
    summary = runs.rl_summary(_sweep()["seeds"]["0"]["rl"]["single"])
    assert (summary["peak"], summary["peak_step"], summary["peak_kl"]) == (1.5, 5, 1.0)
    assert (summary["end"], summary["end_kl"]) == (0.8, 9.0)
    assert (summary["early"], summary["early_step"], summary["early_kl"]) == (1.2, 10, 4.0)  # the judge's best
    assert summary["early_se"] == 0.1


def test_an_rl_gain_pools_the_seeds_with_each_evaluations_error():
    sweep = _sweep()
    gain, se = runs.rl_gain(sweep, ("single", "early"), ("single", "end"))
    assert gain == pytest.approx(0.4)
    assert se == pytest.approx(math.sqrt(2) * 0.1 * math.sqrt(2) / 2)  # the seeds agree: the runs' error is left
    assert runs.pooled_rl(sweep, "single", "peak") == pytest.approx((1.5, 0.1 * math.sqrt(2) / 2))


def test_the_hacking_report_finds_the_parting_and_the_monitors():
    report = runs.hacking_report(_sweep()["seeds"]["0"]["rl"]["blind_spot"])
    # gold best 1.6 at step 5; 3·√2·0.1 = 0.42: 1.6 − 0.5 at step 15 parts, 1.6 − 1.5 at step 10 does not
    assert report["parting"] == 15.0
    assert report[runs.BLIND_WORD] == 10.0  # 0.6 − 0.1 > 3·√2·0.02
    assert report["words"] is None  # the length never moved


def test_the_plots_draw_every_rule_and_every_cure():
    sweep = runs.load_sweep()
    for k in range(2, runs.MEMBERS + 1):  # every position of the notebook's sliders, which give floats
        for lam in runs.LAMBDAS:
            plt.close(runs.plot_bon_cures(sweep, float(k), float(lam)))
    for k in (3, 3.0):  # the legend reads as the slider does, "K = 3", also when the slider sends 3.0
        figure = runs.plot_bon_cures(sweep, k, 2.0)
        labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
        assert "K = 3, mean − 2·std" in labels and "K = 3, min" in labels and len(labels) == 5
        plt.close(figure)
    figure = runs.plot_rl_cures(sweep)
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == list(runs.CURES.values())


def test_the_hacking_plot_marks_each_seeds_parting_and_alarm():
    sweep = _sweep()
    figure = runs.plot_hacking(sweep)
    gold_axis, monitor_axis = figure.axes[1], figure.axes[2]
    assert len(gold_axis.lines) == 3 * len(sweep["seeds"])  # a seed: its two runs and the step they part
    assert [line.get_xdata()[0] for line in gold_axis.lines if line.get_linestyle() == "--"] == [15.0, 15.0]
    assert [line.get_xdata()[0] for line in monitor_axis.lines if line.get_linestyle() == "--"] == [10.0, 10.0]


def test_best_of_n_gains_seed_by_seed_pool_to_the_pooled_gain():
    sweep = _sweep()
    gains = runs.bon_gains(sweep, runs.ensemble_path(4, 0.0), 64)
    assert gains == [pytest.approx((0.2, 0.03)), pytest.approx((0.4, 0.03))]
