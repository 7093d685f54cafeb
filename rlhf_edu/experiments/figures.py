"""Diagrams for chapter 4 of the RLHF book ("Training Overview").

Four schematic figures are drawn with plain matplotlib (no seaborn, nothing
downloaded):

* ``rl_loop`` -- the standard agent/environment reinforcement-learning loop.
* ``rlhf_loop`` -- the RLHF loop: prompts, a language-model policy, a learned
  reward model scoring whole completions, and a KL penalty to a reference model.
* ``three_stage_pipeline`` -- the classic SFT -> reward model -> RL recipe with
  rough data sizes per stage.
* ``multi_round_pipeline`` -- modern multi-round post-training (SFT, preference
  tuning, RL with verifiable rewards) where each round's model generates data
  for the next.

Run ``rlhf-edu figures`` to regenerate ``images/*.png`` and ``images/*.svg``;
it calls :func:`save_figures` with the repository's ``images/`` directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath

__all__ = [
    "FIGURES",
    "PALETTE",
    "multi_round_pipeline",
    "rl_loop",
    "rlhf_loop",
    "save_figures",
    "three_stage_pipeline",
]

Point = tuple[float, float]

# One edge colour per role; box fills are pale tints of the same colour so a
# role reads the same in every figure.
PALETTE: dict[str, str] = {
    "model": "#2f5d8c",  # policies and checkpoints
    "env": "#6b4c9a",  # environment / reference model
    "reward": "#3b7d3b",  # reward models and verifiers
    "rl": "#b4474a",  # optimisation steps
    "data": "#b7791f",  # datasets
    "text": "#222222",
    "arrow": "#4a4a4a",
    "note": "#5f5f5f",
}

_TITLE_SIZE = 11
_SUB_SIZE = 9
_LABEL_SIZE = 9
_PNG_DPI = 150
# A fixed salt makes SVG element ids reproducible instead of random per run.
_SVG_SALT = "rlhf-edu"


def _tint(color: str, amount: float = 0.86) -> tuple[float, float, float]:
    """Mix ``color`` with white; ``amount`` is the share of white."""
    r, g, b = (c + (1 - c) * amount for c in to_rgb(color))
    return (r, g, b)


@dataclass(frozen=True)
class _Box:
    """Geometry of a drawn box, so arrows can attach to its edges."""

    x: float
    y: float
    w: float
    h: float

    def left(self, dy: float = 0.0) -> Point:
        return (self.x - self.w / 2, self.y + dy)

    def right(self, dy: float = 0.0) -> Point:
        return (self.x + self.w / 2, self.y + dy)

    def top(self, dx: float = 0.0) -> Point:
        return (self.x + dx, self.y + self.h / 2)

    def bottom(self, dx: float = 0.0) -> Point:
        return (self.x + dx, self.y - self.h / 2)


def _canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure whose data units are inches, so sizes mean the same in every figure."""
    # Figure() instead of pyplot: no global figure registry and no GUI backend;
    # savefig renders PNG through Agg.
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def _box(
    ax: Axes,
    xy: Point,
    text: str,
    sub: str | None = None,
    *,
    size: tuple[float, float] = (2.2, 0.9),
    role: str = "model",
) -> _Box:
    """Draw a rounded box centred on ``xy`` with a bold title and optional subtitle."""
    (x, y), (w, h) = xy, size
    color = PALETTE[role]
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.12",
            facecolor=_tint(color),
            edgecolor=color,
            linewidth=1.6,
            zorder=2,
        )
    )
    style = {"ha": "center", "va": "center", "color": PALETTE["text"], "zorder": 3}
    ax.text(x, y + (0.14 if sub else 0.0), text, fontsize=_TITLE_SIZE, fontweight="bold", **style)
    if sub:
        ax.text(x, y - 0.18, sub, fontsize=_SUB_SIZE, **style)
    return _Box(x, y, w, h)


def _arrow(
    ax: Axes,
    start: Point,
    end: Point,
    text: str | None = None,
    *,
    via: Sequence[Point] = (),
    text_xy: Point | None = None,
    ha: str = "center",
) -> None:
    """Draw an arrow from ``start`` to ``end``, optionally bending through ``via``.

    Routing through explicit corner points keeps loop-back arrows axis-aligned,
    which matplotlib's curved connection styles do not. The label defaults to
    just above the midpoint of a straight arrow.
    """
    ax.add_patch(
        FancyArrowPatch(
            path=MplPath([start, *via, end]),
            arrowstyle="-|>,head_length=6,head_width=3.5",
            color=PALETTE["arrow"],
            linewidth=1.5,
            joinstyle="round",
            zorder=1,
        )
    )
    if text:
        if text_xy is None:
            text_xy = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.08)
        ax.text(
            *text_xy,
            text,
            ha=ha,
            va="bottom" if ha == "center" else "center",
            fontsize=_LABEL_SIZE,
            color=PALETTE["text"],
            linespacing=1.3,
            zorder=3,
        )


