import numpy as np
import pytest

from rlhf_edu.core.evaluation import (
    PolicyEvaluation,
    evaluate_policy,
    gold_eval_fn,
    pass_at_k_curve,
    rollout_kl,
    rollout_log_ratios,
    rollout_rows,
    sample_table,
)
from rlhf_edu.core.rollouts import sample_rollouts
from rlhf_edu.core.world import GOLD_WEIGHTS
from tests.conftest import logprob_alone, random_model

PROMPTS = ["add 3 and 5", "review the soup", "describe the cat", "add 1 and 1"]
COMPLETIONS = ["3 plus 5 is 8", "the soup is tasty", "the cat is small and grey", "1 plus 1 is 2"]


@pytest.fixture(scope="module")
def models(tokenizer):
    return random_model("llama", len(tokenizer)), random_model("llama", len(tokenizer), seed=1)


def test_rollout_rows_drop_the_padding_and_keep_the_sampled_tokens(tokenizer, models):
    rollout = sample_rollouts(models[0], tokenizer, PROMPTS, max_new_tokens=6, seed=0)
    for row, ids, real, completion in zip(
        rollout_rows(rollout), rollout.input_ids, rollout.attention_mask, rollout.completion_mask
    ):
        assert row["input_ids"] == ids[real.bool()].tolist()
        assert sum(row["completion_mask"]) == int(completion.sum())
        assert row["input_ids"][0] == tokenizer.bos_token_id  # the left padding is gone


def test_rollout_kl_is_the_mean_log_ratio_of_the_sampled_tokens(tokenizer, models):
    policy, ref_model = models
    rollout = sample_rollouts(policy, tokenizer, PROMPTS * 3, max_new_tokens=6, seed=0)  # some are cut off
    assert not rollout.finished.all()
    log_ratios = [logprob_alone(policy, row) - logprob_alone(ref_model, row) for row in rollout_rows(rollout)]
    assert rollout_kl(rollout, ref_model, tokenizer.pad_token_id, batch_size=5) == pytest.approx(
        np.mean(log_ratios), abs=1e-4
    )
    assert rollout_kl(rollout, policy, tokenizer.pad_token_id) == pytest.approx(0.0, abs=1e-4)


def test_rollout_log_ratios_are_the_kls_terms_sample_by_sample(tokenizer, models):
    policy, ref_model = models
    rollout = sample_rollouts(policy, tokenizer, PROMPTS * 2, max_new_tokens=6, seed=1)
    terms = rollout_log_ratios(rollout, ref_model, tokenizer.pad_token_id)
    expected = [logprob_alone(policy, row) - logprob_alone(ref_model, row) for row in rollout_rows(rollout)]
    assert terms.tolist() == pytest.approx(expected, abs=1e-4) and np.ptp(expected) > 0
    assert terms.mean().item() == pytest.approx(rollout_kl(rollout, ref_model, tokenizer.pad_token_id))


def test_evaluate_policy_keeps_the_kls_terms(tokenizer, world, models):
    policy, ref_model = models
    prompts = world.prompts(8, split="test")
    evaluation = evaluate_policy(policy, ref_model, tokenizer, world, prompts, seed=3)
    rollout = sample_rollouts(policy, tokenizer, prompts, seed=3)  # the same samples, drawn again
    assert evaluation.completions == rollout.completions
    assert evaluation.log_ratios == pytest.approx(
        rollout_log_ratios(rollout, ref_model, tokenizer.pad_token_id).tolist(), abs=1e-9
    )
    assert np.mean(evaluation.log_ratios) == pytest.approx(evaluation.kl)
    to_itself = evaluate_policy(policy, policy, tokenizer, world, prompts, seed=3)
    assert to_itself.kl == 0.0 and to_itself.log_ratios == [0.0] * 8


