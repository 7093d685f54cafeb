"""The one training loop: every trainer in the package is this loop plus a loss function.

A chapter writes ``loss_fn(batch) -> (loss, metrics)`` and calls :func:`train`;
the loop owns everything else (AdamW, warm-up, gradient clipping, progress, NaN
checks, and a :class:`History` of per-step metrics that can plot itself). SFT,
the reward model and DPO differ only in their loss function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

Batch = dict[str, torch.Tensor]
LossFn = Callable[[Batch], tuple[torch.Tensor, dict[str, float | torch.Tensor]]]


@dataclass
class TrainingConfig:
    """Settings shared by every trainer; chapter configs (SFT, DPO, ...) extend it.

    Field names follow TRL's where TRL has one, so a config reads the same there.
    """

    learning_rate: float = 1e-3
    batch_size: int = 32
    num_epochs: int = 1
    warmup_ratio: float = 0.0  # share of steps over which the learning rate ramps up from 0
    max_grad_norm: float | None = 1.0  # None turns clipping off
    weight_decay: float = 0.0
    max_length: int | None = None  # longer examples are refused, never silently cut
    seed: int = 0
    progress: bool = True  # tqdm bar (a widget in Jupyter, text in a terminal)

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}: try 1e-3 for the tiny preset")
        for name in ("batch_size", "num_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


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

    def plot(self, *names: str, smooth: int = 1, axes: Sequence[plt.Axes] | None = None) -> plt.Figure:
        """One small panel per metric (default: all), with a running mean over ``smooth`` steps."""
        names = names or tuple(k for k in self.keys() if k not in ("step", "epoch"))
        if axes is None:
            _, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
            axes = axes[0]
        for ax, name in zip(axes, names):
            values = torch.tensor(self[name])
            if smooth > 1 and len(values) >= smooth:
                values = values.unfold(0, smooth, 1).mean(dim=1)
            ax.plot(values.numpy())
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step")
        axes[0].figure.tight_layout()
        return axes[0].figure


def make_loader(rows: Sequence, collate_fn: Callable[[list], Batch], config: TrainingConfig,
                shuffle: bool = True) -> DataLoader:
    """Batches of ``rows`` in a seeded random order, a new order each epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(rows, batch_size=config.batch_size, shuffle=shuffle, collate_fn=collate_fn,
                      generator=generator)


def train(model: torch.nn.Module, loss_fn: LossFn, loader: Iterable[Batch], config: TrainingConfig,
          desc: str = "training") -> History:
    """Minimise ``loss_fn`` over ``config.num_epochs`` passes of ``loader``; return the :class:`History`.

    Each step logs ``loss``, ``learning_rate``, ``grad_norm`` and whatever metrics
    ``loss_fn`` returns. A non-finite loss stops training at once with a message,
    rather than letting NaN weights produce meaningless plots.
    """
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = config.num_epochs * len(loader)
    warmup_steps = int(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()  # autocast pays off on GPUs only
    history = History()
    model.train()
    with tqdm(total=total_steps, desc=desc, disable=not config.progress) as progress:
        for epoch in range(config.num_epochs):
            for batch in loader:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss, metrics = loss_fn(batch)
                _check_finite(loss, len(history.steps), config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or math.inf)
                learning_rate = scheduler.get_last_lr()[0]  # the rate this step uses
                optimizer.step()
                scheduler.step()
                history.log(step=len(history.steps), epoch=epoch, loss=loss.item(),
                            learning_rate=learning_rate, grad_norm=grad_norm.item(), **metrics)
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return history


def _check_finite(loss: torch.Tensor, step: int, config: TrainingConfig) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the loss became {loss.item()} at step {step}: training stopped before the weights were "
            f"ruined. Lower learning_rate (now {config.learning_rate}) or set max_grad_norm "
            f"(now {config.max_grad_norm}), and check the batch for empty or overlong examples."
        )
