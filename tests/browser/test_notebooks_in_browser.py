r"""Every notebook in a real browser: JupyterLab as `make lab` serves it, in Chromium.

From the committed outputs, for every notebook in notebooks/ and notebooks/solutions/:

- MathJax typesets every formula without an error. MathJax 3 (JupyterLab 4's typesetter) draws a TeX error
  as an ``mjx-merror`` element carrying ``data-mjx-error``, e.g. "'_' allowed only in math mode" for
  ``\tag{eq:rl_opt}``, whose tag is typeset as text (``\tag{eq:rl\_opt}`` renders);
- every image loads (naturalWidth > 0): the diagrams linked from markdown (../images/, which only a server
  rooted at the repository can reach) and the plots in the outputs.

(A notebook with a widget is checked so on the page that its live test opens, before the run: one load, not two.)

For every notebook with a widget (an ``interact(`` or a slider in its code), live: a fresh kernel runs it top
to bottom (Kernel → Restart Kernel and Run All Cells…), which must raise nowhere, and every cell marked
``# NBVAL_CHECK_OUTPUT`` must print what the committed notebook shows, masked as nbval masks it
(tests/nbval_sanitize.cfg). This run is these notebooks' nbval run: `make test` leaves them out of nbval
(tests/notebook_split.py). Then every slider is moved with the keyboard, and the output it drives must change,
with no "Error displaying widget" and no stray return value (``(<Figure size ...>, None)``) under it. Sliders
built by rlhf_edu.core.widgets must also leave a track of MIN_TRACK_PX or more and show their whole label.

Pictures of what passed are left in tests/browser/artifacts/: <notebook>-equations-and-images.png (the cells
with display equations or markdown images) and <notebook>-widgets.png (the widget cells, after the moves).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from rlhf_edu.core.widgets import MIN_TRACK_PX

from ..notebook_split import CHECKED, NOTEBOOK_DIR, NOTEBOOKS, checked_text, has_widgets
from .conftest import ARTIFACTS, CHROMIUM, ROOT, VIEWPORT

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=(
        f"{CHROMIUM} is missing: install Chromium (on Debian: apt-get install -y chromium) to test the notebooks "
        "in a browser"
    ),
)

MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]+\)|<img\b")
STRAY_REPR = re.compile(r"<Figure size|<matplotlib\.|<function |<Axes")
OPEN_S = 90  # JupyterLab loads and renders a notebook (cold caches, two busy cores)
RUN_S = 600  # the slowest notebook takes about 170 s alone, more on two shared cores
REDRAW_S = 120  # a slider's callback may train a small model before it draws


def read_cells(path: Path) -> list:
    return nbformat.read(path, as_version=4).cells


def ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(NOTEBOOK_DIR).as_posix() for p in paths]


def committed_run_seconds(path: Path) -> float:
    """How long the committed run of ``path`` took: the sum of its cells' recorded execution times (0 if none)."""
    total = 0.0
    for cell in read_cells(path):
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (
                datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
                for key in ("iopub.execute_input", "shell.execute_reply")
            )
            total += (end - start).total_seconds()
    return total


# The slowest notebooks first, so that the two workers (--dist load hands out tests in this order) end together.
WIDGET_NOTEBOOKS = sorted((p for p in NOTEBOOKS if has_widgets(p)), key=committed_run_seconds, reverse=True)

# --- what the page shows ------------------------------------------------------------------------------------

CELLS = ".jp-NotebookPanel .jp-Notebook .jp-Cell"

