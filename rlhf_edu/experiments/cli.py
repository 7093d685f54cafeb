"""The ``rlhf-edu`` command: ``doctor``, ``notebooks``, ``zoo build``, ``figures``, ``sweep``, ``pipeline`` and
``claims``."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

# `rlhf-edu sweep <which>`: the recipe in rlhf_edu.experiments.recipes that recomputes a notebook's shipped runs
SWEEPS = {
    "rloo": "rl_beta_sweep",
    "regularization": "regularization_runs",
    "pipeline": "pipeline_runs",
    "multi-round": "multi_round_run",
    "pipeline-seeds": "pipeline_seed_runs",
    "trl": "trl_side_by_side_runs",
    "reasoning": "reasoning_sweep",
    "grpo-family": "grpo_family_sweep",
    "thinking": "thinking_sweep",
    "preferences": "preferences_sweep",
    "ai-feedback": "ai_feedback_sweep",
    "distillation": "distillation_sweep",
    "evaluation": "evaluation_sweep",
    "overoptimization": "overoptimization_sweep",
}


def doctor() -> int:
    """Print one [OK]/[FAIL] line per check, ready to paste into a bug report; return the exit code."""
    from ..core import zoo
    from ..core.runtime import get_device, get_preset, version_report

    lines = [(sys.version_info >= (3, 10), f"python {platform.python_version()} (need >= 3.10)")]
    lines += [(ok, f"{package} {installed or 'missing'}") for package, installed, ok in version_report()]
    try:
        lines.append((True, f"device {get_device()}"))
    except ValueError as error:
        lines.append((False, str(error)))
    try:
        preset = get_preset()
        lines.append((True, f"preset {preset.name}"))
    except ValueError as error:
        lines.append((False, str(error)))
        preset = "tiny"  # still check the shipped zoo
    for name in zoo.CHECKPOINTS:
        try:
            zoo.load(name, preset=preset, device="cpu")
            lines.append((True, f"zoo {name} loads offline"))
        except Exception as error:  # a doctor reports every failure as a line, never as a traceback
            fix = "" if "rlhf-edu zoo build" in str(error) else f" (rebuild: rlhf-edu zoo build {name})"
            lines.append((False, f"zoo {name}: {type(error).__name__}: {error}{fix}"))
    for ok, text in lines:
        print(f"[{'OK' if ok else 'FAIL'}] {text}")
    return 0 if all(ok for ok, _ in lines) else 1


def parse_sizes(text: str) -> dict[str, int]:
    """``"sft=200,preference=1000"`` -> ``{"sft": 200, "preference": 1000}``; the pipeline checks names and values."""
    sizes = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            sizes[name.strip()] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not name=integer, e.g. sft=200") from None
    return sizes


def run_pipeline_command(args: argparse.Namespace) -> int:
    """``rlhf-edu pipeline``: run it with progress bars, then say where the report and the models are."""
    from .pipeline import run_pipeline

    options = {
        "preset": args.preset,
        "sizes": args.sizes,
        "seed": args.seed,
        "out": args.out,
        "overwrite": args.overwrite,
        "device": args.device,
    }
    if args.name == "three-stage":
        options["rl_algorithm"] = args.rl_algorithm
    else:
        options["rounds"] = args.rounds
    if args.beta is not None:
        options["beta"] = args.beta
    report = run_pipeline(args.name, **options)
    for stage in report.stages:
        print(f"{stage.name:>8}: gold {stage.gold_reward:.3f} ± {stage.gold_stderr:.3f}, {stage.seconds:.0f} s")
    print(
        f"wrote {Path(args.out) / 'report.md'} and the stage models: "
        + ", ".join(str(Path(args.out) / name) for name in report.names if (Path(args.out) / name).is_dir())
    )
    return 0


def run_claims_command(args: argparse.Namespace) -> int:
    """``rlhf-edu claims``: every chosen notebook under every chosen perturbation; the table; 1 if any claim failed."""
    from .claims import run_claims, save

    notebooks = args.notebooks or sorted(
        str(p) for p in Path("notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )
    runs = run_claims(notebooks, [p.strip() for p in args.perturb.split(",") if p.strip()], jobs=args.jobs)
    for path in save(runs, Path(args.out)):
        print(f"wrote {path}")
    return 0 if all(run.passed for run in runs) else 1


def copy_notebooks_command(args: argparse.Namespace) -> int:
    """``rlhf-edu notebooks DIR``: copy the notebooks and diagrams, say what was written and how to open them."""
    from .notebook_copy import copy_notebooks, how_to_open

    written = copy_notebooks(args.dir, force=args.force)
    dest = Path(args.dir)
    solutions = sum(path.parent.name == "solutions" for path in written)
    notebooks = sum(path.suffix == ".ipynb" for path in written) - solutions
    print(f"wrote {notebooks} notebooks and {solutions} solutions to {dest / 'notebooks'}")
    print(f"wrote {len(written) - notebooks - solutions} diagrams to {dest / 'images'}")
    print(f"open them with: {how_to_open(dest)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-edu", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="check versions, device, preset and the zoo")
    notebooks_parser = commands.add_parser(
        "notebooks",
        help="copy the chapter notebooks (with solutions/) to DIR/notebooks and their diagrams to DIR/images, "
        "and print the command that opens them in JupyterLab",
    )
    notebooks_parser.add_argument("dir", metavar="DIR", help="folder to copy into (made if missing)")
    notebooks_parser.add_argument(
        "--force", action="store_true", help="overwrite the shipped files in DIR/notebooks and DIR/images"
    )
    zoo_parser = commands.add_parser("zoo", help="the shipped model zoo")
    zoo_commands = zoo_parser.add_subparsers(dest="zoo_command", required=True)
    build_parser = zoo_commands.add_parser("build", help="rebuild zoo checkpoints deterministically")
    build_parser.add_argument("names", nargs="*", help="checkpoints to build (default: all, in order)")
    build_parser.add_argument("--preset", default=None, help="tiny (default, shipped) or small")
    build_parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    build_parser.add_argument("--out", default=None, help="write here instead of the zoo's own folder")
    figures_parser = commands.add_parser("figures", help="redraw the diagrams in images/")
    figures_parser.add_argument("--out", default="images", help="folder to write PNG and SVG files to")
    sweep_parser = commands.add_parser(
        "sweep",
        help="recompute a notebook's precomputed runs: notebook 11's β sweep "
        "(rloo, the default), notebook 8's runs (regularization), "
        "notebook 04b's (pipeline, multi-round, pipeline-seeds), notebooks 05 and 06's (preferences), "
        "notebook 13's (ai-feedback), notebook 14's (reasoning, grpo-family, thinking), notebook 15's (distillation), "
        "notebook 16's (evaluation), notebook 17's (overoptimization), "
        "or the TRL notebook's (trl: needs the [trl] extra)",
    )
    sweep_parser.add_argument("which", nargs="?", default="rloo", choices=tuple(SWEEPS))
    sweep_parser.add_argument("--out", default=None, help="write here instead of the package's own file")
    sweep_parser.add_argument("--preset", default=None, help="tiny (default, shipped) or small")
    sweep_parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    pipeline_parser = commands.add_parser(
        "pipeline",
        help="run chapter 4's three-stage or multi-round pipeline end to end, with the gold reward after every stage",
    )
    pipeline_parser.add_argument("name", choices=("three-stage", "multi-round"))
    pipeline_parser.add_argument("--out", required=True, help="folder for report.md and each stage's model")
    pipeline_parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    pipeline_parser.add_argument("--preset", default=None, help="tiny (default) or small")
    pipeline_parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    pipeline_parser.add_argument(
        "--sizes",
        default=None,
        type=parse_sizes,
        metavar="sft=N,preference=N,rl=N",
        help="override the preset's sizes, e.g. sft=200,preference=1000",
    )
    pipeline_parser.add_argument("--seed", type=int, default=0)
    pipeline_parser.add_argument(
        "--beta",
        type=float,
        default=None,
        help="the KL penalty's β: the RL stage's (three-stage, default 0.05) or DPO's (multi-round, default 0.1)",
    )
    pipeline_parser.add_argument("--rl-algorithm", default="ppo", help="three-stage: ppo, rloo, grpo or reinforce")
    pipeline_parser.add_argument("--rounds", type=int, default=3, help="multi-round: rounds after SFT")
    from .claims import DEFAULT_PERTURBATIONS, PERTURBATIONS

    claims_parser = commands.add_parser(
        "claims",
        help="run notebooks under other CPU kernels, seeds and thread "
        "counts, and record every check cell (from the repository root)",
    )
    claims_parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every one under notebooks/)")
    claims_parser.add_argument(
        "--perturb",
        default=",".join(DEFAULT_PERTURBATIONS),
        help=f"comma-separated, of: {', '.join(PERTURBATIONS)} (default: {','.join(DEFAULT_PERTURBATIONS)})",
    )
    claims_parser.add_argument("--jobs", type=int, default=2, help="notebooks run side by side (default 2)")
    claims_parser.add_argument("--out", default="notebooks/claims", help="folder for claims.md and claims.json")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad input: say what to fix, no traceback
        print(f"rlhf-edu: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        return doctor()
    if args.command == "notebooks":
        return copy_notebooks_command(args)
    if args.command == "zoo":
        from .recipes import build

        for path in build(args.names or None, preset=args.preset, device=args.device, out_dir=args.out):
            print(f"saved {path}")
        return 0
    if args.command == "pipeline":
        return run_pipeline_command(args)
    if args.command == "claims":
        return run_claims_command(args)
    if args.command == "sweep":
        from . import recipes

        recipe = getattr(recipes, SWEEPS[args.which])
        written = (
            recipe(out=args.out, preset=args.preset, device=args.device)
            if args.out
            else recipe(preset=args.preset, device=args.device)
        )
        for path in written if isinstance(written, list) else [written]:
            print(f"wrote {path}")
        return 0
    from .figures import save_figures

    for path in save_figures(Path(args.out)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
