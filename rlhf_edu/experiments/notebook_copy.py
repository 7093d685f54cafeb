"""``rlhf-edu notebooks DIR``: a reader's own copy of the chapter notebooks and the diagrams they show.

An installed wheel carries them inside the package (``rlhf_edu/notebooks``, ``rlhf_edu/images``: pyproject.toml maps
the repository's folders there); an editable install or a checkout reads the repository's ``notebooks/`` and
``images/``. Either way the copy is the same files.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from ..core.validation import check_flag

PACKAGE = Path(__file__).resolve().parents[1]
# What the wheel ships of each folder, as pyproject.toml's package-data names it (notebooks/claims/ stays out)
SHIPPED = {"notebooks": ("*.ipynb", "solutions/*.ipynb"), "images": ("*",)}


def shipped_folder(name: str) -> Path:
    """The folder ``name`` ("notebooks" or "images") as installed: inside the package, else in the repository."""
    for folder, marker in ((PACKAGE / name, None), (PACKAGE.parent / name, PACKAGE.parent / "pyproject.toml")):
        if folder.is_dir() and (marker is None or marker.is_file()):
            return folder
    raise FileNotFoundError(
        f"no {name}/ inside {PACKAGE} nor in a repository around it: reinstall rlhf-edu from its wheel "
        "(README: Install from the wheel)"
    )


def shipped_files(name: str) -> list[Path]:
    """The files of the shipped folder ``name`` that a wheel carries, in sorted order."""
    folder = shipped_folder(name)
    return sorted(path for pattern in SHIPPED[name] for path in folder.glob(pattern) if path.is_file())


def copy_notebooks(dest: str | os.PathLike, force: bool = False) -> list[Path]:
    """Copy the notebooks (with ``solutions/``) into ``dest/notebooks`` and the diagrams into ``dest/images``.

    The notebooks link the diagrams as ``../images/x.png``, so the two folders sit side by side. ``dest`` is
    made if missing. One that already holds ``notebooks/`` or ``images/`` is refused, so that a reader's edited
    notebooks are never overwritten by accident; ``force=True`` overwrites the shipped files there (the edits to
    them are lost) and leaves every other file. Returns the paths written.
    """
    if not isinstance(dest, (str, os.PathLike)):
        raise TypeError(f"dest must be a folder path, got {dest!r} ({type(dest).__name__}): e.g. 'rlhf-book'")
    if not str(dest):
        raise ValueError("dest is empty: name a folder for the notebooks, e.g. 'rlhf-book' (or '.' for this one)")
    dest, force = Path(dest), check_flag(force, "force")
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"dest {str(dest)!r} is a file: name a folder for the notebooks, e.g. 'rlhf-book'")
    if any(shipped_folder(name).resolve() == (dest / name).resolve() for name in SHIPPED):
        raise ValueError(f"dest {str(dest)!r} is where the notebooks are shipped from: name another folder")
    taken = [dest / name for name in SHIPPED if (dest / name).exists()]
    if taken and not force:
        raise ValueError(
            f"dest {str(dest)!r} already holds {taken[0]}: name another folder, or pass force=True (--force) to "
            "overwrite the shipped files in it (edits to them are lost; other files stay)"
        )
    written = []
    for name in SHIPPED:
        source = shipped_folder(name)
        for path in shipped_files(name):
            target = dest / name / path.relative_to(source)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append(Path(shutil.copyfile(path, target)))
            except OSError as error:  # a file where a folder must go, or no right to write there
                raise ValueError(
                    f"dest {str(dest)!r}: cannot write {target} ({error.strerror}): name another folder"
                ) from None
    return written


def how_to_open(dest: str | os.PathLike) -> str:
    """The command that opens the copied notebooks in JupyterLab from any folder: it serves ``dest`` (made absolute),
    so the notebooks' ``../images/`` links resolve, and opens on ``notebooks/``."""
    root = shlex.quote(str(Path(dest).absolute()))
    return f"jupyter lab --ServerApp.root_dir={root} --LabApp.default_url=/lab/tree/notebooks"
