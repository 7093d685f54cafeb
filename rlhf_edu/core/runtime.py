"""Where code runs and how big it is: device choice, seeding and presets.

Every notebook starts by calling :func:`get_device`, :func:`get_preset` and
:func:`seed_everything`, so that one environment variable moves the whole
companion from a laptop CPU (``tiny``) to one GPU (``small``):

    RLHF_EDU_DEVICE=cuda RLHF_EDU_PRESET=small make lab
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from .validation import check_seed

DEVICES = ("cuda", "mps", "cpu")

# Defaults that several modules share, in one place so that a signature never repeats a bare literal.
MAX_NEW_TOKENS = 24  # world answers are under 15 words; 24 leaves room to ramble, and to be cut
GENERATION_BATCH_SIZE = 256  # rows (prompt copies) per `generate` call: one call per step on the tiny preset
SCORING_BATCH_SIZE = 64  # rows per no-grad scoring pass; with length-sorted rows, about the fastest on a CPU


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on: the argument, else ``$RLHF_EDU_DEVICE``, else CUDA → MPS → CPU.

    Raises ValueError for an unknown name or a device this machine does not have,
    so a typo fails at the top of a notebook instead of deep inside a training loop.
    """
    if device is None:
        device = os.environ.get("RLHF_EDU_DEVICE") or None
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    name = str(device)
    if name.split(":")[0] not in DEVICES:
        raise ValueError(
            f"unknown device {name!r}: use one of {', '.join(DEVICES)} "
            "(or unset RLHF_EDU_DEVICE to pick the best available one)"
        )
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here: use 'cpu'")
    if name.startswith("mps") and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} was asked for but MPS is not available here: use 'cpu'")
    return torch.device(name)


SEED_OFFSET_VARIABLE = "RLHF_EDU_SEED_OFFSET"


def seed_offset() -> int:
    """``$RLHF_EDU_SEED_OFFSET`` (default 0): a constant added to every seed the library draws with.

    It moves every training run, sample and bootstrap to other random numbers while the
    world (its prompts, gold reward and labels, keyed by ``World(seed=...)``) stays the
    same. ``rlhf-edu claims`` sets it to check that a notebook's claims are not one
    seed's luck.
    """
    text = os.environ.get(SEED_OFFSET_VARIABLE, "").strip() or "0"
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"{SEED_OFFSET_VARIABLE}={text!r} is not an integer: unset it, or set e.g. {SEED_OFFSET_VARIABLE}=1000"
        ) from None


def shifted_seed(seed: int) -> int:
    """``seed`` moved by :func:`seed_offset`: what every seeded helper of the library actually seeds with.

    Both the seed and the moved seed must lie in 0 ..= 2**32 - 1, the range every generator takes.
    """
    return check_seed(check_seed(seed) + seed_offset(), f"seed {seed} + {SEED_OFFSET_VARIABLE} {seed_offset()}")


def torch_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`shifted_seed` of ``seed``."""
    return torch.Generator().manual_seed(shifted_seed(seed))


def numpy_rng(seed: int | np.random.Generator, name: str = "seed") -> np.random.Generator:
    """A NumPy generator from :func:`shifted_seed` of ``seed``; a generator passed in is used as it is.

    ``name`` is the caller's argument, which an error about a bad seed names.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(shifted_seed(check_seed(seed, name)))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated exactly on CPU.

    The seed is moved by ``$RLHF_EDU_SEED_OFFSET`` (:func:`shifted_seed`), 0 unless set.
    """
    seed = shifted_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass(frozen=True)
class Preset:
    """Model and data sizes that scale one codebase from a laptop CPU to one GPU.

    The data fields scale the book's classic pipeline (~10k demonstrations,
    ~100k preference pairs, ~100k RL prompts) down to what the preset can train on.
    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_length: int  # model context in tokens; world texts are far shorter
    num_pretrain: int  # pretraining sentences
    num_sft: int  # demonstrations (the book's ~10k)
    num_preference: int  # preference pairs (the book's ~100k)
    num_rl_prompts: int  # RL prompts (the book's ~100k)
    batch_size: int


