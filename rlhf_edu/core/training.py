"""The one training loop, for offline data and online rollouts alike.

A chapter writes ``loss_fn(batch) -> (loss, metrics)``. A :class:`Trainer` owns
everything else: AdamW, the warm-up schedule, gradient clipping, progress, the
checks that stop a diverging run before it ruins the weights, and a
:class:`History` of per-step metrics that can plot itself. It keeps all of it from
one step to the next, so an RL loop can sample, score and then call
:meth:`Trainer.step` on what it just sampled, with one optimizer for the whole run.

:func:`train` is the offline front door: it passes over a fixed set of batches
(pretraining, SFT, the reward model and DPO differ only in their loss function).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .runtime import torch_generator
from .stats import running_mean
from .validation import check_choice, check_flag, check_int, check_number, check_seed

Batch = dict[str, torch.Tensor]
SCHEDULES = ("constant", "linear")  # after the warm-up: hold the learning rate, or decay it to 0 by the last step
LossFn = Callable[[Any], tuple[torch.Tensor, dict[str, float | torch.Tensor]]]


@dataclass
class TrainingConfig:
    """Settings shared by every trainer; chapter configs (SFT, DPO, ...) extend it.

    Field names follow TRL's where TRL has one, so a config reads the same there.
    """

    learning_rate: float = 1e-3
    batch_size: int = 32
    num_epochs: int = 1
    warmup_ratio: float = 0.0  # share of steps over which the learning rate ramps up from 0 (rounded up, as TRL does)
    lr_scheduler_type: str = "constant"  # after the warm-up: "constant", or "linear" decay to 0 after the last step
    max_grad_norm: float | None = 1.0  # None turns clipping off
    weight_decay: float = 0.0
    max_length: int | None = None  # longer examples are refused, never silently cut
    seed: int = 0
    progress: bool = True  # tqdm bar (a widget in Jupyter, text in a terminal)

    def __post_init__(self) -> None:
        self.learning_rate = check_number(
            self.learning_rate, "learning_rate", low=0, low_open=True, fix="try 1e-3 for the tiny preset"
        )
        self.batch_size = check_int(self.batch_size, "batch_size", fix="the number of examples per step, e.g. 32")
        self.num_epochs = check_int(self.num_epochs, "num_epochs", fix="the number of passes over the data, e.g. 1")
        self.warmup_ratio = check_number(
            self.warmup_ratio,
            "warmup_ratio",
            low=0,
            high=1,
            high_open=True,
            fix="the share of steps in [0, 1) spent warming up, e.g. 0.1",
        )
        if self.max_grad_norm is not None:
            self.max_grad_norm = check_number(
                self.max_grad_norm,
                "max_grad_norm",
                low=0,
                low_open=True,
                fix="the largest gradient norm kept, e.g. 1.0, or None for no clipping",
            )
        check_choice(self.lr_scheduler_type, "lr_scheduler_type", SCHEDULES)
        self.weight_decay = check_number(self.weight_decay, "weight_decay", low=0, fix="AdamW's decay, e.g. 0.0")
        if self.max_length is not None:
            self.max_length = check_int(self.max_length, "max_length", fix="a length in tokens, or None")
        self.seed = check_seed(self.seed)
        check_flag(self.progress, "progress")


@dataclass
class History:
    """Per-step metrics of a training run: ``history["loss"]`` is the list of losses."""

    steps: list[dict[str, float]] = field(default_factory=list)

    def log(self, **metrics: float) -> None:
        self.steps.append({k: float(v) for k, v in metrics.items()})

    def __getitem__(self, name: str) -> list[float]:
        values = [step[name] for step in self.steps if name in step]
        if not values:
            raise KeyError(f"no metric {name!r}: this run logged {', '.join(self.keys())}")
        return values

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for step in self.steps for k in step))

    def mean(self, name: str, last: int | None = None) -> float:
        """Mean of a metric, over the last ``last`` steps if given (less noisy than the final step)."""
        values = self[name][-last:] if last else self[name]
        return sum(values) / len(values)

    def plot(
        self, *names: str, smooth: int = 1, axes: Axes | Sequence[Axes] | None = None
    ) -> Figure:  # pragma: no mutate block, a picture: what it shows is tested as values, its styling is not
        """One panel per metric (default: all), smoothed by a running mean over ``smooth`` steps; returns the Figure.

        Each smoothed point sits at the last step of its window, and a metric logged only
        on some steps (an evaluation) is drawn at those steps. Draws on ``axes``
        (one per metric) when given, else on a new figure.
        """
        names = names or tuple(k for k in self.keys() if k not in ("step", "epoch"))
        if not names:
            raise ValueError("nothing to plot: this history has no metrics yet (train for a step first)")
        if axes is None:
            figure, grid = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
            axes = list(grid[0])
        else:
            figure = None
            axes = [axes] if isinstance(axes, Axes) else list(axes)
        if len(axes) < len(names):
            raise ValueError(f"got {len(axes)} axes for {len(names)} metrics ({', '.join(names)}): pass one per metric")
        for ax, name in zip(axes, names):
            values = self[name]
            steps = [i for i, step in enumerate(self.steps) if name in step]  # eval metrics come every few steps
            smoothed = running_mean(values, smooth)
            ax.plot(steps[len(values) - len(smoothed) :], smoothed)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step")
        if figure is not None:
            figure.tight_layout()  # only on a figure of our own: a caller's layout is theirs
        return axes[0].figure


def make_loader(
    rows: Sequence,
    collate_fn: Callable[[list], Batch],
    config: TrainingConfig,
    shuffle: bool = True,
    group_by_length: bool = False,
    length: Callable[[Any], int] | None = None,
) -> DataLoader:
    """Batches of ``config.batch_size`` rows, in a seeded random order that changes every epoch.

    With ``group_by_length=True`` each batch holds rows of similar ``length(row)``
    (default: ``len(row["input_ids"])``), so it pads only to its own longest row: the
    rows are shuffled, stably sorted by length (so ties break at random), cut into
    batches, and the batches come in a seeded random order each epoch. Preference
    pairs pass ``length=lambda pair: max(len(pair[s]["input_ids"]) for s in ("chosen", "rejected"))``.
    ``shuffle=False`` keeps the rows' order (sorted by length when grouping).
    """
    if length is not None and not group_by_length:
        raise ValueError("length is only used with group_by_length=True: pass both, or neither")
    if length is not None and not callable(length):
        raise TypeError(f"length must be a function row -> int, got {type(length).__name__}")
    if not group_by_length:
        return DataLoader(
            rows,
            batch_size=config.batch_size,
            shuffle=shuffle,
            collate_fn=collate_fn,
            generator=torch_generator(config.seed),
        )
    length = length or (lambda row: len(row["input_ids"]))
    order = (
        torch.randperm(len(rows), generator=torch_generator(config.seed)).tolist()
        if shuffle
        else list(range(len(rows)))
    )
    order = sorted(order, key=lambda i: length(rows[i]))  # stable: equal lengths keep their shuffled order
    batches = [[rows[i] for i in order[s : s + config.batch_size]] for s in range(0, len(order), config.batch_size)]
    # batch_size=None: each item is already a batch, handed to collate_fn whole.
    return DataLoader(
        batches, batch_size=None, shuffle=shuffle, collate_fn=collate_fn, generator=torch_generator(config.seed)
    )


def learning_rate_schedule(
    optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of a run of ``total_steps`` steps: transformers' own, as TRL's trainers build it.

    The first ⌈``warmup_ratio`` · ``total_steps``⌉ steps ramp the rate linearly from 0, then
    ``lr_scheduler_type`` holds it or decays it linearly to 0 (:func:`transformers_schedule`).
    """
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)  # as transformers' TrainingArguments counts them
    return get_scheduler(transformers_schedule(config), optimizer, warmup_steps, total_steps)


