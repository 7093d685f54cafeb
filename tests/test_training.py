import math
import re
from functools import partial

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from rlhf_edu.core.collate import collate, pad_batch
from rlhf_edu.core.training import History, Trainer, TrainingConfig, load_histories, make_loader, save_histories, train
from rlhf_edu.pretraining import language_modeling_loss
from tests.conftest import random_model

matplotlib.use("Agg")


def fixed_batches(tokenizer, n_batches=1):
    batch = collate(tokenizer, ["add 3 and 5", "review the soup"], ["3 plus 5 is 8", "the soup is tasty"])
    return [batch] * n_batches


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def same_weights(model, expected):
    return all(torch.equal(p, e) for p, e in zip(model.parameters(), expected))


# --- the loop -------------------------------------------------------------------------------------------
def test_training_lowers_the_loss_on_a_fixed_batch(tokenizer):
    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(learning_rate=1e-2, num_epochs=30, progress=False)
    history = train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), config)
    assert len(history["loss"]) == 30
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert {"loss", "learning_rate", "grad_norm", "perplexity"} <= set(history.keys())
    assert not model.training  # handed back in eval mode


def test_warmup_ramps_the_learning_rate_linearly_from_zero(tokenizer):
    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(learning_rate=1e-3, num_epochs=10, warmup_ratio=0.4, progress=False)
    history = train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), config)
    # 4 warm-up steps: 0, ¼, ½, ¾ of the peak, then the peak, held
    assert history["learning_rate"] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4] + [1e-3] * 6)


def test_a_linear_schedule_decays_to_zero_after_the_warmup(tokenizer):
    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(
        learning_rate=1e-3, num_epochs=10, warmup_ratio=0.2, lr_scheduler_type="linear", progress=False
    )
    history = train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), config)
    expected = [0.0, 5e-4] + [1e-3 * (10 - s) / 8 for s in range(2, 10)]  # ramp from 0, then 1 → 1/8 of the peak
    assert history["learning_rate"] == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:Detected call of")  # the schedule alone, with no optimizer step
def test_a_warmup_ratio_counts_its_steps_rounded_up(tokenizer):
    """transformers' TrainingArguments counts ⌈ratio · steps⌉ warm-up steps: 0.15 of 10 steps is 2, not 1."""
    model = random_model("llama", len(tokenizer))
    trainer = Trainer(model, TrainingConfig(learning_rate=1.0, warmup_ratio=0.15, progress=False), total_steps=10)
    factors = []
    for _ in range(4):
        factors.append(trainer.scheduler.get_last_lr()[0])
        trainer.scheduler.step()
    assert factors == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.filterwarnings("ignore:Detected call of")
@pytest.mark.parametrize(
    "lr_scheduler_type, warmup_ratio, name",
    [
        ("constant", 0.0, "constant"),
        ("constant", 0.1, "constant_with_warmup"),
        ("constant", 0.25, "constant_with_warmup"),
        ("linear", 0.0, "linear"),
        ("linear", 0.1, "linear"),
        ("linear", 0.25, "linear"),
    ],
)
def test_the_schedule_is_transformers_own(tokenizer, lr_scheduler_type, name, warmup_ratio):
    from transformers import get_scheduler

    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(
        learning_rate=1e-3, warmup_ratio=warmup_ratio, lr_scheduler_type=lr_scheduler_type, progress=False
    )
    trainer = Trainer(model, config, total_steps=37)
    optimizer = torch.optim.AdamW(random_model("llama", len(tokenizer)).parameters(), lr=1e-3)
    theirs = get_scheduler(name, optimizer, num_warmup_steps=math.ceil(warmup_ratio * 37), num_training_steps=37)
    for _ in range(37):
        assert trainer.scheduler.get_last_lr() == theirs.get_last_lr()
        trainer.scheduler.step()
        theirs.step()


