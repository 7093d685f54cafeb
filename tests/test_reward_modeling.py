import dataclasses
import itertools
import math
import re

import numpy as np
import pytest
import torch
from datasets import Dataset

from rlhf_edu import reward_modeling as rm
from rlhf_edu import zoo
from rlhf_edu.core.collate import collate, pad_batch
from rlhf_edu.core.logprobs import sequence_logprobs
from rlhf_edu.core.preferences import (
    build_preference_dataset,
    collate_pairs,
    encode_pairs,
    pair_length,
    pair_loader,
    pair_texts,
)
from rlhf_edu.core.runtime import get_preset
from rlhf_edu.core.stats import spearman_correlation
from rlhf_edu.core.training import TrainingConfig
from rlhf_edu.core.world import GOLD_WEIGHTS, fact_pairs
from rlhf_edu.experiments import recipes
from tests.conftest import random_model, with_end_of_turn_bias

PROMPTS = ["describe the cat", "review the pizza", "add 3 and 5", "describe the dog"]
COMPLETIONS = ["the cat is small and grey", "the pizza is tasty", "3 plus 5 is 8", "the dog is big and loud and brown"]


def reward_model(arch: str, tokenizer, seed: int = 0):
    return rm.reward_model_from(random_model(arch, len(tokenizer), seed=seed), seed=seed)


def pairs_dataset(n_repeats: int = 4, **extra_columns) -> Dataset:
    """Pairs whose chosen answer is on topic and rejected one is not: a pattern a model can learn in a few steps."""
    prompts = ["describe the cat", "review the pizza"] * n_repeats
    chosen = ["the cat is small and grey", "the pizza is tasty"] * n_repeats
    rejected = ["the book is bad", "i think the song is dull"] * n_repeats
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p}] for p in prompts],
            "chosen": [[{"role": "assistant", "content": c}] for c in chosen],
            "rejected": [[{"role": "assistant", "content": r}] for r in rejected],
            **extra_columns,
        }
    )


# --- the Bradley-Terry model ----------------------------------------------------------
def test_preference_probability_hand_values():
    p = rm.preference_probability(torch.tensor([0.0, math.log(3), 2.0]), torch.tensor([0.0, 0.0, 2.0 + math.log(3)]))
    assert torch.allclose(p, torch.tensor([0.5, 0.75, 0.25]))


def test_pair_functions_refuse_mismatched_batches():
    for fn in (rm.preference_probability, rm.bradley_terry_loss, rm.pairwise_accuracy):
        with pytest.raises(ValueError, match="differ in shape: pass one chosen and one rejected"):
            fn(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="differ in shape"):
        rm.reward_centering(torch.zeros(3), torch.zeros(2), 0.1)


def test_bradley_terry_loss_hand_values_and_margin():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 2.0])
    expected = torch.tensor([math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.e)])
    assert torch.allclose(rm.bradley_terry_loss(chosen, rejected), expected)
    # eq:rewardmodeling2, the other form of the same loss
    assert torch.allclose(rm.bradley_terry_loss(chosen, rejected), torch.log1p(torch.exp(rejected - chosen)))
    # a margin of 1 turns the first pair's gap of 1 into a coin flip
    assert rm.bradley_terry_loss(chosen, rejected, margin=1.0)[0].item() == pytest.approx(math.log(2))
    per_pair = rm.bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 0.0, -1.0]))
    assert torch.allclose(per_pair, torch.tensor([math.log(2), math.log(2), math.log(2)]))


def test_bradley_terry_loss_is_finite_at_extreme_gaps():
    chosen = torch.tensor([200.0, -200.0, 1e4], requires_grad=True)
    loss = rm.bradley_terry_loss(chosen, torch.zeros(3))
    assert torch.allclose(loss.detach(), torch.tensor([0.0, 200.0, 0.0]))
    loss.sum().backward()
    assert torch.allclose(chosen.grad, torch.tensor([0.0, -1.0, 0.0]))


def test_reward_centering_hand_value():
    centering = rm.reward_centering(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 1.0]), coefficient=0.01)
    assert torch.allclose(centering, torch.tensor([0.09, 0.0]))


def test_plackett_luce_equals_bradley_terry_for_two():
    rewards = torch.tensor([[1.5, -0.5], [0.0, 3.0], [-2.0, -2.0]])
    assert torch.allclose(rm.plackett_luce_loss(rewards), rm.bradley_terry_loss(rewards[:, 0], rewards[:, 1]))


def test_plackett_luce_matches_brute_force_for_three():
    r = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    e = r.exp()

    def probability(order):  # pick the best of the remaining answers, one at a time
        i, j, k = order
        return e[i] / (e[i] + e[j] + e[k]) * e[j] / (e[j] + e[k])

    orders = list(itertools.permutations(range(3)))
    losses = rm.plackett_luce_loss(torch.stack([r[list(order)] for order in orders]))  # (6,)
    for order, loss in zip(orders, losses):
        assert loss.item() == pytest.approx(-math.log(probability(order)))
    assert losses.neg().exp().sum().item() == pytest.approx(1.0)


def test_plackett_luce_refuses_a_single_answer():
    with pytest.raises(ValueError, match="K >= 2 answers per prompt"):
        rm.plackett_luce_loss(torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"pass \(B, K\) rewards"):
        rm.plackett_luce_loss(torch.zeros(4))


def test_plot_bradley_terry_draws_probability_and_shifted_loss():
    fig = rm.plot_bradley_terry(gap=1.0, margin=2.0)
    left, right = fig.axes
    gaps, probability = left.lines[0].get_data()
    assert torch.allclose(torch.as_tensor(probability), torch.sigmoid(torch.as_tensor(gaps)))
    gaps, loss = right.lines[1].get_data()
    assert torch.allclose(torch.as_tensor(loss), torch.log1p(torch.exp(2.0 - torch.as_tensor(gaps))), atol=1e-6)
    fig.clf()


# --- the reward model ---------------------------------------------------------------
def assert_same_backbone(model, causal_lm) -> None:
    """``model``'s transformer holds exactly ``causal_lm``'s weights."""
    copied = model.base_model.state_dict()
    for name, weight in causal_lm.base_model.state_dict().items():
        assert torch.equal(copied[name], weight), name


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_reward_model_from_copies_the_backbone_and_adds_a_scalar_head(arch, tokenizer):
    causal_lm = random_model(arch, len(tokenizer))
    model = rm.reward_model_from(causal_lm, seed=1)
    assert type(model).__name__.endswith("ForSequenceClassification") and model.config.num_labels == 1
    assert_same_backbone(model, causal_lm)
    again = rm.reward_model_from(causal_lm, seed=1)
    assert torch.equal(model.score.weight, again.score.weight)
    rm.check_reward_model(model, tokenizer)


def test_check_reward_model_explains_what_to_fix(tokenizer):
    with pytest.raises(ValueError, match="is not a reward model: build one with reward_model_from"):
        rm.check_reward_model(random_model("llama", len(tokenizer)), tokenizer)
    model = reward_model("llama", tokenizer)
    model.config.pad_token_id = None
    with pytest.raises(
        ValueError,
        match=r"^model\.config\.pad_token_id is not set, so the model cannot find the last real token of a padded "
        r"row: set model\.config\.pad_token_id = tokenizer\.pad_token_id$",
    ):
        rm.score(model, tokenizer, PROMPTS, COMPLETIONS)
    model.config.pad_token_id = 3
    with pytest.raises(ValueError, match="tokenizer pads with 0"):
        rm.check_reward_model(model, tokenizer)


@pytest.mark.parametrize("kind", ["causal lm", "two labels"])
def test_check_reward_model_names_the_class_and_the_number_of_labels(kind, tokenizer):
    if kind == "causal lm":
        model, name = random_model("llama", len(tokenizer)), "LlamaForCausalLM"  # its config says num_labels=2
    else:
        model, name = reward_model("llama", tokenizer), "LlamaForSequenceClassification"
        model.config.num_labels = 2  # a classifier, not a scorer: the right class alone does not make a reward model
    with pytest.raises(
        ValueError,
        match=rf"^{name} with num_labels=2 is not a reward model: build one with reward_model_from\(causal_lm\), or "
        r"from_pretrained\(path, num_labels=1\) on a sequence classifier$",
    ):
        rm.check_reward_model(model, tokenizer)


