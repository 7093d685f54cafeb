"""Notebook 13's runs (rlhf_edu.experiments.feedback_runs) and the sweep they ship."""

import json

import numpy as np
import pytest

from rlhf_edu import World, zoo
from rlhf_edu import ai_feedback as af
from rlhf_edu.constitution import revise_all
from rlhf_edu.core.evaluation import PolicyEvaluation
from rlhf_edu.core.preferences import build_preference_dataset, pair_texts
from rlhf_edu.core.runtime import numpy_rng
from rlhf_edu.experiments import feedback_runs as runs
from rlhf_edu.experiments.recipes import SWEEPS
from rlhf_edu.reward_modeling import score


@pytest.fixture(scope="module")
def models():
    sft, tokenizer = zoo.load("sft")
    rm, _ = zoo.load("rm")
    return sft, rm, tokenizer


@pytest.fixture(scope="module")
def pairs(models):
    sft, _, tokenizer = models
    return build_preference_dataset(World(seed=0), sft, tokenizer, n=24, seed=100)


def test_the_shipped_sweep_is_the_recipe():
    """ai_feedback.json holds what recipes.ai_feedback_sweep writes: its settings, and every seed's every run."""
    sweep = json.loads((SWEEPS / "ai_feedback.json").read_text())
    settings = sweep["settings"]
    assert settings["dpo"] == runs.RLAIF_DPO and settings["constitution_sft"] == runs.CONSTITUTION_SFT
    assert settings["judge_shares"] == list(runs.JUDGE_SHARES) and settings["rlaif_pairs"] == runs.RLAIF_PAIRS
    assert list(sweep["seeds"]) == [str(s) for s in runs.SEEDS]
    labelled = {*runs.LABELLERS, *(runs.share_name(s) for s in runs.JUDGE_SHARES)}
    for seed in sweep["seeds"].values():
        assert set(seed["dpo"]) == set(seed["label_agreement"]) == labelled
        assert all(set(row) == {"gain", "gain_se", "kl", "kl_se"} for row in seed["dpo"].values())
        assert set(seed["sft"]) == set(runs.SFT_SETS)


def test_the_judges_share_mixes_its_labels_with_the_annotators(models, pairs):
    """At 50% of the labels from the judge, half the pairs (drawn by the seed) take the judge's label, the rest the
    annotator's; 0% and 100% are the two labellers' own sets."""
    sft, rm, tokenizer = models
    world = World(seed=0)
    sets = runs.labelled_sets(world, pairs, tokenizer, rm, sft, seed=0, shares=(0.5,))
    prompts, a, _ = pair_texts(pairs)
    a_won = {name: np.array(pair_texts(data)[1]) == np.array(a) for name, data in sets.items()}  # chosen is a
    assert [runs.share_name(s) for s in (0, 0.25, 1)] == ["annotator", "judge 25%", "judge"]
    judged = np.zeros(len(prompts), bool)
    judged[numpy_rng(0).permutation(len(prompts))[: round(0.5 * len(prompts))]] = True  # the sweep's order at seed 0
    expected = np.where(judged, a_won["judge"], a_won["annotator"])
    assert (a_won["judge 50%"] == expected).all()
    assert (a_won["judge"] != a_won["annotator"]).any(), "the two labellers must differ somewhere to test the mix"


def test_model_labels_follow_the_scores_and_the_debiased_margins(models, pairs):
    sft, rm, tokenizer = models
    prompts, a, b = pair_texts(pairs)
    by_rm = runs.model_labels("rm", pairs, tokenizer, rm=rm)
    assert by_rm.tolist() == (score(rm, tokenizer, prompts, a) > score(rm, tokenizer, prompts, b)).long().tolist()
    by_judge = runs.model_labels("judge", pairs, tokenizer, judge=sft)
    debiased = af.debiased_margins(af.judge_margins(sft, tokenizer, prompts, a, b),
                                   af.judge_margins(sft, tokenizer, prompts, b, a))  # fmt: skip
    assert by_judge.tolist() == (debiased > 0).long().tolist()


def _evaluation(gold, log_ratios, correctness):
    return PolicyEvaluation(["add 1 and 2"] * len(gold), [""] * len(gold), gold, {"correctness": correctness},
                            float(np.mean(log_ratios)), log_ratios)  # fmt: skip


def test_gains_are_paired_per_prompt():
    start = _evaluation([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0])
    after = _evaluation([2.0, 2.0, 5.0], [0.5, 1.0, 1.5], [1.0, 1.0, 1.0])
    gains = runs.gains({"sft": start, "dpo": after})["dpo"]
    assert gains["gain"] == pytest.approx(1.0) and gains["gain_se"] == pytest.approx(np.std([1, 0, 2], ddof=1) / 3**0.5)
    assert gains["kl"] == pytest.approx(1.0) and gains["kl_se"] == pytest.approx(0.5 / 3**0.5)
    components = runs.component_gains({"sft": start, "dpo": after})["dpo"]
    assert components["correctness"][0] == pytest.approx(1 / 3) and components["gold"][0] == pytest.approx(1.0)


def test_the_constitution_sets_share_their_prompts(models):
    sft, _, tokenizer = models
    sets = runs.constitution_sets(World(seed=0), sft, tokenizer, n=12, seed=0)
    assert list(sets) == list(runs.SFT_SETS)
    prompts = [row[0]["content"] for row in sets["sft samples"]["prompt"]]
    assert all([row[0]["content"] for row in data["prompt"]] == prompts for data in sets.values())
    samples = [row[0]["content"] for row in sets["sft samples"]["completion"]]
    assert [row[0]["content"] for row in sets["revised samples"]["completion"]] == revise_all(prompts, samples)


def test_pooled_takes_the_larger_of_the_two_standard_errors():
    mean, se = runs.pooled([0.1, 0.2, 0.3], [0.01, 0.01, 0.01])  # the seeds disagree more than each run's se says
    assert mean == pytest.approx(0.2) and se == pytest.approx(0.1 / 3**0.5)
    mean, se = runs.pooled([0.2, 0.2, 0.21], [0.3, 0.3, 0.3])  # each run's own noise is the larger
    assert se == pytest.approx((3 * 0.09) ** 0.5 / 3)


def test_seeds_draw_pairs_that_share_no_answer():
    """Seed s's pairs use sampling seeds pair_seed(s) and pair_seed(s) + 1: no two seeds share one."""
    used = [{runs.pair_seed(s), runs.pair_seed(s) + 1} for s in runs.SEEDS]
    assert all(not (a & b) for i, a in enumerate(used) for b in used[i + 1 :])