def test_gradient_clipping_bounds_the_gradient_the_optimizer_steps_with(tokenizer):
    model = random_model("llama", len(tokenizer))
    loss_fn = lambda batch: (1e6 * language_modeling_loss(model, batch)[0], {})  # noqa: E731
    batch = fixed_batches(tokenizer)[0]
    model.train()
    loss_fn(batch)[0].backward()  # the raw gradient, computed outside the trainer
    raw_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    model.zero_grad()
    trainer = Trainer(model, TrainingConfig(learning_rate=1e-3, max_grad_norm=1.0, progress=False), total_steps=1)
    seen = []
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
    )
    before = weights(model)
    logged = trainer.step(loss_fn, batch)
    assert raw_norm > 1e3 and logged["grad_norm"] == pytest.approx(raw_norm, rel=1e-4)  # logged before clipping
    assert seen[0].item() == pytest.approx(1.0, rel=1e-4)  # AdamW stepped with the clipped gradient
    assert max((p - b).abs().max().item() for p, b in zip(model.parameters(), before)) < 2e-3


def test_no_clipping_with_max_grad_norm_none(tokenizer):
    model = random_model("llama", len(tokenizer))
    loss_fn = lambda batch: (1e6 * language_modeling_loss(model, batch)[0], {})  # noqa: E731
    trainer = Trainer(model, TrainingConfig(max_grad_norm=None, progress=False), total_steps=1)
    seen = []
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
    )
    logged = trainer.step(loss_fn, fixed_batches(tokenizer)[0])
    assert seen[0].item() == pytest.approx(logged["grad_norm"], rel=1e-4) and logged["grad_norm"] > 1e3


# --- one Trainer, many steps ------------------------------------------------------------------------------
def test_the_trainer_keeps_one_optimizer_across_steps(tokenizer):
    model = random_model("llama", len(tokenizer))
    trainer = Trainer(model, TrainingConfig(learning_rate=1e-2, progress=False), total_steps=5)
    optimizer = trainer.optimizer
    for _ in range(5):
        trainer.step(partial(language_modeling_loss, model), fixed_batches(tokenizer)[0])
    assert trainer.optimizer is optimizer
    assert all(state["step"] == 5 for state in optimizer.state.values())  # AdamW's moments carried on
    assert trainer.history["step"] == [0, 1, 2, 3, 4]


def test_a_policy_and_a_separate_head_train_together(tokenizer):
    model = random_model("llama", len(tokenizer))
    head = torch.nn.Linear(len(tokenizer), 1)

    def loss_fn(batch):
        logits = model(input_ids=batch["input_ids"]).logits  # (B, T, V)
        return head(logits).pow(2).mean(), {}

    head_before, model_before = weights(head), weights(model)
    trainer = Trainer([model, head, model], TrainingConfig(progress=False), total_steps=1)  # shared weights once
    assert len(trainer.params) == len(list(model.parameters())) + 2
    trainer.step(loss_fn, fixed_batches(tokenizer)[0])
    assert not same_weights(head, head_before) and not same_weights(model, model_before)


def test_updates_run_in_train_mode_and_hand_back_eval_mode(tokenizer):
    model = random_model("llama", len(tokenizer))
    modes = []

    def loss_fn(batch):
        modes.append(model.training)
        return language_modeling_loss(model, batch)

    trainer = Trainer(model, TrainingConfig(progress=False), total_steps=2)
    trainer.step(loss_fn, fixed_batches(tokenizer)[0])
    assert modes == [True] and not model.training


def test_train_takes_num_steps_over_any_iterable(tokenizer):
    model = random_model("llama", len(tokenizer))
    loss_fn = partial(language_modeling_loss, model)
    config = TrainingConfig(progress=False)
    history = train(model, loss_fn, fixed_batches(tokenizer), config, num_steps=3)  # passes again as needed
    assert history["epoch"] == [0, 1, 2]
    stream = (batch for batch in fixed_batches(tokenizer, 4))
    assert len(train(model, loss_fn, stream, config, num_steps=2)["loss"]) == 2
    spent = iter(fixed_batches(tokenizer, 2))
    assert len(train(model, loss_fn, spent, config, num_steps=5)["loss"]) == 2  # a generator ends sooner
    with pytest.raises(TypeError, match="^batches \\(generator\\) has no len\\(\\).*pass num_steps"):
        train(model, loss_fn, (b for b in fixed_batches(tokenizer)), config)
    with pytest.raises(ValueError, match="^num_steps must be >= 1, got 0: the number of optimizer steps to take$"):
        train(model, loss_fn, fixed_batches(tokenizer), config, num_steps=0)
    with pytest.raises(ValueError, match="^batches is empty: there is nothing to train on \\(check the dataset\\)$"):
        train(model, loss_fn, [], config)