@pytest.mark.parametrize("build", [rm.reward_model_from, rm.outcome_reward_model_from])
def test_scalar_heads_default_to_seed_0_and_leave_the_causal_lms_config_alone(build, tokenizer):
    causal_lm = random_model("qwen2", len(tokenizer))  # its config holds a dict and a list
    before = causal_lm.config.to_dict()
    model = build(causal_lm)
    assert torch.equal(model.score.weight, build(causal_lm, seed=0).score.weight)
    assert not torch.equal(model.score.weight, build(causal_lm, seed=1).score.weight)
    assert causal_lm.config.to_dict() == before
    # a copy, not a view: editing the new model's config in place cannot reach the causal LM's
    shared = [
        name
        for name, value in vars(model.config).items()
        if isinstance(value, (dict, list)) and value is vars(causal_lm.config).get(name)
    ]
    assert shared == []


def with_a_hidden_token(batch: dict[str, torch.Tensor], position: int, token_id: int) -> dict[str, torch.Tensor]:
    """``batch`` with ``token_id`` inserted at ``position`` in every row, masked out (attention 0)."""
    inserted = {"input_ids": token_id, "attention_mask": 0, "completion_mask": 0}
    return {
        name: torch.cat(
            [tensor[:, :position], torch.full((len(tensor), 1), inserted[name]), tensor[:, position:]], dim=1
        )
        for name, tensor in batch.items()
    }


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_a_token_the_attention_mask_hides_changes_no_score(arch, tokenizer):
    """Both heads read the real tokens alone: a masked-out token mid-row is as if it were not there."""
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    hidden = with_a_hidden_token(batch, 3, tokenizer.convert_tokens_to_ids("dog"))
    others = torch.arange(hidden["input_ids"].shape[1]) != 3  # every column but the hidden token's
    real = batch["attention_mask"] == 1  # (B, T)
    model = reward_model(arch, tokenizer)
    orm = rm.outcome_reward_model_from(random_model(arch, len(tokenizer)))
    with torch.no_grad():
        plain = rm.sequence_rewards(model, batch["input_ids"], batch["attention_mask"])
        masked = rm.sequence_rewards(model, hidden["input_ids"], hidden["attention_mask"])
        plain_logits = rm.token_correctness_logits(orm, batch)  # (B, T)
        masked_logits = rm.token_correctness_logits(orm, hidden)  # (B, T + 1)
    assert torch.allclose(masked, plain, atol=1e-5)
    assert torch.allclose(masked_logits[:, others][real], plain_logits[real], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_sequence_rewards_reads_the_last_token_on_either_padding_side(arch, tokenizer):
    model = reward_model(arch, tokenizer)
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)  # right-padded
    lengths = batch["attention_mask"].sum(dim=1)
    left_ids = torch.stack([ids.roll(int(ids.numel() - n)) for ids, n in zip(batch["input_ids"], lengths)])
    left_mask = torch.stack([m.roll(int(m.numel() - n)) for m, n in zip(batch["attention_mask"], lengths)])
    with torch.no_grad():
        right = rm.sequence_rewards(model, batch["input_ids"], batch["attention_mask"])
        left = rm.sequence_rewards(model, left_ids, left_mask)
        # independent: the score head applied to the last hidden state of each row run alone
        alone = torch.stack(
            [
                model.score(model.base_model(ids[:n].unsqueeze(0)).last_hidden_state[0, -1]).squeeze()
                for ids, n in zip(batch["input_ids"], lengths)
            ]
        )
    assert right.shape == (len(PROMPTS),)
    assert torch.allclose(right, left, atol=1e-5)
    assert torch.allclose(right, alone, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_score_is_independent_of_batch_composition_and_padding_side(arch, tokenizer):
    model = reward_model(arch, tokenizer)
    together = rm.score(model, tokenizer, PROMPTS, COMPLETIONS)
    one_by_one = torch.cat([rm.score(model, tokenizer, [p], [c]) for p, c in zip(PROMPTS, COMPLETIONS)])
    reversed_order = rm.score(model, tokenizer, PROMPTS[::-1], COMPLETIONS[::-1], batch_size=3).flip(0)
    side = tokenizer.padding_side
    try:
        tokenizer.padding_side = "left"
        left = rm.score(model, tokenizer, PROMPTS, COMPLETIONS)
    finally:
        tokenizer.padding_side = side
    assert together.shape == (4,) and together.device.type == "cpu"
    for other in (one_by_one, reversed_order, left):
        assert torch.allclose(together, other, atol=1e-5)


def test_score_takes_no_answers_at_all_and_names_a_bad_completions_argument(tokenizer):
    model = reward_model("llama", tokenizer)
    assert rm.score(model, tokenizer, [], []).shape == (0,)  # e.g. a filter that kept nothing
    with pytest.raises(TypeError, match=r"^completions must be a list of texts, got the single string 'the cat'"):
        rm.score(model, tokenizer, ["describe the cat"], "the cat")


def test_score_and_score_pairs_batch_by_the_batch_size_they_are_given(tokenizer, monkeypatch):
    seen = []
    real = rm.score_completions

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"] if "batch_size" in kwargs else args[5] if len(args) > 5 else "default")
        return real(*args, **kwargs)

    monkeypatch.setattr(rm, "score_completions", spy)
    model = reward_model("llama", tokenizer)
    rm.score(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=3)
    rm.score_pairs(model, tokenizer, pairs_dataset(1), batch_size=2)
    assert seen == [3, 2, 2]  # chosen and rejected alike


def test_score_refuses_mismatched_lists(tokenizer):
    model = reward_model("llama", tokenizer)
    with pytest.raises(ValueError, match=f"got {len(PROMPTS)} prompts but 2 completions: pass one per example"):
        rm.score(model, tokenizer, PROMPTS, COMPLETIONS[:2])
    with pytest.raises(TypeError, match="prompts must be a list of texts, got the single string 'describe the cat'"):
        rm.score(model, tokenizer, "describe the cat", "the cat is small")


# --- training ---------------------------------------------------------------------
def test_collate_pairs_stacks_chosen_then_rejected(tokenizer):
    rows = encode_pairs(tokenizer, pairs_dataset(1, margin=[0.5, 2.0]))
    batch = collate_pairs(rows, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4 and torch.equal(batch["margin"], torch.tensor([0.5, 2.0]))
    chosen = collate(
        tokenizer, ["describe the cat", "review the pizza"], ["the cat is small and grey", "the pizza is tasty"]
    )
    T = chosen["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][:2, :T], chosen["input_ids"])


def test_reward_modeling_loss_is_the_mean_bradley_terry_loss_plus_centering(tokenizer):
    model = reward_model("llama", tokenizer)
    batch = collate_pairs(encode_pairs(tokenizer, pairs_dataset(1, margin=[0.5, 2.0])), tokenizer.pad_token_id)
    with torch.no_grad():
        loss, metrics = rm.reward_modeling_loss(model, batch, center_rewards_coefficient=0.1)
    chosen = rm.score(
        model, tokenizer, ["describe the cat", "review the pizza"], ["the cat is small and grey", "the pizza is tasty"]
    )
    rejected = rm.score(
        model, tokenizer, ["describe the cat", "review the pizza"], ["the book is bad", "i think the song is dull"]
    )
    gaps = chosen - rejected
    expected = (torch.log1p(torch.exp(-(gaps - torch.tensor([0.5, 2.0])))) + 0.1 * (chosen + rejected) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert metrics["accuracy"] == (gaps > 0).float().mean().item()
    assert metrics["margin"] == pytest.approx(gaps.mean().item(), abs=1e-5)
    assert metrics["max_reward"] == pytest.approx(max(chosen.max(), rejected.max()).item(), abs=1e-5)


def test_a_few_steps_raise_accuracy_on_a_fixed_batch(tokenizer):
    model = reward_model("llama", tokenizer, seed=3)
    dataset = pairs_dataset(4)
    before = rm.pairwise_accuracy(*rm.score_pairs(model, tokenizer, dataset))
    history = rm.train_reward_model(
        model, tokenizer, dataset, rm.RewardConfig(learning_rate=3e-3, batch_size=8, num_epochs=15, progress=False)
    )
    after = rm.pairwise_accuracy(*rm.score_pairs(model, tokenizer, dataset))
    assert before < 1.0 and after == 1.0
    assert history.mean("loss", last=3) < history["loss"][0]
    assert {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"} <= set(history.keys())


def test_train_reward_model_refuses_bad_data_and_settings(tokenizer):
    model = reward_model("llama", tokenizer)
    with pytest.raises(ValueError, match="no chosen, rejected column"):
        rm.train_reward_model(
            model, tokenizer, pairs_dataset(1).remove_columns(["chosen", "rejected"]), rm.RewardConfig(progress=False)
        )
    with pytest.raises(
        ValueError, match=r"^config\.margin and the dataset's 'margin' column are both set: keep one of them$"
    ):  # one pair: the check reads the first row, which every dataset has
        rm.train_reward_model(
            model,
            tokenizer,
            pairs_dataset(1, margin=[1.0, 1.0]).select([0]),
            rm.RewardConfig(margin=1.0, progress=False),
        )
    with pytest.raises(ValueError, match="preference dataset is empty"):
        rm.train_reward_model(model, tokenizer, pairs_dataset(0), rm.RewardConfig(progress=False))
    with pytest.raises(ValueError, match="center_rewards_coefficient must be >= 0"):
        rm.RewardConfig(center_rewards_coefficient=-0.1)
    model.config.pad_token_id = None
    with pytest.raises(ValueError, match="pad_token_id is not set"):
        rm.train_reward_model(model, tokenizer, pairs_dataset(1), rm.RewardConfig(progress=False))


def test_reward_config_takes_zero_for_centering_and_margin():
    config = rm.RewardConfig(center_rewards_coefficient=0.0, margin=0.0)
    assert (config.center_rewards_coefficient, config.margin) == (0.0, 0.0)
    assert rm.RewardConfig(center_rewards_coefficient=0.5, margin=0.5).center_rewards_coefficient == 0.5
    with pytest.raises(ValueError, match=r"^margin must be >= 0, got -1: the gap m the chosen answer must win by"):
        rm.RewardConfig(margin=-1.0)


def test_reward_modeling_loss_uses_the_margin_argument_when_the_batch_has_no_margin(tokenizer):
    model = reward_model("llama", tokenizer)
    batch = collate_pairs(encode_pairs(tokenizer, pairs_dataset(1)), tokenizer.pad_token_id)
    with torch.no_grad():
        loss, _ = rm.reward_modeling_loss(model, batch, margin=1.5)
    chosen, rejected = rm.score_pairs(model, tokenizer, pairs_dataset(1))
    expected = torch.log1p(torch.exp(-(chosen - rejected - 1.5))).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_train_reward_model_first_loss_has_the_configs_margin_and_centering(tokenizer):
    model = reward_model("llama", tokenizer)
    dataset = pairs_dataset(1)  # two pairs, one batch: the first step's loss is the untrained model's
    chosen, rejected = rm.score_pairs(model, tokenizer, dataset)
    bradley_terry = torch.log1p(torch.exp(-(chosen - rejected - 2.0)))
    centering = 0.5 * (chosen + rejected) ** 2
    assert centering.mean() > 1e-3  # large enough to be seen
    config = rm.RewardConfig(batch_size=2, margin=2.0, center_rewards_coefficient=0.5, progress=False)
    history = rm.train_reward_model(model, tokenizer, dataset, config)
    assert history["loss"][0] == pytest.approx((bradley_terry + centering).mean().item(), abs=1e-5)


def test_train_reward_model_refuses_pairs_longer_than_max_length(tokenizer):
    model = reward_model("llama", tokenizer)
    with pytest.raises(ValueError, match=r"^example 0 is \d+ tokens long but max_length is 8"):
        rm.train_reward_model(model, tokenizer, pairs_dataset(1), rm.RewardConfig(max_length=8, progress=False))


def test_the_progress_bars_name_the_model_they_train(tokenizer, capsys):
    rm.train_reward_model(
        reward_model("llama", tokenizer), tokenizer, pairs_dataset(1), rm.RewardConfig(batch_size=2, progress=True)
    )
    assert re.search(r"(^|\r)reward model: 100%", capsys.readouterr().err)
    orm = rm.outcome_reward_model_from(random_model("llama", len(tokenizer)))
    data = Dataset.from_dict({"prompt": ["add 1 and 2"], "completion": ["1 plus 2 is 3"], "label": [True]})
    rm.train_outcome_reward_model(orm, tokenizer, data, TrainingConfig(progress=True))
    assert re.search(r"(^|\r)outcome reward model: 100%", capsys.readouterr().err)


def test_accuracy_vs_pairs_builds_each_model_with_the_configs_seed(tokenizer, world, monkeypatch):
    causal_lm = random_model("llama", len(tokenizer))
    trained = []
    monkeypatch.setattr(rm, "train_reward_model", lambda model, tokenizer, pairs, config: trained.append(len(pairs)))
    monkeypatch.setattr(rm, "evaluate_reward_model", lambda model, *args: {"head": model.score.weight.sum().item()})
    curve = rm.accuracy_vs_pairs(
        causal_lm, tokenizer, world, pairs_dataset(2), pairs_dataset(1), [1, 3], rm.RewardConfig(seed=5)
    )
    head = rm.reward_model_from(causal_lm, seed=5).score.weight.sum().item()
    assert head != rm.reward_model_from(causal_lm, seed=0).score.weight.sum().item()
    assert curve == {"num_pairs": [1, 3], "head": [head, head]} and trained == [1, 3]


def test_reward_config_batches_at_random_unless_asked_to_group_by_length(tokenizer):
    from functools import partial

    from rlhf_edu.core.training import make_loader

    dataset = Dataset.from_dict(
        {
            "prompt": PROMPTS * 4,
            "chosen": COMPLETIONS * 4,
            "rejected": ["the book is bad", "the cat", "3", "the dog"] * 4,
        }
    )
    pairs = encode_pairs(tokenizer, dataset)
    config = rm.RewardConfig(batch_size=4)
    assert config.group_by_length is False  # the shipped rm was trained on plain random batches
    plain = make_loader(pairs, partial(collate_pairs, pad_token_id=tokenizer.pad_token_id), config)
    assert all(
        torch.equal(a["input_ids"], b["input_ids"])
        for a, b in zip(pair_loader(pairs, tokenizer.pad_token_id, config), plain, strict=True)
    )
    grouped = pair_loader(pairs, tokenizer.pad_token_id, rm.RewardConfig(batch_size=4, group_by_length=True))
    widths = sorted(batch["input_ids"].shape[1] for batch in grouped)
    longest_first = sorted((pair_length(pair) for pair in pairs), reverse=True)
    assert max(widths) == longest_first[0] and min(widths) == sorted(longest_first)[3]  # shortest 4 pairs together
    assert pair_length({"chosen": {"input_ids": [1, 2, 3]}, "rejected": {"input_ids": [1] * 5}}) == 5


# --- measured against the world -------------------------------------------------------
def test_pairwise_and_expected_accuracy_hand_values():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0, 0.5])
    assert rm.pairwise_accuracy(chosen, rejected) == 0.5  # the tie counts as wrong
    p_chosen = [0.9, 0.6, 0.7, 0.8]
    assert rm.expected_accuracy(chosen, rejected, p_chosen) == pytest.approx((0.9 + 0.4 + 0.7 + 0.2) / 4)


def test_expected_accuracy_is_exact_to_double_precision():
    p_chosen = [0.1, 0.2, 0.7]  # none of them exact in float32, off by parts in 1e8
    value = rm.expected_accuracy(torch.ones(3), torch.zeros(3), p_chosen)
    assert value == pytest.approx(math.fsum(p_chosen) / 3, rel=1e-14, abs=0)


def test_reward_metrics_hand_values_range_over_both_answers():
    # the lowest and the highest reward are both on the rejected side
    metrics = rm.reward_metrics(torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 4.0]))
    assert metrics == pytest.approx(
        {
            "accuracy": 0.5,
            "margin": (3.0 - 1.0) / 2,
            "min_reward": -2.0,
            "mean_reward": (1.0 + 3.0 - 2.0 + 4.0) / 4,
            "max_reward": 4.0,
        }
    )


def test_expected_accuracy_of_the_gold_reward_is_the_bayes_ceiling(world):
    prompts, a = PROMPTS * 10, COMPLETIONS * 10
    b = ["the cat is bad", "the pizza is tasty tasty", "3 plus 5 is 9", "the dog is small"] * 10
    p_a = world.preference_probability(prompts, a, b)
    gold_a, gold_b = torch.tensor(world.gold_reward(prompts, a)), torch.tensor(world.gold_reward(prompts, b))
    assert rm.expected_accuracy(gold_a, gold_b, p_a) == pytest.approx(world.bayes_accuracy(prompts, a, b))


def test_calibration_table_hand_example():
    logit = math.log(3)  # σ(ln 3) = 0.75
    table = rm.calibration_table(torch.tensor([logit, logit, -logit]), torch.zeros(3), num_bins=2)
    # both orders: 0.75 won twice and lost once, 0.25 lost twice and won once
    assert torch.allclose(table["predicted"], torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert torch.allclose(table["observed"], torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    assert table["count"].tolist() == [3, 3]
    assert rm.expected_calibration_error(table) == pytest.approx(1 / 12)


def test_calibration_table_has_ten_bins_by_default_and_keeps_only_the_filled_ones():
    p = torch.tensor([0.72, 0.78], dtype=torch.float64)
    table = rm.calibration_table(torch.log(p / (1 - p)).float(), torch.zeros(2))
    # 0.72 and 0.78 share the bin [0.7, 0.8) of ten (not of eleven); 0.22 and 0.28 share [0.2, 0.3)
    assert table["count"].tolist() == [2, 2]
    assert torch.allclose(table["predicted"], torch.tensor([0.25, 0.75], dtype=torch.float64), atol=1e-6)
    assert table["observed"].tolist() == [0.0, 1.0]  # the chosen answer won both, so its mirror lost both


def test_calibration_table_puts_certainty_in_the_top_bin_and_keeps_single_comparisons():
    # σ(30) is 1.0 in float32, so one comparison is predicted at exactly 1 and its mirror at exactly 0
    table = rm.calibration_table(torch.tensor([30.0, math.log(1.5)]), torch.zeros(2), num_bins=4)
    assert table["count"].tolist() == [1, 1, 1, 1]  # 0, 0.4, 0.6 and 1 in bins [0, .25), [.25, .5), [.5, .75), [.75, 1]
    assert torch.allclose(table["predicted"], torch.tensor([0.0, 0.4, 0.6, 1.0], dtype=torch.float64))
    assert table["observed"].tolist() == [0.0, 0.0, 1.0, 1.0]
    certain = rm.calibration_table(torch.tensor([30.0, math.log(19)]), torch.zeros(2), num_bins=10)
    assert certain["count"].tolist() == [2, 2]  # 1.0 joins 0.95 in the top bin [0.9, 1]
    assert torch.allclose(certain["predicted"], torch.tensor([0.025, 0.975], dtype=torch.float64))


def test_calibration_of_the_true_model_is_near_perfect():
    generator = torch.Generator().manual_seed(0)
    gaps = torch.randn(20_000, generator=generator) * 2
    chosen_first = torch.rand(20_000, generator=generator) < torch.sigmoid(gaps)
    chosen, rejected = torch.where(chosen_first, gaps, 0.0), torch.where(chosen_first, 0.0, gaps)
    assert rm.expected_calibration_error(rm.calibration_table(chosen, rejected)) < 0.02


def test_implied_weights_recover_a_known_mix():
    generator = torch.Generator().manual_seed(0)
    weights = {"correctness": 4.0, "relevance": 0.0, "tone": 2.0, "concision": 1.0, "repetition": -3.0}
    components = {name: torch.rand(50, generator=generator, dtype=torch.float64).tolist() for name in weights}
    rewards = 0.5 + sum(w * torch.tensor(components[name], dtype=torch.float64) for name, w in weights.items())
    recovered = rm.implied_weights(rewards, components)
    assert list(recovered) == list(weights)
    assert recovered == pytest.approx(weights, abs=1e-9)


def test_ceiling_share_is_zero_at_chance_and_one_at_the_ceiling():
    assert rm.ceiling_share(0.5, 0.75) == 0.0
    assert rm.ceiling_share(0.75, 0.75) == 1.0
    assert rm.ceiling_share(0.6, 0.75) == pytest.approx(0.4)  # where acc / Bayes would say 80%
    assert rm.ceiling_share(0.45, 0.75) == pytest.approx(-0.2)
    assert rm.ceiling_share(0.75, 1.0) == 0.5  # noiseless labels: the ceiling is 1
    for bayes_accuracy in (0.5, 1.5):
        with pytest.raises(ValueError, match=rf"^bayes_accuracy must be in \(0\.5, 1\], got {bayes_accuracy}: "):
            rm.ceiling_share(0.5, bayes_accuracy)


def test_within_prompt_agreement_matches_a_loop_over_pairs():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (5, 6), generator=generator).double()  # ties on purpose
    gold = torch.randint(0, 3, (5, 6), generator=generator).double()
    agree, total = 0.0, 0
    for i in range(5):
        for a, b in itertools.combinations(range(6), 2):
            if gold[i, a] == gold[i, b]:
                continue
            total += 1
            better, worse = (a, b) if gold[i, a] > gold[i, b] else (b, a)
            s_better, s_worse = scores[i, better], scores[i, worse]
            agree += 1.0 if s_better > s_worse else 0.5 if s_better == s_worse else 0.0
    assert rm.within_prompt_agreement(scores, gold) == pytest.approx(agree / total)


def test_within_prompt_agreement_ignores_a_constant_per_prompt():
    gold = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 4.0]])
    offsets = torch.tensor([[100.0], [-100.0]])  # would wreck a global rank correlation
    assert rm.within_prompt_agreement(gold + offsets, gold) == 1.0
    assert rm.within_prompt_agreement(-gold, gold) == 0.0
    with pytest.raises(
        ValueError, match="^the gold reward ties every pair of answers: sample more varied answers per prompt$"
    ):
        rm.within_prompt_agreement(gold, torch.ones(2, 3))


