"""Self-checks for the notebooks' exercises: a clear verdict and a hint, never a bare traceback."""

from __future__ import annotations

import math


def check(passed: bool, success: str, hint: str) -> bool:
    """Print ✅ and ``success`` if ``passed``, else ❌ and ``hint``; return ``passed``."""
    print(f"✅ {success}" if passed else f"❌ not yet: {hint}")
    return bool(passed)


def check_close(answer: float, expected: float, hint: str, tol: float = 1e-4) -> bool:
    """Check a numeric answer against the expected value within absolute ``tol`` (``None``: not answered yet)."""
    if answer is None:
        return check(False, "", hint)
    answer = float(answer)
    return check(math.isclose(answer, expected, abs_tol=tol), f"{answer:.6g} is right", f"{hint} (got {answer:.6g})")


def hint(text: str) -> None:
    """Print an exercise's hint, only when a reader asks for it: a saved notebook never shows it unasked."""
    print(f"💡 {text}")
