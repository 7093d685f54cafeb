import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_edu.experiments.cli import main


def test_doctor_prints_ok_lines(capsys):
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("[OK] ") for line in lines)
    assert any("zoo base loads offline" in line for line in lines)


def test_doctor_reports_a_bad_preset_as_fail(capsys, monkeypatch):
    monkeypatch.setenv("RLHF_EDU_PRESET", "huge")
    assert main(["doctor"]) == 1
    assert "[FAIL] unknown preset 'huge'" in capsys.readouterr().out


def test_figures_writes_png_and_svg(tmp_path, capsys):
    assert main(["figures", "--out", str(tmp_path)]) == 0
    assert {p.suffix for p in tmp_path.iterdir()} == {".png", ".svg"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["zoo", "build", "nope"], "unknown checkpoint 'nope': the zoo has base, sft, rm"),
        (["zoo", "build", "--preset", "nope"], "unknown preset 'nope': use one of tiny, small"),
        (["sweep", "--preset", "nope"], "unknown preset 'nope': use one of tiny, small"),
    ],
)
def test_bad_zoo_build_arguments_fail_clearly(capsys, argv, message):
    assert main(argv) == 2
    assert f"rlhf-edu: error: {message}" in capsys.readouterr().err


def test_doctor_reports_a_missing_device_as_fail(capsys, monkeypatch):
    monkeypatch.setenv("RLHF_EDU_DEVICE", "mps:0")  # no MPS on the machines CI runs on
    assert main(["doctor"]) == 1
    assert "[FAIL] device 'mps:0' was asked for but MPS is not available here: use 'cpu'" in capsys.readouterr().out


def test_doctor_reports_a_corrupted_checkpoint_as_fail(capsys, monkeypatch, tmp_path):
    from rlhf_edu.core import zoo

    shutil.copytree(zoo.SHIPPED_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "sft" / "model.safetensors").write_bytes(b"not a safetensors file")
    monkeypatch.setattr(zoo, "SHIPPED_DIR", tmp_path)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[OK] zoo base loads offline" in out
    assert "[FAIL] zoo sft: " in out and "rlhf-edu zoo build sft" in out and "Traceback" not in out


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "rlhf_edu.experiments.cli", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0 and "doctor" in result.stdout


def test_sweep_writes_the_recipes_file_where_it_is_told(capsys, monkeypatch, tmp_path):
    import rlhf_edu.experiments.recipes as recipes

    calls = []
    monkeypatch.setattr(recipes, "rl_beta_sweep", lambda **kwargs: calls.append(kwargs) or kwargs["out"])
    assert main(["sweep", "--out", str(tmp_path / "s.json")]) == 0
    assert calls == [{"out": str(tmp_path / "s.json"), "preset": None, "device": None}]
    assert f"wrote {tmp_path / 's.json'}" in capsys.readouterr().out


def test_sweep_regularization_runs_notebook_8s_recipe(capsys, monkeypatch, tmp_path):
    import rlhf_edu.experiments.recipes as recipes

    calls = []
    monkeypatch.setattr(recipes, "regularization_runs", lambda **kwargs: calls.append(kwargs) or kwargs["out"])
    monkeypatch.setattr(recipes, "rl_beta_sweep", lambda **kwargs: pytest.fail("the RLOO sweep ran instead"))
    assert main(["sweep", "regularization", "--out", str(tmp_path / "r.json")]) == 0
    assert calls == [{"out": str(tmp_path / "r.json"), "preset": None, "device": None}]


@pytest.mark.parametrize(
    "which, recipe",
    [
        ("pipeline", "pipeline_runs"),
        ("multi-round", "multi_round_run"),
        ("trl", "trl_side_by_side_runs"),
        ("reasoning", "reasoning_sweep"),
        ("grpo-family", "grpo_family_sweep"),
        ("thinking", "thinking_sweep"),
    ],
)
def test_sweep_runs_each_notebooks_recipes(capsys, monkeypatch, tmp_path, which, recipe):
    import rlhf_edu.experiments.recipes as recipes

    calls = []
    monkeypatch.setattr(recipes, recipe, lambda **kwargs: calls.append(kwargs) or [Path(kwargs["out"]) / "r.json"])
    assert main(["sweep", which, "--out", str(tmp_path)]) == 0
    assert calls == [{"out": str(tmp_path), "preset": None, "device": None}]
    assert f"wrote {tmp_path / 'r.json'}" in capsys.readouterr().out


REPOSITORY = Path(__file__).resolve().parent.parent


