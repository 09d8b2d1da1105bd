"""Fast, exact assembly of job lists (shared by the synthetic generators and trace replay).

Workloads are generated at every reset, so the per-job Python work matters. The helpers here
keep it to building one :class:`JobSpec` per job; everything else is vectorised or done once
per *distinct* stage:

* :func:`categorical` draws like ``rng.choice(k, size=n, p=p)`` without its argument checks;
* :func:`group_rows` finds the rows (jobs) whose stage fields are equal, so that a stage (and
  its reference time) is built once per distinct value and shared by the jobs that have it
  (stages are immutable tuples, so sharing them is invisible to users);
* :class:`ContextCache` keeps ``ctx.reference_time`` (and what a workload derives from it)
  across resets: it depends only on the cluster, which never changes after it is built;
  where many distinct sizes would miss it (LLM token counts, training iterations, continuous
  sizes), :meth:`ContextCache.reference_times` computes them in one vectorised
  ``ctx.reference_times`` call instead (:meth:`envs.sim.cluster.Cluster.reference_times`,
  the same floats as the scalar method);
* :func:`single_stages` builds the 1-tuples of stages of single-stage jobs in C loops;
* :func:`make_jobs` builds the :class:`JobSpec` tuples with ``tuple.__new__``, skipping the
  namedtuple's Python-level ``__new__`` (about 3x faster, identical objects).

All of it produces the same jobs, bit for bit, as the straightforward per-job loops it replaced.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from itertools import repeat

import numpy as np

from envs.sim.model import JobSpec, StageSpec

# tuple.__new__ fills the fields by position: fail loudly here if the field order changes.
_JOB_FIELDS = ("arrival", "stages", "slo", "priority", "source")
_STAGE_FIELDS = ("capability", "size", "size2", "parents", "devices_required", "min_accuracy")
if JobSpec._fields != _JOB_FIELDS or StageSpec._fields != _STAGE_FIELDS:  # pragma: no cover
    raise ImportError(f"envs.workloads.assembly expects JobSpec fields {_JOB_FIELDS} and StageSpec fields "
                      f"{_STAGE_FIELDS}; update it to {JobSpec._fields} / {StageSpec._fields}")

_new = new_tuple = tuple.__new__  # new_tuple(JobSpec or StageSpec, fields): see make_jobs
_EXACT_INT = 2.0 ** 53  # every integer of smaller magnitude is a float
#: From this many sizes on, :meth:`ContextCache.reference_times` computes them in one vectorised
#: call (a few microseconds of numpy overhead) instead of one cached call each (~0.3 us on a hit).
BULK_MIN = 32
NO_SOURCE: str = JobSpec._field_defaults["source"]


def stage(capability: str, size: float, size2: float = 0.0, parents: tuple[int, ...] = (),
          devices_required: int = 1, min_accuracy: float = 0.0) -> StageSpec:
    """``StageSpec(...)`` by position, without the namedtuple's Python-level ``__new__``."""
    return _new(StageSpec, (capability, size, size2, parents, devices_required, min_accuracy))


def single_stages(capabilities: Iterable[str], sizes: Iterable[float], sizes2: Iterable[float],
                  devices_required: Iterable[int], min_accuracy: Iterable[float]) -> list[tuple[StageSpec]]:
    """``[(stage(c, s1, s2, (), nd, acc),) for ...]`` over equal-length iterables (use
    ``itertools.repeat`` for a constant field): the stage tuples of single-stage jobs, built
    without a Python-level loop."""
    return list(zip(map(_new, repeat(StageSpec), zip(capabilities, sizes, sizes2, repeat(()), devices_required,
                                                      min_accuracy))))