def test_the_progress_bar_shows_the_runs_description(tokenizer, capsys):
    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(progress=True)
    train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), config)
    assert "training: " in capsys.readouterr().err  # the default
    train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), config, desc="SFT")
    assert "SFT: " in capsys.readouterr().err


def test_bad_trainer_arguments_are_refused(tokenizer):
    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(progress=False)
    with pytest.raises(TypeError, match="modules must be a torch.nn.Module or a non-empty list"):
        Trainer("model", config, total_steps=1)
    with pytest.raises(TypeError, match="modules must be"):
        Trainer([], config, total_steps=1)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        Trainer(model, config, total_steps=0)
    with pytest.raises(TypeError, match=r"^loss_fn must be a function batch -> \(loss, metrics\), got str$"):
        train(model, "loss", fixed_batches(tokenizer), config)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no.*parameter that requires grad"):
        Trainer(model, config, total_steps=1)


# --- a diverging run stops with the weights intact --------------------------------------------------------
def test_nan_loss_stops_with_a_message_and_the_weights_untouched(tokenizer):
    model = random_model("llama", len(tokenizer))
    before = weights(model)
    loss_fn = lambda batch: (language_modeling_loss(model, batch)[0] * float("nan"), {})  # noqa: E731
    with pytest.raises(
        FloatingPointError,
        match="loss became nan at step 0.*weights were left as they were before step 0.*Lower learning_rate",
    ):
        train(model, loss_fn, fixed_batches(tokenizer), TrainingConfig(progress=False))
    assert same_weights(model, before) and not model.training


def test_a_nan_loss_later_in_the_run_keeps_the_weights_of_the_step_before(tokenizer):
    model = random_model("llama", len(tokenizer))
    calls, at_failing_step = [], []

    def loss_fn(batch):
        calls.append(1)
        loss, metrics = language_modeling_loss(model, batch)
        if len(calls) == 3:
            at_failing_step.extend(weights(model))
            return loss * float("nan"), metrics
        return loss, metrics

    with pytest.raises(FloatingPointError, match="at step 2.*before step 2"):
        train(model, loss_fn, fixed_batches(tokenizer), TrainingConfig(learning_rate=1e-2, progress=False), num_steps=5)
    assert same_weights(model, at_failing_step)


def test_a_non_finite_gradient_stops_before_the_optimizer_step(tokenizer):
    model = random_model("llama", len(tokenizer))
    before = weights(model)

    def loss_fn(batch):  # √0 is finite but its gradient is not
        logits = model(input_ids=batch["input_ids"]).logits
        return (logits * 0).sum().sqrt(), {}

    trainer = Trainer(model, TrainingConfig(progress=False), total_steps=1)
    with pytest.raises(FloatingPointError, match="gradient norm became nan.*weights were left as they were"):
        trainer.step(loss_fn, fixed_batches(tokenizer)[0])
    assert same_weights(model, before)
    assert not trainer.optimizer.state  # AdamW never saw the step
    assert all(p.grad is None for p in model.parameters())


def test_a_model_whose_forward_runs_another_models_weights_is_refused(tokenizer):
    """What copy.deepcopy makes of a model whose forward a library patched: the copy's loss reaches the original."""
    import copy

    original = random_model("llama", len(tokenizer))
    model = copy.deepcopy(original)
    model.forward = original.forward  # the copy's forward runs the original's weights
    before = weights(model)
    with pytest.raises(ValueError, match="does not depend on the LlamaForCausalLM's weights.*fresh model"):
        train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), TrainingConfig(progress=False))
    assert same_weights(model, before)


