"""Trace replay: jobs read from a CSV file, in one of three public formats detected from the
header.

* **Azure LLM inference** (Azure Public Dataset, 2023; CC-BY-4.0): columns ``TIMESTAMP``,
  ``ContextTokens``, ``GeneratedTokens``. One row is one ``text-generation`` request (the
  capability is configurable) with ``size`` = prompt tokens and ``size2`` = output tokens.
* **Philly** (Microsoft, Jeon et al. ATC'19, as published with the Pollux artifact): columns
  ``timestamp``, ``duration``, ``num_gpus`` (more are ignored). One row is one training job.
* **Alibaba openb** pod list (Alibaba clusterdata GPU trace 2023, Weng et al. ATC'23): columns
  ``name``, ``num_gpu``, ``creation_time``, ``deletion_time``, ``scheduled_time`` (more are
  ignored). One row is one training job; rows with ``num_gpu = 0`` are not GPU work and are
  skipped (counted in ``non_gpu_rows_skipped``). Fractional-GPU pods (``gpu_milli < 1000``)
  become one-device jobs.

For training traces, ``devices_required`` = the row's GPU count, clipped to ``max_devices``
(clipped rows counted in ``devices_clipped``); the capability is drawn per job from
``job_types`` (default: every ``train*`` capability of the scenario, uniformly) with the
workload RNG; ``size`` (iterations) is chosen so that the job's run time on one device of the
reference type (the fastest device type for its most accurate variant, see
``WorkloadContext.reference_time``) equals the trace duration (at least one iteration). On n
devices it then runs faster by the variant's data-parallel scaling.

Times. Timestamps are seconds (a number) or wall-clock ``YYYY-MM-DD HH:MM:SS[.fraction]``
(any number of fractional digits, e.g. Azure's 7-digit ``18:15:46.6805900``; an optional
``Z`` or ``+hh:mm`` offset). The *trace origin* is the earliest timestamp among the file's
usable rows. ``trace_window = (start_s, end_s)`` keeps the rows whose offset from the origin
lies in ``[start_s, end_s)`` (trace seconds, before scaling). Arrival times are measured from
the first kept row (which arrives at 0) and divided by ``time_scale``: ``time_scale = 2``
replays the trace twice as fast (inter-arrival gaps halve, the arrival rate doubles);
``time_scale = 0.5`` replays it at half speed. Only arrivals are scaled: service times come from
the scenario's latency profiles. ``max_jobs`` keeps the first jobs in arrival order.

Malformed rows (wrong column count, an unparsable or non-finite number, negative tokens,
durations or GPU counts) raise :class:`ConfigError` naming the file and the 1-based line number,
or with ``on_bad_rows="skip"`` are counted in ``counters["bad_rows_skipped"]``. A file with no
usable row (a header only, or every row skipped), a ``trace_window`` that holds no row, and a
file that is not UTF-8 text (binary, compressed, UTF-16) raise :class:`ConfigError` naming the
file (and the window, or the first line that is not UTF-8). The file is read
once, streaming, with the csv module; the parsed columns are cached on the workload, so resets
only redraw the random parts.
"""

from __future__ import annotations

import csv
import math
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from pathlib import Path

import numpy as np

from envs.config import ConfigError, Section
from envs.sim.model import JobSpec
from envs.workloads.assembly import ContextCache, categorical, gc_paused, make_jobs, single_stages
from envs.workloads.base import GeneratedWorkload, Workload, WorkloadContext
from envs.workloads.distributions import parse_mix

AZURE = "azure-llm"
PHILLY = "philly"
ALIBABA = "alibaba-openb"

#: format -> columns that must all be in the header.
FORMATS: dict[str, tuple[str, ...]] = {
    AZURE: ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    PHILLY: ("timestamp", "duration", "num_gpus"),
    ALIBABA: ("name", "num_gpu", "creation_time", "deletion_time", "scheduled_time"),
}

_EPOCH = datetime(1970, 1, 1)


class _BadRow(Exception):
    pass


