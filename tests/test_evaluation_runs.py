"""Notebook 16's runs (rlhf_edu.experiments.evaluation_runs) and the sweep they ship."""

import json
import math

import numpy as np
import pytest

from rlhf_edu import World, zoo
from rlhf_edu import ai_feedback as af
from rlhf_edu import leaderboard as lb
from rlhf_edu.core.world import PROMPT_FORMS
from rlhf_edu.experiments import evaluation_runs as runs
from rlhf_edu.experiments.recipes import SWEEPS
from rlhf_edu.reward_modeling import score


@pytest.fixture(scope="module")
def models():
    sft, tokenizer = zoo.load("sft")
    rm, _ = zoo.load("rm")
    judge, _ = zoo.load("judge")
    return sft, rm, judge, tokenizer


def test_the_shipped_sweep_is_the_recipe():
    """evaluation.json holds what recipes.evaluation_sweep writes: its settings, and every seed's every run."""
    sweep = runs.load_sweep()
    settings = sweep["settings"]
    assert settings["models"] == list(runs.MODELS) and settings["board_prompts"] == runs.BOARD_PROMPTS
    assert settings["contamination"] == {
        "sums": runs.BENCHMARK_SUMS,
        "leak_share": runs.LEAK_SHARE,
        "sft": runs.LEAK_SFT,
    }
    assert settings["size"] == {"prompts": runs.SIZE_PROMPTS, "samples": runs.SIZE_SAMPLES}
    assert list(sweep["seeds"]) == [str(s) for s in runs.SEEDS]
    for run in sweep["seeds"].values():
        assert set(run["boards"]) == {"annotator", "rm", "judge", "judge, one order"}
        assert set(run["gold"]) == set(runs.MODELS) and set(run["formats"]) == set(PROMPT_FORMS[1:])
        for report in run["boards"].values():
            assert report["models"] == list(runs.MODELS) and len(report["gaps"]) == len(runs.MODELS) - 1
    first, second = (sweep["seeds"][s]["gold"]["sft"] for s in ("0", "1"))
    assert first != second, "every seed draws its own answers"
    assert json.loads((SWEEPS / "evaluation.json").read_text()) == sweep


def test_battle_texts_are_what_the_judge_was_shown():
    world = World(seed=0)
    prompts = world.prompts(4, split="test")
    answers = {m: [f"{m} {i}" for i in range(4)] for m in ("a", "b", "c")}
    shown = []

    def judge(p, first, second):
        shown.extend(zip(p, first, second))
        return [1.0] * len(p)

    battles = lb.round_robin(prompts, answers, judge, seed=3)
    assert list(zip(*runs.battle_texts(prompts, answers, battles))) == shown
    for (a, b, _), (_, first, second) in zip(battles, shown):
        assert first.startswith(a) and second.startswith(b)


def test_rm_judges_by_score_and_calls_a_tie_half(models):
    _, rm, _, tokenizer = models
    prompts = ["review the soup"] * 3
    first = ["the soup is tasty", "the soup is bland", "the soup is tasty"]
    second = ["the soup is bland", "the soup is tasty", "the soup is tasty"]
    verdicts = runs.rm_judge(rm, tokenizer)(prompts, first, second)
    higher = (score(rm, tokenizer, prompts, first) > score(rm, tokenizer, prompts, second)).tolist()
    assert verdicts[:2] == [float(h) for h in higher[:2]] and verdicts[2] == 0.5


def test_the_judge_in_both_orders_debiases_and_keeps_each_order(models):
    _, _, judge, tokenizer = models
    prompts = ["add 3 and 5", "review the soup", "describe the cat"]
    first = ["3 plus 5 is 8", "the soup is bland", "the cat is small"]
    second = ["3 plus 5 is 9", "the soup is tasty", "the cat is small"]  # the last pair is one answer twice
    both = runs.JudgeInBothOrders(judge, tokenizer)
    verdicts = both(prompts, first, second)
    ab = af.judge_margins(judge, tokenizer, prompts, first, second)
    ba = af.judge_margins(judge, tokenizer, prompts, second, first)
    assert verdicts[:2] == [float(m > 0) for m in ((ab - ba) / 2)[:2]] and verdicts[2] == 0.5
    assert both.first_wins_ab.tolist() == (ab > 0).long().tolist()
    assert both.first_wins_ba.tolist() == (ba > 0).long().tolist()
    battles = [("x", "y", v) for v in verdicts]
    assert [v for _, _, v in both.one_order(battles)] == (ab > 0).float().tolist()


def test_the_report_measures_agreement_against_the_world_and_its_gaps_by_bootstrap():
    world = World(seed=0)
    prompts = world.prompts(60, split="test")
    rng = np.random.default_rng(0)
    answers = {m: [world.demonstration(p, rng) for p in prompts] for m in ("a", "b", "c")}
    battles = lb.round_robin(prompts, answers, runs.annotator_judge(world, seed=0), seed=0)
    report = runs.judge_report(world, prompts, answers, battles, seed=0)
    shown, firsts, seconds = runs.battle_texts(prompts, answers, battles)
    p = world.preference_probability(shown, firsts, seconds)
    by_hand = [pi if v == 1 else 1 - pi if v == 0 else 0.5 for pi, (_, _, v) in zip(p, battles)]
    assert report["agreement"][0] == pytest.approx(np.mean(by_hand))
    se = np.array(report["gap_se"])
    assert se == pytest.approx(se.T) and np.diag(se) == pytest.approx(0.0) and (se[~np.eye(3, dtype=bool)] > 0).all()
    gap, gap_se = runs.rating_gap(report, "a", "c")
    i, j = report["models"].index("a"), report["models"].index("c")
    assert gap == pytest.approx(report["ratings"][i] - report["ratings"][j]) and gap_se == se[i, j]


