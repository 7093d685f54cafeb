"""One vocabulary for the notebooks' sliders: build every slider here.

- **Description**: the quantity's symbol, a Greek letter where the book uses one (``β``, ``ε``, ``τ``), else a
  short name, with its units in parentheses where it has any: ``KL budget (nats)``.
- **Track**: long enough to drag on a laptop. The widget is :data:`WIDGET_WIDTH` wide with a
  :data:`DESCRIPTION_WIDTH` label, which leaves a track of about 420 px, so one stop is several pixels wide.
- **Values**: every stop is a round number, and the callback receives exactly the number the readout shows.
  (A ``FloatLogSlider`` at 10^-0.3 reads "0.501" but passes 0.501187…, which a plot title then prints.)
- **Updates**: the value is sent when a drag ends or a key is pressed (``continuous_update=False``). Every
  callback here redraws a figure in the kernel; redraws asked for on every pixel of a drag queue up and lag.
- **Output**: :func:`interact` shows what the callback draws or prints, never its return value.

The stops are computed by pure functions (:func:`linear_stops`, :func:`log_stops`), so they are tested
without a browser; a widget is a thin wrapper around them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from decimal import Decimal

import ipywidgets

WIDGET_WIDTH = "660px"  # description + track + readout
DESCRIPTION_WIDTH = "150px"  # fits "KL budget (nats)" without cutting it
MIN_TRACK_PX = 400  # what the layout above must leave for the track (tests/browser measures it)


def describe(symbol: str, units: str | None = None) -> str:
    """A slider's description: ``describe("β") == "β"``, ``describe("KL budget", "nats") == "KL budget (nats)"``."""
    if not symbol.strip():
        raise ValueError("give the quantity's symbol (β, ε, τ) or a short name, not an empty description")
    return f"{symbol} ({units})" if units else symbol


def linear_stops(low: float, high: float, step: float) -> list[float]:
    """``low, low + step, ..., high``, each rounded to the decimals of ``step`` (0.15, not 0.15000000000000002)."""
    if not step > 0 or not high > low:
        raise ValueError(f"need low < high and step > 0, got low={low}, high={high}, step={step}")
    count = (high - low) / step
    if abs(count - round(count)) > 1e-6:
        raise ValueError(f"(high - low) / step = {count:g} must be a whole number of steps")
    decimals = max(0, -Decimal(str(step)).normalize().as_tuple().exponent)
    return [round(low + k * step, decimals) for k in range(round(count) + 1)]


def round_significant(x: float, digits: int = 2) -> float:
    """``x`` rounded to ``digits`` significant figures: 0.0794 → 0.079, 31.6 → 32."""
    return float(f"{x:.{digits}g}")


def log_stops(low: float, high: float, per_decade: int = 10, digits: int = 2) -> list[float]:
    """Round numbers from ``low`` to ``high`` (both kept as given), evenly spaced on a log scale.

    The inner stops are 10^(k / per_decade) rounded to ``digits`` significant figures, leaving out any within
    half a step of an end, so ``log_stops(0.03, 10)`` is 0.03, 0.04, 0.05, 0.063, 0.079, 0.1, ..., 7.9, 10.
    """
    if not 0 < low < high or per_decade < 1:
        raise ValueError(
            f"need 0 < low < high and per_decade >= 1, got low={low}, high={high}, per_decade={per_decade}"
        )
    if float(f"{low:g}") != low or float(f"{high:g}") != high:
        raise ValueError(f"give round ends, read out as they are: low={low:g}, high={high:g}")
    first, last = math.log10(low) * per_decade, math.log10(high) * per_decade
    inner = [
        round_significant(10 ** (k / per_decade), digits)
        for k in range(math.floor(first) + 1, math.ceil(last))
        if first + 0.5 <= k <= last - 0.5
    ]
    return [low, *sorted(set(inner)), high]


def nearest_stop(stops: Sequence[float], value: float) -> float:
    """The stop equal to ``value`` (up to float rounding); a ValueError names the closest ones otherwise."""
    closest = min(stops, key=lambda stop: abs(stop - value))
    if not math.isclose(closest, value, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"value {value} is not a stop of the slider; the closest is {closest:g}")
    return closest


def choice_slider(
    symbol: str, options: Sequence[float], value: float | None = None, units: str | None = None, fmt: str = "g"
) -> ipywidgets.SelectionSlider:
    """A slider over the numbers ``options``, read out as ``format(option, fmt)``, starting at ``value``.

    Use it for values that were computed ahead, e.g. a few training runs keyed by β.
    """
    options = [float(option) for option in options]
    labels = [format(option, fmt) for option in options]
    if not options or len(set(labels)) != len(labels):
        raise ValueError(f"give at least one option, each with its own readout: {labels}")
    return ipywidgets.SelectionSlider(
        options=list(zip(labels, options)),
        value=nearest_stop(options, options[0] if value is None else value),
        description=describe(symbol, units),
        continuous_update=False,
        layout=ipywidgets.Layout(width=WIDGET_WIDTH),
        style={"description_width": DESCRIPTION_WIDTH},
    )


def name_slider(symbol: str, names: Sequence[str], value: str | None = None) -> ipywidgets.SelectionSlider:
    """A slider over named choices (``names``, read out as they are), starting at ``value``: e.g. a loss variant.

    The callback receives the name itself; use it for runs keyed by a name rather than a number.
    """
    names = list(names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"give at least one name, each a distinct non-empty string: {names}")
    if value is not None and value not in names:
        raise ValueError(f"value {value!r} is not one of the names {names}")
    return ipywidgets.SelectionSlider(
        options=names,
        value=names[0] if value is None else value,
        description=describe(symbol),
        continuous_update=False,
        layout=ipywidgets.Layout(width=WIDGET_WIDTH),
        style={"description_width": DESCRIPTION_WIDTH},
    )


def slider(
    symbol: str, value: float, low: float, high: float, step: float, units: str | None = None
) -> ipywidgets.SelectionSlider:
    """A linear slider from ``low`` to ``high`` by ``step``, read out with the decimals of ``step``."""
    stops = linear_stops(low, high, step)
    decimals = max(0, -Decimal(str(step)).normalize().as_tuple().exponent)
    return choice_slider(symbol, stops, value, units, fmt=f".{decimals}f")


def log_slider(
    symbol: str, value: float, low: float, high: float, per_decade: int = 10, units: str | None = None
) -> ipywidgets.SelectionSlider:
    """A log-scale slider over :func:`log_stops` (``per_decade`` stops for every factor of 10)."""
    return choice_slider(symbol, log_stops(low, high, per_decade), value, units)


def quiet(fn: Callable) -> Callable:
    """``fn`` with the same signature, returning None: what it draws or prints is shown, its return value is not."""

    @functools.wraps(fn)
    def call(*args, **kwargs) -> None:
        fn(*args, **kwargs)

    return call


def interact(fn: Callable, **controls: ipywidgets.Widget) -> None:
    """``ipywidgets.interact(fn, **controls)``, showing no return value of ``fn`` and returning nothing."""
    ipywidgets.interact(quiet(fn), **controls)
