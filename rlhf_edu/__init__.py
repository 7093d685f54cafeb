"""rlhf_edu: the small, tested library behind the RLHF book's companion notebooks.

Start with ``rlhf_edu.World`` (the toy world and its hidden gold reward),
``rlhf_edu.zoo.load`` (shipped tiny checkpoints) and
``rlhf_edu.generate_completions`` (the one sampling helper).
"""

from __future__ import annotations

import inspect

from .runtime import get_device, get_preset, seed_everything, setup
from .sampling import generate_completions
from .world import World

__version__ = "0.1.0"
__all__ = ["World", "generate_completions", "get_device", "get_preset", "seed_everything", "setup", "show"]


def show(obj: object) -> object:
    """Display the source of a library function or class in a notebook, highlighted, instead of copying it."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")