def test_evaluate_policy_scores_its_samples_with_the_gold_reward_and_each_component(tokenizer, world, models):
    policy, ref_model = models
    evaluation = evaluate_policy(policy, ref_model, tokenizer, world, PROMPTS, seed=3, max_new_tokens=8)
    rollout = sample_rollouts(policy, tokenizer, PROMPTS, max_new_tokens=8, seed=3)
    assert evaluation.prompts == PROMPTS and evaluation.completions == rollout.completions
    assert evaluation.gold_rewards == pytest.approx(world.gold_reward(PROMPTS, rollout.completions))
    assert evaluation.components == world.gold_components(PROMPTS, rollout.completions)
    weighted = [
        sum(GOLD_WEIGHTS[name] * values[i] for name, values in evaluation.components.items())
        for i in range(len(PROMPTS))
    ]
    assert evaluation.gold_rewards == pytest.approx(weighted)  # the components add up to the gold reward
    assert evaluation.kl == pytest.approx(rollout_kl(rollout, ref_model, tokenizer.pad_token_id), abs=1e-6)
    assert evaluation.component_means() == pytest.approx(
        {name: np.mean(values) for name, values in evaluation.components.items()}
    )
    assert evaluate_policy(policy, policy, tokenizer, world, PROMPTS, seed=3, max_new_tokens=8).kl == 0.0


def test_sample_table_lines_up_policies_on_each_prompt():
    sft = PolicyEvaluation(["add 1 and 2", "review the soup"], ["1 plus 2 is 3", "the soup"], [3.0, 0.5], {}, 0.0)
    dpo = PolicyEvaluation(
        ["add 1 and 2", "review the soup"], ["1 plus 2 is 4", "the soup is good"], [1.0, 2.2], {}, 1.5
    )
    assert (
        sample_table({"SFT": sft, "DPO": dpo}, n=1) == "add 1 and 2\n  SFT  +3.00  1 plus 2 is 3\n"
        "  DPO  +1.00  1 plus 2 is 4"
    )
    assert dpo.gold_reward == pytest.approx(1.6)
    with pytest.raises(
        ValueError,
        match="^the evaluations were sampled on different prompts: evaluate every policy on the same list$",
    ):
        sample_table({"SFT": sft, "other": PolicyEvaluation(["add 2 and 2"], ["4"], [0.0], {}, 0.0)})


def test_sample_table_shows_five_prompts_unless_told():
    prompts = [f"add {i} and 1" for i in range(7)]
    evaluation = PolicyEvaluation(prompts, [f"{i} plus 1 is {i + 1}" for i in range(7)], [1.0] * 7, {}, 0.0)
    shown = [line for line in sample_table({"SFT": evaluation}).splitlines() if not line.startswith(" ")]
    assert shown == prompts[:5]


def test_gold_eval_fn_reports_the_gold_reward_its_components_kl_and_the_proxy(tokenizer, world, models):
    policy, ref = models

    def proxy(prompts, completions):  # reads the prompts too, so they must come with the completions
        return [float(len(p.split()) + 10 * len(c.split())) for p, c in zip(prompts, completions)]

    metrics = gold_eval_fn(world, tokenizer, PROMPTS, ref, proxy, seed=3)(policy)
    evaluation = evaluate_policy(policy, ref, tokenizer, world, PROMPTS, seed=3)
    assert metrics["gold_reward"] == pytest.approx(evaluation.gold_reward)
    assert metrics["eval/kl"] == pytest.approx(evaluation.kl)
    assert metrics["eval/reward"] == pytest.approx(np.mean(proxy(PROMPTS, evaluation.completions)))
    assert {f"gold/{k}" for k in GOLD_WEIGHTS} <= set(metrics)
    golds = np.array(evaluation.gold_rewards)
    assert metrics["gold_reward_se"] == pytest.approx(golds.std(ddof=1) / np.sqrt(len(golds)))


def test_gold_eval_fn_measures_each_monitor_on_the_same_samples(tokenizer, world, models):
    policy, ref = models
    monitors = {"words": lambda prompts, completions: [len(c.split()) for c in completions]}
    metrics = gold_eval_fn(world, tokenizer, PROMPTS, ref, seed=3, monitors=monitors)(policy)
    evaluation = evaluate_policy(policy, ref, tokenizer, world, PROMPTS, seed=3)
    words = np.array([len(c.split()) for c in evaluation.completions])
    assert metrics["monitor/words"] == pytest.approx(words.mean())
    assert metrics["monitor/words_se"] == pytest.approx(words.std(ddof=1) / np.sqrt(len(words)))
    assert "eval/reward" not in metrics  # no proxy was given