def test_an_update_that_fails_midway_is_undone(tokenizer):
    model = random_model("llama", len(tokenizer))
    before = weights(model)
    loss_fn = partial(language_modeling_loss, model)
    # AdamW decays the first weight by (1 − lr·λ), then fails: its step size lr / (1 − β₁) = 1e39 is beyond float32.
    config = TrainingConfig(learning_rate=1e38, weight_decay=0.01, progress=False)
    with pytest.raises(FloatingPointError, match="update failed.*at step 0.*before step 0.*Lower learning_rate"):
        train(model, loss_fn, fixed_batches(tokenizer), config)
    assert same_weights(model, before)


def test_an_update_that_makes_a_weight_infinite_is_undone(tokenizer):
    model = random_model("llama", len(tokenizer))
    edge = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        edge.weight.fill_(-3.3e38)  # next to float32's limit, −3.4e38

    def loss_fn(batch):  # a finite loss; its gradient says "lower the edge weight"
        loss, metrics = language_modeling_loss(model, batch)
        return loss + 1e-3 * edge.weight.sum(), metrics

    before, edge_before = weights(model), weights(edge)
    # AdamW's first step moves each weight by lr: −3.3e38 − 3e37 is beyond float32, so it becomes −inf.
    trainer = Trainer([model, edge], TrainingConfig(learning_rate=3e37, progress=False), total_steps=1)
    with pytest.raises(FloatingPointError, match="update made some weights non-finite at step 0.*before step 0"):
        trainer.step(loss_fn, fixed_batches(tokenizer)[0])
    assert same_weights(model, before) and same_weights(edge, edge_before)


def test_an_absurd_learning_rate_never_hands_back_non_finite_weights(tokenizer):
    model = random_model("llama", len(tokenizer))
    with pytest.raises(FloatingPointError, match="weights were left as they were"):
        train(
            model,
            partial(language_modeling_loss, model),
            fixed_batches(tokenizer),
            TrainingConfig(learning_rate=1e6, progress=False),
            num_steps=5,
        )
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_overflowing_update_late_in_a_run_keeps_the_last_good_weights(tokenizer):
    model = random_model("llama", len(tokenizer))
    trainer = Trainer(model, TrainingConfig(learning_rate=1e-2, progress=False), total_steps=3)
    loss_fn, batch = partial(language_modeling_loss, model), fixed_batches(tokenizer)[0]
    trainer.step(loss_fn, batch)
    trainer.step(loss_fn, batch)
    good = weights(model)
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e38  # a learning rate that overflows float32
    with pytest.raises(FloatingPointError, match="before step 2"):
        trainer.step(loss_fn, batch)
    assert same_weights(model, good) and all(torch.isfinite(p).all() for p in model.parameters())


# --- the config -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, error, match",
    [
        ("learning_rate", 0, ValueError, "learning_rate must be > 0, got 0"),
        ("learning_rate", -1e-3, ValueError, "learning_rate must be > 0"),
        ("learning_rate", "1e-3", TypeError, "learning_rate must be a number, got '1e-3'"),
        ("learning_rate", float("nan"), ValueError, "learning_rate is NaN"),
        ("learning_rate", float("inf"), ValueError, "learning_rate must be finite"),
        ("max_grad_norm", 0, ValueError, "max_grad_norm must be > 0, got 0.*None for no clipping"),
        ("max_grad_norm", -1, ValueError, "max_grad_norm must be > 0, got -1"),
        ("warmup_ratio", 1.0, ValueError, "warmup_ratio must be < 1, got 1"),
        ("warmup_ratio", -0.1, ValueError, "warmup_ratio must be >= 0"),
        ("batch_size", 0, ValueError, "batch_size must be >= 1, got 0"),
        ("batch_size", -4, ValueError, "batch_size must be >= 1"),
        ("batch_size", 2.5, TypeError, "batch_size must be an integer, got 2.5"),
        ("num_epochs", 0, ValueError, "num_epochs must be >= 1"),
        ("weight_decay", -0.1, ValueError, "weight_decay must be >= 0"),
        ("max_length", 0, ValueError, "max_length must be >= 1"),
    ],
)
def test_bad_config_is_refused(field, value, error, match):
    with pytest.raises(error, match=match):
        TrainingConfig(**{field: value})


