"""Summary statistics over seeds: mean with its Student-t 95% interval (bootstrap intervals on
request), interquartile mean, paired differences and the probability of improvement.

NaN handling: a metric can be NaN for a seed (e.g. ``mean_latency`` when no task completed).
Such seeds are left out of that metric's mean and CI (``n`` says how many seeds were used);
if every seed is NaN the mean and CI are ``None``. Paired differences use the seeds where both
policies have a finite value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

#: Bootstrap defaults: 10,000 resamples, BCa method, fixed seed (reproducible output).
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


_RESAMPLES: dict[tuple[int, int, int], list] = {}


def _resamples(n: int, n_resamples: int, seed: int) -> list:
    """The resample index chunks ``(start, (rows, n) indices)`` of a sample of size n: the draws
    of a generator seeded with ``seed``, kept (as int32) for the next metric of the same size,
    since every metric and policy over the same seeds resamples the same way."""
    key = (n, n_resamples, seed)
    chunks = _RESAMPLES.get(key)
    if chunks is None:
        rng = np.random.default_rng(seed)
        chunks = []
        chunk = max(1, 2_000_000 // n)  # bound memory for long samples
        for lo in range(0, n_resamples, chunk):
            hi = min(n_resamples, lo + chunk)
            idx = rng.integers(0, n, size=(hi - lo, n))
            chunks.append((lo, idx.astype(np.int32) if n < 2**31 else idx))
        if len(_RESAMPLES) >= 4:
            _RESAMPLES.pop(next(iter(_RESAMPLES)))
        _RESAMPLES[key] = chunks
    return chunks


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = N_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, method: str = "bca") -> tuple[float, float]:
    """Bootstrap CI of the mean of ``values`` (finite values only).

    Resamples the values with replacement ``n_resamples`` times from a generator seeded with
    ``seed``. ``method="bca"`` (default): bias-corrected and accelerated percentiles (Efron
    1987; the bias from the share of resampled means below the sample mean, the acceleration
    from the jackknife's skewness), which keeps its coverage on skewed per-seed metrics at
    n = 30 where the plain percentile interval does not (``benchmarks/ci_coverage.py``);
    ``"percentile"``: the (1 - confidence)/2 and (1 + confidence)/2 percentiles of the
    resampled means. One value gives a zero-width interval; no value gives (nan, nan).
    """
    if method not in ("bca", "percentile"):
        raise ValueError(f"method must be 'bca' or 'percentile', got {method!r}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    means = np.empty(n_resamples)
    for lo, idx in _resamples(x.size, n_resamples, seed):
        means[lo:lo + len(idx)] = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    q = [alpha, 1.0 - alpha]
    if method == "bca":
        q = _bca_levels(x, means, alpha)
    lo_q, hi_q = np.percentile(means, [100 * q[0], 100 * q[1]])
    return float(lo_q), float(hi_q)


_NORMAL = NormalDist()


def _bca_levels(x: np.ndarray, means: np.ndarray, alpha: float) -> list[float]:
    """The BCa interval's percentile levels for the mean of ``x`` from its bootstrap ``means``."""
    theta = x.mean()
    below = (np.count_nonzero(means < theta) + 0.5 * np.count_nonzero(means == theta)) / means.size
    below = min(max(below, 1.0 / (means.size + 1)), means.size / (means.size + 1))
    z0 = _NORMAL.inv_cdf(below)
    jack = (x.sum() - x) / (x.size - 1)  # leave-one-out means
    dev = jack.mean() - jack
    den = 6.0 * float((dev ** 2).sum()) ** 1.5
    acc = float((dev ** 3).sum()) / den if den > 0 else 0.0
    out = []
    for a in (alpha, 1.0 - alpha):
        z = z0 + _NORMAL.inv_cdf(a)
        out.append(_NORMAL.cdf(z0 + z / (1.0 - acc * z)))
    return out


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` >= 1 (Abramowitz and Stegun 26.7.3-4:
    a finite series in cos(theta), theta = atan(t / sqrt(df)); exact up to rounding)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        if df > 1:
            total = term
            for k in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * total) if df > 1 else 2.0 * theta / math.pi
    total, term = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


@functools.lru_cache(maxsize=256)
def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| < t) = ``confidence`` for Student's t with ``df`` degrees of freedom
    (bisection on :func:`_t_two_sided`; e.g. 2.262 for 95% at df = 9, 2.045 at df = 29)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df > 2000:  # Cornish-Fisher expansion around the normal quantile (error < 1e-9 there)
        z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
        return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < confidence:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _t_two_sided(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of the finite ``values``: mean -+ t * sd / sqrt(n). One
    value or equal values give a zero-width interval; none gives (nan, nan)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    m = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return m, m
    half = t_quantile(confidence, int(x.size) - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m - half, m + half


def mean_ci(values: Sequence[float], method: str = "t", **kw) -> tuple[float, float]:
    """The 95% interval of the mean the evaluation reports: ``"t"`` (default: Student-t, which
    holds its coverage at 10-100 seeds on this project's per-seed distributions where the
    bootstrap ones under-cover, ``benchmarks/ci_coverage.py``), ``"bca"`` or ``"percentile"``
    (bootstraps, :func:`bootstrap_ci`)."""
    if method == "t":
        return t_interval(values, kw.get("confidence", 0.95))
    return bootstrap_ci(values, method=method, **kw)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% of the finite values (the rliable
    aggregate: robust to one collapsed seed, unlike the median it uses half the data).
    Fractional weights at the quartiles, so that it is defined for any n >= 1."""
    x = np.sort(np.asarray(values, dtype=float)[np.isfinite(np.asarray(values, dtype=float))])
    n = x.size
    if n == 0:
        return math.nan
    lo, hi = 0.25 * n, 0.75 * n
    w = np.clip(np.minimum(np.arange(1, n + 1), hi) - np.maximum(np.arange(n), lo), 0.0, None)
    return float((w * x).sum() / w.sum())


def summarize(values: Sequence[float], **kw) -> dict:
    """``{"mean", "ci95": [lo, hi], "iqm", "per_seed": [...], "n"}``; NaN -> None (JSON null).
    ``kw``: :func:`mean_ci`'s (``method="t"`` by default)."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        mean, ci, q = None, None, None
    else:
        lo, hi = mean_ci(finite, **kw)
        mean, ci, q = float(finite.mean()), [lo, hi], iqm(finite)
    return {"mean": mean, "ci95": ci, "iqm": q, "per_seed": [_json_float(v) for v in x], "n": int(finite.size)}


def paired_difference(a: Sequence[float], b: Sequence[float], **kw) -> dict:
    """Mean of ``a - b`` over seeds where both are finite, with the 95% interval of the mean of
    the per-seed differences (:func:`mean_ci`: Student-t by default), and the probability
    of improvement: the share of those seeds where ``a > b`` (ties count half), with its own
    bootstrap CI (a larger ``a`` is an improvement; for a lower-is-better metric, read
    ``1 - prob_improvement``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    out = summarize(d, **kw)
    f = d[np.isfinite(d)]
    if f.size:
        wins = np.where(f > 0, 1.0, np.where(f == 0, 0.5, 0.0))
        lo, hi = bootstrap_ci(wins, method="percentile")
        out["prob_improvement"] = {"mean": float(wins.mean()), "ci95": [lo, hi]}
    else:
        out["prob_improvement"] = None
    return out


def _json_float(v: float):
    v = float(v)
    return v if math.isfinite(v) else None
