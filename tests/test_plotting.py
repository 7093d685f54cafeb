import math
from collections import Counter

import matplotlib
import pytest
import torch
from matplotlib.patches import FancyBboxPatch
from matplotlib.text import Text

from rlhf_edu import generate_completions, plotting, zoo
from rlhf_edu.core.collate import collate
from rlhf_edu.core.logprobs import sequence_logprobs, token_logprobs

matplotlib.use("Agg")

PROMPTS = ["add 3 and 5", "describe the cat", "review the pizza"]
COMPLETIONS = ["3 plus 5 is 8", "the cat is small", "the pizza is great and tasty"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    matplotlib.pyplot.close("all")


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def test_aligned_logprobs_match_a_brute_force_forward_pass(model, tokenizer):
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    logps, _ = token_logprobs(model, **batch)
    grid = plotting.align_token_logprobs(logps, batch["completion_mask"])  # (B, T)
    with torch.no_grad():
        all_logps = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    for b, t in torch.nonzero(batch["completion_mask"]).tolist():
        expected = all_logps[b, t - 1, batch["input_ids"][b, t]]  # logits at t − 1 predict token t
        assert grid[b, t].item() == pytest.approx(expected.item(), abs=1e-4)
    assert grid.isnan().equal(batch["completion_mask"] == 0)


def test_align_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="same batch: pass token_logprobs"):
        plotting.align_token_logprobs(torch.zeros(2, 3), torch.ones(3, 5))
    with pytest.raises(ValueError, match="only 2 tokens"):
        plotting.align_token_logprobs(torch.zeros(1, 3), torch.ones(1, 2))


def test_plot_tokens_shows_every_token_and_id(tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "add 3 and 5"}], return_dict=False)
    shown = texts(plotting.plot_tokens(tokenizer, ids))
    for token, i in zip(tokenizer.convert_ids_to_tokens(ids), ids):
        assert token in shown and str(i) in shown
    with pytest.raises(ValueError, match="mask of the same sequence"):
        plotting.plot_tokens(tokenizer, ids, completion_mask=[1])


def test_token_logprob_notes_add_up_to_the_sequence_logprob(tokenizer):
    model, _ = zoo.load("base")
    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    logps, _ = token_logprobs(model, **batch)
    fig = plotting.plot_token_logprobs(tokenizer, **batch, logps=logps)
    notes = [float(t) for t in texts(fig) if t.lstrip("-").replace(".", "").isdigit() and "." in t]
    n_counted = batch["completion_mask"].sum(dim=1).tolist()
    rows = [sum(notes[sum(n_counted[:b]):sum(n_counted[:b + 1])]) for b in range(len(PROMPTS))]
    expected = sequence_logprobs(model, **batch).tolist()
    for row, total, n in zip(rows, expected, n_counted):
        assert row == pytest.approx(total, abs=0.005 * n)  # each note is rounded to 2 decimals
    dashed = [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch) and p.get_linestyle() != "-"]
    assert len(dashed) == int((batch["attention_mask"] == 0).sum())  # one dashed box per pad token


def test_next_token_logits_agree_with_token_logprobs(model, tokenizer):
    text, word = "<bos> the cat is", "small"
    logps = plotting.next_token_logits(model, tokenizer, text).log_softmax(-1)  # (V,)
    ids = tokenizer(f"{text} {word}", add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
    completion_mask = torch.zeros_like(ids)
    completion_mask[0, -1] = 1
    expected = sequence_logprobs(model, ids, torch.ones_like(ids), completion_mask)
    assert logps[tokenizer.convert_tokens_to_ids(word)].item() == pytest.approx(expected.item(), abs=1e-4)
    with pytest.raises(ValueError, match="empty text"):
        plotting.next_token_logits(model, tokenizer, "")


def test_temperature_by_hand():
    logits = torch.tensor([0.0, math.log(2.0)])
    assert plotting.apply_temperature(logits, 1.0).tolist() == pytest.approx([1 / 3, 2 / 3])
    assert plotting.apply_temperature(logits, 0.5).tolist() == pytest.approx([1 / 5, 4 / 5])  # odds squared
    assert plotting.apply_temperature(logits, 0.0).tolist() == [0.0, 1.0]
    assert plotting.apply_temperature(logits, 1e6).tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        plotting.apply_temperature(logits, -1.0)


def test_temperature_matches_what_sampling_draws(tokenizer):
    model, _ = zoo.load("base")
    prompt = "add 3 and 5"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    probs = plotting.apply_temperature(plotting.next_token_logits(model, tokenizer, chat), 2.0)
    n = 3000
    first_words = Counter(c.split()[0] if c else "" for c in
                          generate_completions(model, tokenizer, [prompt] * n, max_new_tokens=1, temperature=2.0,
                                               seed=0))
    for i in probs.topk(4).indices.tolist():
        p = probs[i].item()
        assert first_words[tokenizer.convert_ids_to_tokens(i)] / n == pytest.approx(p, abs=4 * math.sqrt(p / n))


def test_entropy_closed_forms():
    assert plotting.entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))
    assert plotting.entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0
    assert plotting.entropy(torch.tensor([[0.5, 0.5], [0.25, 0.75]])).tolist() == pytest.approx(
        [math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])
    with pytest.raises(ValueError, match="sum to 1.*softmax"):
        plotting.entropy(torch.tensor([0.5, 0.6]))


def test_next_token_bars_are_the_top_probabilities(tokenizer):
    probs = torch.softmax(torch.randn(len(tokenizer), generator=torch.Generator().manual_seed(0)), dim=-1)
    fig = plotting.plot_next_token_distribution(probs, tokenizer, top_k=5, title="T = 1")
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx(sorted(probs.tolist(), reverse=True)[:5])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == tokenizer.convert_ids_to_tokens(probs.argsort(descending=True)[:5].tolist())


def test_gold_component_dots_are_the_gold_reward(world):
    prompts = ["add 3 and 5", "review the pizza", "review the pizza"]
    answers = ["3 plus 5 is 8", "the pizza is amazing", "the pizza is amazing amazing amazing amazing"]
    fig = plotting.plot_gold_components(world.gold_components(prompts, answers), answers)
    dots = fig.axes[0].collections[0].get_offsets()[:, 0].tolist()
    assert dots == pytest.approx(world.gold_reward(prompts, answers))
    assert "the pizza is amazing" in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    with pytest.raises(ValueError, match="one label per answer"):
        plotting.plot_gold_components(world.gold_components(prompts, answers), answers[:1])
