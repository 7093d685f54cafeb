"""Every relative link in the notebooks' markdown and in README.md points at a file that exists.

A link is a markdown link ``[text](target)``, a markdown image ``![alt](target)`` or an HTML image
``<img src="target">``. Web addresses (http, https, mailto) and links within the page (``#anchor``) are not
checked; a ``#anchor`` or ``?query`` after a path is dropped, and the path is read relative to the file that
holds the link. Renaming or moving a notebook, an image or a folder breaks such links silently; this test names
each one.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
HTML_IMAGE = re.compile(r"<img\s[^>]*?src\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
NOT_A_FILE = re.compile(r"^(https?:|mailto:|#)", re.IGNORECASE)


def link_targets(markdown: str) -> list[str]:
    """The relative link targets in ``markdown``, as paths: no web address, no in-page anchor, no #anchor/?query."""
    targets = MARKDOWN_LINK.findall(markdown) + HTML_IMAGE.findall(markdown)
    return [re.split(r"[#?]", t, maxsplit=1)[0] for t in targets if not NOT_A_FILE.match(t)]


def dead_links(markdown: str, folder: Path) -> list[str]:
    """The targets in ``markdown`` that name no file or folder, read relative to ``folder``."""
    return [target for target in link_targets(markdown) if not (folder / target).exists()]


def documents() -> dict[Path, str]:
    """README.md and every notebook's markdown cells (joined), by path."""
    notebooks = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("notebooks/solutions/*.ipynb")])
    found = {ROOT / "README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    for path in notebooks:
        cells = nbformat.read(path, as_version=4).cells
        found[path] = "\n\n".join(cell.source for cell in cells if cell.cell_type == "markdown")
    return found


def test_every_relative_link_points_at_a_file():
    dead = [
        f"{path.relative_to(ROOT)}: {target}"
        for path, markdown in documents().items()
        for target in dead_links(markdown, path.parent)
    ]
    assert not dead, "dead links (file: target):\n" + "\n".join(dead)


def test_the_checker_finds_a_dead_link_and_passes_the_rest(tmp_path):
    (tmp_path / "here.ipynb").write_text("{}")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "loop.png").write_bytes(b"")
    markdown = (
        "[a notebook](here.ipynb#section-2), ![a diagram](images/loop.png), <img src='images/loop.png' width=300>, "
        "[the web](https://example.com/x.ipynb), [above](#setup), [mail](mailto:a@b.c), "
        '[gone](13_old_name.ipynb "renamed"), <img src="images/missing.svg">'
    )
    assert dead_links(markdown, tmp_path) == ["13_old_name.ipynb", "images/missing.svg"]