def test_the_answer_key_is_right_and_the_contamination_run_splits_by_prompt(models):
    sft, _, _, tokenizer = models
    world = World(seed=0)
    benchmark = world.prompts(24, split="test", family="arithmetic")
    keys = [runs.answer_key(p) for p in benchmark]
    assert world.verifiable_reward(benchmark, keys) == [1.0] * len(benchmark)
    leaked, clean = runs.ct.leak_split(benchmark, 0.5, seed=0)
    result = runs.contamination_run(sft, sft, tokenizer, world, benchmark, leaked, seed=0)
    assert result["pass inflation"][0] == 0.0 and result["gold inflation"][0] == 0.0  # no training, no inflation
    assert result["gap"] == pytest.approx([0.0] * len(leaked + clean), abs=1e-6)
    assert result["was_leaked"] == [p in leaked for p in sorted(leaked + clean)]


def test_format_run_answers_every_form_of_the_same_prompts(models):
    sft, _, _, tokenizer = models
    world = World(seed=0)
    prompts = world.prompts(12, split="test")
    gold = runs.format_run(sft, tokenizer, world, prompts, seed=0)
    assert list(gold) == list(PROMPT_FORMS) and all(len(g) == 12 for g in gold.values())


def test_the_sweep_readers_on_a_hand_made_sweep():
    def board(ratings, gap_se, separated):
        gaps = [{"above": a, "below": b, "separated": s} for (a, b), s in zip((("x", "y"), ("y", "z")), separated)]
        return {"models": ["x", "y", "z"], "ratings": ratings, "gap_se": gap_se, "gaps": gaps}

    se = [[0.0, 0.1, 0.2], [0.1, 0.0, 0.1], [0.2, 0.1, 0.0]]
    sweep = {
        "seeds": {
            "0": {"boards": {"j": board([1.0, 0.0, -1.0], se, (True, False))}},
            "1": {"boards": {"j": board([2.0, 0.0, -2.0], se, (True, True))}},
        }
    }
    assert runs.rating_gap(sweep["seeds"]["0"]["boards"]["j"], "x", "z") == (2.0, 0.2)
    mean, stderr = runs.pooled_rating_gap(sweep, "j", "x", "z")
    assert mean == 3.0 and stderr == pytest.approx(max(math.hypot(0.2, 0.2) / 2, 1.0))  # the seeds' spread wins
    assert runs.separation_table(sweep, "j") == ["seed 0: x ≫ y ≈ z", "seed 1: x ≫ y ≫ z"]


def test_the_check_cells_standard_errors():
    z, se = runs.correlation_z(0.5, 103)
    assert z == pytest.approx(0.5493, abs=1e-4) and se == pytest.approx(0.1)
    assert runs.simulation_stderr(0.5, 100) == pytest.approx(0.05)
    assert runs.power_difference(0.9, 0.5, 100) == pytest.approx((0.4, math.hypot(0.03, 0.05)))
    report_a, report_b = {"agreement": (0.7, 0.03)}, {"agreement": (0.5, 0.04)}
    assert runs.entry_difference(report_a, report_b, "agreement") == pytest.approx((0.2, 0.05))


def test_prompt_means_average_each_distinct_prompts_rows():
    means = runs.prompt_means(
        ["add 1 and 2", "add 3 and 4", "add 1 and 2"], [1.0, 2.0, 3.0], ["add 1 and 2", "add 3 and 4"]
    )
    assert means.tolist() == [2.0, 2.0]


def test_the_board_plot_draws_each_judges_ratings_and_intervals_against_gold():
    report = {"models": ["x", "y"], "ratings": [0.5, -0.5], "intervals": [[0.2, 0.9], [-0.7, -0.1]]}
    fig = runs.plot_board({"annotator": report, "rm": report}, {"x": (2.0, 0.1), "y": (1.0, 0.1)})
    assert [ax.get_title() for ax in fig.axes] == ["judged by annotator", "judged by rm"]
    points = fig.axes[0].lines[0]
    assert list(points.get_xdata()) == [2.0, 1.0] and list(points.get_ydata()) == [0.5, -0.5]
    bars = fig.axes[0].collections[0].get_segments()  # one vertical bar per model: the 95% interval
    assert np.array([(s[0][1], s[1][1]) for s in bars]) == pytest.approx(np.array([[0.2, 0.9], [-0.7, -0.1]]))


def test_the_word_table_counts_words_as_the_gold_reward_does():
    table = runs.word_table({"a": ["the soup is tasty .", "3 plus 5 is 8"], "b": ["ok", "ok"]})
    assert table["a"][0] == 5.0 and table["b"] == (1.0, 0.0)
