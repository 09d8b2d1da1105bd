"""Telling an interrupt from a failure.

Ctrl-C (and SIGTERM, which ``train.py`` and ``evaluate.py`` turn into ``KeyboardInterrupt``) can
land inside compiled code that re-raises it as another exception: numba's object-mode callbacks
as ``SystemError``, torch's zip writer as ``RuntimeError``. :func:`caused_by_interrupt` looks
through the exception's cause and context chain, so such a run is reported as interrupted (its
work kept) rather than as a crash.
"""

from __future__ import annotations


def caused_by_interrupt(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
