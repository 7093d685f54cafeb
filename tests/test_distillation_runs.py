"""Notebook 15's runs (rlhf_edu.experiments.distillation_runs) and the sweep they ship."""

import json

import numpy as np
import pytest

from rlhf_edu import World, zoo
from rlhf_edu.core.world import parse_prompt
from rlhf_edu.experiments import distillation_runs as runs
from rlhf_edu.experiments.recipes import SWEEPS
from rlhf_edu.instruction_tuning import encode_example
from rlhf_edu.reward_modeling import score


@pytest.fixture(scope="module")
def models():
    sft, tokenizer = zoo.load("sft")
    base, _ = zoo.load("base")
    rm, _ = zoo.load("rm")
    return sft, base, rm, tokenizer


def test_the_shipped_sweep_is_the_recipe():
    """distillation.json holds what recipes.distillation_sweep writes: its settings, and every seed's every run."""
    sweep = json.loads((SWEEPS / "distillation.json").read_text())
    settings = sweep["settings"]
    assert settings["distillation"] == runs.DISTILLATION and settings["quality_sft"] == runs.QUALITY_SFT
    assert settings["sizes"] == list(runs.SIZES) and settings["self_training"]["real_shares"] == list(runs.REAL_SHARES)
    assert settings["teacher"] == {
        "prompts": runs.TEACHER_PROMPTS,
        "samples": runs.TEACHER_SAMPLES,
        "sft": runs.TEACHER_SFT,
    }
    assert list(sweep["seeds"]) == [str(s) for s in runs.SEEDS]
    for seed in sweep["seeds"].values():
        assert set(seed["distillation"]) == {"teacher − sft", *runs.STUDENTS}
        smaller, base = (seed["distillation"][name]["runs"] for name in runs.STUDENTS)
        assert len(smaller) == 6 and len(base) == 4  # 3 kinds + demonstrations, and 2 offline kinds at 3 epochs
        assert set(seed["quality"]["differences"]) >= {f"filtered {n} − all {n}" for n in runs.SIZES}
        for records in seed["self_training"].values():
            assert [r["generation"] for r in records] == list(range(runs.GENERATIONS + 1))


def test_the_teacher_score_is_rm_plus_the_verifier_on_sums(models):
    """A right sum scores rm + 10, a wrong one rm alone; a review scores rm alone, whatever the verifier would say."""
    _, _, rm, tokenizer = models
    world = World(seed=0)
    prompts = ["add 3 and 5", "add 3 and 5", "review the movie"]
    completions = ["3 plus 5 is 8", "3 plus 5 is 9", "the movie is good"]
    expected = score(rm, tokenizer, prompts, completions).double().numpy() + np.array([runs.VERIFIER_WEIGHT, 0, 0])
    np.testing.assert_allclose(runs.teacher_score(world, rm, tokenizer)(prompts, completions), expected, rtol=1e-6)


def test_demonstrations_fill_the_budget_and_stop_before_it_overruns(tokenizer):
    world = World(seed=0)
    prompts = world.prompts(40)
    everything = runs.demonstration_rows(world, tokenizer, prompts, budget=10**6, seed=3)
    assert len(everything) == len(prompts) and {r["prompt"] for r in everything} == set(prompts)
    tokens = np.cumsum([sum(encode_example(tokenizer, row)["completion_mask"]) for row in everything])
    for budget in (tokens[4], tokens[4] + 1, tokens[9] - 1):
        rows = runs.demonstration_rows(world, tokenizer, prompts, budget=int(budget), seed=3)
        assert rows == everything[: len(rows)], "a smaller budget keeps a prefix of the same draws"
        assert tokens[len(rows) - 1] <= budget < tokens[len(rows)]
    assert runs.demonstration_rows(world, tokenizer, prompts, budget=1, seed=3) == []