def test_best_of_n_capture_is_one_for_the_oracle_and_matches_its_definition():
    generator = torch.Generator().manual_seed(1)
    gold = torch.randn(40, 8, generator=generator, dtype=torch.float64)
    noisy = gold + torch.randn(40, 8, generator=generator, dtype=torch.float64)
    assert rm.best_of_n_capture(gold, gold, [2, 8]) == pytest.approx({2: 1.0, 8: 1.0})
    assert rm.best_of_n_capture(-gold, gold, [8])[8] < 0
    one, picked, oracle = (
        gold.mean().item(),
        gold.gather(1, noisy.argmax(1, keepdim=True)).mean().item(),
        gold.max(1).values.mean().item(),
    )  # at n = N the pick is the argmax of all N
    assert rm.best_of_n_capture(noisy, gold, [8])[8] == pytest.approx((picked - one) / (oracle - one))
    with pytest.raises(ValueError, match="^n must be >= 2, got 1: at n = 1 there is no choice, so no gain to share$"):
        rm.best_of_n_capture(noisy, gold, [1])


def test_implied_weights_interval_covers_the_truth_and_widens_with_collinearity():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(400, generator=generator, dtype=torch.float64)
    b = torch.rand(400, generator=generator, dtype=torch.float64)
    near_a = a + 0.02 * torch.randn(400, generator=generator, dtype=torch.float64)
    rewards = 2 * a + 1 * b + 0.1 * torch.randn(400, generator=generator, dtype=torch.float64)
    apart = rm.implied_weights_interval(rewards, {"a": a.tolist(), "b": b.tolist()})
    assert apart["a"][0] < 2 < apart["a"][1] and apart["b"][0] < 1 < apart["b"][1]
    together = rm.implied_weights_interval(rewards, {"a": a.tolist(), "near_a": near_a.tolist(), "b": b.tolist()})
    width = {name: high - low for name, (low, high) in together.items()}
    assert width["a"] > 5 * (apart["a"][1] - apart["a"][0])  # a and its near copy trade weight
    with pytest.raises(ValueError, match="level"):
        rm.implied_weights_interval(rewards, {"a": a.tolist()}, level=90)


