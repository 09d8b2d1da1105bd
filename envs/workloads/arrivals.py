"""Arrival processes: the times at which a workload's jobs arrive.

* ``poisson``: exponential inter-arrival times with mean ``1 / rate``.
* ``gamma``: Gamma inter-arrival times with mean ``1 / rate`` and coefficient of variation
  ``cv`` (shape ``1 / cv^2``). ``cv = 1`` is Poisson; larger values give the bursty arrivals
  AlpaServe (OSDI'23) uses to stress model serving (it sweeps CV up to 8).
* ``diurnal``: a non-homogeneous Poisson process with rate
  ``rate * (1 + amplitude * sin(2 pi (t / period + phase)))``, sampled by thinning
  (Lewis & Shedler) a homogeneous process of rate ``rate * (1 + amplitude)``. Its long-run mean
  rate is ``rate``.

All randomness comes from the generator passed to :meth:`ArrivalProcess.times`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.config import ConfigError, Section

PROCESSES = ("poisson", "gamma", "diurnal")
#: Keys of a workload section that parametrise each arrival process.
ARRIVAL_KEYS: dict[str, tuple[str, ...]] = {"poisson": (), "gamma": ("cv",),
                                            "diurnal": ("period", "amplitude", "phase")}


@dataclass(frozen=True)
class ArrivalProcess:
    process: str = "poisson"
    cv: float = 1.0
    """Coefficient of variation of the inter-arrival times (``gamma`` only)."""
    period: float = 86400.0
    """Period of the rate modulation in seconds (``diurnal`` only)."""
    amplitude: float = 0.5
    """Relative amplitude in [0, 1] of the rate modulation (``diurnal`` only)."""
    phase: float = 0.0
    """Phase of the modulation as a fraction of the period (``diurnal`` only)."""

    def __post_init__(self):
        if self.process not in PROCESSES:
            raise ConfigError(f"arrival process must be one of {list(PROCESSES)}, got {self.process!r}")
        if not self.cv > 0:
            raise ConfigError(f"arrival cv must be > 0, got {self.cv!r}")
        if not self.period > 0:
            raise ConfigError(f"arrival period must be > 0, got {self.period!r}")
        if not 0.0 <= self.amplitude <= 1.0:
            raise ConfigError(f"arrival amplitude must be in [0, 1], got {self.amplitude!r}")

    def interarrivals(self, rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
        """``n`` gaps between consecutive arrivals (the first is the time of the first arrival)."""
        if self.process == "poisson":
            return rng.exponential(1.0 / rate, size=n)
        if self.process == "gamma":
            shape = 1.0 / self.cv ** 2
            return rng.gamma(shape, 1.0 / (rate * shape), size=n)
        return np.diff(self.times(rng, n, rate), prepend=0.0)

    def times(self, rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
        """``n`` non-decreasing arrival times starting after 0."""
        if self.process != "diurnal":
            return np.cumsum(self.interarrivals(rng, n, rate))
        return self._thinned(rng, n, rate)

    def rate_at(self, t: np.ndarray | float, rate: float) -> np.ndarray | float:
        """Instantaneous rate (``diurnal``); the constant ``rate`` otherwise."""
        if self.process != "diurnal":
            return rate
        return rate * (1.0 + self.amplitude * np.sin(2.0 * math.pi * (np.asarray(t) / self.period + self.phase)))

    def _thinned(self, rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
        peak = rate * (1.0 + self.amplitude)
        out: list[np.ndarray] = []
        have, t = 0, 0.0
        accept_frac = 1.0 / (1.0 + self.amplitude)  # long-run share of candidates kept
        while have < n:
            m = int((n - have) / accept_frac * 1.1) + 16
            cand = t + np.cumsum(rng.exponential(1.0 / peak, size=m))
            keep = rng.random(m) * peak < self.rate_at(cand, rate)
            kept = cand[keep]
            out.append(kept[: n - have])
            have += min(len(kept), n - have)
            t = float(cand[-1])
        return np.concatenate(out) if out else np.empty(0)


def parse_arrival(sec: Section, process: str) -> ArrivalProcess:
    """Read the parameters of ``process`` from the top level of a workload section:
    ``cv`` (gamma, required, (0, 8]); ``period`` (seconds, required), ``amplitude`` ([0, 1],
    default 0.5) and ``phase`` (fraction of a period, default 0) for diurnal."""
    if process == "poisson":
        return ArrivalProcess("poisson")
    if process == "gamma":
        cv = sec.get("cv", float, low=1e-3, high=8.0)
        return ArrivalProcess("gamma", cv=cv)
    if process == "diurnal":
        period = sec.get("period", float, low=1e-9)
        amplitude = sec.get("amplitude", float, 0.5, low=0.0, high=1.0)
        phase = sec.get("phase", float, 0.0, low=0.0, high=1.0)
        return ArrivalProcess("diurnal", period=period, amplitude=amplitude, phase=phase)
    raise ConfigError(f"{sec.where}: arrival process must be one of {list(PROCESSES)}, got {process!r}")


def parse_rate_or_load(sec: Section) -> tuple[float | None, float | None]:
    """Exactly one of ``load`` (fraction of cluster capacity) and ``rate`` (jobs per second)."""
    load = sec.get("load", float, None, low=1e-6)
    rate = sec.get("rate", float, None, low=1e-9)
    if (load is None) == (rate is None):
        raise ConfigError(f"{sec.where}: give exactly one of 'load' and 'rate'")
    return load, rate
