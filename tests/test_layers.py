"""The package's floors, read from its imports: the core imports no chapter, and no chapter imports a later one.

Chapters are ordered as the book's Chinese edition numbers them. Modules above the
chapters (recipes, the CLI, figures, exercises) may import anything.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rlhf_edu"
CHAPTERS = {  # module -> chapter number in the Chinese edition
    "pretraining": 3,
    "objective": 4,
    "bandit": 4,
    "mdp": 4,
    "reward_modeling": 7,
    "regularization": 8,
    "instruction_tuning": 9,
    "rejection_sampling": 10,
    "policy_gradients": 11,
    "direct_alignment": 12,
    "overoptimization": 17,
}
ABOVE_CHAPTERS = {"__init__", "recipes", "cli", "figures", "exercises", "pipeline", "graduate", "claims"}


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


def test_every_module_has_a_floor():
    for path in module_files():
        name = path.stem
        assert path.parent.name == "core" or name in CHAPTERS or name in ABOVE_CHAPTERS, (
            f"{path.relative_to(PACKAGE)}: add it to CHAPTERS (with its chapter number) or ABOVE_CHAPTERS"
        )


def test_core_imports_no_chapter():
    for path in (PACKAGE / "core").glob("*.py"):
        outside = {m for m in imported_modules(path) if not m.startswith("core")}
        assert not outside, f"core/{path.name} imports {sorted(outside)}: the core must not depend on a chapter"


def test_no_chapter_imports_a_later_chapter():
    for name, chapter in CHAPTERS.items():
        path = PACKAGE / f"{name}.py"
        if not path.exists():
            continue
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top == "core" or CHAPTERS.get(top, 0) <= chapter, (
                f"{name} (chapter {chapter}) imports {module}, which belongs to chapter {CHAPTERS.get(top, '?')} "
                f"or above: move the shared piece into rlhf_edu/core"
            )


def test_only_graduate_imports_trl():
    """TRL is an optional extra: the package must import without it."""
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
        assert not uses or path.stem == "graduate", f"{path.name} imports trl: only rlhf_edu.graduate may"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .world import World", {"core.world", "core.world.World"}),
        ("from ..objective import kl_divergence", {"objective", "objective.kl_divergence"}),
        ("from . import zoo", {"core", "core.zoo"}),
        ("import rlhf_edu.direct_alignment", {"direct_alignment"}),
    ],
)
def test_imported_modules_reads_relative_and_absolute_imports(tmp_path, source, expected):
    core = tmp_path / "rlhf_edu" / "core"
    core.mkdir(parents=True)
    (core / "probe.py").write_text(source)
    assert imported_modules(core / "probe.py", root=tmp_path / "rlhf_edu") == expected
