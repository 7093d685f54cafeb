import pytest

from rlhf_edu import generate_completions
from tests.conftest import random_model


def test_returns_one_completion_per_prompt_without_markup(model, tokenizer):
    prompts = ["add 3 and 5", "review the soup", "describe the cat"]
    completions, finished = generate_completions(model, tokenizer, prompts, max_new_tokens=6, seed=0,
                                                 return_finished=True)
    assert len(completions) == len(finished) == 3
    assert not any("<|" in c or "<pad>" in c for c in completions)
    assert all(isinstance(f, bool) for f in finished)


def test_seed_repeats_samples_and_batching_does_not_change_greedy(tokenizer):
    model = random_model("llama", len(tokenizer))
    prompts = ["add 3 and 5", "review the soup"] * 3
    assert generate_completions(model, tokenizer, prompts, seed=1) == generate_completions(model, tokenizer, prompts,
                                                                                          seed=1)
    greedy_batched = generate_completions(model, tokenizer, prompts, temperature=0, batch_size=4)
    greedy_alone = [generate_completions(model, tokenizer, [p], temperature=0)[0] for p in prompts]
    assert greedy_batched == greedy_alone  # left padding keeps every row's next token in the same place


def test_sampling_follows_the_model_distribution(tokenizer):
    """With one new token, sample frequencies match the model's next-token probabilities."""
    import collections

    import torch

    model = random_model("llama", len(tokenizer), seed=2)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "review the soup"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        probs = model(ids).logits[0, -1].softmax(-1)
    samples = generate_completions(model, tokenizer, ["review the soup"] * 3000, max_new_tokens=1, seed=0)
    top = int(probs.argmax())
    word = tokenizer.convert_ids_to_tokens(top)
    frequency = collections.Counter(samples)[word] / 3000
    assert frequency == pytest.approx(probs[top].item(), abs=0.03)


def test_bad_input_is_refused(tokenizer):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(TypeError, match="list of prompts"):
        generate_completions(model, tokenizer, "add 3 and 5")
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate_completions(model, tokenizer, ["add 3 and 5"], temperature=-1)
    with pytest.raises(ValueError, match="empty user message"):
        generate_completions(model, tokenizer, [""])
    with pytest.raises(ValueError, match="tokenizer has 95 tokens but the model only embeds 40"):
        generate_completions(random_model("llama", 40), tokenizer, ["add 3 and 5"])
