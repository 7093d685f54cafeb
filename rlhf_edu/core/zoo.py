"""The model zoo: tiny checkpoints that ship inside the package and load offline in about a second.

    model, tokenizer = zoo.load("base")     # pretrained on the world corpus

Checkpoints for the ``tiny`` preset live in ``rlhf_edu/checkpoints/<name>/`` and are
saved with ``save_pretrained`` (safetensors), so they are ordinary Hugging Face
models. ``rlhf-edu zoo build`` rebuilds them deterministically from the world.
Other presets are built on demand into ``$RLHF_EDU_HOME`` (default
``~/.cache/rlhf_edu``): ``rlhf-edu zoo build --preset small``.

Which chapter trainer builds each checkpoint is written in :mod:`rlhf_edu.recipes`,
above the chapters: the core loads and saves, and imports no chapter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .runtime import Preset, get_device, get_preset, seed_everything
from .tokenizer import build_tokenizer

SHIPPED_DIR = Path(__file__).parent.parent / "checkpoints"
CHECKPOINTS = ("base", "sft", "rm")  # in build order: each recipe starts from the one before


def check_checkpoint_name(name: str) -> None:
    """Raise ValueError unless ``name`` is one of the zoo's :data:`CHECKPOINTS`."""
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {name!r}: the zoo has {', '.join(CHECKPOINTS)}")


def checkpoint_dir(name: str, preset: str | Preset | None = None) -> Path:
    """Where checkpoint ``name`` of a preset lives: inside the package for ``tiny``, else the cache."""
    preset = get_preset(preset)
    check_checkpoint_name(name)
    if preset.name == "tiny":
        return SHIPPED_DIR / name
    return Path(os.environ.get("RLHF_EDU_HOME", Path.home() / ".cache" / "rlhf_edu")) / preset.name / name


def load(name: str, preset: str | Preset | None = None,
         device: str | torch.device | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` for checkpoint ``name``, offline, in eval mode on ``device``.

    The model class comes from the checkpoint's own config (a causal LM for ``base``,
    a sequence classifier for a reward model), exactly as ``from_pretrained`` records it.
    """
    path = checkpoint_dir(name, preset)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"checkpoint {name!r} is not at {path}: run `rlhf-edu zoo build {name} "
            f"--preset {get_preset(preset).name}` to build it"
        )
    return load_dir(path, device)


def load_dir(path: str | Path, device: str | torch.device | None = None
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` saved with ``save_pretrained`` in ``path``, in eval mode on ``device``.

    The model class comes from the folder's own config (its ``architectures``).
    """
    model_class = getattr(transformers, AutoConfig.from_pretrained(path).architectures[0])
    with no_progress_bars():  # a one-second load needs no progress bar in every notebook
        model = model_class.from_pretrained(path).to(get_device(device)).eval()
    return model, AutoTokenizer.from_pretrained(path)


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Switch off transformers' progress bars (loading and writing weights) inside the block."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def new_model(preset: str | Preset | None = None, seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A freshly initialised LlamaForCausalLM sized by the preset, with the world tokenizer."""
    preset = get_preset(preset)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=preset.hidden_size, intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers, num_attention_heads=preset.num_heads,
        max_position_embeddings=preset.max_length, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    seed_everything(seed)
    return LlamaForCausalLM(config), tokenizer


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
         preset: str | Preset | None = None, out_dir: str | Path | None = None) -> Path:
    """Save a built checkpoint in float32 with ``save_pretrained``: to ``out_dir/name``, else the zoo's folder."""
    path = Path(out_dir) / name if out_dir else checkpoint_dir(name, preset)
    with no_progress_bars():
        model.to(torch.float32).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