def test_implied_weights_stderr_matches_least_squares_and_the_interval():
    generator = torch.Generator().manual_seed(1)
    a, b = (torch.rand(400, generator=generator, dtype=torch.float64) for _ in range(2))
    rewards = 2 * a + 1 * b + 0.1 * torch.randn(400, generator=generator, dtype=torch.float64)
    components = {"a": a.tolist(), "b": b.tolist()}
    stderr = rm.implied_weights_stderr(rewards, components, num_resamples=400)
    features = np.stack([np.ones(400), a.numpy(), b.numpy()], axis=1)  # (N, 3) with the intercept
    residuals = rewards.numpy() - features @ np.linalg.lstsq(features, rewards.numpy(), rcond=None)[0]
    classical = np.sqrt(np.diag(residuals.var(ddof=3) * np.linalg.inv(features.T @ features)))[1:]  # (2,)
    assert stderr["a"] == pytest.approx(classical[0], rel=0.2) and stderr["b"] == pytest.approx(classical[1], rel=0.2)
    interval = rm.implied_weights_interval(rewards, components, level=0.9, num_resamples=400)
    assert interval["a"][1] - interval["a"][0] == pytest.approx(2 * 1.645 * stderr["a"], rel=0.2)
    with pytest.raises(ValueError, match="num_resamples"):
        rm.implied_weights_stderr(rewards, components, num_resamples=1)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, 90])