def test_pass_at_k_curve_of_a_verifier_that_accepts_one_answer_in_four(tokenizer, models):
    calls = []

    def every_fourth(prompts, completions):
        calls.append(len(completions))
        return [float(i % 4 == 0) for i in range(len(completions))]  # 4 of each prompt's 16 samples are "right"

    curve = pass_at_k_curve(
        models[0], tokenizer, PROMPTS, every_fourth, num_samples=16, ks=(1, 4, 16), max_new_tokens=3
    )
    assert calls == [len(PROMPTS) * 16]
    assert curve[1] == pytest.approx(0.25) and curve[16] == pytest.approx(1.0)
    assert curve[4] == pytest.approx(1 - 495 / 1820)


def test_component_means_of_one_family_keep_its_prompts_only():
    components = {"correctness": [1.0, 0.0, 0.5, 1.0], "tone": [0.0, 0.8, 0.2, 0.0]}
    evaluation = PolicyEvaluation(PROMPTS, COMPLETIONS, [0.0] * 4, components, 0.0)
    assert evaluation.component_means("arithmetic") == {"correctness": 1.0, "tone": 0.0}
    assert evaluation.component_means("review") == {"correctness": 0.0, "tone": 0.8}
    assert evaluation.component_means()["tone"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown family 'poetry'"):
        evaluation.component_means("poetry")
    with pytest.raises(ValueError, match="no review prompt among the 1 evaluated"):
        PolicyEvaluation(PROMPTS[:1], COMPLETIONS[:1], [0.0], {"tone": [0.0]}, 0.0).component_means("review")


def test_evaluations_sample_with_seed_0_unless_given_another(tokenizer, world, models):
    policy, ref_model = models
    seed_0 = evaluate_policy(policy, ref_model, tokenizer, world, PROMPTS, seed=0)
    seed_1 = evaluate_policy(policy, ref_model, tokenizer, world, PROMPTS, seed=1)
    assert seed_0.completions != seed_1.completions and seed_0.kl != pytest.approx(seed_1.kl)  # the seed shows
    assert evaluate_policy(policy, ref_model, tokenizer, world, PROMPTS).completions == seed_0.completions
    metrics = gold_eval_fn(world, tokenizer, PROMPTS, ref_model)(policy)
    assert metrics["eval/kl"] == pytest.approx(seed_0.kl)
    assert metrics["gold_reward"] == pytest.approx(seed_0.gold_reward)


def test_pass_at_k_curve_judges_the_seeded_samples_of_each_prompt(tokenizer, models):
    seen = []

    def half_credit(prompts, completions):
        seen.append((prompts, completions))
        return [0.5] * len(completions)  # half credit is not a pass

    curve = pass_at_k_curve(models[0], tokenizer, PROMPTS, half_credit, num_samples=4, ks=(1, 4), max_new_tokens=3)
    assert curve == {1: 0.0, 4: 0.0}
    pass_at_k_curve(models[0], tokenizer, PROMPTS, half_credit, num_samples=4, ks=(1,), seed=5, max_new_tokens=3)
    seed_0, seed_5 = (sample_rollouts(models[0], tokenizer, PROMPTS, 4, max_new_tokens=3, seed=s) for s in (0, 5))
    assert seed_0.completions != seed_5.completions
    assert seen == [(seed_0.prompts, seed_0.completions), (seed_5.prompts, seed_5.completions)]
    assert seed_0.prompts == [p for p in PROMPTS for _ in range(4)]


@pytest.mark.parametrize("make", ["gold_eval_fn", "pass_at_k_curve"])
def test_one_prompt_string_is_refused_by_name(tokenizer, world, models, make):
    policy, ref_model = models
    with pytest.raises(TypeError, match="^prompts must be a list of texts, got the single string 'add 1 and 2'"):
        if make == "gold_eval_fn":
            gold_eval_fn(world, tokenizer, "add 1 and 2", ref_model)
        else:
            pass_at_k_curve(policy, tokenizer, "add 1 and 2", lambda prompts, completions: [1.0] * len(completions))


def test_scoring_the_reference_goes_in_batches_of_the_given_size(tokenizer, models):
    policy, ref_model = models
    rollout = sample_rollouts(policy, tokenizer, PROMPTS * 3, max_new_tokens=4, seed=0)  # 12 samples
    calls = []
    handle = ref_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        rollout_log_ratios(rollout, ref_model, tokenizer.pad_token_id, batch_size=5)
        assert len(calls) == 3  # 5 + 5 + 2 rows
        rollout_kl(rollout, ref_model, tokenizer.pad_token_id, batch_size=4)
        assert len(calls) == 3 + 3
    finally:
        handle.remove()
