"""The ``rlhf-edu`` command: ``doctor``, ``zoo build`` and ``figures``."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path


def doctor() -> int:
    """Print one [OK]/[FAIL] line per check, ready to paste into a bug report; return the exit code."""
    from .core import zoo
    from .core.runtime import get_device, get_preset, version_report

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
            lines.append((False, f"zoo {name}: {type(error).__name__}: {error} (rebuild: rlhf-edu zoo build {name})"))
    for ok, text in lines:
        print(f"[{'OK' if ok else 'FAIL'}] {text}")
    return 0 if all(ok for ok, _ in lines) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-edu", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="check versions, device, preset and the zoo")
    zoo_parser = commands.add_parser("zoo", help="the shipped model zoo")
    zoo_commands = zoo_parser.add_subparsers(dest="zoo_command", required=True)
    build_parser = zoo_commands.add_parser("build", help="rebuild zoo checkpoints deterministically")
    build_parser.add_argument("names", nargs="*", help="checkpoints to build (default: all, in order)")
    build_parser.add_argument("--preset", default=None, help="tiny (default, shipped) or small")
    build_parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    build_parser.add_argument("--out", default=None, help="write here instead of the zoo's own folder")
    figures_parser = commands.add_parser("figures", help="redraw the diagrams in images/")
    figures_parser.add_argument("--out", default="images", help="folder to write PNG and SVG files to")
    sweep_parser = commands.add_parser("sweep", help="recompute a notebook's precomputed runs: notebook 11's β sweep "
                                                     "(rloo, the default) or notebook 8's runs (regularization)")
    sweep_parser.add_argument("which", nargs="?", default="rloo", choices=("rloo", "regularization"))
    sweep_parser.add_argument("--out", default=None, help="write here instead of the package's own file")
    sweep_parser.add_argument("--preset", default=None, help="tiny (default, shipped) or small")
    sweep_parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad input: say what to fix, no traceback
        print(f"rlhf-edu: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        return doctor()
    if args.command == "zoo":
        from .recipes import build

        for path in build(args.names or None, preset=args.preset, device=args.device, out_dir=args.out):
            print(f"saved {path}")
        return 0
    if args.command == "sweep":
        from .recipes import REGULARIZATION_PATH, SWEEP_PATH, regularization_runs, rl_beta_sweep

        recipe, path = (rl_beta_sweep, SWEEP_PATH) if args.which == "rloo" else (regularization_runs,
                                                                                  REGULARIZATION_PATH)
        print(f"wrote {recipe(out=args.out or path, preset=args.preset, device=args.device)}")
        return 0
    from .figures import save_figures

    for path in save_figures(Path(args.out)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