def make_jobs(arrivals: Iterable[float], stages: Iterable[tuple[StageSpec, ...]], slos: Iterable[float],
              priorities: Iterable[float], sources: Iterable[str] | None = None) -> list[JobSpec]:
    """``[JobSpec(a, st, slo, prio, src) for ...]`` over equal-length iterables (plain lists of
    Python floats are fastest), built with ``tuple.__new__``. ``sources=None``: no source."""
    if sources is None:
        sources = repeat(NO_SOURCE)
    return list(map(_new, repeat(JobSpec), zip(arrivals, stages, slos, priorities, sources)))


def categorical(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with probabilities ``p`` (non-negative, summing to 1).

    Identical to ``rng.choice(len(p), size=n, p=p)`` (same values, dtype and use of ``rng``):
    this is numpy's algorithm for sampling with replacement, one uniform per draw mapped
    through the CDF, without the argument checks, which cost more than the draws for the few
    categories of a workload (weights are validated when the scenario is parsed).
    ``tests/test_workload_speed_identity.py`` checks the equivalence with ``rng.choice``."""
    u = rng.random(n)
    if len(p) == 1:
        return np.zeros(n, dtype=np.intp)  # (u < 1 = cdf[0]: always index 0)
    cdf = p.cumsum()
    cdf /= cdf[-1]
    return cdf.searchsorted(u, side="right")


def group_rows(columns: Sequence[np.ndarray], n: int, max_span: int | None = None
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """Group the ``n`` rows of ``columns`` (1-d arrays, int or float) by equal values.

    Returns ``(rep, inv)``: ``rep[g]`` is (the index of) one row of group ``g`` and ``inv[j]``
    the group of row ``j``; rows share a group exactly when every column holds the same value
    (floats compared bit for bit). Works by giving each row a mixed-radix integer code, which
    needs integer-valued columns (sizes usually are) with a small combined range; returns
    ``None`` otherwise (e.g. continuous sizes: then groups would be single rows anyway).
    """
    if max_span is None:
        max_span = 4 * n + 256
    code: np.ndarray | int = 0
    span = 1
    for col in columns:
        lo, hi = col.min(), col.max()
        if not hi - lo < max_span:  # also rejects NaN
            return None
        if col.dtype.kind == "f":
            if lo == hi and lo != 0.0:
                continue  # one non-zero value: all rows equal bit for bit, nothing to code
            if lo <= 0.0 and np.signbit(col).any():
                return None  # -0.0 == 0.0 would merge two different bit patterns
            if not (-_EXACT_INT < lo and hi < _EXACT_INT):
                return None  # (beyond this floats are not all integers and casts may overflow)
            ints = col.astype(np.int64)
            if not (ints == col).all():
                return None
            lo = int(lo)
        else:
            ints = col
        width = int(hi - lo) + 1
        span *= width
        if span > max_span:
            return None
        code = code * width + (ints - lo)
    if isinstance(code, int):  # every column constant: one group
        return np.zeros(1, dtype=np.intp), np.zeros(n, dtype=np.intp)
    present = np.zeros(span, dtype=bool)
    present[code] = True
    codes = np.flatnonzero(present)
    remap = np.empty(span, dtype=np.intp)
    remap[codes] = np.arange(len(codes))
    inv = remap[code]
    rep = np.empty(len(codes), dtype=np.intp)
    rep[inv] = np.arange(n)  # any member represents its group (they are all equal)
    return rep, inv


def object_array(items: Sequence) -> np.ndarray:
    """A 1-d object array holding ``items`` as they are (``np.array`` would unpack tuples)."""
    arr = np.empty(len(items), dtype=object)
    for i, obj in enumerate(items):
        arr[i] = obj
    return arr


def spread(per_group: list, inv: np.ndarray | None) -> list:
    """``[per_group[g] for g in inv]`` (``per_group`` itself when ``inv`` is None), for objects
    such as stage tuples (for floats, index a float array and call ``tolist``)."""
    if inv is None:
        return per_group
    return object_array(per_group)[inv].tolist()


class ContextCache:
    """What a workload derives from its context alone, kept across resets (the context is the
    cluster, which does not change once built): reference times (:meth:`reference_time`) and
    any other values the workload wants to remember (:attr:`memo`).

    Bounded: each dict is cleared when it reaches ``max_entries``, so that continuous sizes
    cannot grow it without limit (clearing only costs recomputation)."""

    __slots__ = ("ctx", "refs", "memo", "max_entries")

    def __init__(self, ctx, max_entries: int = 1 << 14):
        self.ctx = ctx
        self.refs: dict[tuple[str, float, float], float] = {}
        self.memo: dict = {}
        self.max_entries = max_entries

    @classmethod
    def of(cls, owner: object, ctx) -> ContextCache:
        """The cache kept on ``owner`` (a workload) for ``ctx``; a new one if ``ctx`` changed."""
        cache = getattr(owner, "_ctx_cache", None)
        if cache is None or cache.ctx is not ctx:
            cache = cls(ctx)
            owner._ctx_cache = cache
        return cache

    def reference_time(self, capability: str, size: float, size2: float = 0.0) -> float:
        """``ctx.reference_time(capability, size, size2)``, computed once per argument."""
        key = (capability, size, size2)
        ref = self.refs.get(key)
        if ref is None:
            if len(self.refs) >= self.max_entries:
                self.refs.clear()
            ref = self.refs[key] = self.ctx.reference_time(capability, size, size2)
        return ref

    def reference_times(self, capability: str, sizes: np.ndarray, sizes2: np.ndarray | float = 0.0) -> np.ndarray:
        """``[ctx.reference_time(capability, s1, s2) for s1, s2 in zip(sizes, sizes2)]`` as a
        float64 array, with the same floats: for many sizes (mostly distinct, where the
        per-argument cache would miss), one vectorised ``ctx.reference_times`` call (see
        :meth:`envs.sim.cluster.Cluster.reference_times`); for a few, or with a context that
        lacks it, :meth:`reference_time` (cached) per element. ``sizes2`` is an array of the
        same length or one number."""
        vec = getattr(self.ctx, "reference_times", None)
        if vec is not None and len(sizes) >= BULK_MIN:
            return vec(capability, sizes, sizes2)
        ref = self.reference_time
        s1 = sizes.tolist()
        if isinstance(sizes2, (int, float)):
            return np.array([ref(capability, a, sizes2) for a in s1], dtype=np.float64)
        return np.array([ref(capability, a, b) for a, b in zip(s1, sizes2.tolist())], dtype=np.float64)

    def reference_times_of(self, capabilities: Sequence[str], cap_index: np.ndarray, sizes: np.ndarray,
                           sizes2: np.ndarray | float = 0.0) -> np.ndarray:
        """``out[j] = ctx.reference_time(capabilities[cap_index[j]], sizes[j], sizes2[j])`` for
        rows of mixed capabilities, with the same floats: one :meth:`reference_times` per
        capability, or for a few rows one cached call each."""
        n = len(cap_index)
        if n < BULK_MIN or getattr(self.ctx, "reference_times", None) is None:
            ref = self.reference_time
            s2 = repeat(sizes2) if isinstance(sizes2, (int, float)) else sizes2.tolist()
            return np.array([ref(capabilities[c], a, b) for c, a, b in zip(cap_index.tolist(), sizes.tolist(), s2)],
                            dtype=np.float64)
        out = np.empty(n)
        for i, cap in enumerate(capabilities):
            sel = np.flatnonzero(cap_index == i)
            if len(sel):
                out[sel] = self.reference_times(cap, sizes[sel],
                                                sizes2 if isinstance(sizes2, (int, float)) else sizes2[sel])
        return out

    def remember(self, key, value):
        """Store ``memo[key] = value`` and return ``value``."""
        if len(self.memo) >= self.max_entries:
            self.memo.clear()
        self.memo[key] = value
        return value


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while building many small immutable objects (halves
    the time to build a large trace's jobs); the previous state is restored."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
