"""The claims harness: run the notebooks under other CPU kernels, seeds and thread counts, and record every check cell.

A check cell is a promise to every reader, on every machine (CONVENTIONS §6). A reader's
machine computes with other kernels (AVX-512 on Colab's Xeons, NEON on a Mac) and a
claim must survive them, and another seed, or it is noise taught as fact. ``rlhf-edu
claims`` executes notebooks top to bottom under each perturbation, one fresh kernel per
run, and writes a table: per notebook and perturbation, pass or fail, the first failing
claim, and the margins that :func:`~rlhf_edu.core.stats.assert_beyond` printed.

What counts as a failure in one run:
- any cell that raises (an ``AssertionError`` in a check cell is a failed claim);
- a ❌ printed by a solutions notebook's self-check (a worked solution must pass under any seed);
- a cell marked ``# NBVAL_CHECK_OUTPUT`` whose text differs from the committed one: such a
  cell promises an output no kernel can move.

Each run is ``jupyter nbconvert --execute`` in a process of its own, with the
perturbation as environment variables; papermill's parameter cells would add nothing
here, since every perturbation is an environment variable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.stats import CLAIM_HOLDS, CLAIM_MEASURED

# name -> environment variables for the kernel. ``as-is`` takes the environment unchanged (the Makefile pins avx2).
PERTURBATIONS: dict[str, dict[str, str]] = {
    "as-is": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "seed+1000": {"RLHF_EDU_SEED_OFFSET": "1000"},
    "seed+2000": {"RLHF_EDU_SEED_OFFSET": "2000"},
    "threads=2": {"RLHF_EDU_THREADS": "2"},
}
DEFAULT_PERTURBATIONS = ("seed+1000", "seed+2000", "avx512", "default")
CHECK_HEADING = re.compile(r"^#{1,6}\s*[\d\s.·:-]*check", re.IGNORECASE | re.MULTILINE)
CHECKED = "# NBVAL_CHECK_OUTPUT"
# Kernels talk to their client over Unix sockets, not TCP: two kernels that start at once on one machine can be
# handed the same free TCP port, and a client then waits forever for a reply that went to the other kernel. The
# sockets' path must be absolute, since the kernel runs in the notebook's folder and its client does not.
IPC = "--KernelManager.transport=ipc"


@dataclass
class Run:
    """One notebook under one perturbation: whether every claim held, the first that failed, the recorded margins."""

    notebook: str
    perturbation: str
    passed: bool
    seconds: float
    failures: list[str] = field(default_factory=list)  # "cell N: AssertionError: ..." in cell order
    margins: list[str] = field(default_factory=list)  # the "holds:" and "measured, not asserted:" lines


def cpu_capabilities() -> list[str]:
    """The ATen CPU kernels this machine can run: always ``default``; ``avx2``/``avx512`` where the CPU has them."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    best = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    ladder = ["default", "avx2", "avx512"]
    top = {"AVX2": 1, "AVX512": 2}.get(best, 0)
    return ladder[: top + 1]


def available_perturbations() -> dict[str, dict[str, str]]:
    """:data:`PERTURBATIONS` less the kernels this CPU cannot run (AVX-512 on most laptops, every x86 one on ARM)."""
    capable = cpu_capabilities()
    return {name: env for name, env in PERTURBATIONS.items() if env.get("ATEN_CPU_CAPABILITY", "default") in capable}


def output_text(output: dict) -> str:
    """The text of one output as a reader sees it: a stream, an error's name and message, or a text/plain result."""
    if output["output_type"] == "stream":
        return "".join(output["text"])
    if output["output_type"] == "error":
        return f"{output['ename']}: {output['evalue']}"
    return "".join(output.get("data", {}).get("text/plain", ""))


def check_cell_indices(cells: list[dict]) -> list[int]:
    """Indices of the code cells under the notebook's "Check" heading (to the end, or to the next heading)."""
    indices, inside = [], False
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.lstrip().startswith("#"):
            inside = bool(CHECK_HEADING.search(source))
        elif inside and cell["cell_type"] == "code":
            indices.append(i)
    return indices


