"""Atomic writes for run folders (:mod:`baselines.files`): every file ``train.py`` writes
(models, checkpoints, JSON and YAML) is either the old one or the complete new one."""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from pathlib import Path

from baselines.files import atomic_write, write_text

__all__ = ["atomic_write", "copy_file", "deferred_interrupts", "save_model", "write_text"]


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl-C and SIGTERM until the block ends, then raise ``KeyboardInterrupt``: an
    interrupt inside ``torch.save`` turns into a ``RuntimeError`` of torch's zip writer, so a
    save must finish before the interrupt is handled (the checkpoint is then complete)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]}")


def save_model(model, path: str | Path) -> Path:
    """``model.save`` into a temporary file, then renamed to ``path`` (which must end in .zip)."""
    path = Path(path)
    if path.suffix != ".zip":
        raise ValueError(f"model path {path} must end in .zip")
    with deferred_interrupts():
        return atomic_write(path, model.save)


def copy_file(src: str | Path, dst: str | Path) -> Path:
    def copy(f) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f)

    return atomic_write(dst, copy)
