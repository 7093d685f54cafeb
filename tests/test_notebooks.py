"""Every committed notebook is executed, clean, and shaped like the template.

nbval (``make test``) re-runs the notebooks; these tests read the committed files, so they
catch what a re-run cannot: a notebook saved half-run, out of order, or with an error in it.
Each check is parametrised by notebook, so a failure names the file. Rules:

- valid nbformat 4;
- executed top to bottom in one run: the non-empty code cells' execution counts are exactly 1..n;
- every widget a cell shows is saved with the notebook (the book site draws it from there), and there are no error
  outputs, tracebacks or installed-package paths (``site-packages``) in any output, nor in what a saved widget shows;
- a chapter notebook opens with a markdown title cell holding English and Chinese (a CJK
  character) and a budget table (a markdown table that mentions time and memory), and has a
  worked-solutions notebook ``solutions/<stem>_solutions.ipynb``;
- the title cell links the book's chapter on rlhfbook.com (the chapter its edition table names for the current
  English edition) and the notebook's worked solutions; a solutions notebook's title cell links its chapter notebook
  and the book's chapter;
- the first code cell opens by importing rlhf_edu, and where it is missing says "install rlhf-edu", not a bare
  ModuleNotFoundError from some import below;
- a solutions notebook only needs a markdown title (its chapter notebook carries the budget),
  and every self-check in it passes: a ✅ and no ❌ in its outputs;
- a "Check" section (a markdown heading starting with "Check") followed by at least one ``assert``;
- no function or class longer than ``MAX_DEFINITION_LINES`` below its ``def`` line: logic belongs
  in ``rlhf_edu``, where it is tested; a notebook may only define short callbacks, e.g. for a widget (a worked
  answer to a function exercise, in a solutions notebook, is as long as it needs);
- exercises (``rlhf_edu.exercises``): a chapter notebook is saved with none answered (no ✅, hint or success text in
  its outputs); an exercise cell holds only the reader's stub and a check call whose arguments are the exercise's
  id and the reader's variable; no value exercise's answer is printed, to three significant digits, above it.
"""

from __future__ import annotations

import ast
import importlib.abc
import re
import sys
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from rlhf_edu.exercises import exercise
from tests.exercise_tools import CHECK_CALLS, check_calls, exercise_ids

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


def saved_widget_outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """What the notebook's saved widgets show: the outputs of its Output widgets (what an interact drew)."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [output for model in state.values() for output in model["state"].get("outputs", [])]


@each(NOTEBOOKS)
def test_every_widget_shown_is_saved_with_the_notebook(path):
    """The book site draws a widget from the state the notebook saved (`make notebooks` keeps it): every widget a
    cell shows must be in it."""
    nb = read(path)
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    shown = [
        output.data["application/vnd.jupyter.widget-view+json"]["model_id"]
        for cell in code_cells(nb)
        for output in cell.outputs
        if "application/vnd.jupyter.widget-view+json" in output.get("data", {})
    ]
    assert set(shown) <= set(state), f"{path.name} shows widgets it did not save: re-execute it with `make notebooks`"


@each(NOTEBOOKS)
def test_has_no_errors_or_leaked_paths(path):
    nb = read(path)
    shown = [(f"cell In [{cell.execution_count}] of {path.name}", cell.outputs) for cell in code_cells(nb)]
    shown.append((f"a saved widget of {path.name} (the book site shows it)", saved_widget_outputs(nb)))
    for where, outputs in shown:
        for output in outputs:
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


BOOK_LINK = re.compile(r"\]\((https://rlhfbook\.com/c/([\w-]+))\)")
CURRENT_EDITION = re.compile(r"^\| current English edition[^|]*\|(.*)\|\s*$", re.MULTILINE)


def book_chapters(text: str) -> list[str]:
    """``chapter 5`` and ``Appendix A`` as their rlhfbook.com addresses begin: ``05``, ``appendix-a``."""
    found = re.findall(r"chapter (\d+)|Appendix ([A-Z])", text)
    return [f"{int(number):02d}" if number else f"appendix-{letter.lower()}" for number, letter in found]


@each(CHAPTERS)
def test_title_links_its_chapter_and_its_solutions(path):
    title = read(path).cells[0].source
    row = CURRENT_EDITION.search(title)
    assert row, f"{path.name}'s title cell needs its edition table's row for the current English edition"
    chapters, slugs = book_chapters(row.group(1)), [slug for _, slug in BOOK_LINK.findall(row.group(1))]
    assert len(slugs) == len(chapters) and all(slug.startswith(f"{c}-") for slug, c in zip(slugs, chapters)), (
        f"{path.name}: each of {chapters} in the current edition's row must link rlhfbook.com/c/<it>-..., got {slugs}"
    )
    solutions = f"](solutions/{path.stem}_solutions.ipynb)"
    assert solutions in title, f"{path.name}'s title cell must link its worked solutions: [...]({solutions[2:-1]})"


@each(SOLUTIONS)
def test_solutions_title_links_its_notebook_and_the_chapter(path):
    chapter = path.parent.parent / path.name.replace("_solutions", "")
    title, chapter_title = read(path).cells[0].source, read(chapter).cells[0].source
    assert f"](../{chapter.name})" in title, f"{path.name}'s title cell must link [...](../{chapter.name})"
    wanted = [url for url, _ in BOOK_LINK.findall(CURRENT_EDITION.search(chapter_title).group(1))]
    linked = [url for url, _ in BOOK_LINK.findall(title)]
    assert linked == wanted, f"{path.name} must link the book's chapter as {chapter.name} does: {wanted}, not {linked}"


class Uninstalled(importlib.abc.MetaPathFinder):
    """Makes ``import rlhf_edu`` fail as it does where the module ``name`` is not installed: rlhf_edu itself, or one
    that rlhf_edu imports."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname == "rlhf_edu":
            raise ModuleNotFoundError(f"No module named {self.name!r}", name=self.name)
        return None  # any other module: the usual finders