def judge(executed: dict, committed: dict, notebook: str, perturbation: str, seconds: float) -> Run:
    """Read one executed notebook against its committed version: the failures and the recorded margins."""
    failures, margins = [], []
    solutions = Path(notebook).parent.name == "solutions"
    checks = set(check_cell_indices(committed["cells"]))
    for i, (cell, before) in enumerate(zip(executed["cells"], committed["cells"])):
        if cell["cell_type"] != "code":
            continue
        texts = [output_text(o) for o in cell.get("outputs", [])]
        errors = [t for o, t in zip(cell.get("outputs", []), texts) if o["output_type"] == "error"]
        where = f"cell {i}" + (" (check)" if i in checks else "")
        failures += [f"{where}: {text.splitlines()[0][:300]}" for text in errors]
        if solutions and any("❌" in t for t in texts):
            failures.append(f"{where}: a worked solution's self-check printed ❌")
        if "".join(cell["source"]).lstrip().startswith(CHECKED) and not errors:
            if [output_text(o) for o in before.get("outputs", [])] != texts:
                failures.append(f"{where}: {CHECKED} cell printed other text than the committed one")
        margins += [line for t in texts for line in t.splitlines() if line.startswith((CLAIM_HOLDS, CLAIM_MEASURED))]
    return Run(notebook, perturbation, not failures, round(seconds, 1), failures, margins)


def run_notebook(path: str, perturbation: str, env: dict[str, str], timeout: int = 300, tries: int = 2) -> Run:
    """Execute ``path`` top to bottom in a fresh process and kernel, our environment plus ``env``; judge the result.

    Each run is its own ``jupyter nbconvert --execute`` process, as ``make notebooks`` runs
    them: nothing of one run (a kernel, a socket, an event loop) can hold up the next. A
    run that stops without a verdict (a kernel that died, or one that went idle while its
    client waited for a reply, until a cell ran past ``timeout`` seconds) is tried again,
    up to ``tries`` times in all: that is the machinery failing, not a claim.
    """
    for _ in range(tries):
        run = _run_once(path, perturbation, env, timeout)
        if not any(failure.startswith(STOPPED) for failure in run.failures):
            break
    return run


STOPPED = "the run stopped:"


def _run_once(path: str, perturbation: str, env: dict[str, str], timeout: int) -> Run:
    """One try of :func:`run_notebook`."""
    import tempfile

    import nbformat

    committed = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="rlhf-edu-claims-") as tmp:
        command = [
            sys.executable,
            "-m",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--allow-errors",
            IPC,
            f"--KernelManager.ip={tmp}/kernel",
            f"--ExecutePreprocessor.timeout={timeout}",
            "--output-dir",
            tmp,
            "--output",
            "run.ipynb",
            path,
        ]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, env={**os.environ, **env}, capture_output=True, text=True, timeout=2 * timeout
            )
            reason = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no message"])[-1]
        except subprocess.TimeoutExpired:
            reason = f"no result after {2 * timeout} s"
        seconds = time.perf_counter() - start
        output = Path(tmp) / "run.ipynb"
        executed = nbformat.read(output, as_version=4) if output.exists() else committed
    run = judge(executed, committed, path, perturbation, seconds)
    if reason is not None:  # a dead kernel or a timeout: the run fails, with the reason, and the others go on
        run.passed, run.failures = False, run.failures + [f"{STOPPED} {reason}"[:300]]
    return run