def parse_timestamp(text: str) -> float:
    """Seconds from a number or an ISO-like wall-clock time (naive times are taken as UTC).

    Fractions of any length are kept exactly (``datetime`` stops at microseconds)."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise _BadRow(f"timestamp {text!r} is not finite")
        return v
    tz = ""
    if s.endswith("Z"):
        s, tz = s[:-1], "+00:00"
    elif len(s) > 19 and s[-6] in "+-" and s[-3] == ":":
        s, tz = s[:-6], s[-6:]
    frac = 0.0
    if len(s) > 19 and s[19] == ".":
        digits = s[20:]
        if not digits.isdigit():
            raise _BadRow(f"cannot parse timestamp {text!r}")
        frac = int(digits) / 10 ** len(digits)
        s = s[:19]
    try:
        dt = datetime.fromisoformat(s + tz)
    except ValueError:
        raise _BadRow(f"cannot parse timestamp {text!r}") from None
    base = dt.timestamp() if dt.tzinfo is not None else (dt - _EPOCH).total_seconds()
    return base + frac


def _number(text: str, what: str, *, integer: bool = False) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _BadRow(f"{what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise _BadRow(f"{what} {text!r} is not finite")
    if v < 0:
        raise _BadRow(f"{what} {text!r} is negative")
    if integer and v != int(v):
        raise _BadRow(f"{what} {text!r} is not an integer")
    return v


@dataclass
class _Parsed:
    fmt: str
    time: np.ndarray  # raw timestamps (seconds)
    line: np.ndarray  # 1-based line numbers
    a: np.ndarray  # azure: context tokens; training: duration (s)
    b: np.ndarray  # azure: generated tokens; training: devices (after clipping)
    counters: dict[str, int] = field(default_factory=dict)


def _first_undecodable_line(path: Path) -> int:
    """1-based number of the first line of ``path`` that is not UTF-8."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return 1  # (a character split across lines cannot happen in UTF-8)


def detect_format(header: list[str]) -> str | None:
    cols = set(header)
    for fmt, need in FORMATS.items():
        if all(c in cols for c in need):
            return fmt
    return None