def test_implied_weights_interval_refuses_a_level_outside_0_to_1(level):
    with pytest.raises(
        ValueError, match=rf"^level must be between 0 and 1, got {level!r}: e\.g\. 0\.9 for a 90% interval$"
    ):
        rm.implied_weights_interval(torch.arange(4.0), {"a": [0.0, 1.0, 3.0, 2.0]}, level=level)


def test_implied_weights_interval_and_stderr_read_the_refits_as_stated(monkeypatch):
    """Refits 0, 1, ..., 100: the 90% interval is their 5% and 95% quantiles, the stderr their sample deviation."""
    monkeypatch.setattr(rm, "_bootstrap_weights", lambda *args: {"a": np.arange(101.0)})
    for level, expected in ((0.9, (5.0, 95.0)), (0.5, (25.0, 75.0))):
        interval = rm.implied_weights_interval(torch.zeros(3), {"a": [0, 1, 2]}, level=level)
        assert interval == {"a": pytest.approx(expected, abs=1e-9)}
    monkeypatch.setattr(rm, "_bootstrap_weights", lambda *args: {"a": np.array([1.0, 2.0, 3.0, 4.0])})
    assert rm.implied_weights_stderr(torch.zeros(3), {"a": [0, 1, 2]}) == {"a": pytest.approx(math.sqrt(5 / 3))}


def test_implied_weights_bootstrap_defaults_and_the_intercept_switch():
    generator = torch.Generator().manual_seed(2)
    a = torch.rand(60, generator=generator, dtype=torch.float64)
    rewards = 3 + 2 * a + 0.1 * torch.randn(60, generator=generator, dtype=torch.float64)
    components = {"a": a.tolist()}
    # the documented defaults: 200 resamples from seed 0, with an intercept
    interval, stderr = rm.implied_weights_interval(rewards, components), rm.implied_weights_stderr(rewards, components)
    same = {"num_resamples": 200, "seed": 0, "intercept": True}
    assert interval["a"] == pytest.approx(rm.implied_weights_interval(rewards, components, **same)["a"], rel=1e-12)
    assert stderr["a"] == pytest.approx(rm.implied_weights_stderr(rewards, components, **same)["a"], rel=1e-12)
    for other in ({"seed": 1}, {"num_resamples": 201}):  # either default changes the refits
        assert rm.implied_weights_stderr(rewards, components, **other)["a"] != pytest.approx(stderr["a"], rel=1e-6)
    # without an intercept the offset of 3 is put on a: w = Σ a r / Σ a², far from 2
    through_zero = (a * rewards).sum().item() / (a * a).sum().item()
    low, high = rm.implied_weights_interval(rewards, components, intercept=False)["a"]
    assert low < through_zero < high and low > 4
    low, high = rm.implied_weights_interval(rewards, components)["a"]
    assert low < 2 < high


def test_the_bootstrap_needs_two_resamples():
    rewards, components = torch.arange(5.0), {"a": [0.0, 1.0, 3.0, 2.0, 4.0]}
    assert set(rm.implied_weights_stderr(rewards, components, num_resamples=2)) == {"a"}
    with pytest.raises(ValueError, match="^num_resamples must be >= 2, got 1: the number of resamples, e.g. 200$"):
        rm.implied_weights_stderr(rewards, components, num_resamples=1)


def test_the_bootstrap_takes_exact_fractions_as_implied_weights_does():
    from fractions import Fraction

    rewards = torch.tensor([0.0, 1.5, 3.0, 1.0, 5.5, 2.0], dtype=torch.float64)
    exact = [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(2, 3), Fraction(5, 3), Fraction(1, 2)]
    floats = [float(value) for value in exact]
    assert rm.implied_weights(rewards, {"a": exact}) == pytest.approx(rm.implied_weights(rewards, {"a": floats}))
    stderr = rm.implied_weights_stderr(rewards, {"a": exact}, num_resamples=20)
    assert stderr == pytest.approx(rm.implied_weights_stderr(rewards, {"a": floats}, num_resamples=20))


def test_implied_weights_on_pair_differences_cancel_a_constant_per_prompt(world):
    prompts = ["describe the cat", "review the pizza", "add 3 and 5", "describe the dog"] * 4
    chosen = [
        "the cat is small and grey",
        "the pizza is tasty",
        "3 plus 5 is 8",
        "the dog is big",
        "the cat is lovely",
        "the pizza is great",
        "3 plus 5 is 9",
        "the dog is brown and brown",
        "the cat is grey",
        "the pizza is amazing amazing",
        "8",
        "i think the dog is loud",
        "the cat is small small small",
        "i think the pizza is really very great and fresh",
        "5",
        "the dog",
    ]
    rejected = [
        "the soup is bad",
        "the pizza is awful and dull",
        "3 plus 5 is 7",
        "the cat is small",
        "the cat is",
        "the pizza",
        "3 plus 5 is 8 8",
        "the dog is soft",
        "the book is good",
        "the pizza is poor",
        "3 plus 5 is 10",
        "the dog is dull and dull",
        "the cat is small",
        "the pizza is great",
        "3 plus 5 is 8 8 8",
        "the dog is big and brown",
    ]
    dataset = Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})
    offsets = {"describe the cat": 5.0, "review the pizza": -3.0, "add 3 and 5": 9.0, "describe the dog": 0.5}

    def true_score(answers):  # g/τ plus a constant per prompt, which Bradley-Terry cannot see
        return torch.tensor([g / world.tau + offsets[p] for p, g in zip(prompts, world.gold_reward(prompts, answers))])

    gaps, component_gaps = rm.pair_differences(true_score(chosen), true_score(rejected), world, dataset)
    assert np.linalg.matrix_rank(np.array(list(component_gaps.values()))) == len(GOLD_WEIGHTS)  # identifiable
    assert rm.implied_weights(gaps, component_gaps, intercept=False) == pytest.approx(
        {k: w / world.tau for k, w in GOLD_WEIGHTS.items()}, abs=1e-6
    )
    with pytest.raises(ValueError, match="rewards but 16 pairs"):
        rm.pair_differences(torch.zeros(3), torch.zeros(3), world, dataset)


def test_component_correlations_rank_each_component():
    components = {"same order": [10, 20, 30, 40], "reversed": [4, 3, 2, 1], "one swap": [1, 3, 2, 4]}
    correlations = rm.component_correlations(torch.tensor([1.0, 2.0, 3.0, 4.0]), components)
    assert correlations == pytest.approx({"same order": 1.0, "reversed": -1.0, "one swap": 0.8})  # 1 − 6·2 / 60


