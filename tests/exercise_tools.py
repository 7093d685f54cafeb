"""What the exercise tests share: the exercises each notebook calls, its worked solutions, and a check's verdict."""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from rlhf_edu.exercises import check_function

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CHECK_CALLS = ("check", "check_function", "predict")


@dataclass(frozen=True)
class WrongVersion:
    """A plausible wrong answer to a function exercise, and words its failure must name (the case it fails on)."""

    mistake: str
    function: Callable
    names: str


def code_of(cell: nbformat.NotebookNode) -> ast.Module:
    """A code cell's Python, with IPython's magics (``%matplotlib``) left out."""
    lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def check_calls(tree: ast.AST) -> list[ast.Call]:
    """Every call of check, check_function or predict in ``tree``."""
    return [
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CHECK_CALLS
    ]


def exercise_ids(path: Path, call: str | None = None) -> list[str]:
    """The exercise ids a notebook checks (those of ``call`` only, if given), in order, each once."""
    ids = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in check_calls(code_of(cell)):
            if (call is None or node.func.id == call) and node.args and isinstance(node.args[0], ast.Constant):
                ids.append(node.args[0].value)
    return list(dict.fromkeys(ids))


@functools.cache
def solutions_notebooks() -> dict[str, Path]:
    """Each exercise id, and the worked-solutions notebook that checks it (found by its calls, not by its name)."""
    return {i: path for path in sorted((NOTEBOOK_DIR / "solutions").glob("*.ipynb")) for i in exercise_ids(path)}


def solution(exercise_id: str) -> Callable:
    """The function that the solutions notebook checks with ``check_function(exercise_id, f)``, as it defines it.

    Runs the notebook's imports and that one definition, so a worked solution may use only what it imports.
    """
    path = solutions_notebooks()[exercise_id]
    cells = [code_of(c) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    name = next(
        call.args[1].id
        for tree in cells
        for call in check_calls(tree)
        if call.func.id == "check_function" and call.args[0].value == exercise_id
    )
    imports = [node for tree in cells for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    (definition,) = [n for tree in cells for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    namespace: dict = {}
    exec(compile(ast.Module(body=[*imports, definition], type_ignores=[]), exercise_id, "exec"), namespace)
    return namespace[name]


def verdict(exercise_id: str, function: Callable) -> tuple[bool, str]:
    """``check_function``'s verdict on ``function`` and what it printed."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        passed = check_function(exercise_id, function)
    return passed, printed.getvalue()


def wrong_versions() -> dict[str, list[WrongVersion]]:
    """Every exercise's wrong versions, from tests/wrong_versions/ (chNN.py, trl.py: each module's ``WRONG``)."""
    found: dict[str, list[WrongVersion]] = {}
    for path in sorted((Path(__file__).parent / "wrong_versions").glob("[!_]*.py")):
        found |= importlib.import_module(f"tests.wrong_versions.{path.stem}").WRONG
    return found