def run_claims(notebooks: list[str], perturbations: list[str], jobs: int = 2) -> list[Run]:
    """Every notebook under every perturbation, ``jobs`` kernels at a time (one torch thread each, unless perturbed)."""
    known = available_perturbations()
    unknown = [p for p in perturbations if p not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation {unknown[0]!r}: use some of {', '.join(PERTURBATIONS)}")
    if not notebooks:
        raise ValueError("no notebooks to run: pass .ipynb paths, or none for every notebook under notebooks/")
    missing = [p for p in notebooks if not Path(p).is_file() or not p.endswith(".ipynb")]
    if missing:
        raise ValueError(f"not a notebook file: {missing[0]!r}: pass paths such as notebooks/08_regularization.ipynb")
    skipped = [p for p in perturbations if p not in known]
    for name in skipped:
        print(f"skipping {name}: this CPU cannot run {PERTURBATIONS[name]['ATEN_CPU_CAPABILITY']} kernels")
    base = {"RLHF_EDU_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}
    tasks = [(nb, name, {**base, **known[name]}) for name in perturbations if name in known for nb in notebooks]
    slowest_first = sorted(tasks, key=lambda task: -Path(task[0]).stat().st_size)  # big notebooks run longest
    runs = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each run is a process of its own
        for future in as_completed([pool.submit(run_notebook, *task) for task in slowest_first]):
            runs.append(run := future.result())
            print(
                f"{'PASS' if run.passed else 'FAIL'} {run.notebook} [{run.perturbation}] {run.seconds:.0f} s"
                + (f": {run.failures[0]}" if run.failures else ""),
                flush=True,
            )
    order = {(nb, p): i for i, (nb, p, _) in enumerate(tasks)}
    return sorted(runs, key=lambda run: order[(run.notebook, run.perturbation)])


def to_markdown(runs: list[Run], machine: str) -> str:
    """The table a reader can check: one row per notebook, one column per perturbation, then each failure."""
    perturbations = list(dict.fromkeys(run.perturbation for run in runs))
    notebooks = list(dict.fromkeys(run.notebook for run in runs))
    cell = {(run.notebook, run.perturbation): run for run in runs}
    lines = [
        f"Machine: {machine}",
        "",
        "| notebook | " + " | ".join(perturbations) + " |",
        "|---|" + "---|" * len(perturbations),
    ]
    for notebook in notebooks:
        marks = []
        for name in perturbations:
            run = cell.get((notebook, name))
            marks.append("" if run is None else f"{'pass' if run.passed else '**FAIL**'} ({run.seconds:.0f} s)")
        lines.append(f"| {Path(notebook).name} | " + " | ".join(marks) + " |")
    failed = [run for run in runs if not run.passed]
    lines += ["", f"{len(runs) - len(failed)} of {len(runs)} runs passed."]
    for run in failed:
        lines.append(f"- {Path(run.notebook).name} [{run.perturbation}]: first failure {run.failures[0]}")
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    """CPU model, vendor and the widest kernels it can run, e.g. ``AMD EPYC (AuthenticAMD), avx512, 2 cores``."""
    import platform

    model = vendor = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        model = next(iter(re.findall(r"model name\s*:\s*(.+)", text)), "")
        vendor = next(iter(re.findall(r"vendor_id\s*:\s*(.+)", text)), "")
    name = model or platform.processor() or platform.machine()
    return f"{name}{f' ({vendor})' if vendor else ''}, {cpu_capabilities()[-1]} kernels, {os.cpu_count()} cores"


def save(runs: list[Run], out: Path) -> list[Path]:
    """Write ``out/claims.md`` (the table) and ``out/claims.json`` (every run, its failures and margins).

    Runs already in ``out/claims.json`` are kept, but for those this call reran (the same
    notebook under the same perturbation): rerunning one notebook updates its rows.
    """
    out.mkdir(parents=True, exist_ok=True)
    record = out / "claims.json"
    earlier = [Run(**run) for run in json.loads(record.read_text())["runs"]] if record.exists() else []
    rerun = {(run.notebook, run.perturbation) for run in runs}
    runs = sorted(
        [run for run in earlier if (run.notebook, run.perturbation) not in rerun] + runs,
        key=lambda run: (run.notebook, list(PERTURBATIONS).index(run.perturbation)),
    )
    machine = machine_description()
    (out / "claims.md").write_text(
        "# Claims under perturbations\n\nWritten by `rlhf-edu claims`. " + to_markdown(runs, machine)
    )
    record.write_text(
        json.dumps(
            {"machine": machine, "perturbations": PERTURBATIONS, "runs": [asdict(run) for run in runs]},
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )
    return [out / "claims.md", record]