def transformers_schedule(config: TrainingConfig) -> str:
    """transformers' name for the config's schedule (its ``lr_scheduler_type``, as TRL's configs take it).

    A warm-up is part of every schedule here, but transformers' ``"constant"`` has none:
    with one, it is ``"constant_with_warmup"``.
    """
    if config.lr_scheduler_type == "constant" and config.warmup_ratio > 0:  # pragma: no mutate (≥: 0 steps of it)
        return "constant_with_warmup"
    return config.lr_scheduler_type


MAX_RELATIVE_UPDATE = 10.0  # no sane step moves the weights by ten times their own norm (see Trainer._update)


class Trainer:
    """AdamW with a linear warm-up, then a constant or linearly decaying rate, and gradient clipping.

    All of it is kept from one :meth:`step` to the next.

    ``modules`` is a model or a list of them (a policy and a value head): their
    parameters that require grad are trained by one optimizer. ``total_steps`` sets
    the warm-up (:func:`learning_rate_schedule`) and the progress bar.
    The modules are in train mode while a step computes its loss and gradients, and
    back in eval mode after it, so whatever samples between steps sees the policy
    without dropout. ``history`` holds every step's metrics.
    """

    def __init__(
        self,
        modules: torch.nn.Module | Sequence[torch.nn.Module],
        config: TrainingConfig,
        total_steps: int,
        desc: str = "training",
    ):
        self.modules = _as_modules(modules)
        self.config = config
        self.total_steps = check_int(total_steps, "total_steps", fix="the number of optimizer steps planned")
        self.params = _trainable_parameters(self.modules)
        self.device = self.params[0].device
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = learning_rate_schedule(self.optimizer, config, self.total_steps)
        on_gpu = self.device.type == "cuda"  # pragma: no mutate (no test machine has a GPU)
        self.use_bf16 = on_gpu and torch.cuda.is_bf16_supported()  # pays off on GPUs only
        self.history = History()
        self.progress = tqdm(total=self.total_steps, desc=desc, disable=not config.progress)

    def step(self, loss_fn: LossFn, batch: Any, **extra: float) -> dict[str, float]:
        """One update on ``batch``; returns the metrics it logged for this step.

        They are ``step``, any ``extra`` values (:func:`train` adds ``epoch``), ``loss``,
        ``learning_rate``, ``grad_norm`` (before clipping) and ``loss_fn``'s metrics.
        A non-finite loss, gradient norm or updated weight raises FloatingPointError
        and leaves the weights as they were before this step.
        """
        step = len(self.history.steps)
        batch = _to_device(batch, self.device)  # pragma: no mutate (one device in tests: .to is the identity)
        self._set_train_mode(True)
        try:
            loss, metrics, grad_norm = self._backward(loss_fn, batch, step)
            learning_rate = self.scheduler.get_last_lr()[0]  # the rate this step uses
            self._update(step)
        finally:
            self._set_train_mode(False)
        self.scheduler.step()
        self.history.log(
            step=step, **extra, loss=loss.item(), learning_rate=learning_rate, grad_norm=grad_norm.item(), **metrics
        )
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # pragma: no mutate (shown, not read)
        if len(self.history.steps) == self.total_steps:
            self.close()
        return self.history.steps[-1]

    def close(self) -> None:
        """Close the progress bar (done for you after ``total_steps`` steps)."""
        self.progress.close()

    def _backward(self, loss_fn: LossFn, batch: Any, step: int) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """The loss, its metrics and the gradient norm before clipping; the gradients are clipped in place."""
        # pragma: no mutate start, a CPU's autocast is off here and its default dtype is bfloat16 too
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            loss, metrics = _check_loss_output(loss_fn(batch))
        # pragma: no mutate end
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise self._stopped(f"the loss became {loss.item()}", step)
        loss.backward()
        self._check_gradients_reached()
        max_norm = math.inf if self.config.max_grad_norm is None else self.config.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)  # (), the norm before clipping
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)  # the NaN gradients go, and the optimizer never sees them
            raise self._stopped(f"the gradient norm became {grad_norm.item()} (the loss was {loss.item():.4g})", step)
        return loss, metrics, grad_norm

    def _check_gradients_reached(self) -> None:
        """Raise ValueError when the loss reached none of a module's weights: a step would change nothing."""
        for module in self.modules:
            if all(p.grad is None for p in module.parameters() if p.requires_grad):
                self.optimizer.zero_grad(set_to_none=True)
                raise ValueError(
                    f"the loss does not depend on the {type(module).__name__}'s weights, so training would change "
                    "nothing: is its forward another model's? (TRL patches the forward of the models its trainers "
                    "touch, and copy.deepcopy of such a model still runs the original's weights.) Load a fresh "
                    "model, e.g. zoo.load('sft'), for each trainer"
                )

    def _update(self, step: int) -> None:
        """The optimizer step, undone if it failed, left any weight non-finite, or moved the weights absurdly far.

        The last check is what catches a diverging run on every CPU. Whether a huge update
        overflows to inf depends on the kernels that compute it, but its size does not:
        Adam moves each weight by about the learning rate, so a sane step moves the weights
        by a small fraction of their norm, and one that moves them by more than
        :data:`MAX_RELATIVE_UPDATE` times their norm (e.g. ``learning_rate=1e6``) is divergence.
        """
        before = [p.detach().clone() for p in self.params]
        try:
            self.optimizer.step()
        except RuntimeError as error:  # e.g. a learning rate beyond float32, after some weights moved
            self._restore(before)
            raise self._stopped(f"the update failed ({error})", step) from error
        if not torch.isfinite(torch.stack(torch._foreach_norm(self.params))).all():  # one norm per weight, fused
            self._restore(before)
            raise self._stopped("the update made some weights non-finite", step)
        moved = torch.stack(torch._foreach_norm(torch._foreach_sub(self.params, before))).norm()  # ‖θ' − θ‖
        size = max(torch.stack(torch._foreach_norm(before)).norm().item(), 1.0)  # ‖θ‖, at least 1
        if moved.item() > MAX_RELATIVE_UPDATE * size:  # pragma: no mutate (≥: no step lands on exactly 10×)
            self._restore(before)
            raise self._stopped(f"the update moved the weights by {moved.item() / size:.3g} times their own norm", step)

    @torch.no_grad()
    def _restore(self, weights: list[torch.Tensor]) -> None:
        for p, saved in zip(self.params, weights):
            p.copy_(saved)

    def _stopped(self, what: str, step: int) -> FloatingPointError:
        return FloatingPointError(
            f"{what} at step {step}: training stopped and the weights were left as they were before step {step}. "
            f"Lower learning_rate (now {self.config.learning_rate}) or set max_grad_norm "
            f"(now {self.config.max_grad_norm}), and check the batch for empty or overlong examples."
        )

    def _set_train_mode(self, mode: bool) -> None:
        for module in self.modules:
            module.train(mode)


