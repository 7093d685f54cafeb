"""The notebooks' one slider vocabulary (rlhf_edu.core.widgets): labels, round stops, layout, quiet callbacks.

The last test reads the notebooks: a slider built straight from ipywidgets escapes the vocabulary.
tests/browser checks the same sliders in a real browser (track width, a move that redraws the plot).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import ipywidgets
import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlhf_edu.core import widgets
from rlhf_edu.core.widgets import choice_slider, describe, linear_stops, log_slider, log_stops, name_slider, slider


def test_describe_puts_units_in_parentheses():
    assert describe("β") == "β"
    assert describe("KL budget", "nats") == "KL budget (nats)"
    with pytest.raises(ValueError, match="symbol"):
        describe(" ")


def test_linear_stops_are_the_rounded_grid():
    assert linear_stops(0.0, 0.2, 0.05) == [0.0, 0.05, 0.1, 0.15, 0.2]  # not 0.15000000000000002
    assert linear_stops(-1, 1, 1) == [-1, 0, 1]
    with pytest.raises(ValueError, match="whole number"):
        linear_stops(0.0, 1.0, 0.3)
    with pytest.raises(ValueError, match="low < high"):
        linear_stops(1.0, 0.0, 0.1)


def test_log_stops_keep_the_ends_and_round_the_rest():
    assert log_stops(0.03, 10) == [
        0.03,
        0.04,
        0.05,
        0.063,
        0.079,
        0.1,
        0.13,
        0.16,
        0.2,
        0.25,
        0.32,
        0.4,
        0.5,
        0.63,
        0.79,
        1.0,
        1.3,
        1.6,
        2.0,
        2.5,
        3.2,
        4.0,
        5.0,
        6.3,
        7.9,
        10,
    ]
    assert log_stops(0.1, 10, per_decade=1) == [0.1, 1.0, 10]
    assert widgets.round_significant(0.0794) == 0.079 and widgets.round_significant(31.6) == 32
    with pytest.raises(ValueError, match="0 < low < high"):
        log_stops(0.0, 1.0)
    with pytest.raises(ValueError, match="round ends"):
        log_stops(10**-1.5, 10)


@given(st.floats(1e-4, 1e3), st.floats(1.5, 1e4), st.integers(1, 20))
def test_log_stops_rise_evenly_between_the_ends(low, ratio, per_decade):
    low, high = widgets.round_significant(low), widgets.round_significant(low * ratio)
    stops = log_stops(low, high, per_decade)
    assert stops[0] == low and stops[-1] == high
    assert all(a < b for a, b in zip(stops, stops[1:])), "stops must rise strictly"
    gaps = [math.log10(b / a) for a, b in zip(stops, stops[1:])]
    assert max(gaps) <= 2 / per_decade + 0.03, "no gap over two steps (an end drops a stop within half a step)"
    if len(stops) > 2:
        assert min(gaps) >= 0.5 / per_decade - 0.03, "no stop within half a step of another"
    assert all(float(format(s, "g")) == s for s in stops), "the readout ('g') must be the value itself"


def test_nearest_stop_accepts_only_a_stop():
    assert widgets.nearest_stop([0.1, 0.15, 0.2], 0.1 + 0.05) == 0.15
    with pytest.raises(ValueError, match="closest is 0.15"):
        widgets.nearest_stop([0.1, 0.15, 0.2], 0.16)


def test_sliders_share_one_look():
    for widget in (
        slider("KL budget", 0.5, 0.0, 2.1, 0.05, units="nats"),
        log_slider("β", 1.0, 0.01, 30),
        choice_slider("β", [0.1, 0.3, 1.0], 0.1),
        name_slider("variant", ["grpo", "dapo"], "dapo"),
    ):
        assert isinstance(widget, ipywidgets.SelectionSlider)
        assert widget.layout.width == widgets.WIDGET_WIDTH
        assert widget.style.description_width == widgets.DESCRIPTION_WIDTH
        assert widget.continuous_update is False
        assert widget.readout


def test_slider_values_are_exactly_their_readouts():
    budget = slider("KL budget", 0.5, 0.0, 2.1, 0.05, units="nats")
    assert budget.description == "KL budget (nats)" and budget.value == 0.5 and budget.label == "0.50"
    assert all(value == round(float(label), 2) for label, value in budget.options)
    beta = log_slider("β", 0.5, 0.03, 10)
    assert beta.value == 0.5 and beta.label == "0.5"
    assert all(float(label) == value for label, value in beta.options)
    with pytest.raises(ValueError, match="not a stop"):
        log_slider("β", 0.55, 0.03, 10)


def test_a_name_slider_hands_over_the_name():
    variant = name_slider("variant", ["grpo", "dr_grpo", "dapo"], "dapo")
    assert variant.value == "dapo" and variant.label == "dapo" and variant.description == "variant"
    assert name_slider("variant", ["grpo", "dapo"]).value == "grpo"
    with pytest.raises(ValueError, match="'gspo' is not one of the names"):
        name_slider("variant", ["grpo", "dapo"], "gspo")
    with pytest.raises(ValueError, match="distinct non-empty string"):
        name_slider("variant", ["grpo", "grpo"])


def test_quiet_keeps_the_signature_and_drops_the_return_value():
    def draw(beta=1.0):
        calls.append(beta)
        return "a figure and its axes"

    calls = []
    shown = ipywidgets.interactive(widgets.quiet(draw), beta=choice_slider("β", [0.5, 1.0], 1.0))
    assert shown.result is None and calls == [1.0]
    shown.children[0].value = 0.5
    assert calls == [1.0, 0.5], "the callback receives the stop itself"
    assert widgets.interact(lambda beta: beta, beta=choice_slider("β", [1.0])) is None


# Notebooks whose sliders are still built straight from ipywidgets. Remove a name once its sliders use
# rlhf_edu.core.widgets; the test then holds it to the vocabulary.
NOT_YET_CONVERTED: set[str] = set()
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").rglob("*.ipynb"))
RAW_SLIDER = re.compile(r"\b(Float|Int)(Log)?(Range)?Slider\(|\bSelection(Range)?Slider\(")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            p,
            marks=pytest.mark.xfail(
                p.name in NOT_YET_CONVERTED, strict=True, reason="sliders not yet on rlhf_edu.core.widgets"
            ),
        )
        for p in NOTEBOOKS
        if ".ipynb_checkpoints" not in p.parts
    ],
    ids=lambda p: p.name,
)
def test_notebook_sliders_come_from_the_shared_vocabulary(path):
    cells = nbformat.read(path, as_version=4).cells
    raw = [cell.source for cell in cells if cell.cell_type == "code" and RAW_SLIDER.search(cell.source)]
    assert not raw, (
        f"{path.name} builds a slider straight from ipywidgets: use rlhf_edu.core.widgets "
        f"(slider, log_slider, choice_slider, name_slider, interact) so it shares the vocabulary:\n{raw[0]}"
    )
