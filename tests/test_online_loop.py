"""The online loop end to end: sample → score with the gold reward → REINFORCE through one shared Trainer."""

from functools import partial

import torch

from rlhf_edu.core import zoo
from rlhf_edu.core.logprobs import token_logprobs
from rlhf_edu.core.rollouts import Rollout, sample_rollouts
from rlhf_edu.core.runtime import MAX_NEW_TOKENS
from rlhf_edu.core.training import Trainer, TrainingConfig
from rlhf_edu.core.world import World

NUM_STEPS, BATCH = 20, 32


def mean_gold_reward(model, tokenizer, world, prompts):
    """E_{y~π}[g(x, y)] on fixed prompts, from 8 seeded samples each (512 in all): the same draws every time."""
    rollout = sample_rollouts(model, tokenizer, prompts, num_generations=8, max_new_tokens=MAX_NEW_TOKENS, seed=123)
    return sum(world.gold_reward(rollout.prompts, rollout.completions)) / len(rollout)


def reinforce_loss(model, rewards, rollout: Rollout, gaps: list):
    """−(1/B) Σ_b A_b Σ_t log π(y_bt | x_b, y_b<t) with A = r − mean(r): REINFORCE with a mean baseline."""
    advantages = rewards - rewards.mean()  # (B,)
    logps, mask = token_logprobs(model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask)  # (B, N)
    gaps.append((logps.detach() - rollout.logps).abs().max().item())  # on-policy: re-scoring = sampling
    loss = -(advantages * (logps * mask).sum(dim=1)).mean()
    return loss, {"reward": rewards.mean().item()}


def test_reinforce_through_the_shared_trainer_raises_the_gold_reward():
    model, tokenizer = zoo.load("sft", device="cpu")
    world = World(seed=0)
    eval_prompts = world.prompts(64, split="test")
    train_prompts = world.prompts(NUM_STEPS * BATCH)
    before = mean_gold_reward(model, tokenizer, world, eval_prompts)
    trainer = Trainer(model, TrainingConfig(learning_rate=5e-4, progress=False), total_steps=NUM_STEPS)
    optimizer, gaps = trainer.optimizer, []
    for step in range(NUM_STEPS):
        assert not model.training  # the trainer hands the model back in eval mode: sampling has no dropout
        rollout = sample_rollouts(
            model, tokenizer, train_prompts[step * BATCH : (step + 1) * BATCH], max_new_tokens=MAX_NEW_TOKENS, seed=step
        )
        rewards = torch.tensor(world.gold_reward(rollout.prompts, rollout.completions))  # (B,)
        trainer.step(partial(reinforce_loss, model, rewards, gaps=gaps), rollout)
    after = mean_gold_reward(model, tokenizer, world, eval_prompts)
    assert trainer.optimizer is optimizer
    assert all(state["step"] == NUM_STEPS for state in optimizer.state.values())  # one AdamW for the whole run
    assert len(trainer.history["loss"]) == NUM_STEPS
    assert max(gaps) < 1e-4  # each update scores exactly the tokens, and the policy, that were sampled
    # Measured on one CPU thread: 1.67 before, 1.98 after (+0.31); training on the samples of seeds 100.. and
    # 200.. instead gave +0.39 and +0.33. One mean of 512 samples has a standard error of about 0.05, so a rise
    # of more than 0.1 is learning, not noise, with room to spare. The whole test takes about 10 s.
    assert after > before + 0.1, (before, after, trainer.history["reward"])
