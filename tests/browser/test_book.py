r"""The book site (`make book`, in build/book/) in Chromium, as a reader opens it: served by a plain static file server.

Every page of the site, one test each:

- MathJax, served by the site itself, typesets every formula: no ``mjx-merror`` (a TeX error), no formula left
  as raw TeX, no backslash of a TeX command shown as text (``\tag{eq:rl\_opt}`` must read "eq:rl_opt"), and no
  ``$`` or ``\command`` in the text around the formulas (one the markdown parser did not take for a formula);
- each slider a notebook saved is drawn, with what it drew under it (a plot or text), and with the note that it
  moves only in a running notebook; no raw ``interactive(...)`` repr, widget error or traceback shows;
- every image loads (naturalWidth > 0), the sliders' plots included;
- every link within the site leads to a file of the site, and a link to ``page#id`` to an element with that id;
- every file the page asks the site for loads, the page asks nothing of any other host (the site reads offline),
  and it raises no JavaScript error.

Then the table of contents on the start page reaches every notebook, the README and the license. Screenshots of
three pages go to tests/browser/artifacts/: the start page, an equation of chapter 4, and chapter 17's sliders.
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urldefrag, urlparse

import pytest

from ..notebook_split import NOTEBOOK_DIR, NOTEBOOKS
from .conftest import ARTIFACTS, CHROMIUM, ROOT

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install Chromium to test the book site in a browser"
)

SITE = ROOT / "build" / "book"
START = "book/index.html"
SERVER_START_S = 30
TYPESET_S = 120  # MathJax on the longest notebook page, on two busy cores
# Every page but the folder's own index.html, which only sends the reader on to START
PAGES = sorted(
    page.relative_to(SITE).as_posix()
    for page in SITE.rglob("*.html")
    if "_static" not in page.parts and page != SITE / "index.html"
)
ELEMENT_ID = re.compile(r"""\bid=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def site() -> str:
    """The base URL of build/book/ served by Python's own static file server on a free port."""
    if not (SITE / "index.html").exists():
        pytest.fail(f"{SITE} holds no site: build it with `make book` (`make test-browser` does)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(SITE)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/index.html", timeout=5).close()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"the static file server did not answer at {url} within {SERVER_START_S} s")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def tab(browser, site):
    """A fresh tab that refuses every request to another host and records it, and records JavaScript errors and
    the site's files that failed to load (a script, a stylesheet, a font: whatever the page asked for)."""
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.outside, page.errors, page.missing = [], [], []

    def route(request_route):
        if urlparse(request_route.request.url).hostname == "127.0.0.1":
            request_route.continue_()
        else:
            page.outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("response", lambda response: response.status >= 400 and page.missing.append(response.url))
    try:
        yield page
    finally:
        page.close()


@functools.cache
def element_ids(path: str) -> frozenset[str]:
    """The ids of the elements in a page of the site, as written (fragments point at them)."""
    return frozenset(ELEMENT_ID.findall((SITE / path).read_text(encoding="utf-8")))


def broken_links(hrefs: list[str], site: str) -> list[str]:
    """The links within ``site`` that lead to no file of it, or to an id its page does not have."""
    broken = []
    for href in sorted(set(hrefs)):
        if not href.startswith(site + "/"):
            continue  # another host: the reader's browser goes there, not the site
        address, fragment = urldefrag(href)
        path = urlparse(address).path.lstrip("/") or "index.html"
        target = SITE / path
        if target.is_dir():
            target, path = target / "index.html", f"{path.rstrip('/')}/index.html"
        if not target.is_file():
            broken.append(f"{href} (no such file)")
        elif fragment and path.endswith(".html") and fragment not in element_ids(path):
            broken.append(f"{href} (no element with id {fragment!r})")
    return broken


def typeset(page) -> dict:
    """Wait for MathJax to finish; count the formulas, the TeX errors and the formulas left as raw TeX."""
    if page.locator(".math").count() == 0:
        return {"formulas": 0, "errors": [], "raw": 0, "escaped": []}
    page.wait_for_function(
        "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=TYPESET_S * 1e3
    )
    page.evaluate("() => MathJax.startup.promise")
    return page.evaluate(
        """() => ({
            formulas: document.querySelectorAll('.math').length,
            errors: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error')),
            raw: [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container')).length,
            escaped: [...document.querySelectorAll('mjx-assistive-mml mtext')].map(e => e.textContent)
                .filter(text => text.includes('\\\\')),
        })"""
    )


def untypeset_tex(page) -> list[str]:
    """Text of the article outside formulas, code and outputs that still holds TeX: a ``$`` or a ``\\command``. It is
    a formula that the markdown parser did not see as one (a ``|`` inside ``$...$`` in a table splits the cell)."""
    return page.evaluate(
        """() => {
            const skip = '.math, mjx-container, pre, code, script, style, .cell_output';
            const root = document.querySelector('article') || document.body;  // search.html has no article
            const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
            const found = [];
            while (walker.nextNode()) {
                const text = walker.currentNode.textContent;
                if (/\\$|\\\\[a-zA-Z]+/.test(text) && !walker.currentNode.parentElement.closest(skip)) {
                    found.push(text.trim().slice(0, 80));
                }
            }
            return found;
        }"""
    )