def first_statement_error(path: Path, missing: str) -> ModuleNotFoundError | None:
    """Run the first statement of ``path``'s first code cell (after ``%matplotlib inline``) where the module
    ``missing`` is not installed; return the ModuleNotFoundError it raises, if any."""
    body = python_source(code_cells(read(path))[0]).body
    statement = body[1] if isinstance(body[0], ast.Expr) else body[0]  # body[0]: the %matplotlib magic, as a call
    code = compile(ast.Module(body=[statement], type_ignores=[]), str(path), "exec")
    saved, finder = sys.modules.pop("rlhf_edu"), Uninstalled(missing)
    sys.meta_path.insert(0, finder)
    try:
        exec(code, {})
    except ModuleNotFoundError as error:
        return error
    finally:
        sys.meta_path.remove(finder)
        sys.modules["rlhf_edu"] = saved
    return None


@each(NOTEBOOKS)
def test_first_code_cell_says_install_rlhf_edu_where_it_is_missing(path):
    error = first_statement_error(path, missing="rlhf_edu")
    assert error is not None and "install rlhf-edu" in str(error), (
        f"{path.name}'s first code cell must open with `try: import rlhf_edu` and, where rlhf_edu is missing, raise "
        f"a ModuleNotFoundError that says 'install rlhf-edu' and where the README says how; it gave {error!r}"
    )
    error = first_statement_error(path, missing="torch")  # rlhf_edu is installed, what it imports is not
    assert error is not None and error.name == "torch", (
        f"{path.name}'s first code cell must let the error of a missing dependency through, as it names the "
        f"module to install; it gave {error!r}"
    )


@each(CHAPTERS)
def test_chapter_notebook_has_worked_solutions(path):
    solutions = path.parent / "solutions" / f"{path.stem}_solutions.ipynb"
    assert solutions.exists(), f"{path.name} needs its worked solutions in notebooks/solutions/{solutions.name}"


@each(SOLUTIONS)
def test_solutions_pass_their_self_checks(path):
    text = "\n".join(output_text(o) for cell in read(path).cells for o in cell.get("outputs", []))
    assert "✅" in text, f"{path.name} shows no passing self-check (rlhf_edu.exercises prints ✅)"
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
    nb = read(path)
    answers = {
        c.args[1].id
        for cell in code_cells(nb)
        for c in check_calls(python_source(cell))
        if c.func.id == "check_function"
    }  # a worked answer to an exercise is as long as it needs
    for cell in code_cells(nb):
        for node in ast.walk(python_source(cell)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) and not (
                is_solutions(path) and getattr(node, "name", None) in answers
            ):
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


