"""Summary statistics over seeds: mean, percentile-bootstrap CI, paired differences.

NaN handling: a metric can be NaN for a seed (e.g. ``mean_latency`` when no task completed).
Such seeds are left out of that metric's mean and CI (``n`` says how many seeds were used);
if every seed is NaN the mean and CI are ``None``. Paired differences use the seeds where both
policies have a finite value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Bootstrap defaults: 10,000 resamples, percentile method, fixed seed (reproducible output).
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
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of ``values`` (finite values only).

    Resamples the values with replacement ``n_resamples`` times from a generator seeded with
    ``seed`` and returns the (1 - confidence)/2 and (1 + confidence)/2 percentiles of the
    resampled means. One value gives a zero-width interval; no value gives (nan, nan).
    """
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
    lo_q, hi_q = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(lo_q), float(hi_q)


def summarize(values: Sequence[float], **kw) -> dict:
    """``{"mean", "ci95": [lo, hi], "per_seed": [...], "n"}``; NaN -> None (JSON null)."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        mean, ci = None, None
    else:
        lo, hi = bootstrap_ci(finite, **kw)
        mean, ci = float(finite.mean()), [lo, hi]
    return {"mean": mean, "ci95": ci, "per_seed": [_json_float(v) for v in x], "n": int(finite.size)}


def paired_difference(a: Sequence[float], b: Sequence[float], **kw) -> dict:
    """Mean of ``a - b`` over seeds where both are finite, with its paired-bootstrap 95% CI
    (resampling seeds, i.e. the bootstrap of the per-seed differences)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    return summarize(d, **kw)


def _json_float(v: float):
    v = float(v)
    return v if math.isfinite(v) else None