PRESETS = {
    "tiny": Preset(
        name="tiny",
        hidden_size=192,
        num_layers=4,
        num_heads=4,
        intermediate_size=512,
        max_length=64,
        num_pretrain=20_000,
        num_sft=1_000,
        num_preference=2_000,
        num_rl_prompts=2_000,
        batch_size=64,
    ),
    "small": Preset(
        name="small",
        hidden_size=512,
        num_layers=8,
        num_heads=8,
        intermediate_size=1408,
        max_length=128,
        num_pretrain=200_000,
        num_sft=10_000,
        num_preference=100_000,
        num_rl_prompts=100_000,
        batch_size=128,
    ),
}


def get_preset(preset: str | Preset | None = None) -> Preset:
    """Return a :class:`Preset`: the argument, else ``$RLHF_EDU_PRESET``, else ``tiny``.

    An empty ``$RLHF_EDU_PRESET`` means unset, as shells export a cleared variable, and
    gives ``tiny``; an empty string passed as ``preset`` is refused, since it names nothing.
    """
    if isinstance(preset, Preset):
        return preset
    if preset is not None and not isinstance(preset, str):
        raise TypeError(
            f"preset must be a preset's name or a Preset, got {type(preset).__name__}: use 'tiny' or 'small'"
        )
    if preset == "":
        raise ValueError("preset is the empty string: name one ('tiny' or 'small'), or pass None for the default")
    name = preset or os.environ.get("RLHF_EDU_PRESET", "").strip() or "tiny"
    if name not in PRESETS:
        raise ValueError(
            f"unknown preset {name!r}: use one of {', '.join(PRESETS)} "
            "('tiny' runs on a laptop CPU, 'small' wants one GPU)"
        )
    return PRESETS[name]


# Minimum versions the test suite was run with; `rlhf-edu doctor` and every notebook's setup cell check them.
REQUIREMENTS = {
    "torch": "2.13",
    "transformers": "5.23",
    "datasets": "5.2",
    "tokenizers": "0.23",
    "safetensors": "0.8",
    "matplotlib": "3.11",
    "ipywidgets": "8.1",
    "tqdm": "4.70",
}


def version_report() -> list[tuple[str, str | None, bool]]:
    """``(package, installed version or None, meets the minimum)`` for each requirement."""
    from importlib.metadata import PackageNotFoundError, version

    def as_tuple(v: str) -> tuple[int, ...]:
        return tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in v.split("+")[0].split(".")[:3])

    report = []
    for package, minimum in REQUIREMENTS.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            report.append((package, None, False))
            continue
        report.append((package, installed, as_tuple(installed) >= as_tuple(minimum)))
    return report


THREADS_VARIABLE = "RLHF_EDU_THREADS"


def cpu_threads() -> int:
    """``$RLHF_EDU_THREADS`` (default 1, also when set to the empty string): PyTorch's CPU threads in a notebook."""
    text = os.environ.get(THREADS_VARIABLE, "").strip() or "1"
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(
            f"{THREADS_VARIABLE}={text!r} is not a positive whole number of threads: unset it (1 thread), "
            f"or set e.g. {THREADS_VARIABLE}=2"
        )
    return threads


def setup(
    seed: int = 0, preset: str | Preset | None = None, device: str | torch.device | None = None
) -> tuple[torch.device, Preset]:
    """A notebook's first cell: check versions, pick device and preset, seed everything, and say so.

    On CPU it runs PyTorch on ``$RLHF_EDU_THREADS`` threads (default 1): models this
    small gain little from more, and threads that compete for busy cores slow them
    down many times over.
    """
    outdated = [f"{p} {v or 'missing'} (need >= {REQUIREMENTS[p]})" for p, v, ok in version_report() if not ok]
    if outdated:
        raise RuntimeError("update your environment (`make lab` does it): " + "; ".join(outdated))
    device, preset = get_device(device), get_preset(preset)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads())
    seed_everything(seed)
    offset = f" (+{SEED_OFFSET_VARIABLE} {seed_offset()})" if seed_offset() else ""
    print(f"torch {torch.__version__} · device {device} · preset {preset.name} · seed {seed}{offset}")
    return device, preset