def _note(ax: Axes, xy: Point, text: str) -> None:
    """Italic grey side remark, used for the conceptual notes in each figure."""
    ax.text(
        *xy,
        text,
        ha="center",
        va="center",
        fontsize=_LABEL_SIZE,
        style="italic",
        color=PALETTE["note"],
        linespacing=1.4,
    )


def rl_loop() -> Figure:
    """The standard RL loop: an agent acts, the environment returns state and reward."""
    fig, ax = _canvas(7.0, 3.9)
    agent = _box(ax, (3.5, 3.15), "Agent", r"policy $\pi(a_t \mid s_t)$", size=(3.4, 0.9))
    env = _box(
        ax, (3.5, 0.75), "Environment", r"state transitions $p(s_{t+1} \mid s_t, a_t)$", size=(3.4, 0.9), role="env"
    )
    mid = (agent.y + env.y) / 2
    _arrow(
        ax,
        agent.right(),
        env.right(),
        r"action $a_t$",
        text_xy=(5.95, mid),
        ha="left",
        via=[(5.8, agent.y), (5.8, env.y)],
    )
    # State and reward return on nested paths so neither line crosses the other.
    _arrow(
        ax,
        env.left(0.2),
        agent.left(-0.2),
        r"state $s_{t+1}$",
        text_xy=(1.45, mid),
        ha="left",
        via=[(1.3, env.y + 0.2), (1.3, agent.y - 0.2)],
    )
    _arrow(
        ax,
        env.left(-0.2),
        agent.left(0.2),
        r"reward $r_t$",
        text_xy=(0.85, mid),
        ha="right",
        via=[(1.0, env.y - 0.2), (1.0, agent.y + 0.2)],
    )
    _note(
        ax,
        (3.5, mid),
        "the agent maximises the\n"
        r"discounted return ${\sum}_t\, \gamma^t r_t$",
    )
    return fig


def rlhf_loop() -> Figure:
    """The RLHF loop: a bandit where a learned reward model scores whole completions."""
    fig, ax = _canvas(10.6, 4.6)
    top, low = 3.75, 1.75
    kl = r"\beta\,\mathrm{KL}(\pi \,\|\, \pi_{\mathrm{ref}})"
    data = _box(ax, (1.3, top), "Prompt dataset", r"$x \sim \mathcal{D}$", role="data")
    policy = _box(ax, (5.1, top), "Policy", r"language model $\pi(y \mid x)$", size=(2.5, 0.9))
    rm = _box(ax, (9.05, top), "Reward model", r"learned $r_\theta(x, y)$", role="reward")
    ref = _box(ax, (1.3, low), "Reference model", r"frozen $\pi_{\mathrm{ref}}$", role="env")
    update = _box(ax, (5.1, low), "Policy update", "PPO / REINFORCE / GRPO", size=(2.5, 0.9), role="rl")
    _arrow(ax, data.right(), policy.left(), r"prompt $x$")
    _arrow(ax, policy.right(), rm.left(), r"completion $y$")
    _arrow(
        ax,
        rm.bottom(),
        update.right(),
        "one scalar reward\nfor the whole completion",
        via=[(rm.x, low)],
        text_xy=(7.75, low + 0.1),
    )
    _arrow(ax, ref.right(), update.left(), f"KL penalty\n${kl}$", text_xy=(3.1, low + 0.1))
    _arrow(ax, update.top(), policy.bottom(), "update the\npolicy weights", text_xy=(5.22, (top + low) / 2), ha="left")
    _note(
        ax,
        (5.3, 0.7),
        r"objective: $\max_\pi\ \mathbb{E}_{x, y}\,"
        rf"[\,r_\theta(x, y)\,] - {kl}$",
    )
    _note(
        ax,
        (5.3, 0.32),
        "no state transitions: a bandit over completions (one prompt in, one completion out, one reward)",
    )
    return fig


