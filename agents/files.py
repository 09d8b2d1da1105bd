"""Atomic writes for run folders: a file is either the old one or the complete new one.

Every file ``train.py`` writes (models, checkpoints, JSON and YAML) goes to a temporary file in
the same folder first and is then renamed over the target (``os.replace``, atomic on POSIX), so
a kill in the middle of a write never leaves a truncated model or a half-written summary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary path next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def save_model(model, path: str | Path) -> Path:
    """``model.save(path)`` atomically (SB3 would add ``.zip`` to a name without it: ``path``
    must end in ``.zip``)."""
    path = Path(path)
    if path.suffix != ".zip":
        raise ValueError(f"model path {path} must end in .zip")
    return atomic_write(path, lambda tmp: _save_zip(model, tmp))


def _save_zip(model, tmp: Path) -> None:
    target = tmp.with_name(tmp.name + ".zip")  # SB3 appends .zip to other suffixes
    model.save(target)
    os.replace(target, tmp)


def copy_file(src: str | Path, dst: str | Path) -> Path:
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
