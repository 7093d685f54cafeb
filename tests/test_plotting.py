import matplotlib
import pytest
import torch
from matplotlib.patches import FancyBboxPatch
from matplotlib.text import Text

from rlhf_edu import plotting, zoo
from rlhf_edu.core.collate import collate
from rlhf_edu.core.logprobs import sequence_logprobs, token_logprobs

matplotlib.use("Agg")

PROMPTS = ["add 3 and 5", "describe the cat", "review the pizza"]
COMPLETIONS = ["3 plus 5 is 8", "the cat is small", "the pizza is great and tasty"]


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
    rows = [sum(notes[sum(n_counted[:b]) : sum(n_counted[: b + 1])]) for b in range(len(PROMPTS))]
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


# --- one contract for every plot: draw on the given axes, return their figure ----------------------------
def _plot_calls(tokenizer, world):
    """(name, number of panels, call(axes) -> Figure) for every plot function of the package."""
    from rlhf_edu import direct_alignment as da
    from rlhf_edu import instruction_tuning as it
    from rlhf_edu import reward_modeling as rm
    from rlhf_edu.core.evaluation import PolicyEvaluation
    from rlhf_edu.core.training import History
    from tests.conftest import random_model

    batch = collate(tokenizer, PROMPTS, COMPLETIONS)
    with torch.no_grad():
        logps, _ = token_logprobs(random_model("llama", len(tokenizer)), **batch)
    probs = torch.softmax(torch.randn(len(tokenizer), generator=torch.Generator().manual_seed(0)), dim=-1)
    history = History()
    for step in range(3):
        history.log(**{"rewards/chosen": -0.1 * step, "rewards/rejected": -0.3 * step})
    sft = PolicyEvaluation(["p"], ["c"], [1.0], {}, 0.0)
    runs = [da.Run(da.DPOConfig(beta=0.1), PolicyEvaluation(["p"], ["c"], [1.5], {}, 2.0), History())]
    tabular = da.train_tabular_dpo([0.5, 0.5], [0.0, 1.0], beta=1.0, num_pairs=100, num_steps=2)
    example = {"prompt": "add 3 and 5", "completion": "3 plus 5 is 8"}
    from rlhf_edu import policy_gradients as pg
    from rlhf_edu import regularization as reg
    from rlhf_edu import rejection_sampling as rs

    stats = {name: {"mean": 1.0 + i, "std": 1.0, "se": 0.1} for i, name in enumerate(reg.ESTIMATOR_NAMES)}
    comparisons = {10: {"exact": {"mean": 1.0, "std": 0.5}, **stats}}
    sweep = {0.1: History([{"eval/reward": 1.0, "gold_reward": 1.0, "eval/kl": 0.5}])}
    return [
        (
            "plot_tokens",
            1,
            lambda axes: plotting.plot_tokens(
                tokenizer, batch["input_ids"][0], batch["completion_mask"][0], ax=axes[0]
            ),
        ),
        (
            "plot_token_logprobs",
            1,
            lambda axes: plotting.plot_token_logprobs(tokenizer, **batch, logps=logps, ax=axes[0]),
        ),
        (
            "plot_next_token_distribution",
            1,
            lambda axes: plotting.plot_next_token_distribution(probs, tokenizer, ax=axes[0]),
        ),
        (
            "plot_gold_components",
            1,
            lambda axes: plotting.plot_gold_components(
                world.gold_components(PROMPTS, COMPLETIONS), PROMPTS, ax=axes[0]
            ),
        ),
        ("plot_bradley_terry", 2, lambda axes: rm.plot_bradley_terry(1.0, 0.5, axes=axes)),
        ("plot_displacement", 2, lambda axes: da.plot_displacement(history, beta=0.1, smooth=1, axes=axes)),
        ("plot_frontier", 1, lambda axes: da.plot_frontier(runs, sft, ax=axes[0])),
        ("TabularDPOResult.plot", 1, lambda axes: tabular.plot(ax=axes[0])),
        ("plot_loss_mask", 1, lambda axes: it.plot_loss_mask(tokenizer, example, ax=axes[0])),
        ("plot_clipped_objective", 1, lambda axes: pg.plot_clipped_objective(ax=axes[0])),
        ("plot_sweep", 3, lambda axes: pg.plot_sweep(sweep, axes=axes)),
        ("plot_best_of_n_curves", 1, lambda axes: rs.plot_best_of_n_curves({"gold": {1: 1.0, 4: 1.5}}, ax=axes[0])),
        ("plot_estimator_comparison", 2, lambda axes: reg.plot_estimator_comparison(comparisons, axes=axes)),
        (
            "plot_frontier_of_runs",
            1,
            lambda axes: reg.plot_frontier_of_runs({"DPO": {0.1: (2.0, 1.5)}}, (0.0, 1.0), highlight=0.1, ax=axes[0]),
        ),
    ]


PLOT_NAMES = [
    "plot_tokens",
    "plot_token_logprobs",
    "plot_next_token_distribution",
    "plot_gold_components",
    "plot_bradley_terry",
    "plot_displacement",
    "plot_frontier",
    "TabularDPOResult.plot",
    "plot_loss_mask",
    "plot_clipped_objective",
    "plot_sweep",
    "plot_best_of_n_curves",
    "plot_estimator_comparison",
    "plot_frontier_of_runs",
]


@pytest.mark.parametrize("name", PLOT_NAMES)
def test_every_plot_draws_on_the_given_axes_and_returns_their_figure(name, tokenizer, world):
    ((num_panels, call),) = [(n, call) for plot_name, n, call in _plot_calls(tokenizer, world) if plot_name == name]
    fig, axes = matplotlib.pyplot.subplots(1, num_panels, squeeze=False)
    axes = list(axes[0])
    open_figures = matplotlib.pyplot.get_fignums()
    assert call(axes) is fig
    assert matplotlib.pyplot.get_fignums() == open_figures  # no figure of its own
    drawn = [ax.lines + ax.patches + ax.collections + ax.texts for ax in axes]
    assert all(drawn), f"{name} left a panel empty"


def test_the_contract_covers_every_plot_function(tokenizer, world):
    import inspect

    from rlhf_edu import (
        direct_alignment,
        instruction_tuning,
        policy_gradients,
        regularization,
        rejection_sampling,
        reward_modeling,
    )

    modules = (
        plotting,
        direct_alignment,
        instruction_tuning,
        reward_modeling,
        policy_gradients,
        regularization,
        rejection_sampling,
    )
    found = {
        name
        for module in modules
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if name.startswith("plot_") and fn.__module__ == module.__name__
    }
    called = {name for name, _, _ in _plot_calls(tokenizer, world)}
    assert found | {"TabularDPOResult.plot"} == set(PLOT_NAMES) == called
