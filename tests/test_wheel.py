"""The package as a user installs it: ``python -m build`` makes an sdist and, from it, a wheel, both carrying the zoo,
the shipped sweeps, the notebooks and the diagrams. The wheel, installed offline into a fresh virtual environment,
passes ``rlhf-edu doctor``, copies the notebooks out with ``rlhf-edu notebooks DIR``, and runs chapter 4's notebook
top to bottom from that copy, outside the repository.

The fresh environment borrows the dependencies (torch and the rest) of the environment running the tests through a
``.pth`` file, so nothing is downloaded; the package itself must come from the wheel, and the test checks that it does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
# The build reads pyproject.toml, the files it names at the top (README, licence) and these folders. It runs on a copy
# because it writes build/ and rlhf_edu.egg-info/ beside its sources, which other tests may be reading meanwhile.
SOURCE_FOLDERS = ("rlhf_edu", "notebooks", "images")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RLHF_EDU_THREADS": "1"}
KERNEL = "rlhf-edu-wheel"
README_SIZE = re.compile(r"writes a wheel of\s+about ([\d.]+) MB")  # what the README tells a reader to expect
NOTEBOOK = "04_training_overview.ipynb"
# Run in the fresh environment: where rlhf_edu and its metadata are found (without importing it, which takes seconds),
# and every dependency the wheel declares (the extras aside) that is missing or outside its range
INSPECT = """
import importlib.metadata as md, importlib.util, json
from packaging.requirements import Requirement
dist, unmet = md.distribution("rlhf-edu"), []
for text in dist.requires or []:
    req = Requirement(text)
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        try:
            ok = req.specifier.contains(md.version(req.name), prereleases=True)
        except md.PackageNotFoundError:
            ok = False
        unmet += [] if ok else [text]
package = importlib.util.find_spec("rlhf_edu").origin
print(json.dumps({"package": package, "metadata": str(dist.locate_file("")), "unmet": unmet}))
"""
# The notebook's last cell, added to the copy it runs: the kernel's interpreter, and where rlhf_edu and the notebooks
# it copies come from
CHECK_CELL = """import json, sys
import rlhf_edu
from rlhf_edu.experiments.notebook_copy import shipped_folder
print(json.dumps([sys.executable, rlhf_edu.__file__, str(shipped_folder("notebooks"))]))"""


def expected_files() -> set[str]:
    """The wheel's files under rlhf_edu/, read from the repository: modules, checkpoints, sweeps, notebooks, images."""
    package = {p.relative_to(REPOSITORY).as_posix() for p in (REPOSITORY / "rlhf_edu").rglob("*.py")}
    package |= {p.relative_to(REPOSITORY).as_posix() for p in (REPOSITORY / "rlhf_edu/core/checkpoints").glob("*/*")}
    package |= {p.relative_to(REPOSITORY).as_posix() for p in (REPOSITORY / "rlhf_edu/experiments").glob("sweeps/*")}
    for pattern in ("notebooks/*.ipynb", "notebooks/solutions/*.ipynb", "images/*"):
        package |= {f"rlhf_edu/{p.relative_to(REPOSITORY).as_posix()}" for p in REPOSITORY.glob(pattern)}
    return package


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``command``; return its result, or fail the test with its whole output."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def clean_env(tmp: Path) -> dict[str, str]:
    """This process's environment, offline, without what would lead Python or pip elsewhere: no PYTHONPATH, no pip
    index, find-links or config file, and Jupyter's and IPython's state in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    env |= OFFLINE | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env |= {"JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"), "IPYTHONDIR": str(tmp / "ipython")}
    return env


def build(tmp: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """``python -m build`` on a copy of the sources, offline with this environment's setuptools: (sdist, wheel)."""
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    for folder in SOURCE_FOLDERS:
        shutil.copytree(REPOSITORY / folder, source / folder, ignore=ignore)
    for path in REPOSITORY.iterdir():
        if path.is_file():
            shutil.copy2(path, source / path.name)
    built = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)], tmp, env)
    assert "Building wheel from sdist" in built.stderr  # so the wheel's contents prove the sdist's
    (sdist,), (wheel,) = (tmp / "dist").glob("*.tar.gz"), (tmp / "dist").glob("*.whl")
    return sdist, wheel


