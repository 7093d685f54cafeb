from functools import partial

import matplotlib
import pytest
import torch

from rlhf_edu.core.collate import collate, pad_batch
from rlhf_edu.core.training import History, TrainingConfig, make_loader, train
from rlhf_edu.pretraining import language_modeling_loss
from tests.conftest import random_model

matplotlib.use("Agg")


def fixed_batches(tokenizer, n_batches=1):
    batch = collate(tokenizer, ["add 3 and 5", "review the soup"], ["3 plus 5 is 8", "the soup is tasty"])
    return [batch] * n_batches


def test_training_lowers_the_loss_on_a_fixed_batch(tokenizer):
    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(learning_rate=1e-2, num_epochs=30, progress=False)
    history = train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), config)
    assert len(history["loss"]) == 30
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert {"loss", "learning_rate", "grad_norm", "perplexity"} <= set(history.keys())
    assert not model.training  # handed back in eval mode


def test_warmup_ramps_the_learning_rate_linearly(tokenizer):
    model = random_model("llama", len(tokenizer))
    config = TrainingConfig(learning_rate=1e-3, num_epochs=10, warmup_ratio=0.4, progress=False)
    history = train(model, partial(language_modeling_loss, model), fixed_batches(tokenizer), config)
    assert history["learning_rate"][:5] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])


def test_gradient_clipping_bounds_the_update(tokenizer):
    model = random_model("llama", len(tokenizer))
    before = [p.detach().clone() for p in model.parameters()]
    loss_fn = lambda batch: (1e6 * language_modeling_loss(model, batch)[0], {})
    config = TrainingConfig(learning_rate=1e-3, max_grad_norm=1.0, progress=False)
    history = train(model, loss_fn, fixed_batches(tokenizer), config)
    assert history["grad_norm"][0] > 1e3  # logged before clipping
    # AdamW's first step moves each weight by about lr whatever the gradient's size; clipping keeps it finite.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert max((p - b).abs().max().item() for p, b in zip(model.parameters(), before)) < 2e-3


def test_nan_loss_stops_with_a_message(tokenizer):
    model = random_model("llama", len(tokenizer))
    loss_fn = lambda batch: (language_modeling_loss(model, batch)[0] * float("nan"), {})
    with pytest.raises(FloatingPointError, match="loss became nan at step 0.*Lower learning_rate"):
        train(model, loss_fn, fixed_batches(tokenizer), TrainingConfig(progress=False))


@pytest.mark.parametrize("field, value", [("learning_rate", 0), ("learning_rate", -1e-3), ("batch_size", 0),
                                          ("batch_size", -4), ("num_epochs", 0), ("batch_size", 2.5)])
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        TrainingConfig(**{field: value})


def test_bad_warmup_is_refused():
    with pytest.raises(ValueError, match="warmup_ratio must be in \\[0, 1\\)"):
        TrainingConfig(warmup_ratio=1.0)


def test_loader_is_seeded_and_covers_every_row():
    rows = [{"input_ids": [i + 1], "completion_mask": [1]} for i in range(10)]
    config = TrainingConfig(batch_size=4, seed=3)
    first = [b["input_ids"].flatten().tolist() for b in make_loader(rows, partial(pad_batch, pad_token_id=0), config)]
    again = [b["input_ids"].flatten().tolist() for b in make_loader(rows, partial(pad_batch, pad_token_id=0), config)]
    assert first == again
    assert sorted(sum(first, [])) == list(range(1, 11))


def test_history_reads_means_and_plots():
    history = History()
    for step in range(4):
        history.log(step=step, loss=4 - step, accuracy=step / 4)
    assert history["loss"] == [4, 3, 2, 1]
    assert history.mean("loss", last=2) == 1.5
    figure = history.plot("loss", "accuracy", smooth=2)
    assert len(figure.axes) == 2
    with pytest.raises(KeyError, match="no metric 'kl'.*loss"):
        history["kl"]