def test_evaluate_reward_model_puts_accuracy_next_to_the_ceiling(tokenizer, world, monkeypatch):
    model = reward_model("llama", tokenizer)
    prompts, chosen, rejected = PROMPTS * 3, COMPLETIONS * 3, ["the cat is bad"] * 12
    p_chosen = world.preference_probability(prompts, chosen, rejected).tolist()
    dataset = Dataset.from_dict(
        {
            "prompt": prompts,
            "chosen": chosen,
            "rejected": rejected,
            "p_chosen": p_chosen,
            "gold_chosen": world.gold_reward(prompts, chosen),
            "gold_rejected": world.gold_reward(prompts, rejected),
        }
    )
    metrics = rm.evaluate_reward_model(model, tokenizer, world, dataset)
    chosen_rewards, rejected_rewards = rm.score_pairs(model, tokenizer, dataset)
    assert metrics["accuracy"] == rm.pairwise_accuracy(chosen_rewards, rejected_rewards)
    assert metrics["bayes_accuracy"] == pytest.approx(world.bayes_accuracy(*pair_texts(dataset)))
    assert 0.5 <= metrics["bayes_accuracy"] <= 1
    # ρ pairs each answer's score with that same answer's gold reward, recomputed here from the texts
    gold = world.gold_reward(prompts + prompts, chosen + rejected)
    assert metrics["gold_spearman"] == pytest.approx(
        spearman_correlation(torch.cat([chosen_rewards, rejected_rewards]), gold)
    )
    # a reward model that scores exactly the gold reward ranks every answer as the gold reward does
    truth = torch.tensor(world.gold_reward(prompts, chosen)), torch.tensor(world.gold_reward(prompts, rejected))
    monkeypatch.setattr(rm, "score_pairs", lambda *args, **kwargs: truth)
    assert rm.evaluate_reward_model(model, tokenizer, world, dataset)["gold_spearman"] == pytest.approx(1.0)
    monkeypatch.setattr(rm, "score_pairs", lambda *args, **kwargs: (-truth[0], -truth[1]))
    assert rm.evaluate_reward_model(model, tokenizer, world, dataset)["gold_spearman"] == pytest.approx(-1.0)


def test_evaluate_by_family_scores_each_family_alone(tokenizer, world):
    model = reward_model("llama", tokenizer)
    prompts, chosen, rejected = (
        PROMPTS * 2,
        COMPLETIONS * 2,
        ["the cat is bad", "the pizza is dull", "3 plus 5 is 9", "the dog is small"] * 2,
    )
    dataset = Dataset.from_dict(
        {
            "prompt": prompts,
            "chosen": chosen,
            "rejected": rejected,
            "p_chosen": world.preference_probability(prompts, chosen, rejected).tolist(),
            "gold_chosen": world.gold_reward(prompts, chosen),
            "gold_rejected": world.gold_reward(prompts, rejected),
        }
    )
    by_family = rm.evaluate_by_family(model, tokenizer, world, dataset)
    assert list(by_family) == ["arithmetic", "review", "describe"]
    describe = dataset.select([0, 3, 4, 7])
    assert by_family["describe"] == rm.evaluate_reward_model(model, tokenizer, world, describe)


def test_fact_ranking_matches_one_pair_at_a_time(tokenizer):
    causal_lm = random_model("llama", len(tokenizer), seed=1)
    model = reward_model("llama", tokenizer, seed=2)
    prompts, true_answers, false_answers = fact_pairs()

    def logp(prompt: str, answer: str) -> float:  # unbatched, so no padding can leak in
        batch = collate(tokenizer, [prompt], [answer])
        ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        return sequence_logprobs(causal_lm, ids, attention, completion).item()

    def reward(prompt: str, answer: str) -> float:
        return rm.score(model, tokenizer, [prompt], [answer]).item()

    expected = {
        name: sum(f(p, t) > f(p, b) for p, t, b in zip(prompts, true_answers, false_answers)) / len(prompts)
        for name, f in (("lm", logp), ("rm", reward))
    }
    assert rm.fact_ranking(causal_lm, model, tokenizer) == pytest.approx(expected, abs=1e-6)


def test_sum_knowledge_matches_a_brute_force_argmax(tokenizer):
    causal_lm = random_model("llama", len(tokenizer), seed=3)
    right = 0
    for a in range(10):
        for b in range(10):
            batch = collate(tokenizer, [f"add {a} and {b}"] * 19, [f"{a} plus {b} is {s}" for s in range(19)])
            with torch.no_grad():
                logps = sequence_logprobs(causal_lm, **batch)  # (19,): one row per candidate sum s
            right += int(logps.argmax().item() == a + b)
    assert rm.sum_knowledge(causal_lm, tokenizer) == pytest.approx(right / 100)


# --- the zoo recipe -------------------------------------------------------------------
@pytest.fixture
def small_recipe(monkeypatch, tokenizer):
    """The shipped recipe on 32 pairs and 24 held-out prompts, with a random backbone standing in for sft."""
    monkeypatch.setattr(recipes, "HELD_OUT_PAIRS", 24)
    backbone = (closing_backbone(tokenizer), tokenizer)
    monkeypatch.setattr(recipes.zoo, "load", lambda name, preset=None, device=None: backbone)
    return dataclasses.replace(get_preset("tiny"), num_preference=32)


def closing_backbone(tokenizer):
    """A random causal LM that closes its turn within a few tokens, so its answers make preference pairs."""
    return with_end_of_turn_bias(random_model("llama", len(tokenizer)), tokenizer, bias=2.5)


def test_accuracy_vs_pairs_trains_a_fresh_model_per_size(tokenizer, world):
    backbone = closing_backbone(tokenizer)
    train_pairs = build_preference_dataset(world, backbone, tokenizer, n=48, seed=0, max_new_tokens=12)
    test_pairs = build_preference_dataset(world, backbone, tokenizer, n=16, split="test", seed=0, max_new_tokens=12)
    config = rm.RewardConfig(batch_size=4, num_epochs=2, progress=False)
    curve = rm.accuracy_vs_pairs(backbone, tokenizer, world, train_pairs, test_pairs, [4, 8], config)
    fresh = rm.reward_model_from(backbone, seed=0)
    rm.train_reward_model(fresh, tokenizer, train_pairs.select(range(8)), config)
    expected = rm.evaluate_reward_model(fresh, tokenizer, world, test_pairs)
    assert curve["num_pairs"] == [4, 8]
    assert {name: values[1] for name, values in curve.items() if name != "num_pairs"} == expected


def test_build_reward_model_keeps_its_data_curve(small_recipe):
    model, tokenizer = recipes.build_reward_model(small_recipe, device="cpu")
    rm.check_reward_model(model, tokenizer)
    curve = model.config.accuracy_vs_pairs
    n = curve["num_pairs"][-1]
    assert curve["num_pairs"] == [n // 16, n // 8, n // 4, n // 2, n] and n <= 32
    assert all(0 <= value <= 1 for value in curve["expected_accuracy"] + curve["bayes_accuracy"])


def test_rm_rebuild_repeats_bit_for_bit(small_recipe, tmp_path):
    first, second = (recipes.build(["rm"], small_recipe, device="cpu", out_dir=tmp_path / run)[0] for run in ("a", "b"))
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


def test_shipped_rm_loads_offline_and_beats_chance(monkeypatch, world):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = zoo.load("rm", device="cpu")
    assert type(model).__name__ == "LlamaForSequenceClassification" and not model.training
    sft, _ = zoo.load("sft", device="cpu")
    pairs = build_preference_dataset(world, sft, tokenizer, n=300, split="test", seed=0)
    metrics = rm.evaluate_reward_model(model, tokenizer, world, pairs)
    assert metrics["expected_accuracy"] > 0.57 and metrics["gold_spearman"] > 0.3, metrics
    assert model.config.accuracy_vs_pairs["num_pairs"][-1] == 1870


# --- the outcome reward model ----------------------------------------------------------------------------------
def test_orm_token_loss_matches_a_hand_computation():
    logits = torch.tensor([[5.0, 0.0, 1.0, -1.0], [9.0, 2.0, 0.0, 0.0]])
    completion_mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0]])  # row 2: one completion token, then padding
    labels = torch.tensor([1.0, 0.0])
    row1 = (
        -(
            math.log(0.5)
            + math.log(torch.sigmoid(torch.tensor(1.0)).item())
            + math.log(torch.sigmoid(torch.tensor(-1.0)).item())
        )
        / 3
    )  # r = 1: −log σ(w) at each token
    row2 = -math.log(1 - 0.5)  # r = 0 at its one token, w = 0
    assert rm.orm_token_loss(logits, completion_mask, labels).item() == pytest.approx((row1 + row2) / 2)


