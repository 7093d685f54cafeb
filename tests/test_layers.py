"""The package's floors, read from its folders and imports.

- ``rlhf_edu/core/`` is the ground floor: it imports only the core.
- A module at the top of ``rlhf_edu/`` is a chapter: its docstring's first line names its chapter, as the
  book's Chinese edition numbers them ("... (chapter 11)"), and it imports only the core and chapters of no
  later number.
- ``rlhf_edu/experiments/`` is the third floor (pipelines, recipes and sweeps, the TRL bridge, figures, the
  CLI): it may import anything but the exercises, and nothing outside it and the exercises imports it.
- ``rlhf_edu/exercises/`` is the reader's floor, the notebooks' exercises: it may import anything, and nothing in
  the package imports it.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rlhf_edu"
FLOORS = ("core", "experiments", "exercises")  # the folders of rlhf_edu; the chapters sit at the top
CHAPTER_LINE = re.compile(r"\(chapter (\d+)\)")  # "... (chapter 11)" in a chapter module's first docstring line


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """The ``rlhf_edu`` modules that a file imports, as dotted names relative to the package ("core.world")."""
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])  # "rlhf_edu" or "rlhf_edu.core"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        names |= {t.removeprefix("rlhf_edu.") for t in targets if t.startswith("rlhf_edu.")}
    return names


def module_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def floor(path: Path) -> str:
    """``"core"``, ``"experiments"``, ``"exercises"``, or ``"chapters"`` for a module at the top of the package."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else "chapters"


def chapter_modules() -> list[Path]:
    return [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]


def chapter_number(path: Path) -> int | None:
    """The chapter that a top-level module's docstring names in its first line, "(chapter N)"; None if none."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = CHAPTER_LINE.search(docstring.split("\n", 1)[0])
    return int(match.group(1)) if match else None


def test_every_module_has_a_floor():
    for path in module_files():
        parts = path.relative_to(PACKAGE).parts
        assert len(parts) == 1 or parts[0] in FLOORS, (
            f"{path.relative_to(PACKAGE)}: rlhf_edu holds core/, experiments/, exercises/ and one module per "
            "chapter, nothing else"
        )


def test_every_top_level_module_names_its_chapter():
    for path in chapter_modules():
        assert chapter_number(path) is not None, (
            f"rlhf_edu/{path.name} sits at the top of the package, where only chapters live, but its docstring's "
            f'first line names no chapter: end that line with "(chapter N)", or move the module into core/ '
            f"(if the chapters stand on it) or experiments/ (if it uses every chapter)"
        )


def test_core_imports_only_the_core():
    for path in (PACKAGE / "core").rglob("*.py"):
        outside = {m for m in imported_modules(path) if m.split(".")[0] != "core"}
        assert not outside, f"core/{path.name} imports {sorted(outside)}: the core must not depend on a chapter"


def test_no_chapter_imports_a_later_chapter():
    chapters = {path.stem: chapter_number(path) for path in chapter_modules()}
    for path in chapter_modules():
        chapter = chapters[path.stem]
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top == "core":
                continue
            assert top in chapters, (
                f"{path.name} (chapter {chapter}) imports {module}: a chapter imports only core/ and earlier chapters"
            )
            assert chapters[top] is not None and chapter is not None and chapters[top] <= chapter, (
                f"{path.name} (chapter {chapter}) imports {module}, which belongs to chapter {chapters[top]}: "
                f"move the shared piece into rlhf_edu/core"
            )


def test_nothing_below_the_third_floor_imports_it():
    for path in module_files():
        if floor(path) in ("experiments", "exercises"):
            continue
        above = {m for m in imported_modules(path) if m.split(".")[0] == "experiments"}
        assert not above, (
            f"{path.relative_to(PACKAGE)} imports {sorted(above)}: only rlhf_edu/experiments/ may import experiments"
        )


def test_nothing_in_the_package_imports_the_exercises():
    for path in module_files():
        if floor(path) == "exercises":
            continue
        used = {m for m in imported_modules(path) if m.split(".")[0] == "exercises"}
        assert not used, f"{path.relative_to(PACKAGE)} imports {sorted(used)}: only notebooks use rlhf_edu/exercises/"


def test_only_graduate_imports_trl():
    """TRL is an optional extra: the package must import without it."""
    graduate = PACKAGE / "experiments" / "graduate.py"
    for path in module_files():
        tree = ast.parse(path.read_text())
        uses = any(
            isinstance(node, ast.Import)
            and any(a.name.split(".")[0] == "trl" for a in node.names)
            or isinstance(node, ast.ImportFrom)
            and (node.module or "").split(".")[0] == "trl"
            and not node.level
            for node in ast.walk(tree)
        )
        assert not uses or path == graduate, (
            f"{path.relative_to(PACKAGE)} imports trl: only rlhf_edu/experiments/graduate.py may"
        )


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .world import World", {"core.world", "core.world.World"}),
        ("from ..objective import kl_divergence", {"objective", "objective.kl_divergence"}),
        ("from . import zoo", {"core", "core.zoo"}),
        ("import rlhf_edu.direct_alignment", {"direct_alignment"}),
        ("from ..experiments import recipes", {"experiments", "experiments.recipes"}),
    ],
)
def test_imported_modules_reads_relative_and_absolute_imports(tmp_path, source, expected):
    core = tmp_path / "rlhf_edu" / "core"
    core.mkdir(parents=True)
    (core / "probe.py").write_text(source)
    assert imported_modules(core / "probe.py", root=tmp_path / "rlhf_edu") == expected
