import os
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
