"""Chapter 14: final answers, majority vote, the scaling curves' estimators, sharpening and the pitfalls."""

import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch

from rlhf_edu import reasoning as R
from rlhf_edu.core import zoo
from rlhf_edu.core.stats import best_of_n_per_prompt, pass_at_k, pass_at_k_by_prompt
from rlhf_edu.core.world import World


def brute_force_vote(answers, truth, k) -> float:
    """Majority vote's accuracy over every k-subset, ties split evenly: what majority_vote_accuracy claims."""
    total, subsets = Fraction(0), 0
    for subset in itertools.combinations(range(len(answers)), k):
        subsets += 1
        votes = Counter(answers[i] for i in subset if answers[i] is not None)
        if votes:
            top = max(votes.values())
            tied = [a for a, count in votes.items() if count == top]
            total += Fraction(int(truth in tied), len(tied))
    return float(total / subsets)


@pytest.mark.parametrize(
    ("completion", "answer"),
    [("3 plus 5 is 8", 8), ("3 plus 5 is 8 .", 8), ("the cat is small", None), ("", None), ("8 is 3 plus 5", 5)],
)
def test_final_answer_is_the_last_number(completion, answer):
    assert R.final_answer(completion) == answer


def test_majority_vote_counts_numbers_and_breaks_ties_at_random():
    assert R.majority_vote([3, 5, 3, None, None, None]) == 3  # no-answer does not vote
    assert R.majority_vote([None, None]) is None
    picks = {R.majority_vote([4, 7, None], rng=seed) for seed in range(40)}
    assert picks == {4, 7}  # a tie is drawn among the tied answers, each of them some of the time


def test_majority_vote_refuses_an_empty_list_and_non_answers():
    with pytest.raises(ValueError, match="answers is empty.*k >= 1"):
        R.majority_vote([])
    with pytest.raises(TypeError, match="holds '8'.*final_answer"):
        R.majority_vote(["8"])
    with pytest.raises(TypeError, match="list of final answers"):
        R.majority_vote("8")


def test_majority_vote_accuracy_matches_every_subset():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(1, 9))
        answers = [None if x == 0 else int(x) for x in rng.integers(0, 5, size=n)]
        truth, k = int(rng.integers(1, 3)), int(rng.integers(1, n + 1))
        assert R.majority_vote_accuracy(answers, truth, k) == pytest.approx(
            brute_force_vote(answers, truth, k), abs=1e-12
        )


def test_majority_vote_accuracy_at_its_ends():
    answers = [8, 8, 3, None, 8, 5]
    assert R.majority_vote_accuracy(answers, 8, 1) == pytest.approx(3 / 6)  # one answer: the share that is right
    assert R.majority_vote_accuracy(answers, 8, 6) == 1.0  # all of them: 8 has the most votes
    assert R.majority_vote_accuracy([3, 8], 8, 2) == 0.5  # a tie of two, drawn evenly
    assert R.majority_vote_accuracy([3, 5], 8, 2) == 0.0  # the truth never sampled


def test_majority_vote_accuracy_refuses_k_beyond_the_samples():
    with pytest.raises(ValueError, match="k = 5 is larger than the 4 answers.*at least k"):
        R.majority_vote_accuracy([1, 2, 3, 4], 1, 5)


def test_best_of_n_per_prompt_matches_every_subset():
    rng = np.random.default_rng(1)
    scores, values = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    for n in (1, 2, 4, 6):
        brute = [
            np.mean([values[i, max(s, key=lambda j: scores[i, j])] for s in itertools.combinations(range(6), n)])
            for i in range(3)
        ]
        np.testing.assert_allclose(best_of_n_per_prompt(scores, values, n), brute, atol=1e-12)


def test_pass_at_k_by_prompt_is_chen_et_al_per_row_and_refuses_scores():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0]], dtype=float)
    by_prompt = pass_at_k_by_prompt(correct, (1, 2))
    np.testing.assert_allclose(by_prompt[2], [pass_at_k(4, 2, 2), 0.0])
    np.testing.assert_allclose(by_prompt[1], [0.5, 0.0])
    with pytest.raises(ValueError, match="1 for a right answer and 0"):
        pass_at_k_by_prompt(np.array([[0.3, 1.0]]), (1,))


def sample_of(answers: list[list], truths: list[int]) -> R.AnswerSample:
    correct = np.array([[float(a == t) for a in row] for row, t in zip(answers, truths)])
    M = len(answers)
    return R.AnswerSample(["add 1 and 1"] * M, [], answers, truths, correct, np.zeros(M), np.zeros(M))


def test_scaling_curves_agree_at_k_one_and_read_the_scores():
    sample = sample_of([[2, 3, 2, 2], [5, 4, 4, None]], [2, 5])
    scores = np.array([[0.0, 9.0, 1.0, 2.0], [3.0, 0.0, 1.0, 2.0]])  # picks the wrong 3, then the right 5
    curves = R.scaling_curves(sample, {"rm": scores}, ks=(1, 4))
    for name in curves:  # at k = 1 every strategy is one random answer
        np.testing.assert_allclose(curves[name][1], [0.75, 0.25])
    np.testing.assert_allclose(curves["pass@k"][4], [1.0, 1.0])
    np.testing.assert_allclose(curves["majority vote"][4], [1.0, 0.0])  # 4 has two votes, the truth 5 one
    np.testing.assert_allclose(curves["best-of-k: rm"][4], [0.0, 1.0])