class TraceWorkload(Workload):
    """Jobs replayed from a trace CSV (format detected from the header; see the module doc).

    Parameters
    ----------
    path: the CSV file.
    time_scale: arrival times are divided by it; ``> 1`` compresses time (replays faster:
        ``time_scale = 10`` turns a 10 s gap into 1 s and multiplies the arrival rate by 10),
        ``< 1`` stretches it.
    trace_window: ``(start_s, end_s)`` offsets from the trace origin (its earliest timestamp),
        in trace seconds before scaling; rows in ``[start_s, end_s)`` are kept.
    on_bad_rows: ``"error"`` (raise ConfigError naming file and line) or ``"skip"`` (count).
    max_jobs: keep at most this many jobs (the earliest).
    slo_multiplier: SLO = multiplier x ``ctx.reference_time`` of the job.
    capability: capability of Azure LLM requests.
    job_types: ``{capability: weight}`` drawn for training jobs (default: every ``train*``
        capability of the scenario, equal weights).
    max_devices: training jobs needing more GPUs are clipped to this many.
    duration_from: Alibaba only: ``"scheduled"`` (run time = deletion - scheduled; rows never
        scheduled are skipped and counted) or ``"creation"`` (deletion - creation).
    priority: priority weight of every job.
    """

    kind = "trace"
    #: Keys of the workload section.
    KEYS = ("kind", "path", "time_scale", "window", "on_bad_rows", "max_jobs", "slo_multiplier", "capability",
            "job_types", "max_devices", "duration_from", "priority")

    @classmethod
    def config_keys(cls, sec: Section) -> tuple[str, ...]:
        return cls.KEYS

    def __init__(self, path: str | Path, time_scale: float = 1.0,
                 trace_window: tuple[float, float] | None = None, on_bad_rows: str = "error",
                 max_jobs: int | None = None, *, slo_multiplier: float = 5.0,
                 capability: str = "text-generation", job_types: dict[str, float] | None = None,
                 max_devices: int = 8, duration_from: str = "scheduled", priority: float = 1.0):
        self.path = Path(path)
        if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
            raise ConfigError(f"{self.path}: time_scale must be a positive number, got {time_scale!r}")
        if trace_window is not None:
            if len(trace_window) != 2 or not trace_window[0] < trace_window[1] or trace_window[0] < 0:
                raise ConfigError(f"{self.path}: trace_window must be (start_s, end_s) with "
                                  f"0 <= start_s < end_s, got {trace_window!r}")
            trace_window = (float(trace_window[0]), float(trace_window[1]))
        if on_bad_rows not in ("error", "skip"):
            raise ConfigError(f"{self.path}: on_bad_rows must be 'error' or 'skip', got {on_bad_rows!r}")
        if max_jobs is not None and max_jobs < 1:
            raise ConfigError(f"{self.path}: max_jobs must be >= 1, got {max_jobs!r}")
        if max_devices < 1:
            raise ConfigError(f"{self.path}: max_devices must be >= 1, got {max_devices!r}")
        if duration_from not in ("scheduled", "creation"):
            raise ConfigError(f"{self.path}: duration_from must be 'scheduled' or 'creation', got {duration_from!r}")
        if not slo_multiplier > 0:
            raise ConfigError(f"{self.path}: slo_multiplier must be > 0, got {slo_multiplier!r}")
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: trace file not found")
        self.time_scale = float(time_scale)
        self.trace_window = trace_window
        self.on_bad_rows = on_bad_rows
        self.max_jobs = max_jobs
        self.slo_multiplier = float(slo_multiplier)
        self.capability = capability
        self.job_types = job_types
        self.max_devices = int(max_devices)
        self.duration_from = duration_from
        self.priority = float(priority)
        self._data: _Parsed | None = None
        self._arrivals: np.ndarray | None = None
        self._rows: np.ndarray | None = None  # indices into the parsed columns, in arrival order
        self._select_counters: dict[str, int] = {}

    # ------------------------------------------------------------------ parsing
    @property
    def format(self) -> str:
        return self._load()[0].fmt

    def _load(self) -> tuple[_Parsed, np.ndarray, np.ndarray, dict[str, int]]:
        if self._data is None:
            self._data = self._parse()
            self._select()
        return self._data, self._rows, self._arrivals, self._select_counters

    def _parse(self) -> _Parsed:
        try:
            return self._parse_text()
        except UnicodeDecodeError as e:
            line = _first_undecodable_line(self.path)
            raise ConfigError(f"{self.path}:{line}: not UTF-8 text ({e.reason}); a trace is a UTF-8 CSV file "
                              f"(is this a binary, compressed or UTF-16 file?)") from None

    def _parse_text(self) -> _Parsed:
        path, skip = self.path, self.on_bad_rows == "skip"
        times, lines, col_a, col_b = array("d"), array("q"), array("d"), array("d")
        counters = {"bad_rows_skipped": 0}
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise ConfigError(f"{path}: empty file (no header)") from None
            except csv.Error as e:
                raise ConfigError(f"{path}:1: unreadable header: {e}") from None
            header = [h.strip() for h in header]
            if any("\x00" in h for h in header):
                raise ConfigError(f"{path}:1: the header holds NUL characters; a trace is a UTF-8 CSV file "
                                  f"(is this a binary or UTF-16 file?)")
            fmt = detect_format(header)
            if fmt is None:
                raise ConfigError(
                    f"{path}: unrecognised trace header; columns found: {header}; expected the columns "
                    + "; or ".join(f"{k} ({', '.join(v)})" for k, v in FORMATS.items()))
            ncol = len(header)
            idx = {c: header.index(c) for c in FORMATS[fmt]}
            if fmt == ALIBABA:
                counters.update(non_gpu_rows_skipped=0, unscheduled_skipped=0, unfinished_skipped=0,
                                devices_clipped=0)
            elif fmt == PHILLY:
                counters.update(non_gpu_rows_skipped=0, devices_clipped=0)
            max_dev = float(self.max_devices)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    if not skip:
                        raise ConfigError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
                    counters["bad_rows_skipped"] += 1
                    continue
                if not row:
                    continue  # blank line
                line = reader.line_num
                try:
                    if len(row) != ncol:
                        raise _BadRow(f"expected {ncol} columns, found {len(row)}")
                    if fmt == AZURE:
                        t = parse_timestamp(row[idx["TIMESTAMP"]])
                        a = _number(row[idx["ContextTokens"]], "ContextTokens", integer=True)
                        b = _number(row[idx["GeneratedTokens"]], "GeneratedTokens", integer=True)
                    elif fmt == PHILLY:
                        t = parse_timestamp(row[idx["timestamp"]])
                        a = _number(row[idx["duration"]], "duration")
                        b = _number(row[idx["num_gpus"]], "num_gpus", integer=True)
                        if b == 0:
                            counters["non_gpu_rows_skipped"] += 1
                            continue
                        if b > max_dev:
                            counters["devices_clipped"] += 1
                            b = max_dev
                    else:
                        t = _number(row[idx["creation_time"]], "creation_time")
                        b = _number(row[idx["num_gpu"]], "num_gpu", integer=True)
                        dele = row[idx["deletion_time"]].strip()
                        sched = row[idx["scheduled_time"]].strip()
                        if b == 0:
                            counters["non_gpu_rows_skipped"] += 1
                            continue
                        if not dele:
                            counters["unfinished_skipped"] += 1
                            continue
                        end = _number(dele, "deletion_time")
                        if self.duration_from == "scheduled":
                            if not sched:
                                counters["unscheduled_skipped"] += 1
                                continue
                            start = _number(sched, "scheduled_time")
                        else:
                            start = t
                        a = end - start
                        if a < 0:
                            raise _BadRow(f"deletion_time {dele} is before the {self.duration_from} time")
                        if b > max_dev:
                            counters["devices_clipped"] += 1
                            b = max_dev
                except _BadRow as e:
                    if not skip:
                        raise ConfigError(f"{path}:{line}: {e} (set on_bad_rows: skip to ignore bad rows)") from None
                    counters["bad_rows_skipped"] += 1
                    continue
                times.append(t)
                lines.append(line)
                col_a.append(a)
                col_b.append(b)
        return _Parsed(fmt, np.frombuffer(times, dtype=float) if times else np.empty(0),
                       np.frombuffer(lines, dtype=np.int64) if lines else np.empty(0, dtype=np.int64),
                       np.frombuffer(col_a, dtype=float) if col_a else np.empty(0),
                       np.frombuffer(col_b, dtype=float) if col_b else np.empty(0), counters)

    def _select(self) -> None:
        d = self._data
        counters: dict[str, int] = {}
        if len(d.time) == 0:
            skipped = {k: v for k, v in d.counters.items() if v}
            raise ConfigError(f"{self.path}: no usable rows: "
                              + (f"every row was skipped ({skipped})" if skipped else
                                 "the file has a header and no data rows"))
        offset = d.time - d.time.min()
        keep = np.ones(len(offset), dtype=bool)
        if self.trace_window is not None:
            lo, hi = self.trace_window
            keep = (offset >= lo) & (offset < hi)
        counters["rows_outside_window"] = int((~keep).sum())
        rows = np.flatnonzero(keep)
        if not len(rows):
            raise ConfigError(f"{self.path}: trace_window [{lo:g}, {hi:g}) s holds no rows: the "
                              f"{len(offset)} usable rows lie {offset.min():g} to {offset.max():g} s "
                              f"after the trace origin")
        order = np.lexsort((d.line[rows], offset[rows]))  # by time, ties in file order
        rows = rows[order]
        counters["rows_beyond_max_jobs"] = 0
        if self.max_jobs is not None and len(rows) > self.max_jobs:
            counters["rows_beyond_max_jobs"] = len(rows) - self.max_jobs
            rows = rows[: self.max_jobs]
        arr = offset[rows]
        if len(arr):
            arr = (arr - arr[0]) / self.time_scale
        self._rows, self._arrivals, self._select_counters = rows, arr, counters

    @property
    def horizon_hint(self) -> float | None:
        _, _, arrivals, _ = self._load()
        return float(arrivals[-1]) if len(arrivals) else 0.0

    # ------------------------------------------------------------------ jobs
    def generate(self, rng: np.random.Generator, ctx: WorkloadContext) -> GeneratedWorkload:
        d, rows, arrivals, sel_counters = self._load()
        counters = {**d.counters, **sel_counters}
        if d.fmt == AZURE:
            jobs = list(self._azure_jobs(ctx))  # (a copy: the caller owns its list)
        else:
            mix = self._job_types(ctx)
            caps = list(mix)
            p = np.array([mix[c] for c in caps], dtype=float)
            cap_idx = categorical(rng, p / p.sum(), len(rows))  # == rng.choice(len(caps), size=len(rows), p=...)
            # Linear profile of the reference execution: time(size) = alpha + beta * size.
            lin = {}
            ref = ContextCache.of(self, ctx).reference_time
            for c in caps:
                t1, t2 = ref(c, 1.0, 0.0), ref(c, 2.0, 0.0)
                beta = t2 - t1
                if not beta > 0:
                    raise ConfigError(f"{self.path}: capability '{c}' has no per-iteration time "
                                      f"(reference time does not grow with size)")
                lin[c] = (t1 - beta, beta)
            alpha = np.array([lin[c][0] for c in caps])[cap_idx]
            beta = np.array([lin[c][1] for c in caps])[cap_idx]
            size = np.maximum(1.0, np.rint((d.a[rows] - alpha) / beta))
            slo = (self.slo_multiplier * (alpha + beta * size)).tolist()
            size, ndev = size.tolist(), d.b[rows].astype(int).tolist()
            cap_names = [caps[i] for i in cap_idx.tolist()]
            with gc_paused():
                stages = single_stages(cap_names, size, repeat(0.0), ndev, repeat(0.0))
                jobs = make_jobs(arrivals.tolist(), stages, slo, repeat(self.priority), self._sources())
        counters["trace_jobs"] = len(jobs)
        return GeneratedWorkload(jobs, counters)

    def _sources(self) -> list[str]:
        """``file:line`` of each job (in arrival order), built once."""
        if getattr(self, "_source_list", None) is None:
            d, rows, _, _ = self._load()
            name = self.path.name
            self._source_list = [f"{name}:{line}" for line in d.line[rows].tolist()]
        return self._source_list

    def _azure_jobs(self, ctx: WorkloadContext) -> list[JobSpec]:
        """The jobs of an Azure LLM trace: no randomness, so built once per context."""
        cache = ContextCache.of(self, ctx)
        jobs = cache.memo.get("azure_jobs")
        if jobs is not None:
            return jobs
        cap = self.capability
        if cap not in ctx.capabilities:
            raise ConfigError(f"{self.path}: capability '{cap}' has no variant in the scenario "
                              f"(known: {list(ctx.capabilities)})")
        d, rows, arrivals, _ = self._load()
        sizes, sizes2 = d.a[rows], d.b[rows]
        slos = (self.slo_multiplier * cache.reference_times(cap, sizes, sizes2)).tolist()
        with gc_paused():
            stages = single_stages(repeat(cap), sizes.tolist(), sizes2.tolist(), repeat(1), repeat(0.0))
            jobs = make_jobs(arrivals.tolist(), stages, slos, repeat(self.priority), self._sources())
        return cache.remember("azure_jobs", jobs)

    def _job_types(self, ctx: WorkloadContext) -> dict[str, float]:
        if self.job_types is not None:
            return parse_mix(self.job_types, f"{self.path}: job_types", ctx.capabilities)
        caps = [c for c in ctx.capabilities if c.startswith("train")]
        if not caps:
            raise ConfigError(f"{self.path}: a training trace needs 'job_types' or a scenario with "
                              f"'train*' capabilities (known: {list(ctx.capabilities)})")
        return dict.fromkeys(caps, 1.0)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, sec: Section, capabilities: tuple[str, ...],
                    base_dir: str | Path | None = None) -> TraceWorkload:
        """Keys: ``path`` (relative paths are resolved against ``base_dir``, else the working
        directory), ``time_scale``, ``window: [start_s, end_s]``, ``on_bad_rows``, ``max_jobs``,
        ``slo_multiplier``, ``capability``, ``job_types``, ``max_devices``, ``duration_from``,
        ``priority``."""
        raw_path = sec.get("path", str)
        path = Path(raw_path).expanduser()
        if not path.is_absolute() and base_dir is not None and (Path(base_dir) / path).exists():
            path = Path(base_dir) / path
        if not path.is_file():
            raise ConfigError(f"{sec.where}.path: trace file '{raw_path}' not found")
        window = sec.get("window", list, None)
        if window is not None:
            if len(window) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window) \
                    or not 0 <= window[0] < window[1]:
                raise ConfigError(f"{sec.where}.window: expected [start_s, end_s] with 0 <= start_s < end_s, "
                                  f"got {window!r}")
            window = (float(window[0]), float(window[1]))
        job_types = sec.get("job_types", dict, None)
        if job_types is not None:
            job_types = parse_mix(job_types, f"{sec.where}.job_types", capabilities)
        capability = sec.get("capability", str, "text-generation")
        try:
            return cls(
                path, time_scale=sec.get("time_scale", float, 1.0, low=1e-12), trace_window=window,
                on_bad_rows=sec.get("on_bad_rows", str, "error", choices=("error", "skip")),
                max_jobs=sec.get("max_jobs", int, None, low=1),
                slo_multiplier=sec.get("slo_multiplier", float, 5.0, low=1.0),
                capability=capability, job_types=job_types,
                max_devices=sec.get("max_devices", int, 8, low=1),
                duration_from=sec.get("duration_from", str, "scheduled", choices=("scheduled", "creation")),
                priority=sec.get("priority", float, 1.0, low=0.0),
            )
        except ConfigError as e:
            raise ConfigError(f"{sec.where}: {e}") from None

