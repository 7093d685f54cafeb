"""Sphinx settings of the book site: every committed notebook as a page, with its saved outputs (`make book`).

The source folder is the repository root, so the README's links to notebooks/ and the notebooks' links to
../images/ resolve as they do on GitHub and in JupyterLab. Nothing is executed: the pages show the committed
outputs, so the site builds without PyTorch. Everything a page loads is served by the site itself (MathJax, RequireJS
and the Jupyter widgets' HTML manager, from the npm packages pinned in book/package-lock.json), so it reads offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from docutils import nodes

BOOK = Path(__file__).resolve().parent
NODE_MODULES = BOOK / "node_modules"  # `npm ci` in book/ (make book runs it)

project = "rlhf-edu"
author = "the rlhf-edu authors"
copyright = "2026, the rlhf-edu authors"
root_doc = "book/index"
extensions = ["myst_nb"]
include_patterns = [
    "README.md",
    "book/*.md",
    "notebooks/*.ipynb",
    "notebooks/solutions/*.ipynb",
    "notebooks/claims/*.md",
]
# Folders Sphinx need not walk (include_patterns alone does not stop it looking in them)
exclude_patterns = ["**/.ipynb_checkpoints", ".git", ".venv*", "build", "dist", "mutants", "book/node_modules"]

# The pages show what the notebooks saved; `make notebooks` is what runs them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # the README's links to its own sections (#chapters-across-editions)
# A shell block whose placeholder reads `<the CPU index URL ...>` is not valid bash; Pygments still colours it.
suppress_warnings = ["misc.highlighting_failure"]

html_theme = "sphinx_book_theme"
html_title = "rlhf-edu: the RLHF book, runnable"
html_theme_options = {
    "use_download_button": True,  # each page offers its .ipynb, to run it
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_additional_pages = {"index": "redirect.html"}  # the site's folder opens on the start page
templates_path = ["_templates"]
html_show_sourcelink = False

# Served from the site itself, copied in by copy_vendored below; relative paths are under _static/.
mathjax_path = "mathjax/tex-chtml.js"
# textmacros: `\_` in text mode, as in the equations' labels, \tag{eq:rl\_opt}; JupyterLab's MathJax has it too.
mathjax3_config = {"loader": {"load": ["[tex]/textmacros"]}, "tex": {"packages": {"[+]": ["textmacros"]}}}
nb_ipywidgets_js = {"require.js": {}, "widgets-require.js": {}, "jupyter-widgets/embed-amd.js": {}}
VENDORED = {
    "mathjax": NODE_MODULES / "mathjax" / "es5",
    "jupyter-widgets": NODE_MODULES / "@jupyter-widgets" / "html-manager" / "dist",
    "require.js": NODE_MODULES / "requirejs" / "require.js",
}

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SLIDER_NOTE = "Run this notebook to move the slider: here it shows as the notebook saved it."


def copy_vendored(app, exception) -> None:
    """Copy MathJax, RequireJS and the widgets' HTML manager into _static/, after Sphinx wrote its own files."""
    if exception is not None or app.builder.format != "html":
        return
    for name, source in VENDORED.items():
        target = Path(app.outdir) / "_static" / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.map"))
        else:
            shutil.copyfile(source, target)


def check_vendored(app) -> None:
    """Stop the build early, saying what to run, when the npm packages are missing."""
    missing = [str(path) for path in VENDORED.values() if not path.exists()]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: run `npm ci` in book/ (`make book` does)")


def saved_widgets(path: Path) -> dict:
    """The widget models a notebook saved with it (model id -> model), empty when it saved none."""
    metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def note_sliders(app, doctree, docname) -> None:
    """Under every saved slider (an ``interact``), say that it moves only when the notebook runs. Progress bars, the
    other widgets the notebooks save, need no note. tests/test_notebooks.py checks that every widget a notebook shows
    is in its saved state, so each one is drawn."""
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return
    models = saved_widgets(path)
    for raw in list(doctree.findall(nodes.raw)):
        # MyST-NB writes a widget as <script type="...widget-view+json">{"model_id": ...}</script>
        if WIDGET_VIEW not in raw.astext():
            continue
        view = json.loads(raw.astext().split(">", 1)[1].rsplit("</script>", 1)[0])
        if "widget-interact" in models[view["model_id"]]["state"].get("_dom_classes", []):
            note = nodes.paragraph(classes=["widget-note"])
            note += nodes.emphasis(text=SLIDER_NOTE)
            raw.parent.insert(raw.parent.index(raw) + 1, note)


def setup(app):
    app.add_js_file("widget-mathjax.js", priority=600)  # after Sphinx's MathJax settings, before MathJax itself
    app.connect("builder-inited", check_vendored)
    app.connect("doctree-resolved", note_sliders)
    app.connect("build-finished", copy_vendored)