def test_distinct_answer_share_and_the_crossover():
    sample = sample_of([[2, 2, 2, 2], [1, 2, None, None]], [2, 1])
    np.testing.assert_allclose(R.distinct_answer_share(sample), [0.25, 0.75])
    before = {1: np.array([0.2]), 8: np.array([0.7]), 64: np.array([0.95])}
    after = {1: np.array([0.4]), 8: np.array([0.7]), 64: np.array([0.9])}
    assert R.crossover_k(before, after) == 8
    assert R.crossover_k(after, before) == 1
    assert R.crossover_k(before, {k: v + 0.1 for k, v in before.items()}) is None


def test_group_advantage_weight_closed_forms():
    G = 8
    unscaled, scaled = R.group_advantage_weight(G, "none"), R.group_advantage_weight(G, "group")
    for c in range(1, G):
        assert unscaled[c] == pytest.approx(2 * c * (G - c) / G)  # Σ|r − mean| of c ones and G − c zeros
        std = math.sqrt(c * (G - c) / (G * (G - 1)))  # Bessel-corrected, as TRL computes it
        assert scaled[c] == pytest.approx(2 * c * (G - c) / G / (std + 1e-4))
    assert scaled[1] / scaled[4] > unscaled[1] / unscaled[4]  # the std lifts the groups the policy rarely solves


def test_token_weights_are_each_normalisers_inverse():
    lengths = [2, 4, 8]
    assert R.token_weights(lengths, "grpo") == pytest.approx([1 / (3 * n) for n in lengths])
    assert R.token_weights(lengths, "dr_grpo", max_completion_length=12) == pytest.approx([1 / 36] * 3)
    assert R.token_weights(lengths, "dapo") == pytest.approx([1 / 14] * 3)


def test_kl_placements_against_the_closed_forms():
    generator = torch.Generator().manual_seed(0)
    logits, ref_logits = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    placements = R.kl_gradient_placements(logits, ref_logits)
    probs = torch.softmax(logits.double(), -1)
    log_ratio = torch.log_softmax(logits.double(), -1) - torch.log_softmax(ref_logits.double(), -1)
    kl = (probs * log_ratio).sum(-1, keepdim=True)
    torch.testing.assert_close(placements["exact"], probs * (log_ratio - kl))  # ∇_logits KL(π‖π_ref)
    torch.testing.assert_close(placements["k3 in the loss"], R.reverse_kl_gradient(logits, ref_logits))
    bias = R.relative_bias(placements)
    assert (
        bias["k1 in the reward"] < 1e-12 and bias["k2 in the loss"] < 1e-12 and bias["k3 × ratio in the loss"] < 1e-12
    )
    assert bias["k3 in the loss"] > 0.1


def test_kl_placements_match_sampled_gradients():
    """The expectations summed over the vocabulary equal the mean of autograd's per-sample gradients."""
    generator = torch.Generator().manual_seed(1)
    logits, ref_logits = (
        torch.randn(1, 4, generator=generator).double(),
        torch.randn(1, 4, generator=generator).double(),
    )
    placements = R.kl_gradient_placements(logits, ref_logits)
    probs = torch.softmax(logits, -1)[0]
    ref = torch.log_softmax(ref_logits, -1)[0]
    for name, loss_of in {
        "k2 in the loss": lambda lp, y: 0.5 * (lp[y] - ref[y]) ** 2,
        "k3 in the loss": lambda lp, y: (ref[y] - lp[y]).exp() - (ref[y] - lp[y]) - 1,
        "k3 × ratio in the loss": lambda lp, y: (
            (lp[y] - lp[y].detach()).exp() * ((ref[y] - lp[y]).exp() - (ref[y] - lp[y]) - 1)
        ),
    }.items():
        expected = torch.zeros(4, dtype=torch.float64)
        for y in range(4):  # E_y[∇ loss(y)], summed exactly over the four tokens
            x = logits[0].clone().requires_grad_()
            loss_of(torch.log_softmax(x, -1), y).backward()
            expected += probs[y] * x.grad
        torch.testing.assert_close(placements[name][0], expected)