# True once every markdown cell is rendered and no TeX is left untypeset (outside code).
MATH_TYPESET = """() => {
    const markdown = document.querySelectorAll('.jp-Notebook .jp-MarkdownCell');
    const rendered = document.querySelectorAll('.jp-Notebook .jp-MarkdownCell .jp-RenderedMarkdown');
    if (markdown.length !== rendered.length) return false;
    for (const node of rendered) {
        const text = node.cloneNode(true);
        text.querySelectorAll('code, pre, mjx-container').forEach(e => e.remove());
        if (/\\$\\$|\\\\\\(|\\\\\\[|\\$[^$\\s]/.test(text.textContent)) return false;
    }
    return true;
}"""
MATH_ERRORS = """() => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
    return [...document.querySelectorAll('.jp-Notebook [data-mjx-error]')]
        .filter(e => !e.closest('mjx-assistive-mml'))
        .map(e => ({cell: cells.indexOf(e.closest('.jp-Cell')), error: e.getAttribute('data-mjx-error'),
                    tex: e.textContent.slice(0, 300)}));
}"""
IMAGES = """() => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
    return [...document.querySelectorAll('.jp-Notebook img')].map(i => ({
        cell: cells.indexOf(i.closest('.jp-Cell')), markdown: !!i.closest('.jp-RenderedMarkdown'),
        src: (i.getAttribute('src') || '').slice(0, 120), complete: i.complete, width: i.naturalWidth}));
}"""
IMAGES_LOADED = f"() => ({IMAGES})().every(i => i.complete && i.width > 0)"
PROMPTS = (
    "() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(c => "
    "c.querySelector('.jp-InputPrompt') ? c.querySelector('.jp-InputPrompt').textContent.trim() : null)"
)
TRACEBACKS = """() => [...document.querySelectorAll(
        '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.textContent).filter(t => /Traceback/.test(t)).map(t => t.slice(0, 3000))"""
# One entry per slider inside an interact(): which interact, its description, value, and sizes.
SLIDERS = """() => [...document.querySelectorAll('.jp-Notebook .widget-interact')].flatMap((box, i) =>
    [...box.querySelectorAll('.widget-slider')].map((s, j) => {
        const label = s.querySelector('.widget-label'), handle = s.querySelector('.noUi-handle');
        const track = s.querySelector('.noUi-target') || s.querySelector('.slider-container');
        return {box: i, slider: j, description: label ? label.textContent : '',
                labelCut: label ? label.scrollWidth > label.clientWidth + 1 : false,
                track: track ? track.getBoundingClientRect().width : 0,
                now: handle ? handle.getAttribute('aria-valuenow') : null,
                max: handle ? handle.getAttribute('aria-valuemax') : null,
                readout: (s.querySelector('.widget-readout') || {}).textContent || ''};
    }))"""
# What an interact() shows under its controls: its output's text and the sources of its images.
INTERACT_OUTPUT = """i => {
    const out = document.querySelectorAll('.jp-Notebook .widget-interact')[i].querySelector('.widget-output');
    if (!out) return null;
    return {text: out.innerText, images: [...out.querySelectorAll('img')].map(img => img.src)};
}"""


def open_notebook(page, lab: str, path: Path) -> list:
    """Open ``path`` in a workspace of its own; return its cells once all are on the page."""
    cells = read_cells(path)
    page.goto(f"{lab}/lab/workspaces/{uuid.uuid4().hex}/tree/{path.relative_to(ROOT).as_posix()}")
    page.wait_for_function(
        f"n => document.querySelectorAll('{CELLS}').length === n", arg=len(cells), timeout=OPEN_S * 1000
    )
    return cells


def check_math_and_images(page, path: Path, cells: list) -> None:
    name = path.relative_to(NOTEBOOK_DIR)
    try:
        page.wait_for_function(MATH_TYPESET, timeout=OPEN_S * 1000, polling=500)
    except Exception:
        pytest.fail(f"{name}: MathJax left TeX untypeset (or a markdown cell unrendered) after {OPEN_S} s")
    errors = page.evaluate(MATH_ERRORS)
    if errors:  # the failure screenshot then shows it
        page.locator(CELLS).nth(errors[0]["cell"]).scroll_into_view_if_needed()
    assert not errors, f"{name}: MathJax shows {len(errors)} error(s) instead of formulas: " + "; ".join(
        f"cell {e['cell']}: {e['error']} in {e['tex']!r}" for e in errors
    )
    try:
        page.wait_for_function(IMAGES_LOADED, timeout=30_000, polling=500)
    except Exception:
        pass  # the assertion below names the broken ones
    images = page.evaluate(IMAGES)
    broken = [i for i in images if not (i["complete"] and i["width"] > 0)]
    if broken:
        page.locator(CELLS).nth(broken[0]["cell"]).scroll_into_view_if_needed()
    assert not broken, f"{name}: {len(broken)} image(s) did not load: " + "; ".join(
        f"cell {i['cell']}: {i['src']}" for i in broken
    )
    linked = sum(len(MARKDOWN_IMAGE.findall(c.source)) for c in cells if c.cell_type == "markdown")
    shown = sum(i["markdown"] for i in images)
    assert shown >= linked, f"{name}: markdown links {linked} image(s) but the page shows {shown}"


