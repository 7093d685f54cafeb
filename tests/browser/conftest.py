"""JupyterLab, started the way `make lab` starts it, and Chromium driven by Playwright.

Each test process (pytest-xdist worker) starts one JupyterLab server and one browser and stops both at
the end, also when a test fails. The server gets a free port on 127.0.0.1, no token, and fresh
configuration, data and runtime folders: no user settings leak in, and autosave is off, so running a
notebook in the browser never rewrites the committed file. A failing test leaves a screenshot in
tests/browser/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..notebook_split import CHROMIUM, ROOT

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Headless, and nothing that reaches outside: Chromium's background connections are refused on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 900}  # a laptop screen
SERVER_START_S = 120
# JupyterLab settings for the test server only: no autosave (the notebooks under test stay as committed),
# no news or update checks (no network).
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture can tell whether its test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_settings(config_dir: Path) -> None:
    for plugin, values in SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_group(process: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM the process group that ``process`` leads (make, JupyterLab), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            process.poll()  # reap make, so that only live processes keep the group
            if not group_alive(process.pid):
                return
            time.sleep(0.2)


def stop_kernels_of(runtime_dir: Path) -> None:
    """Kill any kernel still running from ``runtime_dir`` (its connection file names it), by its process id.

    Kernels run in sessions of their own, so they are not in the server's process group; normally the
    server shuts them down on SIGTERM, and a kernel whose server is gone exits by itself.
    """
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(runtime_dir) in cmdline and "kernel" in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`make lab` exited with {process.returncode} before serving:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer at {url} within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> str:
    """The base URL of a JupyterLab server started by `make lab` at the repository root."""
    if shutil.which("make") is None:
        pytest.skip("`make` is needed: the test starts JupyterLab with `make lab`")
    home = tmp_path_factory.mktemp("jupyter")
    config, data, runtime = home / "config", home / "data", home / "runtime"
    write_settings(config)
    port = free_port()
    # window.jupyterapp lets a test read the notebook's outputs from the page, as the kernel sent them
    flags = [
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:  # CI runs as root; JupyterLab refuses to unless told
        flags.append("--ServerApp.allow_root=True")
    venv = Path(sys.prefix)
    command = [
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        "-o",
        f"{venv}/.installed",  # installed already
        "lab",
        f"VENV={venv}",
        "LAB_FLAGS=" + " ".join(flags),
    ]
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(data), JUPYTER_RUNTIME_DIR=str(runtime))
    log = home / "lab.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, process, log)
        yield url
    finally:
        stop_group(process)
        stop_kernels_of(runtime)


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One Chromium (a persistent context on a fresh profile) for the tests of this process."""
    sync_api = pytest.importorskip("playwright.sync_api")
    playwright = sync_api.sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(request, browser, lab):
    """A fresh tab. On failure it leaves a screenshot; it always shuts its kernels down and closes."""
    tab = browser.new_page()
    tab.set_default_timeout(60_000)
    try:
        yield tab
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            try:
                tab.screenshot(path=str(ARTIFACTS / f"FAILED-{name}.png"))
            except Exception as error:  # a screenshot must not hide the test's own failure
                print(f"no screenshot: {error}")
        shut_down_kernels(tab)
        tab.close()


def shut_down_kernels(tab) -> None:
    """Ask the server, from the page (which holds its XSRF cookie), to shut down every kernel."""
    try:
        tab.evaluate("""async () => {
            const xsrf = document.cookie.match(/_xsrf=([^;]+)/);
            const headers = xsrf ? {"X-XSRFToken": decodeURIComponent(xsrf[1])} : {};
            const kernels = await (await fetch("/api/kernels")).json();
            await Promise.all(kernels.map(k => fetch(`/api/kernels/${k.id}`, {method: "DELETE", headers})));
        }""")
    except Exception as error:  # the server's own shutdown stops them anyway
        print(f"kernels not shut down from the page: {error}")