def test_sampling_answers_and_a_short_rlvr_run():
    model, tokenizer = zoo.load("sft")
    world = World(seed=0)
    prompts = world.prompts(3, split="test", family="arithmetic")
    sample = R.answer_sample(model, tokenizer, prompts, world.verifiable_reward, num_samples=4, seed=0)
    assert sample.correct.shape == (3, 4) and len(sample.completions) == 12
    assert sample.answers[0] == [R.final_answer(c) for c in sample.completions[:4]]
    assert sample.truths == [int(p.split()[1]) + int(p.split()[3]) for p in prompts]
    assert (sample.entropy >= 0).all() and (sample.length >= 1).all()
    before = [p.clone() for p in model.parameters()]
    trained, history = R.rlvr(model, tokenizer, world.prompts(8, family="arithmetic"), world, num_steps=2, batch_size=2)
    assert len(history["reward"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the policy passed in is untouched
    assert any(not torch.equal(a, b) for a, b in zip(before, trained.parameters()))


def test_the_sweep_recipes_run_small(monkeypatch):
    """Each shipped sweep's function, shrunk: the layout the notebook reads, for every seed."""
    model, tokenizer = zoo.load("sft")
    world = World(seed=0)
    small = {"num_steps": 1, "batch_size": 2}
    sharpening = R.sharpening_runs(model, tokenizer, world, [0, 1], num_prompts=2, num_samples=4, **small)
    assert list(sharpening["seeds"]) == ["0", "1"]
    assert len(sharpening["before"]["pass_at_k"]["4"]) == 2 and len(sharpening["seeds"]["1"]["history"]["reward"]) == 1
    per_seed, mean, _ = R.seed_difference(sharpening, "pass_at_k", 1)
    assert per_seed.shape == (2,) and mean == pytest.approx(per_seed.mean())

    monkeypatch.setattr(R, "GRPO_FAMILY_SETTINGS", {"num_iterations": 2, "eval_steps": 1, **small})
    family = R.grpo_family_runs(model, tokenizer, world, [0])
    assert list(family) == [f"{name}/0" for name in R.GRPO_VARIANTS]
    assert all({"eval/pass@1", "eval/pass@16", "entropy"} <= set(h.keys()) for h in family.values())
    from rlhf_edu.core.training import History

    two_seeds = {"a/0": History([{"x": 1.0}, {"x": 2.0}]), "a/1": History([{"x": 4.0}]), "b/0": History([{"x": 0.0}])}
    two_seeds["b/1"] = History([{"x": 1.0}])
    assert R.variant_final(two_seeds, "x") == {"a": pytest.approx((3.0, 1.0)), "b": pytest.approx((0.5, 0.5))}

    monkeypatch.setattr(R, "THINKING_SFT", {"num_demonstrations": 8, "num_epochs": 1})
    monkeypatch.setattr(R, "THINKING_RLVR", {"max_completion_length": 16, **small})
    monkeypatch.setattr(R, "THINKING_PROMPTS", {"train": 4, "test": 2, "judges": 2})
    thinking = R.thinking_runs(model, tokenizer, world, [0])["0"]
    assert set(thinking) == {"direct", "steps", "best_of_k"}
    assert set(thinking["best_of_k"]) == {
        "pass@k",
        "majority vote",
        "best-of-k: PRM (min over steps)",
        "best-of-k: ORM",
    }
    assert len(thinking["steps"]["rlvr"]["pass_at_k"]["16"]) == 2


SWEEP_DIR = R.__file__.replace("reasoning.py", "experiments/sweeps/")


def test_the_shipped_reasoning_sweeps_are_the_recipes():
    """The JSON files notebook 14 reads hold what their recipes write: the settings, and every seed's values."""
    import json

    from rlhf_edu.core.training import load_histories
    from rlhf_edu.experiments import recipes

    sharpening = json.loads(open(SWEEP_DIR + "reasoning.json").read())
    assert sharpening["settings"]["rlvr"] == R.RLVR_CONFIG and sharpening["settings"]["ks"] == list(R.KS)
    assert list(sharpening["seeds"]) == [str(s) for s in recipes.REASONING_SEEDS]
    for summary in [sharpening["before"], *sharpening["seeds"].values()]:
        assert all(len(v) == sharpening["settings"]["eval_prompts"] for v in summary["pass_at_k"].values())
    family, settings = load_histories(SWEEP_DIR + "grpo_family.json")
    assert settings["variants"] == R.GRPO_VARIANTS and settings["rlvr"] == R.RLVR_CONFIG | R.GRPO_FAMILY_SETTINGS
    assert list(family) == [f"{name}/{seed}" for name in R.GRPO_VARIANTS for seed in recipes.GRPO_FAMILY_SEEDS]
    updates = R.GRPO_FAMILY_SETTINGS["num_steps"] * R.GRPO_FAMILY_SETTINGS["num_iterations"]  # a row per update
    assert all(len(h["reward"]) == updates for h in family.values())
    thinking = json.loads(open(SWEEP_DIR + "thinking.json").read())
    assert thinking["settings"]["sft"] == R.THINKING_SFT and thinking["settings"]["rlvr"] == R.THINKING_RLVR
    assert list(thinking["seeds"]) == [str(s) for s in recipes.THINKING_SEEDS]


def test_gained_and_lost_counts_prompts_that_cross_zero():
    runs = {
        "before": {"pass_at_k": {"64": [0.0, 0.5, 1.0, 0.0]}},
        "seeds": {"0": {"pass_at_k": {"64": [0.2, 0.0, 1.0, 0.0]}}, "1": {"pass_at_k": {"64": [0.0, 0.0, 0.0, 0.0]}}},
    }
    assert R.gained_and_lost(runs) == {"0": (1, 1), "1": (0, 2)}
