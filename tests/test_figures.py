"""Tests for the chapter-4 diagrams in ``rlhf_edu.experiments.figures``."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from rlhf_edu.experiments import figures


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


# Key labels each diagram must show; mathtext keeps TeX names such as \gamma.
KEY_LABELS = {
    "rl_loop": ["Agent", "Environment", "action", "reward", "state transitions", "discounted return", "gamma"],
    "rlhf_loop": ["Reward model", "Reference model", "Policy", "completion", "KL", "beta", "bandit"],
    "three_stage_pipeline": [
        "Base model",
        "Instruction tuning",
        "Reward model",
        "RL",
        "Aligned model",
        "~10k",
        "~100k",
    ],
    "multi_round_pipeline": [
        "Base model",
        "SFT",
        "Preference tuning",
        "DPO",
        "RLVR",
        "round 1",
        "round 2",
        "next round",
    ],
}


def test_registry_matches_public_functions() -> None:
    assert list(figures.FIGURES) == list(KEY_LABELS)
    for name, make in figures.FIGURES.items():
        assert make is getattr(figures, name)


@pytest.mark.parametrize("name", list(KEY_LABELS))
def test_figure_has_axes_and_key_labels(name: str) -> None:
    fig = figures.FIGURES[name]()
    assert isinstance(fig, Figure)
    assert len(fig.axes) >= 1
    text = _texts(fig)
    missing = [label for label in KEY_LABELS[name] if label not in text]
    assert not missing, f"{name} lacks labels {missing}"


def test_save_figures_writes_all_files(tmp_path: Path) -> None:
    paths = figures.save_figures(tmp_path)
    expected = {tmp_path / f"{n}.{ext}" for n in figures.FIGURES for ext in ("png", "svg")}
    assert len(paths) == 8
    assert set(paths) == expected
    for path in paths:
        assert path.stat().st_size > 0
    pngs = [p for p in paths if p.suffix == ".png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)


def test_save_figures_respects_formats(tmp_path: Path) -> None:
    paths = figures.save_figures(tmp_path / "new" / "dir", formats=("svg",))
    assert [p.suffix for p in paths] == [".svg"] * len(figures.FIGURES)
    assert all(p.exists() for p in paths)


def test_save_figures_is_deterministic(tmp_path: Path) -> None:
    first = figures.save_figures(tmp_path / "a")
    second = figures.save_figures(tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between runs"