def test_the_filter_keeps_right_sums_and_the_better_half_elsewhere(models, monkeypatch):
    sft, _, rm, tokenizer = models
    monkeypatch.setattr(runs, "POOL", 60)
    world = World(seed=0)
    prompts, answers, keep = runs.synthetic_pool(world, sft, rm, tokenizer, seed=0)
    assert prompts == world.prompts(60) and len(answers) == len(keep) == 60 and keep.dtype == bool
    rewards = score(rm, tokenizer, prompts, answers).numpy()
    for i, prompt in enumerate(prompts):
        family = parse_prompt(prompt).family
        if family == "arithmetic":
            assert keep[i] == (world.verifiable_reward([prompt], [answers[i]])[0] == 1.0)
        else:
            same = [j for j, p in enumerate(prompts) if parse_prompt(p).family == family]
            assert keep[i] == (rewards[i] >= np.median(rewards[same]))


def test_differences_are_paired_per_prompt_in_both_orders():
    measured = {"a": {"gold": [1.0, 2.0, 4.0]}, "b": {"gold": [0.0, 2.0, 1.0]}}
    table = runs.differences(measured, ["gold"])
    assert set(table) == {"a − b", "b − a"}
    d = np.array([1.0, 0.0, 3.0])
    assert table["a − b"]["gold"] == pytest.approx(d.mean())
    assert table["a − b"]["gold_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert table["b − a"]["gold"] == pytest.approx(-d.mean())


def test_summary_reports_the_kl_median_beside_its_heavy_tailed_mean():
    row = runs.summary({"gold": [1.0, 3.0], "kl": [0.1, 0.2, 0.3, 40.0], "sums": [0.0, 1.0]})
    assert row["gold"] == 2.0 and row["sums"] == 0.5
    assert row["kl"] == pytest.approx(10.15) and row["kl_median"] == pytest.approx(0.25)


def test_the_students_are_fresh_and_the_smaller_one_has_two_layers(models):
    sft, base, _, _ = models
    smaller = runs.new_student(runs.STUDENTS[0], sft, base)
    assert smaller.config.num_hidden_layers == runs.STUDENT_LAYERS < sft.config.num_hidden_layers
    copy = runs.new_student(runs.STUDENTS[1], sft, base)
    assert copy is not base and all(
        (p == q).all() and p.data_ptr() != q.data_ptr() for p, q in zip(copy.parameters(), base.parameters())
    )


def test_the_generation_curve_reads_every_seed_and_round():
    record = lambda g, gold: {"generation": g, "gold": gold}  # noqa: E731
    sweep = {
        "seeds": {
            "0": {"self_training": {"0.0": [record(0, 1.0), record(1, 2.0)], "0.5": [record(0, 1.0), record(1, 3.0)]}},
            "1": {"self_training": {"0.0": [record(0, 0.5), record(1, 0.0)], "0.5": [record(0, 0.5), record(1, 4.0)]}},
        }
    }
    np.testing.assert_array_equal(runs.generation_curve(sweep, "gold", 0.5), [[1.0, 3.0], [0.5, 4.0]])
    np.testing.assert_array_equal(runs.generation_curve(sweep, "gold", 0.0), [[1.0, 2.0], [0.5, 0.0]])


def test_quality_runs_train_on_the_first_rows_kept_or_not(models, monkeypatch):
    """Tiny sizes: every run is keyed by its kind and size, the pool's shares and golds are the filter's."""
    sft, base, rm, tokenizer = models
    monkeypatch.setattr(runs, "POOL", 30)
    monkeypatch.setattr(runs, "EVAL_PROMPTS", 6)
    world = World(seed=0)
    result = runs.quality_runs(base, sft, rm, tokenizer, world, sizes=(4,), seed=0)
    prompts, answers, keep = runs.synthetic_pool(world, sft, rm, tokenizer, seed=0)
    gold = np.array(world.gold_reward(prompts, answers))
    assert result["share_kept"] == pytest.approx(keep.mean()) and result["kept_gold"] == pytest.approx(
        gold[keep].mean()
    )
    assert set(result["gold"]) == {"all 4", "filtered 4"} and all(len(v) == 6 for v in result["gold"].values())


def _fake_sweep():
    """Two seeds, each with one student's two runs, a quality difference and two self-training records per share."""

    def seed(gold_gap, gold_se, distinct_after):
        difference = {"gold": gold_gap, "gold_se": gold_se, "kl": -gold_gap, "kl_se": gold_se, "sums": 0.0}
        run = {"gold": 1.0 + gold_gap, "gold_se": 0.1, "kl": 2.0, "kl_se": 0.2, "kl_median": 0.5, "sums": 0.2}
        records = [
            {"gold_per_prompt": [1.0, 2.0, 3.0], "distinct_per_prompt": [4, 4, 3]},
            {"gold_per_prompt": [1.5, 2.0, 4.0], "distinct_per_prompt": distinct_after},
        ]
        return {
            "distillation": {
                "s": {"runs": {"a": run, "b": run}, "differences": {"a − b": difference | {"sums_se": 0}}}
            },
            "quality": {"differences": {"x − y": {"gold": gold_gap, "gold_se": gold_se}}},
            "self_training": {"0.0": records, "0.5": records},
        }

    return {"seeds": {"0": seed(0.2, 0.05, [2, 3, 1]), "1": seed(0.4, 0.05, [1, 2, 1])}}


def test_the_sweep_readers_pool_each_seeds_paired_difference():
    """Each reader takes one (mean, se) per seed and pools them as feedback_runs.pooled does."""
    sweep = _fake_sweep()
    expected = runs.pooled([0.2, 0.4], [0.05, 0.05])
    assert runs.pooled_difference(sweep, "s", "a", "b") == pytest.approx(expected)
    assert runs.pooled_difference(sweep, "s", "a", "b", "kl") == pytest.approx((-0.3, expected[1]))
    assert runs.pooled_quality(sweep, "x", "y") == pytest.approx(expected)
    fell = [runs.paired([4, 4, 3], after) for after in ([2, 3, 1], [1, 2, 1])]  # generation 0 minus 1, per seed
    assert runs.pooled_generations(sweep, (0.0, 0), (0.0, 1), "distinct") == pytest.approx(
        runs.pooled([f[0] for f in fell], [f[1] for f in fell])
    )
    gained = runs.paired([1.5, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert runs.pooled_generations(sweep, (0.5, 1), (0.0, 0)) == pytest.approx(
        runs.pooled([gained[0]] * 2, [gained[1]] * 2)
    )


def test_the_pooled_table_pools_gold_and_kl_and_averages_the_rest():
    table = runs.pooled_table(_fake_sweep(), "s")
    assert set(table) == {"a", "b"}
    assert table["a"]["gold"] == pytest.approx(runs.pooled([1.2, 1.4], [0.1, 0.1]))
    assert table["a"]["kl"] == pytest.approx(runs.pooled([2.0, 2.0], [0.2, 0.2]))
    assert table["a"]["kl_median"] == 0.5 and table["a"]["sums"] == pytest.approx(0.2)


def test_the_sliders_readout_is_the_seeds_mean_at_one_generation():
    record = lambda gold, distinct: {"gold": gold, "distinct_answers": distinct}  # noqa: E731
    seed = lambda low, high: {
        "self_training": {"0.0": [record(1, 4), record(low, 2)], "0.5": [record(1, 4), record(high, 3)]}
    }  # noqa: E731
    sweep = {"seeds": {"0": seed(1.0, 2.0), "1": seed(2.0, 3.0)}}
    assert runs.at_generation(sweep, 1) == {
        0.0: {"gold": 1.5, "distinct_answers": 2.0},
        0.5: {"gold": 2.5, "distinct_answers": 3.0},
    }
    assert runs.at_generation(sweep, 0)[0.5] == {"gold": 1.0, "distinct_answers": 4.0}
