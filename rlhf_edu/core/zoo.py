"""The model zoo: tiny checkpoints that ship inside the package and load offline in about a second.

    model, tokenizer = zoo.load("base")     # pretrained on the world corpus

Checkpoints for the ``tiny`` preset live in ``rlhf_edu/core/checkpoints/<name>/`` and are
saved with ``save_pretrained`` (safetensors), so they are ordinary Hugging Face
models. ``rlhf-edu zoo build`` rebuilds them deterministically from the world.
Other presets are built on demand into ``$RLHF_EDU_HOME`` (default
``~/.cache/rlhf_edu``): ``rlhf-edu zoo build --preset small``.

Which chapter trainer builds each checkpoint is written in :mod:`rlhf_edu.experiments.recipes`,
on the floor above the chapters: the core loads and saves, and imports no chapter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from huggingface_hub import is_offline_mode
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

SHIPPED_DIR = Path(__file__).parent / "checkpoints"
CHECKPOINTS = ("base", "sft", "rm", "judge")  # in build order: each recipe starts from one before it


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


def load(
    name: str | Path, preset: str | Preset | None = None, device: str | torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` in eval mode on ``device``: a zoo checkpoint, a local folder or a Hub id.

    ``name`` is one of :data:`CHECKPOINTS` (offline, shipped or built for ``preset``), a
    folder written by ``save_pretrained`` (any causal LM or reward model with its own
    tokenizer and chat template), or a Hugging Face Hub id, which needs the network: it is
    the opt-in path, read from the local cache when the session is offline. The model
    class comes from the checkpoint's own config (a causal LM for ``base``, a sequence
    classifier for a reward model), exactly as ``from_pretrained`` records it.

    A zoo checkpoint that is broken (a file missing, truncated or unreadable) or not what its
    name says (another preset's size, another kind of model) raises ValueError naming the
    file and the ``rlhf-edu zoo build`` command that rebuilds it.
    """
    if isinstance(name, str) and name in CHECKPOINTS:
        preset = get_preset(preset)
        path = checkpoint_dir(name, preset)
        rebuild = f"rebuild it with `rlhf-edu zoo build {name} --preset {preset.name}`"
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"checkpoint {name!r} is not at {path}: {rebuild}")
        model, tokenizer = load_dir(path, device, fix=rebuild)
        check_checkpoint_kind(model, name, preset, fix=rebuild)
        return model, tokenizer
    if not isinstance(name, (str, Path)):
        raise TypeError(f"name must be a checkpoint name, a folder or a Hub id, got {type(name).__name__}")
    if Path(name).expanduser().is_dir():
        return load_dir(Path(name).expanduser(), device)
    if isinstance(name, Path) or not HUB_ID.fullmatch(name):
        raise ValueError(
            f"unknown checkpoint {str(name)!r}: the zoo has {', '.join(CHECKPOINTS)}; a folder that "
            "exists (saved with save_pretrained) or a Hub id (owner/name) loads too"
        )
    return load_from_hub(name, device)


# The class each zoo checkpoint is saved as: two language models, then the reward model.
ARCHITECTURES = {
    "base": "LlamaForCausalLM",
    "sft": "LlamaForCausalLM",
    "rm": "LlamaForSequenceClassification",
    "judge": "LlamaForCausalLM",
}


def check_checkpoint_kind(model: PreTrainedModel, name: str, preset: Preset, fix: str) -> None:
    """Raise ValueError unless zoo checkpoint ``name`` is the model class and size its preset builds."""
    found = type(model).__name__
    if found != ARCHITECTURES[name]:
        raise ValueError(
            f"checkpoint {name!r} holds a {found}, where the zoo's {name} is a {ARCHITECTURES[name]}: {fix}"
        )
    sizes = {"hidden_size": preset.hidden_size, "num_hidden_layers": preset.num_layers}
    for field, size in sizes.items():
        if getattr(model.config, field) != size:
            raise ValueError(
                f"checkpoint {name!r} of preset {preset.name!r} has {field}={getattr(model.config, field)}, "
                f"but the preset's is {size}: it was built for another preset, or copied from one; {fix}"
            )


HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name, as the Hub spells its model ids


def load_from_hub(
    model_id: str, device: str | torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` of a Hub model: downloaded when online, read from the local cache when offline."""
    offline = is_offline_mode()
    try:
        return load_dir(model_id, device, local_files_only=offline)
    except OSError as error:
        if offline:
            raise ValueError(
                f"{model_id!r} is a Hub id, and loading it needs the network: this session is offline "
                "(HF_HUB_OFFLINE=1, as the notebooks and CI run by default) and the model is not in the local cache. "
                "Use the offline default, zoo.load('sft') (or 'base', 'rm'), or a folder saved with "
                "save_pretrained; or go online (unset HF_HUB_OFFLINE) to download it once"
            ) from None
        raise ValueError(
            f"could not load {model_id!r} from the Hub ({error}): check the id and the network, "
            "or use the offline default, zoo.load('sft')"
        ) from None


def load_dir(
    path: str | Path, device: str | torch.device | None = None, local_files_only: bool = True, fix: str = ""
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` saved with ``save_pretrained`` in ``path``, in eval mode on ``device``.

    The model class comes from the folder's own config (its ``architectures``); a tokenizer
    without a pad token pads with its end-of-sequence token, as TRL's trainers do. A file
    that cannot be read raises ValueError naming it and ``fix`` (by default: save it again).
    """
    fix = fix or "save the model again with save_pretrained (and its tokenizer with the tokenizer's)"
    with _names_the_broken_file(path, "config.json", fix):
        config = AutoConfig.from_pretrained(path, local_files_only=local_files_only)
    if not config.architectures:
        raise ValueError(f"config.json in {path} names no architectures, so the model class is unknown: {fix}")
    model_class = getattr(transformers, config.architectures[0], None)
    if model_class is None:
        raise ValueError(
            f"config.json in {path} names the architecture {config.architectures[0]!r}, which this transformers "
            f"{transformers.__version__} does not have: {fix}, or update transformers"
        )
    with (
        _names_the_broken_file(path, "weights (model.safetensors)", fix),
        no_progress_bars(),
    ):  # a quick load needs no bar
        model = model_class.from_pretrained(path, local_files_only=local_files_only).to(get_device(device)).eval()
    with _names_the_broken_file(path, "tokenizer (tokenizer.json)", fix):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@contextmanager
def _names_the_broken_file(path: str | Path, what: str, fix: str) -> Iterator[None]:
    """Turn a loader's error from deep inside transformers, safetensors or tokenizers into one that names the file.

    Only for a local folder: a Hub id's errors go up as they are, for :func:`load_from_hub` to explain.
    """
    if not Path(path).is_dir():
        yield
        return
    try:
        yield
    except ValueError as error:
        raise ValueError(f"the {what} in {path} could not be loaded ({error}): {fix}") from error
    except Exception as error:  # noqa: BLE001 - OSError, SafetensorError, an exception of tokenizers, ...
        raise ValueError(
            f"the {what} in {path} could not be loaded ({type(error).__name__}: {error}): {fix}"
        ) from error


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
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        max_position_embeddings=preset.max_length,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    seed_everything(seed)
    return LlamaForCausalLM(config), tokenizer


def save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    preset: str | Preset | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    """Save a built checkpoint in float32 with ``save_pretrained``: to ``out_dir/name``, else the zoo's folder."""
    path = Path(out_dir) / name if out_dir else checkpoint_dir(name, preset)
    with no_progress_bars():
        model.to(torch.float32).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
