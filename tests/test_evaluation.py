import numpy as np
import pytest

from rlhf_edu.core.evaluation import (
    PolicyEvaluation,
    evaluate_policy,
    rollout_kl,
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
    for row, ids, real, completion in zip(rollout_rows(rollout), rollout.input_ids, rollout.attention_mask,
                                          rollout.completion_mask):
        assert row["input_ids"] == ids[real.bool()].tolist()
        assert sum(row["completion_mask"]) == int(completion.sum())
        assert row["input_ids"][0] == tokenizer.bos_token_id  # the left padding is gone


def test_rollout_kl_is_the_mean_log_ratio_of_the_sampled_tokens(tokenizer, models):
    policy, ref_model = models
    rollout = sample_rollouts(policy, tokenizer, PROMPTS * 3, max_new_tokens=6, seed=0)  # some are cut off
    assert not rollout.finished.all()
    log_ratios = [logprob_alone(policy, row) - logprob_alone(ref_model, row) for row in rollout_rows(rollout)]
    assert rollout_kl(rollout, ref_model, tokenizer.pad_token_id, batch_size=5) == pytest.approx(
        np.mean(log_ratios), abs=1e-4)
    assert rollout_kl(rollout, policy, tokenizer.pad_token_id) == pytest.approx(0.0, abs=1e-4)


def test_evaluate_policy_scores_its_samples_with_the_gold_reward_and_each_component(tokenizer, world, models):
    policy, ref_model = models
    evaluation = evaluate_policy(policy, ref_model, tokenizer, world, PROMPTS, seed=3, max_new_tokens=8)
    rollout = sample_rollouts(policy, tokenizer, PROMPTS, max_new_tokens=8, seed=3)
    assert evaluation.prompts == PROMPTS and evaluation.completions == rollout.completions
    assert evaluation.gold_rewards == pytest.approx(world.gold_reward(PROMPTS, rollout.completions))
    assert evaluation.components == world.gold_components(PROMPTS, rollout.completions)
    weighted = [sum(GOLD_WEIGHTS[name] * values[i] for name, values in evaluation.components.items())
                for i in range(len(PROMPTS))]
    assert evaluation.gold_rewards == pytest.approx(weighted)  # the components add up to the gold reward
    assert evaluation.kl == pytest.approx(rollout_kl(rollout, ref_model, tokenizer.pad_token_id), abs=1e-6)
    assert evaluation.component_means() == pytest.approx(
        {name: np.mean(values) for name, values in evaluation.components.items()})
    assert evaluate_policy(policy, policy, tokenizer, world, PROMPTS, seed=3, max_new_tokens=8).kl == 0.0


def test_sample_table_lines_up_policies_on_each_prompt():
    sft = PolicyEvaluation(["add 1 and 2", "review the soup"], ["1 plus 2 is 3", "the soup"], [3.0, 0.5], {}, 0.0)
    dpo = PolicyEvaluation(["add 1 and 2", "review the soup"], ["1 plus 2 is 4", "the soup is good"], [1.0, 2.2],
                           {}, 1.5)
    assert sample_table({"SFT": sft, "DPO": dpo}, n=1) == "add 1 and 2\n  SFT  +3.00  1 plus 2 is 3\n" \
                                                          "  DPO  +1.00  1 plus 2 is 4"
    assert dpo.gold_reward == pytest.approx(1.6)
    with pytest.raises(ValueError, match="different prompts"):
        sample_table({"SFT": sft, "other": PolicyEvaluation(["add 2 and 2"], ["4"], [0.0], {}, 0.0)})