def test_last_completion_logits_reads_each_rows_last_completion_token():
    logits = torch.arange(10.0).view(2, 5)
    completion_mask = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    assert rm.last_completion_logits(logits, completion_mask).tolist() == [2.0, 9.0]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_outcome_reward_model_has_one_logit_per_token_on_the_same_backbone(arch, tokenizer):
    causal_lm = random_model(arch, len(tokenizer))
    orm = rm.outcome_reward_model_from(causal_lm, seed=1)
    assert type(orm).__name__.endswith("ForTokenClassification") and orm.config.num_labels == 1
    assert_same_backbone(orm, causal_lm)
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    logits = rm.token_correctness_logits(orm, batch)  # (B, T)
    assert logits.shape == batch["input_ids"].shape
    probability = rm.correctness_probability(orm, tokenizer, PROMPTS, COMPLETIONS)
    expected = torch.sigmoid(rm.last_completion_logits(logits, batch["completion_mask"])).detach()
    assert torch.allclose(probability, expected, atol=1e-5)


def test_orm_refuses_a_model_of_the_wrong_kind_and_data_without_labels(tokenizer, world):
    with pytest.raises(
        ValueError,
        match=r"^LlamaForSequenceClassification with num_labels=1 is not an outcome reward model: build one with "
        r"outcome_reward_model_from\(causal_lm\)$",
    ):
        rm.correctness_probability(reward_model("llama", tokenizer), tokenizer, PROMPTS, COMPLETIONS)
    orm = rm.outcome_reward_model_from(random_model("llama", len(tokenizer)))
    data = Dataset.from_dict({"prompt": ["add 1 and 2"], "completion": ["1 plus 2 is 3"]})
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['label'\]"):
        rm.train_outcome_reward_model(orm, tokenizer, data, TrainingConfig(progress=False))


def test_orm_dataset_is_labelled_by_the_verifier(tokenizer, world):
    data = rm.orm_dataset(world, random_model("llama", len(tokenizer)), tokenizer, n=6, num_generations=2, seed=0)
    prompts = [row[0]["content"] for row in data["prompt"]]
    completions = [row[0]["content"] for row in data["completion"]]
    assert len(data) == 12 and prompts[0] == prompts[1] and prompts[0].startswith("add ")
    assert data["label"] == [r == 1.0 for r in world.verifiable_reward(prompts, completions)]


def test_orm_dataset_defaults_four_seeded_answers_per_training_prompt_in_chat_format(tokenizer, world):
    from rlhf_edu.core.rollouts import generate_completions

    policy = closing_backbone(tokenizer)
    data = rm.orm_dataset(world, policy, tokenizer, n=2)
    prompts = [p for p in world.prompts(2, split="train", family="arithmetic") for _ in range(4)]
    completions = generate_completions(policy, tokenizer, prompts, seed=0)
    assert data["prompt"] == [[{"role": "user", "content": p}] for p in prompts]
    assert data["completion"] == [[{"role": "assistant", "content": c}] for c in completions]
    assert len(set(completions)) > 1  # sampled, so another seed gives other answers
    assert rm.orm_dataset(world, policy, tokenizer, n=2, seed=1)["completion"] != data["completion"]


def test_orm_dataset_reads_the_split_it_is_given_and_checks_num_generations(tokenizer, world):
    policy = closing_backbone(tokenizer)
    data = rm.orm_dataset(world, policy, tokenizer, n=3, num_generations=1, split="test")
    assert [row[0]["content"] for row in data["prompt"]] == world.prompts(3, split="test", family="arithmetic")
    assert world.prompts(3, split="test", family="arithmetic") != world.prompts(3, family="arithmetic")
    with pytest.raises(ValueError, match="^num_generations must be >= 1, got 0: answers per prompt, e.g. 4$"):
        rm.orm_dataset(world, policy, tokenizer, n=3, num_generations=0)


@pytest.mark.parametrize(
    "logit, labels, accuracy",
    [
        (0.0, [False, False], 1.0),  # σ(0) = 1/2 is not a verdict of "correct"
        (0.5, [True, True], 1.0),  # any positive logit is
        (0.5, [True, False], 0.5),
        (-0.5, [True, True], 0.0),
    ],
)
def test_orm_loss_of_a_constant_logit_matches_hand_values(tokenizer, logit, labels, accuracy):
    """With the head's weights zeroed and its bias at w, every token's logit is w: the loss is a plain BCE."""
    orm = rm.outcome_reward_model_from(random_model("llama", len(tokenizer)))
    with torch.no_grad():
        orm.score.weight.zero_()
        orm.score.bias.fill_(logit)
    batch = collate(tokenizer, ["add 1 and 2", "add 4 and 4"], ["1 plus 2 is 3", "4 plus 4 is 9"])
    batch["label"] = torch.tensor([float(label) for label in labels])
    with torch.no_grad():
        loss, metrics = rm.orm_loss(orm, batch)
    p = 1 / (1 + math.exp(-logit))
    expected = sum(-math.log(p if label else 1 - p) for label in labels) / len(labels)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics == {"accuracy": accuracy}


def test_correctness_probability_names_its_arguments(tokenizer):
    orm = rm.outcome_reward_model_from(random_model("llama", len(tokenizer)))
    with pytest.raises(TypeError, match="^prompts must be a list of texts, got the single string 'add 1 and 2'"):
        rm.correctness_probability(orm, tokenizer, "add 1 and 2", ["1 plus 2 is 3"])
    with pytest.raises(ValueError, match="^got 2 prompts but 1 completions: pass one per example$"):
        rm.correctness_probability(orm, tokenizer, ["add 1 and 2", "add 2 and 2"], ["1 plus 2 is 3"])


def test_a_few_orm_steps_fit_a_fixed_batch(tokenizer):
    orm = rm.outcome_reward_model_from(random_model("llama", len(tokenizer), seed=2))
    data = Dataset.from_dict(
        {
            "prompt": ["add 1 and 2", "add 1 and 2", "add 4 and 4", "add 4 and 4"],
            "completion": ["1 plus 2 is 3", "1 plus 2 is 4", "4 plus 4 is 8", "4 plus 4 is 9"],
            "label": [True, False, True, False],
        }
    )
    history = rm.train_outcome_reward_model(
        orm, tokenizer, data, TrainingConfig(learning_rate=3e-3, batch_size=4, num_epochs=40, progress=False)
    )
    verdict = rm.correctness_probability(orm, tokenizer, data["prompt"], data["completion"])
    assert history.mean("loss", last=3) < history["loss"][0]
    assert verdict[[0, 2]].min() > 0.5 > verdict[[1, 3]].max()


def test_pair_metrics_refuses_rewards_for_other_pairs(world):
    dataset = Dataset.from_dict(
        {
            "prompt": ["add 1 and 2"],
            "chosen": ["1 plus 2 is 3"],
            "rejected": ["1 plus 2 is 4"],
            "gold_chosen": [1.0],
            "gold_rejected": [0.0],
            "p_chosen": [0.9],
        }
    )
    with pytest.raises(ValueError, match="rewards but 1 pairs in the dataset"):
        rm.pair_metrics(torch.zeros(2), torch.zeros(2), world, dataset)


def test_an_empty_sampled_answer_is_scored_as_the_closed_empty_turn(tokenizer):
    """A policy may close its turn at once; the RM must score that answer, as the same tokens the policy emitted."""
    from rlhf_edu.core.collate import encode_prompt_completion, render_chat

    model = reward_model("llama", tokenizer)
    empty = rm.score(model, tokenizer, ["add 3 and 5"], [""])
    closed = render_chat(tokenizer, [{"role": "user", "content": "add 3 and 5"}], add_generation_prompt=True) + [
        tokenizer.eos_token_id
    ]  # what sampling gives when the first token closes the turn
    batch = {"input_ids": torch.tensor([closed]), "attention_mask": torch.ones(1, len(closed), dtype=torch.long)}
    assert torch.allclose(empty, rm.batch_rewards(model, batch), atol=1e-5)
    with pytest.raises(ValueError, match="empty assistant message"):  # as training data it is still refused
        encode_prompt_completion(tokenizer, "add 3 and 5", "")


def test_the_pair_checks_name_the_argument_word_for_word():
    with pytest.raises(TypeError, match=r"^rejected_rewards must be a tensor, got list: wrap it, torch\.tensor\("):
        rm.bradley_terry_loss(torch.zeros(2), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"^chosen_rewards is empty: an accuracy needs at least one scored pair$"):
        rm.pairwise_accuracy(torch.zeros(0), torch.zeros(0))


