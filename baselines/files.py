"""Atomic writes: a file is either the old one or the complete new one.

``atomic_write(path, write)`` calls ``write(f)`` with a binary file object on a temporary file in
the same folder, then renames it over ``path`` (``os.replace``, atomic on POSIX); a kill or an
error in the middle never leaves a truncated file, and the temporary file is removed. Used by
``evaluate.py`` (results, plots, the journal) and ``train.py`` (models, checkpoints, summaries).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))
