"""rlhf_edu: the small, tested library behind the RLHF book's companion notebooks.

Start with ``rlhf_edu.World`` (the toy world and its hidden gold reward),
``rlhf_edu.zoo.load`` (shipped tiny checkpoints) and
``rlhf_edu.sample_rollouts`` (the one sampler).

The package has two floors. ``rlhf_edu.core`` holds what every chapter stands on
(runtime, validation, world, tokenizer, collate, logprobs, scoring, rollouts, training,
preferences, evaluation, distributions, stats, plotting, widgets, zoo); the chapter
modules sit on top of it, one per concept (``pretraining``, ``mdp``, ``objective``,
``bandit``, ``reward_modeling``, ``regularization``, ``instruction_tuning``,
``policy_gradients``, ``direct_alignment``), and ``recipes`` says which chapter trainer
builds which zoo checkpoint.
The names below are re-exported so that a notebook's imports stay short.
"""

from __future__ import annotations

import inspect

from .core import plotting, zoo
from .core.rollouts import Rollout, generate_completions, sample_rollouts
from .core.runtime import get_device, get_preset, seed_everything, setup
from .core.world import World

__version__ = "0.1.0"
__all__ = [
    "Rollout",
    "World",
    "generate_completions",
    "get_device",
    "get_preset",
    "plotting",
    "sample_rollouts",
    "seed_everything",
    "setup",
    "show",
    "zoo",
]


def show(obj: object) -> object:
    """Display the source of a library function or class in a notebook, highlighted, instead of copying it."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")