def test_notebooks_copies_the_notebooks_solutions_and_diagrams_side_by_side(capsys, tmp_path):
    dest = tmp_path / "book"
    assert main(["notebooks", str(dest)]) == 0
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    shipped = sorted(
        p.relative_to(REPOSITORY).as_posix()
        for pattern in ("notebooks/*.ipynb", "notebooks/solutions/*.ipynb", "images/*")
        for p in REPOSITORY.glob(pattern)
    )
    assert copied == shipped and "notebooks/04_training_overview.ipynb" in copied
    assert not (dest / "notebooks" / "claims").exists()  # the claims table is the repository's, not a reader's
    for notebook in (dest / "notebooks").rglob("*.ipynb"):  # every diagram a notebook shows is where it looks
        for link in re.findall(r"\]\((\.\./images/[^)]+)\)", notebook.read_text()):
            assert (notebook.parent / link).is_file(), f"{notebook.name}: {link}"
    out = capsys.readouterr().out
    counts = [len(list(REPOSITORY.glob(pattern))) for pattern in ("notebooks/*.ipynb", "notebooks/solutions/*.ipynb")]
    assert f"wrote {counts[0]} notebooks and {counts[1]} solutions to {dest / 'notebooks'}" in out
    assert f"jupyter lab --ServerApp.root_dir={dest} --LabApp.default_url=/lab/tree/notebooks" in out


def test_notebooks_refuses_a_folder_that_holds_notebooks_unless_forced(capsys, tmp_path):
    mine = tmp_path / "notebooks" / "mine.ipynb"
    mine.parent.mkdir()
    mine.write_text("{}")
    (tmp_path / "notebooks" / "03_definitions.ipynb").write_text("my edits")
    assert main(["notebooks", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"rlhf-edu: error: dest {str(tmp_path)!r} already holds {tmp_path / 'notebooks'}: name another folder" in err
    assert "--force" in err and (tmp_path / "notebooks" / "03_definitions.ipynb").read_text() == "my edits"
    assert main(["notebooks", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "notebooks" / "03_definitions.ipynb").read_text().startswith("{")  # the shipped file again
    assert mine.read_text() == "{}"  # a file the command did not ship stays


def test_notebooks_refuses_a_file_and_a_path_under_one(capsys, tmp_path):
    (tmp_path / "a_file").write_text("")
    assert main(["notebooks", str(tmp_path / "a_file")]) == 2
    assert "is a file: name a folder for the notebooks" in capsys.readouterr().err
    assert main(["notebooks", str(tmp_path / "a_file" / "book")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "name another folder" in err and "Traceback" not in err


def _package_layout(root: Path, inside: bool) -> Path:
    """A package folder with shipped notebooks and images inside it (a wheel) or beside it (a repository)."""
    package = root / "rlhf_edu"
    base = package if inside else root
    for path in ("notebooks/a.ipynb", "notebooks/solutions/a_solutions.ipynb", "notebooks/claims/claims.md"):
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_text("{}")
    (base / "images").mkdir()
    (base / "images" / "x.png").write_bytes(b"png")
    if not inside:
        (root / "pyproject.toml").write_text("")
    package.mkdir(exist_ok=True)
    return package


@pytest.mark.parametrize("inside", [True, False], ids=["wheel", "repository"])
def test_notebooks_come_from_the_package_or_the_repository_around_it(monkeypatch, tmp_path, inside):
    from rlhf_edu.experiments import notebook_copy

    monkeypatch.setattr(notebook_copy, "PACKAGE", _package_layout(tmp_path / "src", inside))
    written = notebook_copy.copy_notebooks(tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "images/x.png",
        "notebooks/a.ipynb",
        "notebooks/solutions/a_solutions.ipynb",
    ]


def test_notebooks_refuse_the_folder_they_are_shipped_from(monkeypatch, tmp_path):
    from rlhf_edu.experiments import notebook_copy

    monkeypatch.setattr(notebook_copy, "PACKAGE", _package_layout(tmp_path, inside=False))
    with pytest.raises(ValueError, match="is where the notebooks are shipped from: name another folder"):
        notebook_copy.copy_notebooks(tmp_path, force=True)


def test_a_package_without_its_notebooks_says_to_reinstall(monkeypatch, tmp_path):
    from rlhf_edu.experiments import notebook_copy

    (tmp_path / "notebooks").mkdir()  # beside the package, but no pyproject.toml: not a repository
    monkeypatch.setattr(notebook_copy, "PACKAGE", tmp_path / "rlhf_edu")
    with pytest.raises(FileNotFoundError, match="no notebooks/ inside .* reinstall rlhf-edu"):
        notebook_copy.shipped_folder("notebooks")