def save_cells(page, selector: str, target: Path, directory: Path) -> None:
    """One picture of every cell that holds ``selector``, stacked, as the reader sees them."""
    from PIL import Image

    indices = page.evaluate(
        """s => [...document.querySelectorAll('.jp-Notebook .jp-Cell')]
        .map((c, i) => c.querySelector(s) ? i : -1).filter(i => i >= 0)""",
        selector,
    )
    if not indices:
        return
    tallest = max(page.locator(CELLS).nth(i).bounding_box()["height"] for i in indices)
    page.set_viewport_size({**VIEWPORT, "height": int(min(tallest + 400, 6000))})  # the notebook scrolls inside
    parts = []
    for n, index in enumerate(indices):
        part, cell = directory / f"part-{n}.png", page.locator(CELLS).nth(index)
        cell.scroll_into_view_if_needed()
        page.wait_for_timeout(500)  # cells above it get their real heights once painted, which moves it
        cell.screenshot(path=str(part))
        parts.append(Image.open(part))
    page.set_viewport_size(VIEWPORT)
    picture = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
    top = 0
    for part in parts:
        picture.paste(part, (0, top))
        top += part.height
    ARTIFACTS.mkdir(exist_ok=True)
    picture.save(target)


# --- widgets, live (first: the longest tests start first) ------------------------------------------------------


def restart_and_run_all(page, path: Path, cells: list) -> None:
    """Kernel → Restart Kernel and Run All Cells…; return once every code cell has run, failing on a traceback."""
    code = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.strip()]
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=OPEN_S * 1000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
    page.locator(".lm-Menu-item", has_text="Restart Kernel and Run All Cells").first.click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    deadline, started = time.monotonic() + RUN_S, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(2)
        tracebacks = page.evaluate(TRACEBACKS)
        assert not tracebacks, f"{path.name} raised while running its cells:\n{tracebacks[0]}"
        prompts = page.evaluate(PROMPTS)
        status = page.get_attribute(".jp-Notebook-ExecutionIndicator", "data-status")
        if status == "idle" and all(re.fullmatch(r"\[\d+\]:", prompts[i] or "") for i in code):
            print(f"{path.name}: all cells ran in {time.monotonic() - started:.0f} s")
            return
    pytest.fail(f"{path.name}: cells still not all run after {RUN_S} s (prompts {[prompts[i] for i in code]})")