def check_archives(sdist: Path, wheel: Path) -> None:
    """The wheel holds exactly the expected files under rlhf_edu/; the sdist holds their sources."""
    in_wheel = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("rlhf_edu/")}
    expected = expected_files()
    assert {"rlhf_edu/core/checkpoints/sft/model.safetensors", f"rlhf_edu/notebooks/{NOTEBOOK}"} <= expected
    assert in_wheel == expected, (
        f"missing {sorted(expected - in_wheel)[:5]}, unexpected {sorted(in_wheel - expected)[:5]}"
    )
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    mapped = ("rlhf_edu/notebooks/", "rlhf_edu/images/")  # pyproject.toml's package-dir: notebooks/ and images/
    sources = {name.removeprefix("rlhf_edu/") if name.startswith(mapped) else name for name in expected}
    assert sources <= in_sdist, sorted(sources - in_sdist)[:5]
    assert not any(name.startswith("notebooks/claims") for name in in_sdist | in_wheel)


def fresh_venv(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A new virtual environment at ``tmp/venv`` that sees this environment's packages after its own, with the
    wheel installed by pip from the file alone; returns its python."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env
    ).stdout.strip()
    # A path line in a .pth file only appends the folder: the .pth files in it (this checkout's editable install)
    # are not run, so rlhf_edu can come only from the wheel
    Path(purelib, "borrowed.pth").write_text("\n".join(dict.fromkeys(site.getsitepackages())) + "\n")
    # --no-index and no --no-deps: pip checks every declared dependency against what is installed, and fails
    # on one it would have to download. It finds this checkout's editable rlhf-edu among the borrowed packages and
    # leaves it be ("outside environment"), installing the wheel's copy in the fresh environment.
    run([str(python), "-m", "pip", "install", "--no-index", "--no-cache-dir", str(wheel)], tmp, env)
    return python


def execute_notebook(path: Path, python: Path, tmp: Path, env: dict[str, str]) -> list:
    """Run ``path`` top to bottom in a kernel of ``python`` (its own kernelspec), with a last cell that reports the
    kernel's interpreter and rlhf_edu; returns what that cell printed (:data:`CHECK_CELL`)."""
    import nbformat
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    spec = tmp / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK_CELL))
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp / "kernels")]))
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)  # raises CellExecutionError, with the traceback, when a cell raises
    assert not [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    return json.loads(nb.cells[-1].outputs[-1].text)


@pytest.mark.slow
def test_the_wheel_installs_alone_and_runs_a_notebook_outside_the_repository(tmp_path):
    env = clean_env(tmp_path)
    sdist, wheel = build(tmp_path, env)
    check_archives(sdist, wheel)
    stated = float(README_SIZE.search((REPOSITORY / "README.md").read_text()).group(1))
    assert abs(wheel.stat().st_size / 1e6 - stated) <= 0.05 * stated, (
        f"the wheel is {wheel.stat().st_size / 1e6:.1f} MB: README.md says about {stated} MB"
    )
    python = fresh_venv(tmp_path, wheel, env)
    fresh_lib = python.parent.parent / "lib"
    outside = tmp_path / "reader"
    outside.mkdir()
    assert REPOSITORY not in outside.resolve().parents
    found = json.loads(run([str(python), "-c", INSPECT], outside, env).stdout)
    assert found["unmet"] == [], f"the wheel's dependencies are not all installed: {found['unmet']}"
    for key in ("package", "metadata"):
        assert Path(found[key]).is_relative_to(fresh_lib), f"{key} from {found[key]}, not the fresh environment"
    cli = str(python.parent / "rlhf-edu")
    doctor = run([cli, "doctor"], outside, env).stdout.strip().splitlines()
    assert doctor and all(line.startswith("[OK] ") for line in doctor), "\n".join(doctor)
    out = run([cli, "notebooks", "book"], outside, env).stdout
    assert "book" in out and "--LabApp.default_url=/lab/tree/notebooks" in out
    executable, *paths = execute_notebook(outside / "book" / "notebooks" / NOTEBOOK, python, tmp_path, env)
    assert Path(executable) == python and all(Path(path).is_relative_to(fresh_lib) for path in paths), paths