def test_max_grad_norm_none_turns_clipping_off():
    assert TrainingConfig(max_grad_norm=None).max_grad_norm is None


# --- loaders ----------------------------------------------------------------------------------------------
def rows_of_lengths(lengths):
    return [{"input_ids": [i + 1] * n, "completion_mask": [1] * n} for i, n in enumerate(lengths)]


def batches_of(loader):
    """Each batch as the list of its row numbers (every token of row i is i + 1)."""
    return [sorted({token - 1 for token in b["input_ids"].flatten().tolist() if token}) for b in loader]


def test_loader_is_seeded_and_covers_every_row():
    rows = [{"input_ids": [i + 1], "completion_mask": [1]} for i in range(10)]
    config = TrainingConfig(batch_size=4, seed=3)
    first = [b["input_ids"].flatten().tolist() for b in make_loader(rows, partial(pad_batch, pad_token_id=0), config)]
    again = [b["input_ids"].flatten().tolist() for b in make_loader(rows, partial(pad_batch, pad_token_id=0), config)]
    assert first == again
    assert sorted(sum(first, [])) == list(range(1, 11))


def test_length_grouped_loader_batches_rows_of_similar_length():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 3, 5]
    rows = rows_of_lengths(lengths)
    config = TrainingConfig(batch_size=3, seed=1)
    loader = make_loader(rows, partial(pad_batch, pad_token_id=0), config, group_by_length=True)
    first_epoch, second_epoch = batches_of(loader), batches_of(loader)
    assert sorted(sum(first_epoch, [])) == list(range(12))
    # Each batch is a run of the sorted lengths: its rows pad to at most the next batch's shortest row.
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in first_epoch)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))
    assert sorted(map(tuple, first_epoch)) == sorted(map(tuple, second_epoch)) and first_epoch != second_epoch
    again = make_loader(rows, partial(pad_batch, pad_token_id=0), config, group_by_length=True)
    assert batches_of(again) == first_epoch  # the same seed, the same batches


def test_length_grouped_loader_breaks_ties_at_random_and_takes_a_length_function():
    rows = rows_of_lengths([2] * 8)  # all ties: the seed decides which rows share a batch
    by_seed = [
        sorted(
            map(
                tuple,
                batches_of(
                    make_loader(
                        rows,
                        partial(pad_batch, pad_token_id=0),
                        TrainingConfig(batch_size=4, seed=s),
                        group_by_length=True,
                    )
                ),
            )
        )
        for s in range(4)
    ]
    assert len(set(map(tuple, by_seed))) > 1
    lengths = [1, 9, 2, 8]
    rows = [{**row, "other": n} for row, n in zip(rows_of_lengths([3] * 4), lengths)]
    loader = make_loader(
        rows,
        partial(pad_batch, pad_token_id=0),
        TrainingConfig(batch_size=2),
        shuffle=False,
        group_by_length=True,
        length=lambda row: row["other"],
    )
    assert batches_of(loader) == [[0, 2], [1, 3]]  # grouped by the given length, in sorted order
    with pytest.raises(ValueError, match="^length is only used with group_by_length=True: pass both, or neither$"):
        make_loader(rows, pad_batch, TrainingConfig(), length=len)


def test_an_unshuffled_grouped_loader_keeps_the_order_of_rows_of_one_length():
    rows = rows_of_lengths([2, 2, 2, 2, 1, 1])
    loader = make_loader(
        rows, partial(pad_batch, pad_token_id=0), TrainingConfig(batch_size=2), shuffle=False, group_by_length=True
    )
    assert batches_of(loader) == [[4, 5], [0, 1], [2, 3]]  # shortest first; ties as they came


# --- history ----------------------------------------------------------------------------------------------
def test_history_reads_means_and_plots_the_running_mean():
    history = History()
    for step in range(4):
        history.log(step=step, loss=4 - step, accuracy=step / 4)
    assert history["loss"] == [4, 3, 2, 1]
    assert history.mean("loss", last=2) == 1.5
    assert history.mean("loss") == 2.5  # every step when last is not given
    figure = history.plot("loss", "accuracy", smooth=2)
    assert len(figure.axes) == 2
    line = figure.axes[0].lines[0]
    assert line.get_ydata().tolist() == [3.5, 2.5, 1.5]  # means of (4, 3), (3, 2), (2, 1)
    assert list(line.get_xdata()) == [1, 2, 3]  # each at the last step of its window
    with pytest.raises(KeyError, match="no metric 'kl': this run logged step, loss, accuracy"):
        history["kl"]
    plt.close(figure)


