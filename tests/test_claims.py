"""The claims harness runs a notebook in a fresh kernel under each perturbation and records every check cell."""

import json

import nbformat
import pytest

from rlhf_edu.experiments.claims import available_perturbations, check_cell_indices, judge, run_claims, to_markdown
from rlhf_edu.experiments.cli import main


def notebook(path, cells):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(s) if s.startswith("#") else nbformat.v4.new_code_cell(s) for s in cells]
    )
    nbformat.write(nb, path)
    return str(path)


def test_a_claim_that_rests_on_the_seed_fails_under_a_seed_shift(tmp_path, capsys):
    path = notebook(
        tmp_path / "toy.ipynb",
        [
            "# Toy",
            "import os\noffset = int(os.environ.get('RLHF_EDU_SEED_OFFSET', '0'))",
            "## Check cells",
            "from rlhf_edu.core.stats import assert_beyond\nassert_beyond(1.0, 0.1, 'ten standard errors')",
            "assert offset == 0, f'holds only for seed 0, not {offset}'",
        ],
    )
    runs = run_claims([path], ["as-is", "seed+1000"], jobs=2)
    assert [(run.perturbation, run.passed) for run in runs] == [("as-is", True), ("seed+1000", False)]
    assert runs[1].failures == ["cell 4 (check): AssertionError: holds only for seed 0, not 1000"]
    assert runs[0].margins == ["holds: ten standard errors: +1 ± 0.1 (+10.0 s.e., asked > 3)"]
    table = to_markdown(runs, "a test machine")
    assert "| toy.ipynb | pass" in table and "**FAIL**" in table and "1 of 2 runs passed." in table


def test_judge_reads_solutions_and_exact_outputs():
    def cell(source, text):
        return {
            "cell_type": "code",
            "source": source,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": text}],
        }

    committed = {"cells": [cell("# NBVAL_CHECK_OUTPUT\nprint(2)", "2\n"), cell("check()", "✅ yes\n")]}
    executed = {"cells": [cell("# NBVAL_CHECK_OUTPUT\nprint(2)", "3\n"), cell("check()", "❌ not yet\n")]}
    run = judge(executed, committed, "notebooks/solutions/x.ipynb", "avx2", 1.0)
    assert not run.passed and len(run.failures) == 2
    assert "NBVAL_CHECK_OUTPUT cell printed other text" in run.failures[0] and "❌" in run.failures[1]
    assert judge(committed, committed, "notebooks/solutions/x.ipynb", "avx2", 1.0).passed


def test_check_cells_are_the_code_cells_under_the_check_heading():
    cells = [
        {"cell_type": t, "source": s}
        for t, s in [
            ("markdown", "# Title"),
            ("code", "x = 1"),
            ("markdown", "## Check cells"),
            ("code", "assert x"),
            ("code", "assert x > 0"),
            ("markdown", "## After"),
        ]
    ]
    assert check_cell_indices(cells) == [3, 4]


def test_default_kernels_are_always_available():
    assert {"as-is", "default", "seed+1000", "seed+2000"} <= set(available_perturbations())


def test_the_command_writes_the_table_and_refuses_unknown_names(tmp_path, capsys):
    path = notebook(tmp_path / "ok.ipynb", ["# Ok", "## Check", "assert 1 + 1 == 2"])
    assert main(["claims", path, "--perturb", "as-is", "--jobs", "1", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert record["runs"][0]["passed"] and "ok.ipynb | pass" in (tmp_path / "out" / "claims.md").read_text()
    other = notebook(tmp_path / "other.ipynb", ["# Other", "## Check", "assert 2 + 2 == 4"])
    assert main(["claims", other, "--perturb", "as-is", "--jobs", "1", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert [run["notebook"] for run in record["runs"]] == [path, other], "a second call adds its rows to the table"
    assert main(["claims", path, "--perturb", "avx3"]) == 2
    assert "unknown perturbation 'avx3'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a notebook file"):
        run_claims([str(tmp_path / "missing.ipynb")], ["as-is"])


def test_a_run_whose_kernel_dies_is_tried_again(tmp_path):
    """A dead kernel is the machinery failing, not a claim: the harness tries the run once more."""
    from rlhf_edu.experiments.claims import run_notebook

    marker = tmp_path / "first-try"
    path = notebook(
        tmp_path / "flaky.ipynb",
        [
            "# Flaky",
            f"import os, pathlib\nif not pathlib.Path({str(marker)!r}).exists():\n"
            f"    pathlib.Path({str(marker)!r}).touch()\n    os._exit(1)",
            "## Check",
            "assert True",
        ],
    )
    run = run_notebook(path, "as-is", {}, timeout=60)
    assert marker.exists() and run.passed, run.failures
