"""Every committed notebook is executed, clean, and shaped like the template.

nbval (``make test``) re-runs the notebooks; these tests read the committed files, so they
catch what a re-run cannot: a notebook saved half-run, out of order, or with an error in it.
Each check is parametrised by notebook, so a failure names the file. Rules:

- valid nbformat 4;
- executed top to bottom in one run: the non-empty code cells' execution counts are exactly 1..n;
- no error outputs, tracebacks or installed-package paths (``site-packages``) in any output;
- a chapter notebook opens with a markdown title cell holding English and Chinese (a CJK
  character) and a budget table (a markdown table that mentions time and memory), and has a
  worked-solutions notebook ``solutions/<stem>_solutions.ipynb``;
- a solutions notebook only needs a markdown title (its chapter notebook carries the budget),
  and every self-check in it passes: a ✅ and no ❌ in its outputs;
- a "Check" section (a markdown heading starting with "Check") followed by at least one ``assert``;
- no function or class longer than ``MAX_DEFINITION_LINES`` below its ``def`` line: logic belongs
  in ``rlhf_edu``, where it is tested; a notebook may only define short callbacks, e.g. for a widget.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MAX_DEFINITION_LINES = 6
CJK = re.compile(r"[\u3400-\u9fff]")
TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)
CHECK_HEADING = re.compile(r"^#{1,6}\s*[\d\s.·:-]*check", re.IGNORECASE | re.MULTILINE)


def is_solutions(path: Path) -> bool:
    return path.parent.name == "solutions"


CHAPTERS = [p for p in NOTEBOOKS if not is_solutions(p)]
SOLUTIONS = [p for p in NOTEBOOKS if is_solutions(p)]


def each(notebooks: list[Path]) -> pytest.MarkDecorator:
    """Parametrise a test over ``notebooks``, each named by its path under notebooks/."""
    return pytest.mark.parametrize("path", notebooks, ids=[str(p.relative_to(NOTEBOOK_DIR)) for p in notebooks])


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]


def output_text(output: nbformat.NotebookNode) -> str:
    """The text a reader sees in one output: a stream, a traceback or a text/plain result."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    return str(output.get("data", {}).get("text/plain", ""))


def python_source(cell: nbformat.NotebookNode) -> ast.Module:
    """The cell as Python, with IPython magics (``%matplotlib inline``) turned into plain calls."""
    return ast.parse(TransformerManager().transform_cell(cell.source))


@each(NOTEBOOKS)
def test_is_valid_nbformat(path):
    nb = read(path)
    assert nb.nbformat == 4, f"{path.name} is nbformat {nb.nbformat}: save it with Jupyter 4+"
    nbformat.validate(nb)


@each(NOTEBOOKS)
def test_was_executed_top_to_bottom_in_one_run(path):
    counts = [cell.execution_count for cell in code_cells(read(path))]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name} has execution counts {counts}: restart the kernel and run all cells "
        "(`make notebooks` does it), then save"
    )


@each(NOTEBOOKS)
def test_has_no_errors_or_leaked_paths(path):
    for cell in code_cells(read(path)):
        where = f"cell In [{cell.execution_count}] of {path.name}"
        for output in cell.outputs:
            text = output_text(output)
            assert output.output_type != "error", f"{where} raised {output.get('ename')}"
            assert "Traceback" not in text, f"{where} prints a traceback"
            assert "site-packages" not in text, (
                f"{where} shows a warning from an installed package: fix its cause (or silence "
                "that one warning in rlhf_edu), so the committed notebook shows no paths from the author's machine"
            )


@each(NOTEBOOKS)
def test_opens_with_a_title_and_a_budget(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), (
        f"{path.name} must open with a markdown cell whose first line is a '# ' title"
    )
    if is_solutions(path):
        return
    assert CJK.search(first.source) and re.search(r"[A-Za-z]{3}", first.source), (
        f"{path.name}'s title cell needs the chapter's English and Chinese names, "
        "e.g. '# Chapter 7 · Reward Modeling · 奖励建模'"
    )
    assert TABLE_SEPARATOR.search(first.source), f"{path.name}'s title cell needs a budget table (markdown table)"
    assert re.search(r"time", first.source, re.I) and re.search(r"memory|\bRAM\b", first.source, re.I), (
        f"{path.name}'s budget table must give the time and the memory it needs"
    )


@each(CHAPTERS)
def test_chapter_notebook_has_worked_solutions(path):
    solutions = path.parent / "solutions" / f"{path.stem}_solutions.ipynb"
    assert solutions.exists(), f"{path.name} needs its worked solutions in notebooks/solutions/{solutions.name}"


@each(SOLUTIONS)
def test_solutions_pass_their_self_checks(path):
    text = "\n".join(output_text(o) for cell in read(path).cells for o in cell.get("outputs", []))
    assert "✅" in text, f"{path.name} shows no passing self-check (rlhf_edu.core.exercises prints ✅)"
    assert "❌" not in text, f"{path.name} has a worked solution that fails its self-check"