def test_history_draws_on_the_axes_it_is_given():
    history = History()
    for step in range(3):
        history.log(step=step, loss=float(step))
    figure, ax = plt.subplots()
    assert history.plot("loss", axes=ax) is figure
    assert ax.lines[0].get_ydata().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="got 1 axes for 2 metrics"):
        history.plot("loss", "step", axes=[ax])
    with pytest.raises(ValueError, match="nothing to plot"):
        History().plot()
    plt.close(figure)


def test_a_diverging_update_is_caught_by_its_size_whatever_the_cpu_computes(tokenizer):
    """An update far beyond any sane step stops the run even when no kernel overflows: the check is its size."""
    model = random_model("llama", len(tokenizer))
    trainer = Trainer(model, TrainingConfig(learning_rate=1e3, progress=False), total_steps=2)
    before = weights(model)
    with pytest.raises(FloatingPointError, match=r"moved the weights by .* times their own norm at step 0"):
        trainer.step(partial(language_modeling_loss, model), fixed_batches(tokenizer)[0])
    assert same_weights(model, before)
    sane = Trainer(model, TrainingConfig(learning_rate=1e-3, progress=False), total_steps=1)
    sane.step(partial(language_modeling_loss, model), fixed_batches(tokenizer)[0])  # a real step passes the check
    assert not same_weights(model, before)


def test_saved_histories_keep_the_layout_of_the_shipped_sweeps(tmp_path):
    """One space per level and a closing newline, as the committed sweep files are written, so a rerun diffs cleanly."""
    path = tmp_path / "new" / "folder" / "runs.json"  # folders that do not exist yet are made
    history = History()
    history.log(step=0, loss=1.5)
    assert save_histories({"a": history}, path, beta=0.1) == path
    assert path.read_text() == (
        '{\n "settings": {\n  "beta": 0.1\n },\n "runs": {\n  "a": [\n   {\n'
        '    "step": 0.0,\n    "loss": 1.5\n   }\n  ]\n }\n}\n'
    )
    runs, settings = load_histories(path)
    assert runs["a"].steps == history.steps and settings == {"beta": 0.1}


# --- the trainer's guards, each on a model of one weight ----------------------------------------------
class OneWeight(torch.nn.Module):
    """A model of one weight w: its loss below is w·sign, so Adam's first step moves w by the learning rate."""

    def __init__(self, value: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([value]))


def one_weight_trainer(value: float, learning_rate: float, **settings) -> tuple[OneWeight, Trainer]:
    model = OneWeight(value)
    config = TrainingConfig(learning_rate=learning_rate, weight_decay=0.0, progress=False, **settings)
    return model, Trainer(model, config, total_steps=3)


def push(model: OneWeight):
    return lambda batch: ((model.w * batch).sum(), {})


@pytest.mark.parametrize("value, learning_rate, refused", [(0.5, 15.0, True), (0.5, 9.0, False), (4.0, 30.0, False)])
def test_an_update_is_refused_beyond_ten_times_the_larger_of_the_weights_norm_and_one(value, learning_rate, refused):
    """‖w‖ = 0.5 counts as 1, so a step of 15 is refused and one of 9 is not; ‖w‖ = 4 allows a step of 30."""
    model, trainer = one_weight_trainer(value, learning_rate)
    if refused:
        with pytest.raises(FloatingPointError, match=r"moved the weights by 15 times their own norm at step 0"):
            trainer.step(push(model), torch.tensor([1.0]))
        assert model.w.item() == value
    else:
        trainer.step(push(model), torch.tensor([1.0]))
        assert model.w.item() == pytest.approx(value - learning_rate, rel=1e-4)


