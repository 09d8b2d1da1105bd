"""Progress of long phases (pretraining, training, evaluation) for people and for log files.

On a terminal a phase shows a ``tqdm`` bar; when the stream is not a terminal (output redirected
to a file, a CI log, ``nohup``) it prints plain, flushed lines instead: one at the start, then
one every 10% of the work or every 30 seconds, whichever comes first, and one at the end. A
redirected run's log therefore says what is running while it runs, not only when it ends.
"""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    """``update(n)`` / ``close()`` over ``total`` units of work (a context manager).

    ``enabled=False`` shows nothing. ``tty`` forces the terminal (True) or plain-line (False)
    form; by default it is the stream's ``isatty()``.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", *, enabled: bool = True,
                 file: IO[str] | None = None, tty: bool | None = None, every_s: float = 30.0,
                 every_fraction: float = 0.1):
        self.total = max(int(total), 0)
        self.desc = desc
        self.unit = unit
        self.file = file if file is not None else sys.stderr
        self.enabled = enabled
        self.n = 0
        self.t0 = time.perf_counter()
        self._bar = None
        self._closed = False
        self._last_t = self.t0
        self._last_n = 0
        self._every_s = every_s
        self._step = max(int(self.total * every_fraction), 1)
        if not enabled:
            return
        is_tty = tty if tty is not None else bool(getattr(self.file, "isatty", lambda: False)())
        if is_tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.file, dynamic_ncols=True)
        else:
            self._line(f"{desc}: started, {self.total} {unit}")

    def _line(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def _status(self) -> str:
        elapsed = time.perf_counter() - self.t0
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        left = ""
        if 0 < self.n < self.total:
            left = f", about {_duration(elapsed * (self.total - self.n) / self.n)} left"
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {_duration(elapsed)} elapsed{left}"

    def update(self, n: int = 1) -> None:
        if not self.enabled or self._closed:
            return
        self.n += int(n)
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = time.perf_counter()
        if self.n < self.total and (self.n - self._last_n >= self._step or now - self._last_t >= self._every_s):
            self._last_n, self._last_t = self.n, now
            self._line(self._status())

    def write(self, text: str) -> None:
        """Print a line without breaking the bar (printed even when the display is disabled)."""
        if self._bar is not None:
            self._bar.write(text, file=self.file)
        else:
            print(text, flush=True)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def close(self) -> None:
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(self._status().replace(" elapsed", "", 1) if self.n >= self.total else
                       self._status() + " (stopped)")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