def exercise_texts(path: Path) -> list[str]:
    """What a notebook's exercises print only when a reader answers or asks: success texts, hints, predictions."""
    texts = []
    for exercise_id in exercise_ids(path):
        ex = exercise(exercise_id)
        texts += [ex.success, *ex.hints] + ([ex.prediction.why] if ex.prediction else [])
    return texts


@each(CHAPTERS)
def test_no_committed_output_gives_an_exercise_away(path):
    """A chapter notebook is saved with its exercises unanswered: no verdict ✅, hint or success text may show."""
    shown = "\n".join(output_text(output) for cell in code_cells(read(path)) for output in cell.get("outputs", []))
    texts = exercise_texts(path)
    assert texts, f"{path.name} has no self-checked exercise (rlhf_edu.exercises.check)"
    leaked = [text for text in texts if text in shown]
    assert not leaked, f"{path.name} prints what its exercises should keep back: {leaked[:3]}"
    assert "✅" not in shown and "💡" not in shown, f"{path.name} is saved with an exercise answered or a hint shown"


STUB_STATEMENTS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign, ast.Expr)


def stub_problem(statement: ast.stmt) -> str | None:
    """What, in one statement of an exercise cell, is more than the reader's stub or the check call (None: nothing)."""
    if isinstance(statement, ast.Assign):
        if not (isinstance(statement.value, ast.Constant) and statement.value.value is None):
            return "an assignment other than `answer = None`"
    elif isinstance(statement, ast.FunctionDef):
        body = [s for s in statement.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        if not (len(body) == 1 and isinstance(body[0], ast.Raise)):
            return f"a function {statement.name} with a body: the reader writes it (`raise NotImplementedError`)"
    elif isinstance(statement, ast.Expr):
        if not (
            isinstance(statement.value, ast.Call) and getattr(statement.value.func, "id", "") in (*CHECK_CALLS, "hint")
        ):
            return "an expression other than a check call"
    elif not isinstance(statement, STUB_STATEMENTS):
        return f"a {type(statement).__name__} statement"
    return None


@each(CHAPTERS)
def test_an_exercise_cell_holds_only_the_readers_stub_and_a_check_by_id(path):
    """The expected value lives in rlhf_edu.exercises: a check call takes the id and the reader's name, nothing else."""
    for cell in code_cells(read(path)):
        tree = python_source(cell)
        calls = check_calls(tree)
        if not calls:
            continue
        for call in calls:
            first, *rest = call.args or [None]
            assert (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and len(rest) == 1
                and isinstance(rest[0], ast.Name)
                and not call.keywords
            ), (
                f'{path.name}: `{ast.unparse(call)}` must be {call.func.id}("NN.k", name) ("trl.k" in the TRL '
                "notebook): the id and the reader's variable or function only, so that no expected value shows"
            )
        for statement in tree.body:
            problem = stub_problem(statement)
            assert problem is None, (
                f"{path.name}: the exercise cell with `{ast.unparse(calls[0])}` holds {problem}; it may hold only the "
                "reader's stub and the check (any setup goes in a cell above)"
            )


def number_forms(value: float) -> set[str]:
    """How a printed output could show ``value`` to three or more significant digits."""
    forms = {f"{value:.{digits}f}" for digits in (2, 3, 4)} | {f"{value:.{digits}g}" for digits in (3, 4, 6)}
    return {form for form in forms if sum(ch.isdigit() for ch in form.lstrip("-0.")) >= 3}


@each(CHAPTERS)
def test_no_value_exercise_is_answered_by_an_output_above_it(path):
    """A number a value exercise asks for must not be printed, to three significant digits, before its question."""
    nb = read(path)
    cells = code_cells(nb)
    for exercise_id in exercise_ids(path, "check"):
        ex = exercise(exercise_id)
        expected = ex.expected()
        values = [expected] if isinstance(expected, float) else []
        values += [v for v in expected if isinstance(v, float)] if isinstance(expected, (tuple, list)) else []
        where = next(i for i, cell in enumerate(cells) if f'"{exercise_id}"' in cell.source)
        shown = "\n".join(output_text(o) for cell in cells[:where] for o in cell.get("outputs", []))
        for value in values:
            if value != round(value):
                leaked = [form for form in number_forms(value) if form in shown]
                assert not leaked, f"{path.name} prints {leaked[0]}, the answer to exercise {exercise_id}, above it"
