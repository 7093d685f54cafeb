"""Which notebooks nbval runs in `make test`, and which the browser test runs: each notebook runs once.

The browser test (tests/browser) runs every notebook that has a widget in a fresh kernel, top to bottom, then
moves its sliders; it checks what nbval checks on the way (no error, and the text of every cell marked
``# NBVAL_CHECK_OUTPUT`` as committed). Running those notebooks under nbval as well would spend minutes of CI
on a second run of the same cells, so `make test` gives nbval only the others. Where Chromium is missing the
browser test is skipped, and nbval gets every notebook.

:func:`checked_text` is what both compare in a checked cell. ``python tests/notebook_split.py`` prints the
notebooks nbval should run, one per line.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted([*NOTEBOOK_DIR.glob("*.ipynb"), *NOTEBOOK_DIR.glob("solutions/*.ipynb")])
CHROMIUM = Path("/usr/bin/chromium")
WIDGET_CODE = re.compile(r"\binteract(ive)?\(|Slider\(|\b(choice_|log_)?slider\(")
CHECKED = "# NBVAL_CHECK_OUTPUT"  # nbval compares these cells' outputs with the committed ones
SANITIZE = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())


def has_widgets(path: Path) -> bool:
    """True when a code cell of ``path`` builds a widget (an ``interact(`` or a slider)."""
    cells = nbformat.read(path, as_version=4).cells
    return any(cell.cell_type == "code" and WIDGET_CODE.search(cell.source) for cell in cells)


def nbval_notebooks(chromium: Path = CHROMIUM) -> list[Path]:
    """The notebooks nbval runs: those without a widget, or all of them where ``chromium`` is missing."""
    return [p for p in NOTEBOOKS if not (chromium.exists() and has_widgets(p))]


def checked_text(cell: dict) -> str:
    """What nbval compares in a checked cell, masked: its streams (runs of one stream joined) and text results."""
    parts: list[list[str]] = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            kind, text = output["name"], "".join(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            kind, text = "result", "".join(output.get("data", {}).get("text/plain", ""))
        else:
            kind, text = "error", f"{output['ename']}: {output['evalue']}"
        if parts and kind == parts[-1][0] != "result":
            parts[-1][1] += text  # the kernel may send one print in several messages
        else:
            parts.append([kind, text])
    text = "\n".join(f"[{kind}] {body}" for kind, body in parts)
    for pattern, replace in SANITIZE:
        text = re.sub(pattern, replace, text)
    return text


if __name__ == "__main__":
    print("\n".join(p.relative_to(ROOT).as_posix() for p in nbval_notebooks()))
