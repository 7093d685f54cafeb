import os
import subprocess
import sys

import pytest

from rlhf_edu.cli import main


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


def test_unknown_zoo_name_fails_clearly():
    with pytest.raises(ValueError, match="unknown checkpoint 'nope'"):
        main(["zoo", "build", "nope"])


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "rlhf_edu.cli", "--help"], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0 and "doctor" in result.stdout