def test_the_refused_update_is_reported_as_a_multiple_of_the_weights_norm():
    model, trainer = one_weight_trainer(4.0, 100.0)  # a step of 100 against a norm of 4
    with pytest.raises(FloatingPointError, match=r"moved the weights by 25 times their own norm"):
        trainer.step(push(model), torch.tensor([1.0]))


def test_a_non_finite_gradient_names_the_step_it_stopped_at():
    model, trainer = one_weight_trainer(1.0, 0.1)
    trainer.step(push(model), torch.tensor([1.0]))
    with pytest.raises(FloatingPointError, match=r"^the gradient norm became nan \(the loss was 0\) at step 1: "):
        trainer.step(lambda batch: ((model.w * 0).sum().sqrt(), {}), None)  # √0 is finite, its gradient is not


def test_a_module_the_loss_stops_reaching_later_is_still_caught_and_no_gradient_is_kept():
    """After a step that reached both modules, one that reaches only the first is refused, its gradients cleared."""
    first, second = OneWeight(1.0), OneWeight(1.0)
    trainer = Trainer([first, second], TrainingConfig(learning_rate=0.1, progress=False), total_steps=3)
    trainer.step(lambda batch: (((first.w + second.w) * batch).sum(), {}), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="the loss does not depend on the OneWeight's weights"):
        trainer.step(push(first), torch.tensor([1.0]))
    assert first.w.grad is None and second.w.grad is None


def test_the_progress_bar_closes_after_the_last_planned_step():
    model = OneWeight(1.0)
    trainer = Trainer(model, TrainingConfig(learning_rate=0.1, progress=True), total_steps=2)
    trainer.step(push(model), torch.tensor([1.0]))
    assert not trainer.progress.disable  # still open after step 1 of 2
    trainer.step(push(model), torch.tensor([1.0]))
    assert trainer.progress.disable  # tqdm's close() turns it off


def test_a_loss_function_returning_the_wrong_kind_of_thing_is_named():
    model, trainer = one_weight_trainer(1.0, 0.1)
    with pytest.raises(TypeError, match=r"dict of metrics, got list \[tensor"):
        trainer.step(lambda batch: [model.w.sum(), {}], torch.tensor([1.0]))


def test_the_trainer_runs_in_float32_on_a_cpu_even_where_bf16_is_said_to_be_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    _, trainer = one_weight_trainer(1.0, 0.1)
    assert trainer.use_bf16 is False  # bf16 autocast pays off on a GPU only


def test_a_trainer_on_its_own_calls_its_run_training_and_names_its_arguments_word_for_word():
    model = OneWeight(1.0)
    assert Trainer(model, TrainingConfig(progress=True), total_steps=1).progress.desc == "training"
    with pytest.raises(ValueError, match=r"^total_steps must be >= 1, got 0: the number of optimizer steps planned$"):
        Trainer(model, TrainingConfig(progress=False), total_steps=0)
    model.w.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^none of the modules has a parameter that requires grad: unfreeze the "):
        Trainer(model, TrainingConfig(progress=False), total_steps=1)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("learning_rate", 0.0, "learning_rate must be > 0, got 0: try 1e-3 for the tiny preset"),
        ("batch_size", 0, "batch_size must be >= 1, got 0: the number of examples per step, e.g. 32"),
        ("num_epochs", 0, "num_epochs must be >= 1, got 0: the number of passes over the data, e.g. 1"),
        (
            "warmup_ratio",
            1.0,
            "warmup_ratio must be < 1, got 1: the share of steps in [0, 1) spent warming up, e.g. 0.1",
        ),
        (
            "max_grad_norm",
            0.0,
            "max_grad_norm must be > 0, got 0: the largest gradient norm kept, e.g. 1.0, or None for no clipping",
        ),
        ("lr_scheduler_type", "cosine", "unknown lr_scheduler_type 'cosine': use one of 'constant', 'linear'"),
        ("weight_decay", -1.0, "weight_decay must be >= 0, got -1: AdamW's decay, e.g. 0.0"),
        ("max_length", 0, "max_length must be >= 1, got 0: a length in tokens, or None"),
    ],
)
def test_the_configs_fixes_are_said_word_for_word(field, value, words):
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        TrainingConfig(**{field: value})