def three_stage_pipeline() -> Figure:
    """The classic three-stage recipe (InstructGPT-style) with rough data sizes."""
    fig, ax = _canvas(11.0, 2.85)
    stages = [  # (title, subtitle, role, data size, data kind)
        ("Base model", "pretrained LM", "model", None, None),
        ("Instruction tuning", "SFT", "rl", "~10k", "demonstrations"),
        ("Reward model", "trained on preferences", "reward", "~100k", "preference pairs"),
        ("RL", r"optimise against $r_\theta$", "rl", "~100k", "prompts"),
        ("Aligned model", "final policy", "model", None, None),
    ]
    boxes = []
    for i, (title, sub, role, amount, kind) in enumerate(stages):
        x = 1.15 + i * 2.175
        boxes.append(_box(ax, (x, 2.02), title, sub, size=(1.85, 0.9), role=role))
        if amount:
            data = _box(ax, (x, 0.62), amount, kind, size=(1.6, 0.75), role="data")
            _arrow(ax, data.top(), boxes[-1].bottom())
    for a, b in pairwise(boxes):
        _arrow(ax, a.right(), b.left())
    return fig


def multi_round_pipeline() -> Figure:
    """Modern multi-round post-training: each round's model makes the next's data."""
    fig, ax = _canvas(12.4, 4.15)
    y = 1.4
    # Offset frames behind the round suggest a stack of repeated rounds.
    for k, off in enumerate((0.24, 0.12, 0.0)):
        ax.add_patch(
            FancyBboxPatch(
                (2.6 - off, 0.35 + off),
                7.0,
                2.0,
                boxstyle="round,pad=0,rounding_size=0.15",
                facecolor="white",
                edgecolor=PALETTE["note"],
                linewidth=1.0,
                linestyle="--",
                zorder=0.5 + k * 0.1,
            )
        )
    ax.text(
        2.75,
        0.53,
        "round 1, round 2, …, round N",
        fontsize=_LABEL_SIZE,
        fontweight="bold",
        color=PALETTE["note"],
        va="center",
    )
    base = _box(ax, (1.0, y), "Base model", "pretrained LM", size=(1.7, 0.9))
    sft = _box(ax, (3.75, y), "SFT", "instruction data", size=(1.8, 0.9), role="rl")
    pref = _box(ax, (6.1, y), "Preference tuning", "DPO or RM + RL", size=(2.1, 0.9), role="reward")
    rlvr = _box(ax, (8.45, y), "RLVR", "RL, verifiable rewards", size=(1.8, 0.9), role="rl")
    final = _box(ax, (11.4, y), "Final model", "post-trained", size=(1.7, 0.9))
    gen = _box(
        ax,
        (6.1, 3.45),
        "New data from the current model",
        "completions, preference pairs, prompts",
        size=(3.7, 0.8),
        role="data",
    )
    for a, b in [(base, sft), (sft, pref), (pref, rlvr)]:
        _arrow(ax, a.right(), b.left())
    _arrow(ax, rlvr.right(), final.left(), "after the\nlast round", text_xy=(9.72, y + 0.3), ha="left")
    _arrow(ax, rlvr.top(), gen.right(), "checkpoint\ngenerates", text_xy=(8.57, 2.9), ha="left", via=[(rlvr.x, gen.y)])
    _arrow(ax, gen.left(), sft.top(), "feeds the\nnext round", text_xy=(3.87, 2.9), ha="left", via=[(sft.x, gen.y)])
    return fig


FIGURES: dict[str, Callable[[], Figure]] = {
    "rl_loop": rl_loop,
    "rlhf_loop": rlhf_loop,
    "three_stage_pipeline": three_stage_pipeline,
    "multi_round_pipeline": multi_round_pipeline,
}

# Drop the timestamp and matplotlib version string so regenerating an
# unchanged figure gives identical bytes and clean diffs.
_METADATA: dict[str, dict[str, None]] = {
    "svg": {"Date": None, "Creator": None},
    "png": {"Software": None},
}


def save_figures(out_dir: str | Path, formats: Iterable[str] = ("png", "svg")) -> list[Path]:
    """Render every figure in :data:`FIGURES` to ``out_dir/<name>.<fmt>``.

    ``out_dir`` is required (the CLI passes the repository's ``images/``) and
    is created if missing. PNGs are written at 150 dpi; SVG text is stored as
    paths so output does not depend on installed fonts. Returns the written
    paths in ``FIGURES`` order, one per format.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as error:  # a file in the way, or no right to write
        raise ValueError(
            f"out_dir {str(out)!r} cannot be a folder to write figures to ({error.strerror}): "
            "pass a folder path, e.g. images"
        ) from None
    formats = tuple(formats)
    paths: list[Path] = []
    with matplotlib.rc_context({"svg.hashsalt": _SVG_SALT, "svg.fonttype": "path"}):
        for name, make in FIGURES.items():
            fig = make()
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                fig.savefig(path, format=fmt, dpi=_PNG_DPI, metadata=_METADATA.get(fmt))
                paths.append(path)
    return paths