# --- the process reward model ----------------------------------------------------------------------------------
STEP_PROMPTS = ["add 3 and 5 and 4", "add 3 and 5 and 4", "add 2 and 6 and 1", "add 2 and 6 and 1"]
STEP_ANSWERS = [
    ["3 plus 5 is 8", "8 plus 4 is 12"],
    ["3 plus 5 is 9", "9 plus 4 is 13"],
    ["2 plus 6 is 8", "8 plus 1 is 9"],
    ["2 plus 6 is 8", "8 plus 1 is 10"],
]
STEP_LABELS = [[True, True], [False, False], [True, True], [True, False]]


def stepwise_dataset(**columns) -> Dataset:
    return Dataset.from_dict({"prompt": STEP_PROMPTS, "completions": STEP_ANSWERS, "labels": STEP_LABELS, **columns})


def test_prm_step_loss_matches_a_hand_computation():
    logits = torch.tensor([[3.0, 0.0, 1.0, -2.0], [9.0, 2.0, 0.0, 0.0]])
    step_end_mask = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 0]])  # three steps in all: two in row 1, one in row 2
    step_labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # read only where a step ends
    expected = -(math.log(0.5) + math.log(1 - 1 / (1 + math.exp(2.0))) + math.log(0.5)) / 3  # mean over the steps
    assert rm.prm_step_loss(logits, step_end_mask, step_labels).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"must all be \(B, T\): one value per token$"):
        rm.prm_step_loss(logits, step_end_mask[:, :3], step_labels)
    with pytest.raises(ValueError, match="^step_end_mask marks no step end: mark each step's last token with a 1"):
        rm.prm_step_loss(logits, torch.zeros_like(step_end_mask), step_labels)


def test_each_step_ends_at_its_separator_and_the_last_at_the_closing_token(tokenizer):
    row, ends = rm.encode_steps(tokenizer, "add 3 and 5 and 4", ["3 plus 5 is 8", "8 plus 4 is 12"])
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    # <bos> <|user|> add 3 and 5 and 4 <|end|> <|assistant|> 3 plus 5 is 8 . 8 plus 4 is 12 <|end|>
    assert ends == [15, 21] and [tokens[i] for i in ends] == [".", "<|end|>"]
    assert tokens[10:15] == ["3", "plus", "5", "is", "8"] and ends[-1] == len(tokens) - 1
    assert rm.encode_steps(tokenizer, "add 3 and 5 and 4", ["3 plus 5 plus 4 is 12"])[1] == [17]  # a direct answer
    three = rm.encode_steps(tokenizer, [{"role": "user", "content": "add 1 and 2"}], ["i", "", "so"])[1]
    assert three == [9, 10, 12]  # an empty step ends at its own separator
    assert rm.encode_steps(tokenizer, "add 1 and 2", [""])[1] == [8]  # an empty answer: the closing token at once


def test_prm_dataset_labels_each_sampled_step_in_trls_stepwise_format(tokenizer, world):
    from rlhf_edu.core.rollouts import generate_completions
    from rlhf_edu.core.world import split_steps, step_labels

    policy = closing_backbone(tokenizer)
    data = rm.prm_dataset(world, policy, tokenizer, n=3, num_generations=2)
    prompts = [p for p in world.prompts(3, family="multi_step") for _ in range(2)]
    completions = generate_completions(policy, tokenizer, prompts, seed=0)
    assert data.column_names == ["prompt", "completions", "labels"]
    assert data["prompt"] == [[{"role": "user", "content": p}] for p in prompts]
    assert data["completions"] == [split_steps(c) for c in completions]
    assert data["labels"] == [step_labels(p, c) for p, c in zip(prompts, completions)]
    assert all(len(steps) == len(labels) for steps, labels in zip(data["completions"], data["labels"]))
    sums = rm.prm_dataset(world, policy, tokenizer, n=2, num_generations=1, split="test", family="arithmetic")
    assert [row[0]["content"] for row in sums["prompt"]] == world.prompts(2, split="test", family="arithmetic")
    with pytest.raises(ValueError, match="^unknown family 'review': use one of 'arithmetic', 'multi_step'$"):
        rm.prm_dataset(world, policy, tokenizer, n=2, family="review")


def test_step_probabilities_read_the_logit_at_each_step_end_and_the_score_aggregates_them(tokenizer):
    prm = rm.outcome_reward_model_from(random_model("qwen2", len(tokenizer)))
    completions = [" . ".join(steps) for steps in STEP_ANSWERS] + ["3 plus 5 plus 4 is 12", ""]
    prompts = STEP_PROMPTS + ["add 3 and 5 and 4"] * 2
    probabilities = rm.step_correctness_probabilities(prm, tokenizer, prompts, completions)
    assert [len(p) for p in probabilities] == [2, 2, 2, 2, 1, 1]
    row, ends = rm.encode_steps(tokenizer, prompts[1], STEP_ANSWERS[1])
    with torch.no_grad():
        logits = rm.token_correctness_logits(prm, pad_batch([row], tokenizer.pad_token_id))[0]  # (T,)
    assert probabilities[1] == pytest.approx(torch.sigmoid(logits[ends]).tolist(), abs=1e-5)
    for aggregate, reduce in (("min", min), ("product", math.prod), ("last", lambda p: p[-1])):
        score = rm.prm_score(prm, tokenizer, prompts, completions, aggregate=aggregate)
        assert score.tolist() == pytest.approx([reduce(p) for p in probabilities], abs=1e-6)
    assert torch.equal(
        rm.prm_score(prm, tokenizer, prompts, completions), rm.prm_score(prm, tokenizer, prompts, completions, "min")
    )


def test_a_few_prm_steps_fit_a_fixed_batch(tokenizer):
    prm = rm.outcome_reward_model_from(random_model("llama", len(tokenizer), seed=2))
    history = rm.train_process_reward_model(
        prm,
        tokenizer,
        stepwise_dataset(),
        TrainingConfig(learning_rate=3e-3, batch_size=4, num_epochs=40, progress=False),
    )
    assert history.mean("loss", last=3) < history["loss"][0] / 4 and history["step_accuracy"][-1] == 1.0
    completions = [" . ".join(steps) for steps in STEP_ANSWERS]
    probabilities = rm.step_correctness_probabilities(prm, tokenizer, STEP_PROMPTS, completions)
    flat = [(p, label) for ps, labels in zip(probabilities, STEP_LABELS) for p, label in zip(ps, labels)]
    assert min(p for p, label in flat if label) > 0.5 > max(p for p, label in flat if not label)


def test_the_prm_refuses_data_it_would_misread(tokenizer):
    prm = rm.outcome_reward_model_from(random_model("llama", len(tokenizer)))
    config = TrainingConfig(progress=False)
    with pytest.raises(
        ValueError,
        match=r"^the dataset lacks the column\(s\) \['labels'\]: build it with prm_dataset, or give it TRL's "
        "stepwise prompt/completions/labels columns$",
    ):
        rm.train_process_reward_model(prm, tokenizer, stepwise_dataset().remove_columns("labels"), config)
    wrong = stepwise_dataset().map(
        lambda row, i: {"labels": row["labels"][:1] if i == 2 else row["labels"]}, with_indices=True
    )
    with pytest.raises(
        ValueError,
        match=r"^row 2 has labels \[True\] for 2 step\(s\): give labels one bool per step of completions "
        r"\(step_labels\(prompt, completion\) computes them\)$",
    ):
        rm.train_process_reward_model(prm, tokenizer, wrong, config)
    with pytest.raises(ValueError, match="^unknown aggregate 'mean': use one of 'min', 'product', 'last'$"):
        rm.prm_score(prm, tokenizer, ["add 3 and 5 and 4"], ["3 plus 5 plus 4 is 12"], aggregate="mean")
    with pytest.raises(TypeError, match="^steps must be a list of step texts, got '3 plus 5 is 8'"):
        rm.encode_steps(tokenizer, "add 3 and 5", "3 plus 5 is 8")
    with pytest.raises(ValueError, match=r"^steps is empty: a PRM reads at least one step"):
        rm.encode_steps(tokenizer, "add 3 and 5", [])