def check_outputs_as_committed(page, path: Path, cells: list) -> None:
    """No error output anywhere, and each ``# NBVAL_CHECK_OUTPUT`` cell's text as committed (nbval's lax check)."""
    fresh = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.toJSON().cells")
    assert len(fresh) == len(cells), f"{path.name}: the page holds {len(fresh)} cells, the file {len(cells)}"
    for index, (saved, live) in enumerate(zip(cells, fresh)):
        if saved.cell_type != "code":
            continue
        errors = [o for o in live.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{path.name}, cell {index}: {errors[0]['ename']}: {errors[0]['evalue']}"
        if CHECKED in saved.source:
            committed, now = checked_text(saved), checked_text(live)
            assert now == committed, (
                f"{path.name}, cell {index} ({CHECKED}) prints\n{now}\nbut the committed notebook shows\n{committed}"
            )


def move_and_wait_for_redraw(page, path: Path, slider: dict) -> None:
    """Press an arrow key on the slider's handle; the interact's output must change and show no stray repr."""
    where = f"{path.name}, slider {slider['description']!r} (interact {slider['box']})"
    # JupyterLab skips rendering cells far off screen (content-visibility), so bring the interact into view and give
    # its output a moment to render.
    page.locator(".jp-Notebook .widget-interact").nth(slider["box"]).scroll_into_view_if_needed()
    deadline = time.monotonic() + REDRAW_S
    before = page.evaluate(INTERACT_OUTPUT, slider["box"])
    while not (before and (before["text"].strip() or before["images"])) and time.monotonic() < deadline:
        time.sleep(0.5)
        before = page.evaluate(INTERACT_OUTPUT, slider["box"])
    assert before and (before["text"].strip() or before["images"]), f"{where}: shows no output before it moves"
    handle = (
        page.locator(".jp-Notebook .widget-interact")
        .nth(slider["box"])
        .locator(".widget-slider")
        .nth(slider["slider"])
        .locator(".noUi-handle")
    )
    handle.scroll_into_view_if_needed()
    handle.focus()
    handle.press("ArrowLeft" if slider["now"] == slider["max"] else "ArrowRight")
    deadline = time.monotonic() + REDRAW_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = page.evaluate(INTERACT_OUTPUT, slider["box"])
        if after and after != before and (after["text"].strip() or after["images"]):
            time.sleep(1.0)  # let the redraw finish, then look at what it left
            after = page.evaluate(INTERACT_OUTPUT, slider["box"])
            assert not STRAY_REPR.search(after["text"]), (
                f"{where}: a return value shows under the plot: {STRAY_REPR.search(after['text']).group()}..."
            )
            return
    readout = page.evaluate(SLIDERS)
    pytest.fail(f"{where}: the output did not change within {REDRAW_S} s of moving it (now {readout})")


def check_committed_page(page, path: Path, cells: list, directory: Path) -> None:
    """The committed notebook as opened: every formula typeset, every image loaded, and a picture of them."""
    check_math_and_images(page, path, cells)
    if any(c.cell_type == "markdown" and (r"\tag{" in c.source or MARKDOWN_IMAGE.search(c.source)) for c in cells):
        save_cells(
            page,
            'mjx-container[display="true"], .jp-RenderedMarkdown img',
            ARTIFACTS / f"{path.stem}-equations-and-images.png",
            directory,
        )


@pytest.mark.parametrize("path", WIDGET_NOTEBOOKS, ids=ids(WIDGET_NOTEBOOKS))
def test_fresh_run_prints_what_is_committed_and_every_slider_redraws(page, lab, path, tmp_path):
    cells = open_notebook(page, lab, path)
    check_committed_page(page, path, cells, tmp_path)  # before the run replaces the committed outputs
    restart_and_run_all(page, path, cells)
    check_outputs_as_committed(page, path, cells)
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-Notebook .widget-interact .widget-slider').length > 0",
        timeout=OPEN_S * 1000,
    )
    sliders = page.evaluate(SLIDERS)
    shared = "rlhf_edu.core.widgets" in "\n".join(c.source for c in cells if c.cell_type == "code")
    for slider in sliders:
        if shared:
            assert slider["track"] >= MIN_TRACK_PX, (
                f"{path.name}: slider {slider['description']!r} has a {slider['track']:.0f} px track, "
                f"under the {MIN_TRACK_PX} px that rlhf_edu.core.widgets promises"
            )
            assert not slider["labelCut"], f"{path.name}: slider label {slider['description']!r} is cut off"
        move_and_wait_for_redraw(page, path, slider)
    assert page.get_by_text("Error displaying widget").count() == 0, f"{path.name} shows 'Error displaying widget'"
    save_cells(page, ".widget-interact", ARTIFACTS / f"{path.stem}-widgets.png", tmp_path)
    print(
        f"{path.name}: {len(sliders)} slider(s) moved: "
        + ", ".join(f"{s['description']} ({s['track']:.0f} px)" for s in sliders)
    )


def test_lab_serves_the_repository_root(lab):
    """Markdown links ../images/*.png from notebooks/: only a server rooted above notebooks/ can serve them."""
    for folder in ("notebooks", "images"):
        request = urllib.request.Request(f"{lab}/api/contents/{folder}?content=0", headers={"Referer": lab})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.load(response)["type"] == "directory"
        except urllib.error.HTTPError as error:
            pytest.fail(
                f"JupyterLab from `make lab` does not serve {folder}/ ({error.code}): its root must be the "
                "repository (--ServerApp.root_dir=.), or the notebooks' diagrams in ../images/ break"
            )


# A notebook with a widget is checked so when its live test opens it (above): one page load, not two.
STATIC_NOTEBOOKS = [p for p in NOTEBOOKS if p not in WIDGET_NOTEBOOKS]


@pytest.mark.parametrize("path", STATIC_NOTEBOOKS, ids=ids(STATIC_NOTEBOOKS))
def test_committed_notebook_renders_its_math_and_images(page, lab, path, tmp_path):
    check_committed_page(page, path, open_notebook(page, lab, path), tmp_path)
