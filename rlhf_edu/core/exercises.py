"""Self-checks for the notebooks' exercises: a clear verdict, and a hint only when a reader asks for it.

A failed check does not print its hint: a saved notebook, whose exercises are unanswered,
would otherwise show every hint (some give the answer away). ``hint()`` prints the hint
of the last check that failed.
"""

from __future__ import annotations

import math

_LAST_HINT: dict[str, str] = {}  # "text": the hint of the last check that failed


def check(passed: bool, success: str, hint: str) -> bool:
    """Print ✅ and ``success`` if ``passed``, else ❌ and a pointer to :func:`hint`, which keeps ``hint``.

    Returns ``passed``.
    """
    if passed:
        print(f"✅ {success}")
    else:
        _LAST_HINT["text"] = hint
        print("❌ not yet: run hint() for a hint")
    return bool(passed)


def check_close(answer: float, expected: float, hint: str, tol: float = 1e-4) -> bool:
    """Check a numeric answer against the expected value within absolute ``tol`` (``None``: not answered yet)."""
    if answer is None:
        return check(False, "", hint)
    answer = float(answer)
    return check(math.isclose(answer, expected, abs_tol=tol), f"{answer:.6g} is right", f"{hint} (got {answer:.6g})")


def hint(text: str | None = None) -> None:
    """Print ``text``, or the hint of the last check that failed: only when asked, so no saved output shows it."""
    text = text if text is not None else _LAST_HINT.get("text")
    print(f"💡 {text}" if text is not None else "💡 no hint yet: run an exercise's check first")
