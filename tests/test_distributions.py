import math
from collections import Counter

import pytest
import torch

from rlhf_edu import generate_completions, zoo
from rlhf_edu.core.distributions import apply_temperature, entropy
from rlhf_edu.core.plotting import next_token_logits


def test_temperature_by_hand():
    logits = torch.tensor([0.0, math.log(2.0)])
    assert apply_temperature(logits, 1.0).tolist() == pytest.approx([1 / 3, 2 / 3])
    assert apply_temperature(logits, 0.5).tolist() == pytest.approx([1 / 5, 4 / 5])  # odds squared
    assert apply_temperature(logits, 0.0).tolist() == [0.0, 1.0]
    assert apply_temperature(logits, 1e6).tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="temperature must be >= 0, got -1: 0 means greedy"):
        apply_temperature(logits, -1.0)
    with pytest.raises(TypeError, match="temperature must be a number, got '1'"):
        apply_temperature(logits, "1")


def test_temperature_matches_what_sampling_draws(tokenizer):
    model, _ = zoo.load("base")
    prompt = "add 3 and 5"
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    probs = apply_temperature(next_token_logits(model, tokenizer, chat), 2.0)
    n = 3000
    first_words = Counter(
        c.split()[0] if c else ""
        for c in generate_completions(model, tokenizer, [prompt] * n, max_new_tokens=1, temperature=2.0, seed=0)
    )
    for i in probs.topk(4).indices.tolist():
        p = probs[i].item()
        assert first_words[tokenizer.convert_ids_to_tokens(i)] / n == pytest.approx(p, abs=4 * math.sqrt(p / n))


def test_entropy_closed_forms():
    assert entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))
    assert entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0
    assert entropy(torch.tensor([[0.5, 0.5], [0.25, 0.75]])).tolist() == pytest.approx(
        [math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    )
    with pytest.raises(ValueError, match="probs must sum to 1 over the last dim.*softmax"):
        entropy(torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="probs has a negative entry"):
        entropy(torch.tensor([1.5, -0.5]))