def draw_saved_sliders(page) -> list[str]:
    """Wait for the widgets' HTML manager to draw each saved slider (after the page's load event), one per note
    under a slider; return those that show neither a loaded image nor any text (an empty output)."""
    notes = page.locator("p.widget-note").count()
    page.wait_for_function("n => document.querySelectorAll('.widget-interact .widget-slider').length >= n", arg=notes)
    return page.evaluate(
        """() => [...document.querySelectorAll('.widget-interact')]
            .filter(w => ![...w.querySelectorAll('img')].some(img => img.naturalWidth > 0)
                         && !w.querySelector('.widget-output').innerText.trim())
            .map(w => w.querySelector('.widget-label').innerText)"""
    )


def widget_module_folders(page) -> set[str]:
    """The folders RequireJS gives the widgets' modules (read from its registry of defined modules): each module
    loads its icon fonts from there, so all of them must be the site's copy, whichever module draws first."""
    return set(
        page.evaluate(
            """() => Object.keys(require.s.contexts._.defined)
                .filter(name => name.startsWith('@jupyter-widgets/'))
                .map(name => require.toUrl(name).replace(/[^/]*$/, ''))"""
        )
    )


def broken_images(page) -> list[str]:
    """The images of the page that did not load (lazy ones are asked to load first)."""
    return page.evaluate(
        """async () => {
            const images = [...document.images];
            images.forEach(img => { img.loading = 'eager'; });
            await Promise.all(images.map(img => img.complete ? null :
                new Promise(done => { img.onload = img.onerror = done; })));
            return images.filter(img => img.naturalWidth === 0).map(img => img.getAttribute('src'));
        }"""
    )


@pytest.mark.parametrize("path", PAGES or ["(no site built)"])
def test_page_reads_offline(tab, site, path):
    """Equations typeset, images load, links lead somewhere, nothing is fetched from elsewhere, sliders show."""
    tab.goto(f"{site}/{path}", wait_until="load")
    math = typeset(tab)
    assert not math["errors"], f"{path}: MathJax could not typeset {len(math['errors'])} formulas: {math['errors']}"
    assert math["raw"] == 0, f"{path}: {math['raw']} of {math['formulas']} formulas were left as raw TeX"
    assert not math["escaped"], f"{path}: text in formulas shows TeX's backslashes: {math['escaped']}"
    assert not untypeset_tex(tab), f"{path}: formulas shown as raw TeX: {untypeset_tex(tab)}"
    empty = draw_saved_sliders(tab)
    assert not empty, f"{path}: saved sliders that draw nothing under them: {empty}"
    assert tab.locator(".widget-interact").count() == tab.locator("p.widget-note").count(), (
        f"{path}: a saved slider has no note, or a note no slider"
    )
    if tab.locator(".widget-interact").count():
        folders = widget_module_folders(tab)
        assert folders == {f"{site}/_static/jupyter-widgets/"}, f"{path}: widget modules (and fonts) in {folders}"
    text = "\n".join(tab.locator(".cell_output").all_inner_texts())  # what the notebook's cells show
    assert "interactive(children=" not in text, f"{path}: a slider shows as its raw repr"
    assert "Error displaying widget" not in text, f"{path}: a saved widget failed to draw"
    assert "Traceback" not in text, f"{path}: a saved widget shows the error its notebook raised"
    assert not broken_images(tab), f"{path}: images that do not load: {broken_images(tab)}"  # the sliders' too
    hrefs = tab.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    assert not broken_links(hrefs, site), f"{path}: broken links: {broken_links(hrefs, site)}"
    assert not tab.missing, f"{path}: files of the site that did not load: {tab.missing}"
    assert not tab.outside, f"{path} asked other hosts for {tab.outside}: the site must read offline"
    assert not tab.errors, f"{path}: JavaScript errors: {tab.errors}"


def test_site_folder_opens_on_the_start_page(tab, site):
    """A static file server shows the folder's index.html, which sends the reader on to the start page."""
    tab.goto(f"{site}/")
    tab.wait_for_url(f"{site}/{START}")


def test_table_of_contents_reaches_every_notebook(tab, site):
    """The start page's menu links every notebook (chapters and solutions), the README and the license."""
    tab.goto(f"{site}/{START}", wait_until="load")
    hrefs = tab.evaluate("() => [...document.querySelectorAll('nav.bd-docs-nav a[href]')].map(a => a.href)")
    reached = {urlparse(urldefrag(href)[0]).path.lstrip("/") for href in hrefs}
    wanted = {f"notebooks/{p.relative_to(NOTEBOOK_DIR).with_suffix('.html').as_posix()}" for p in NOTEBOOKS}
    wanted |= {"README.html", "book/license.html"}
    assert not wanted - reached, f"the table of contents misses {sorted(wanted - reached)}"


@pytest.mark.parametrize(
    ("name", "path", "selector"),
    [
        ("start", START, None),
        ("equation", "notebooks/04_training_overview.html", "div.math"),
        ("sliders", "notebooks/17_overoptimization.html", ".widget-interact"),
    ],
)
def test_screenshot(tab, site, name, path, selector):
    """Three pictures of the site for the test artifacts: the start page, a typeset equation and saved sliders."""
    tab.goto(f"{site}/{path}", wait_until="load")
    typeset(tab)
    if selector:
        element = tab.locator(selector).first
        element.wait_for(state="visible")
        element.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"book-{name}.png"))
