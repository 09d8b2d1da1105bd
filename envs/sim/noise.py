"""Service-time noise: an execution takes ``profile time x exp(sigma * |z|)``, z standard normal.

The factor is at least 1 (profiles are unloaded best cases; noise only slows execution down).
A scenario's ``noise_cv`` is the coefficient of variation (std / mean) of that factor, and so of
the service time of a given task on a given variant and device; :func:`sigma_for_cv` inverts
:func:`factor_cv`. The factor's mean (:func:`factor_mean`, above 1) is the average slowdown
against the profile; the load calibration of the synthetic workloads divides capacity by it.

Moments of ``f = exp(s |z|)`` (|z| half-normal): ``E[f^n] = 2 exp(n^2 s^2 / 2) Phi(n s)``.
"""

from __future__ import annotations

import math


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def factor_mean(sigma: float) -> float:
    """E[exp(sigma |z|)]."""
    return 2.0 * math.exp(0.5 * sigma * sigma) * _phi(sigma)


def factor_cv(sigma: float) -> float:
    """Coefficient of variation of exp(sigma |z|)."""
    if sigma <= 0:
        return 0.0
    m1 = factor_mean(sigma)
    m2 = 2.0 * math.exp(2.0 * sigma * sigma) * _phi(2.0 * sigma)
    return math.sqrt(max(m2 / (m1 * m1) - 1.0, 0.0))


def sigma_for_cv(cv: float) -> float:
    """The sigma whose factor exp(sigma |z|) has coefficient of variation ``cv`` (0 -> 0).
    Bisection (the CV grows with sigma), to within float precision: a fixed number of
    iterations, so every platform gets the same float."""
    if not cv > 0:
        return 0.0
    if not math.isfinite(cv):
        raise ValueError(f"noise_cv must be finite, got {cv}")
    lo, hi = 0.0, 1.0
    while factor_cv(hi) < cv:
        hi *= 2.0
        if hi > 64.0:
            raise ValueError(f"noise_cv {cv} is too large")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if factor_cv(mid) < cv:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)