def _check_loss_output(output: object) -> tuple[torch.Tensor, dict]:
    """``output`` of a loss function, checked: a pair of a scalar loss tensor with a gradient, and a metrics dict."""
    shape = "loss_fn must return (loss, metrics): a scalar loss tensor and a dict of metrics"
    if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], dict)):
        raise TypeError(f"{shape}, got {type(output).__name__} {output!r:.80}")
    loss, _ = output
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"{shape}, but its loss is a {type(loss).__name__} ({loss!r:.40}): compute it with torch from the "
            "model's outputs, so that it has a gradient"
        )
    if loss.dim() != 0:
        raise ValueError(
            f"{shape}, but its loss has shape {tuple(loss.shape)}: reduce it to one number, e.g. losses.mean()"
        )
    if not loss.requires_grad:
        raise ValueError(
            f"{shape}, but its loss has no gradient: compute it from the model's outputs, not under no_grad"
        )
    return output


def train(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    loss_fn: LossFn,
    batches: Iterable,
    config: TrainingConfig,
    desc: str = "training",
    num_steps: int | None = None,
) -> History:
    """Minimise ``loss_fn`` over ``batches`` with a :class:`Trainer`; return its :class:`History`.

    Takes ``config.num_epochs`` passes over ``batches`` (which needs a ``len``), or
    exactly ``num_steps`` steps when given, passing over ``batches`` as often as that
    takes (a generator is passed once, so it may end sooner). Each step logs
    ``step``, ``epoch``, ``loss``, ``learning_rate``, ``grad_norm`` and whatever
    metrics ``loss_fn`` returns. The model is handed back in eval mode.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function batch -> (loss, metrics), got {type(loss_fn).__name__}")
    total_steps = _planned_steps(batches, config, num_steps)
    trainer = Trainer(model, config, total_steps, desc=desc)
    try:
        for epoch, batch in _passes(batches, total_steps):
            trainer.step(loss_fn, batch, epoch=epoch)
    finally:
        trainer.close()
    return trainer.history


def _planned_steps(batches: Iterable, config: TrainingConfig, num_steps: int | None) -> int:
    """``num_steps`` if given, else ``num_epochs · len(batches)``."""
    if num_steps is not None:
        return check_int(num_steps, "num_steps", fix="the number of optimizer steps to take")
    if not hasattr(batches, "__len__"):
        raise TypeError(
            f"batches ({type(batches).__name__}) has no len(), so the number of steps is unknown: pass num_steps=..."
        )
    if len(batches) == 0:
        raise ValueError("batches is empty: there is nothing to train on (check the dataset)")
    return config.num_epochs * len(batches)


def _passes(batches: Iterable, total_steps: int) -> Iterator[tuple[int, Any]]:
    """``(epoch, batch)`` over repeated passes of ``batches``, ``total_steps`` of them or until a pass yields none."""
    step = 0
    for epoch in range(total_steps):  # each pass takes a step, or none at all when batches is a spent iterator
        for batch in batches:
            yield epoch, batch
            step += 1
            if step == total_steps:
                return


def _as_modules(modules: torch.nn.Module | Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    """``modules`` as a non-empty list of modules, or a TypeError that says what to pass."""
    if isinstance(modules, torch.nn.Module):
        return [modules]
    if isinstance(modules, (list, tuple)) and modules and all(isinstance(m, torch.nn.Module) for m in modules):
        return list(modules)
    raise TypeError(
        f"modules must be a torch.nn.Module or a non-empty list of them, got {modules!r:.80}: "
        "pass the model (and any value head) whose weights should train"
    )


def _trainable_parameters(modules: list[torch.nn.Module]) -> list[torch.nn.Parameter]:
    """Every parameter that requires grad, once each (modules may share some, e.g. a head on a policy)."""
    params = {id(p): p for module in modules for p in module.parameters() if p.requires_grad}
    if not params:
        raise ValueError(
            "none of the modules has a parameter that requires grad: unfreeze the weights to train "
            "(p.requires_grad_(True))"
        )
    return list(params.values())


def _to_device(batch: Any, device: torch.device) -> Any:
    """A dict batch with its tensors on ``device``; anything with a ``.to`` (a Rollout) moved whole."""
    # pragma: no mutate start, one device in tests: .to is the identity
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.to(device) if hasattr(batch, "to") else batch
    # pragma: no mutate end


def save_histories(runs: dict[str, History], path: str | Path, **settings) -> Path:
    """Write named runs to JSON: the ``settings`` that made them and every run's per-step metrics; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"settings": settings, "runs": {name: h.steps for name, h in runs.items()}}, indent=1) + "\n"
    )
    return path


def load_histories(path: str | Path) -> tuple[dict[str, History], dict]:
    """Read a file written by :func:`save_histories`: ``({name: History}, settings)``."""
    data = json.loads(Path(path).read_text())
    return {name: History(steps) for name, steps in data["runs"].items()}, data["settings"]
