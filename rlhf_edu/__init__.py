"""rlhf_edu: the small, tested library behind the RLHF book's companion notebooks.

Start with ``rlhf_edu.World`` (the toy world and its hidden gold reward),
``rlhf_edu.zoo.load`` (shipped tiny checkpoints) and
``rlhf_edu.sample_rollouts`` (the one sampler).

The package has four floors, visible in its folders, and ``tests/test_layers.py`` keeps them apart:

- ``rlhf_edu.core``, what every chapter stands on, imports only the core: ``runtime``,
  ``validation``, ``world``, ``tokenizer``, ``collate``, ``logprobs``, ``scoring``, ``rollouts``,
  ``training``, ``preferences``, ``evaluation``, ``distributions``, ``stats``, ``plotting``,
  ``widgets`` and ``zoo`` (with the shipped ``checkpoints/``).
- The chapter modules sit at the top of the package, one per concept, each importing the core
  and earlier chapters only: ``pretraining`` (chapter 3), ``mdp``, ``objective`` and ``bandit``
  (chapter 4), ``preference_data`` (5 and 6), ``reward_modeling`` (7), ``regularization`` (8),
  ``instruction_tuning`` (9), ``rejection_sampling`` (10), ``policy_gradients`` (11),
  ``direct_alignment`` (12), ``ai_feedback`` and ``constitution`` (13), ``reasoning`` (14),
  ``distillation`` (15) and ``overoptimization`` (17).
- ``rlhf_edu.experiments`` uses every chapter, and nothing below imports it: ``recipes`` (which
  chapter trainer builds which zoo checkpoint, and the shipped ``sweeps/``), ``pipeline``,
  ``preference_runs`` and ``feedback_runs`` (notebooks 05, 06 and 13's runs), ``graduate`` (the TRL
  bridge), ``figures``, ``claims`` and ``cli`` (the ``rlhf-edu`` command).
- ``rlhf_edu.exercises`` holds the notebooks' exercises, checked by id (``check``, ``check_function``,
  ``predict``, ``hint``), one module per notebook; it may use anything, and nothing in the package uses it.

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