@each(NOTEBOOKS)
def test_ends_with_check_cells_that_assert(path):
    cells = read(path).cells
    starts = [i for i, cell in enumerate(cells) if cell.cell_type == "markdown" and CHECK_HEADING.search(cell.source)]
    assert starts, f"{path.name} needs a 'Check' section: a markdown heading such as '## Check cells'"
    asserts = [
        node
        for cell in cells[starts[0] :]
        if cell.cell_type == "code"
        for node in ast.walk(python_source(cell))
        if isinstance(node, ast.Assert)
    ]
    assert asserts, f"{path.name}'s Check section must assert the chapter's claims (at least one `assert`)"


@each(NOTEBOOKS)
def test_defines_no_long_functions(path):
    for cell in code_cells(read(path)):
        for node in ast.walk(python_source(cell)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                body_lines = node.end_lineno - node.lineno
                name = getattr(node, "name", "lambda")
                assert body_lines <= MAX_DEFINITION_LINES, (
                    f"cell In [{cell.execution_count}] of {path.name} defines {name!r} over {body_lines} lines: "
                    "move the logic into rlhf_edu (with a test) and call it; notebooks may keep callbacks of up "
                    f"to {MAX_DEFINITION_LINES} lines"
                )


def test_sanitize_file_masks_progress_timings_and_addresses_only():
    plugin = pytest.importorskip("nbval.plugin")
    patterns = plugin.get_sanitize_patterns((Path(__file__).parent / "nbval_sanitize.cfg").read_text())
    assert len(patterns) == 5, "each mask is a 'regex:' line directly followed by its 'replace:' line"

    def sanitize(text: str) -> str:
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    same = [
        (
            "pretraining:  45%|####5     | 28/63 [00:02<00:03, 11.2it/s, loss=1.234]",
            "pretraining: 100%|##########| 63/63 [00:05<00:00,  9.87it/s, loss=0.912]",
        ),
        ("sampling 3.05s/it", "sampling 11.2it/s"),
        ("took 12.3s (1:02:03 in all)", "took 45 ms (0:00 in all)"),
        ("<function show_temperature at 0x7f3a2c1b5e50>", "<function show_temperature at 0x55d1e2a0>"),
    ]
    for first, second in same:
        assert sanitize(first) == sanitize(second), f"{first!r} and {second!r} should compare equal"
    for exact in ["3 plus 5 is 8", "tau = 0.5:  P(plain > gamed) = 0.7754", "('<bos>', 2, 0)", "2 sentences", "1.5"]:
        assert sanitize(exact) == exact, f"{exact!r} is an exact output and must not be masked"


def test_make_test_runs_every_notebook_exactly_once(tmp_path):
    """nbval takes the notebooks without widgets; the browser test runs the rest; without Chromium nbval takes all."""
    from .notebook_split import CHROMIUM, NOTEBOOKS, has_widgets, nbval_notebooks

    assert nbval_notebooks(chromium=tmp_path / "no-chromium") == NOTEBOOKS
    if CHROMIUM.exists():
        in_browser = [p for p in NOTEBOOKS if has_widgets(p)]
        assert in_browser, "no notebook has a widget: the browser test would run nothing"
        assert sorted(nbval_notebooks() + in_browser) == NOTEBOOKS
        assert not set(nbval_notebooks()) & set(in_browser)


def test_checked_text_compares_what_nbval_compares():
    """Timings are masked and a print split over messages is one text; a changed number or a new error shows."""
    from .notebook_split import checked_text

    def cell(*outputs):
        return {"outputs": list(outputs)}

    def stdout(text):
        return {"output_type": "stream", "name": "stdout", "text": text}

    saved = cell(
        stdout("accuracy 0.812 in 3.2 s\n"),
        {
            "output_type": "display_data",
            "data": {"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": "AAAA"},
        },
    )
    assert checked_text(saved) == checked_text(
        cell(
            stdout("accuracy 0.812 "),
            stdout("in 4.0 s\n"),
            {
                "output_type": "display_data",
                "data": {"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": "BBBB"},
            },
        )
    )
    assert checked_text(saved) != checked_text(cell(stdout("accuracy 0.813 in 3.2 s\n"), saved["outputs"][1]))
    assert checked_text(saved) != checked_text(
        cell(*saved["outputs"], {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []})
    )


EXERCISE_CALLS = ("check", "check_close")


def exercise_texts(nb: nbformat.NotebookNode) -> list[str]:
    """The success and hint texts of every self-check in a notebook: a reader sees them by answering, or by hint()."""
    texts = []
    for cell in code_cells(nb):
        for node in ast.walk(python_source(cell)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in EXERCISE_CALLS:
                for arg in [*node.args[1:], *(keyword.value for keyword in node.keywords)]:
                    texts += [
                        part.value
                        for part in ast.walk(arg)
                        if isinstance(part, ast.Constant) and isinstance(part.value, str) and len(part.value) > 10
                    ]
    return texts


@each(CHAPTERS)
def test_no_committed_output_gives_an_exercise_away(path):
    """A chapter notebook is saved with its exercises unanswered: no success text or hint of theirs may show."""
    nb = read(path)
    shown = "\n".join(output_text(output) for cell in code_cells(nb) for output in cell.get("outputs", []))
    texts = exercise_texts(nb)
    assert texts, f"{path.name} has no self-checked exercise (rlhf_edu.core.exercises.check)"
    leaked = [text for text in texts if text in shown]
    assert not leaked, f"{path.name} prints what its exercises should keep back: {leaked[:3]}"
