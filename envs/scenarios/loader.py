"""Scenario files: validated YAML describing devices, model zoo, workload, reward and episode.

``load_scenario`` takes a built-in name (``serving-small``), a path to a YAML file, or a dict.
Every missing, unknown or ill-typed key is refused with an error that names the key and the file.
Device types and variants may be written in full or named from the built-in library
(``envs/scenarios/library.yaml``), whose figures are cited in ``docs/profiles.md``.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.config import ConfigError, ScenarioWarning, Section, did_you_mean, load_yaml
from envs.sim.cluster import MAX_DEVICES, Cluster, DeviceSpec
from envs.sim.model import DeviceType, LatencyProfile, ModelVariant
from envs.sim.noise import factor_mean, sigma_for_cv
from envs.workloads import Workload, build_workload
from envs.workloads.traces import TraceWorkload

SCENARIO_DIR = Path(__file__).resolve().parent
LIBRARY_PATH = SCENARIO_DIR / "library.yaml"

#: Keyword arguments that replay a trace instead of the scenario's synthetic workload; the
#: scenario's ``trace_replay`` section supplies the other trace settings.
TRACE_KEYWORDS = ("trace", "time_scale", "trace_window", "on_bad_rows", "max_jobs")

#: Keys of a scenario file's top level (docs/scenarios.md describes each).
TOP_KEYS = ("name", "description", "primary_metric", "device_types", "devices", "variants", "workload",
            "reward", "trace_replay", "horizon", "visible_tasks", "queue_capacity", "drop_expired",
            "noise_cv", "failures", "warmup_s", "batching", "continuous_batching")
#: Keys of one entry of ``devices``.
DEVICE_KEYS = ("type", "count", "node")
#: Keys of a device type (under ``device_types`` or in the library).
DEVICE_TYPE_KEYS = ("memory_gb", "load_bandwidth_gbps", "load_overhead_s", "cost_per_hour", "mtbf_s", "mttr_s")
#: Keys of a variant (in the library, or written in full under ``variants``).
VARIANT_KEYS = ("capability", "accuracy", "memory_gb", "latency", "max_size", "scaling_efficiency", "max_batch",
                "kv_mb_per_token")
#: Keys of the ``batching`` section (dynamic batching of DNN requests).
BATCHING_KEYS = ("sizes",)
#: Keys of the ``continuous_batching`` section (LLM serving, envs.sim.continuous).
CONTINUOUS_KEYS = ("max_batch", "ttft_slo", "tpot_slo")
#: Most batch sizes a scenario may offer (each multiplies the action space).
MAX_BATCH_CHOICES = 8
#: Extra keys of a variant written as a mapping under ``variants``.
VARIANT_ENTRY_KEYS = ("name", "from_library")
#: Keys of the ``reward`` section.
REWARD_KEYS = ("latency", "slo", "drop", "accuracy", "utilization")
#: Keys of the ``trace_replay`` section: the trace workload's, less ``kind`` and ``path``.
TRACE_REPLAY_KEYS = tuple(k for k in TraceWorkload.KEYS if k not in ("kind", "path"))
#: Keyword arguments of ``SchedulingEnv`` / ``gym.make`` besides the scenario's top-level keys.
ENV_KEYWORDS = ("scenario", "render_mode", "invalid_action", "invalid_penalty", "workload_overrides")

#: Metrics a scenario may declare as its primary metric.
PRIMARY_METRICS = ("effective_accuracy", "slo_attainment", "mean_slowdown", "mean_latency",
                   "p99_latency", "goodput", "job_slo_attainment", "job_mean_latency")


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward terms (see the env docstring for the formula)."""

    latency: float = 1.0
    slo: float = 0.0
    drop: float = 1.0
    accuracy: float = 0.0
    utilization: float = 0.0


@dataclass(frozen=True)
class ContinuousBatching:
    """The ``continuous_batching`` section: requests one device holds at most (vLLM's
    ``max_num_seqs``), and the time-to-first-token and time-per-output-token SLOs of the
    ``ttft_slo_attainment`` / ``tpot_slo_attainment`` metrics (None: not measured)."""

    max_batch: int = 64
    ttft_slo: float | None = None
    tpot_slo: float | None = None


@dataclass
class Scenario:
    name: str
    cluster: Cluster
    workload: Workload
    primary_metric: str
    reward: RewardWeights = field(default_factory=RewardWeights)
    visible_tasks: int = 8
    queue_capacity: int = 1024
    drop_expired: bool = False
    noise_cv: float = 0.05
    horizon: float = math.inf
    failures: bool = True
    warmup_s: float = 0.0
    """Warm-up period: tasks arriving before it count in neither the reward nor the metrics
    (:class:`envs.sim.simulator.Simulator` ``warmup``)."""
    batch_sizes: tuple[int, ...] = (1,)
    """Dynamic batching: the numbers of requests one assignment may start together (the
    ``batching.sizes`` key; ``(1,)``: no batching)."""
    continuous: ContinuousBatching | None = None
    """Continuous batching of LLM requests (the ``continuous_batching`` section; None: off)."""
    description: str = ""
    source: str = "<dict>"
    raw: dict = field(default_factory=dict)
    """The scenario as a plain dict (after overrides), for run folders and pickling."""

    @property
    def reference_only(self) -> str | None:
        """The feature that only the reference simulator implements (the batched one refuses
        it by name), or None."""
        if self.batch_sizes != (1,):
            return "dynamic batching"
        if self.continuous is not None:
            return "continuous batching"
        return None


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml") if p.stem != "library")


@functools.lru_cache(maxsize=1)
def _library() -> dict:
    if not LIBRARY_PATH.exists():
        return {"device_types": {}, "variants": {}}
    lib = Section(load_yaml(LIBRARY_PATH) or {}, LIBRARY_PATH.name, ("device_types", "variants"))
    return {"device_types": lib.get("device_types", dict, {}) or {}, "variants": lib.get("variants", dict, {}) or {}}


def library() -> dict:
    """The built-in library: ``{"device_types": {name: mapping}, "variants": {name: mapping}}``
    (a copy)."""
    return copy.deepcopy(_library())


def read_scenario_dict(spec: str | Path | dict) -> tuple[dict, str, Path | None]:
    """Return (raw dict, source name, folder of the file or None) for a built-in name, a YAML
    path or a dict."""
    if isinstance(spec, dict):
        return copy.deepcopy(spec), "<dict>", None
    path = Path(spec)
    if not path.suffix and (SCENARIO_DIR / f"{spec}.yaml").exists() and str(spec) != "library":
        path = SCENARIO_DIR / f"{spec}.yaml"
    if not path.exists():
        raise ConfigError(f"scenario '{spec}' is neither a built-in ({', '.join(builtin_names())}) "
                          f"nor an existing YAML file")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a scenario file must be a mapping at the top level")
    return data, path.name, path.resolve().parent


def load_scenario(spec: str | Path | dict, *, overrides_from: str = "keyword", **overrides: Any) -> Scenario:
    """Load and validate a scenario; ``overrides`` replace top-level keys (e.g. ``horizon=60``).

    ``workload_overrides`` (a dict) is merged into the ``workload`` section. ``trace=PATH``
    (with optional ``time_scale``, ``trace_window=(start_s, end_s)``, ``on_bad_rows``,
    ``max_jobs``) replays a CSV trace on scenarios that have a ``trace_replay`` section.
    Errors in an override name the keyword, introduced by ``overrides_from`` (e.g.
    ``"gym.make keyword"``), rather than the scenario file. A device type of the cluster on
    which no variant can run is reported with a :class:`~envs.config.ScenarioWarning`.
    """
    raw, source, base_dir = read_scenario_dict(spec)
    label = raw["name"] if isinstance(raw.get("name"), str) else source

    def keyword(key: str) -> str:
        return f"{overrides_from} {key} (overriding scenario {label})"

    wl_over = overrides.pop("workload_overrides", None)
    if wl_over is not None and not isinstance(wl_over, dict):
        raise ConfigError(f"{keyword(repr('workload_overrides'))}: expected a mapping of workload keys, "
                          f"got {type(wl_over).__name__} {wl_over!r}")
    trace_args = {k: overrides.pop(k) for k in TRACE_KEYWORDS if k in overrides and overrides[k] is not None}
    for k in TRACE_KEYWORDS:
        overrides.pop(k, None)
    for key in overrides:
        if key not in TOP_KEYS:
            raise ConfigError(f"{keyword(repr(key))}: unknown key"
                              f"{did_you_mean(key, TOP_KEYS + TRACE_KEYWORDS + ENV_KEYWORDS)}")
    if "trace" not in trace_args and trace_args:
        raise ConfigError(f"{source}: {sorted(trace_args)} given without trace=PATH")
    if "trace" in trace_args:
        replay = raw.get("trace_replay")
        if not isinstance(replay, dict):
            raise ConfigError(f"{source}: scenario '{raw.get('name', source)}' does not replay traces "
                              f"(it has no 'trace_replay' section)")
        Section(replay, f"{source}: trace_replay", TRACE_REPLAY_KEYS)
        section = {"kind": "trace", **replay, "path": str(trace_args.pop("trace"))}
        if "trace_window" in trace_args:
            window = trace_args.pop("trace_window")
            window = window.tolist() if hasattr(window, "tolist") else window  # a numpy array
            if not isinstance(window, (list, tuple)):
                raise ConfigError(f"{keyword(repr('trace_window'))}: expected (start_s, end_s), "
                                  f"got {type(window).__name__} {window!r}")
            section["window"] = list(window)
        section.update(trace_args)
        raw["workload"] = section
        base_dir = None  # a trace path given at run time is relative to the working directory
    for key, value in overrides.items():
        raw[key] = value
    wl_origins = {}
    if wl_over:
        raw.setdefault("workload", {})
        if isinstance(raw["workload"], dict):
            raw["workload"] = {**raw["workload"], **wl_over}
            wl_origins = {k: keyword(f"workload_overrides[{k!r}]") for k in wl_over}
    top = Section(raw, source, TOP_KEYS, origins={k: keyword(repr(k)) for k in overrides})
    name = top.get("name", str)
    description = top.get("description", str, "")
    lib = _library()

    # Device types: explicit definitions first, library names on demand.
    type_defs = top.get("device_types", dict, {})
    devices_raw = top.get("devices", list)
    if not devices_raw:
        raise ConfigError(f"{top.loc('devices')}: key 'devices' must list at least one device")
    type_specs: dict[str, DeviceType] = {}

    def device_type(tname: str, where: str) -> DeviceType:
        if tname in type_specs:
            return type_specs[tname]
        if tname in type_defs:
            spec_d, w = type_defs[tname], f"{source}: device_types.{tname}"
        elif tname in lib["device_types"]:
            spec_d, w = lib["device_types"][tname], f"library.yaml: device_types.{tname}"
        else:
            raise ConfigError(f"{where}: unknown device type '{tname}' (define it under device_types "
                              f"or use one of the library's: {sorted(lib['device_types'])})"
                              + did_you_mean(tname, list(type_defs) + list(lib["device_types"])))
        type_specs[tname] = _parse_device_type(tname, spec_d, w)
        return type_specs[tname]

    devices: list[DeviceSpec] = []
    for i, d in enumerate(devices_raw):
        sec = Section(d, f"{source}: devices[{i}]", DEVICE_KEYS)
        tname = sec.get("type", str)
        count = sec.get("count", int, 1, low=1)
        if len(devices) + count > MAX_DEVICES:
            raise ConfigError(f"{sec.loc('count')}: key 'count' ({count}) brings the cluster to "
                              f"{len(devices) + count} devices, more than the {MAX_DEVICES} allowed")
        node = sec.get("node", str, f"node{i}")
        sec.done()
        device_type(tname, sec.where)
        devices.extend(DeviceSpec(tname, node) for _ in range(count))
    for tname in type_defs:
        device_type(tname, f"{source}: device_types")

    variants: list[ModelVariant] = []
    for i, v in enumerate(top.get("variants", list)):
        where = f"{source}: variants[{i}]"
        if isinstance(v, str):
            if v not in lib["variants"]:
                raise ConfigError(f"{where}: unknown library variant '{v}'{did_you_mean(v, lib['variants'])}")
            variants.append(_parse_variant(v, lib["variants"][v], f"library.yaml: variants.{v}"))
        elif isinstance(v, dict):
            entry = Section(v, where, VARIANT_KEYS + VARIANT_ENTRY_KEYS)
            vname = entry.get("name", str)
            base = entry.get("from_library", bool, False)
            vd = {k: x for k, x in v.items() if k not in VARIANT_ENTRY_KEYS}
            if base:
                if vname not in lib["variants"]:
                    raise ConfigError(f"{where}: unknown library variant '{vname}'"
                                      f"{did_you_mean(vname, lib['variants'])}")
                vd = {**lib["variants"][vname], **vd}
            variants.append(_parse_variant(vname, vd, f"{where} ({vname})"))
        else:
            raise ConfigError(f"{where}: a variant is a library name or a mapping, got {v!r}")
    if not variants:
        raise ConfigError(f"{top.loc('variants')}: key 'variants' must list at least one variant")
    names = [v.name for v in variants]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{source}: variants: duplicate name '{sorted(dup)[0]}'")
    used_types = {d.type for d in devices}
    for v in variants:
        for tname in v.profiles:
            if tname not in type_specs and tname not in lib["device_types"]:
                raise ConfigError(f"{source}: variant '{v.name}' has a latency profile for unknown "
                                  f"device type '{tname}'")
    noise_cv = top.get("noise_cv", float, 0.05, low=0.0, high=2.0)
    cluster = Cluster([type_specs[t] for t in type_specs if t in used_types], devices, variants,
                      service_factor=factor_mean(sigma_for_cv(noise_cv)))
    _check_runnable(cluster, source)
    for c in cluster.capabilities:
        try:
            cluster.reference_time(c)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None

    workload = build_workload(top.section("workload", origins=wl_origins), cluster.capabilities,
                              base_dir=base_dir)
    rw = top.section("reward", {}, REWARD_KEYS)
    reward = RewardWeights(**{k: rw.get(k, float, getattr(RewardWeights, k)) for k in REWARD_KEYS})
    rw.done()
    replay = top.get("trace_replay", dict, None)  # used above when trace= is given
    if replay is not None:
        Section(replay, f"{source}: trace_replay", TRACE_REPLAY_KEYS)
    horizon = top.get("horizon", (float, type(None)), None, gt=0.0, allow_inf=True)
    batch_sizes = _parse_batching(top, cluster)
    continuous = _parse_continuous(top, cluster, source)
    if continuous is not None and batch_sizes != (1,):
        raise ConfigError(f"{top.loc('batching')}: 'batching' (dynamic batching of DNN requests) and "
                          f"'continuous_batching' (LLM requests) are exclusive")
    scenario = Scenario(
        name=name, cluster=cluster, workload=workload,
        primary_metric=top.get("primary_metric", str, choices=PRIMARY_METRICS),
        reward=reward,
        visible_tasks=top.get("visible_tasks", int, 8, low=1, high=256),
        queue_capacity=top.get("queue_capacity", int, 1024, low=1),
        drop_expired=top.get("drop_expired", bool, False),
        noise_cv=noise_cv,
        horizon=math.inf if horizon is None else horizon,
        failures=top.get("failures", bool, True),
        warmup_s=top.get("warmup_s", float, 0.0, low=0.0),
        batch_sizes=batch_sizes,
        continuous=continuous,
        description=description, source=source, raw=raw,
    )
    top.done()
    return scenario


def _parse_batching(top: Section, cluster: Cluster) -> tuple[int, ...]:
    """The ``batching`` section: ``sizes``, the numbers of requests an assignment may batch,
    strictly increasing from 1. A size no variant of the scenario can take (every variant's
    ``max_batch`` is smaller) is refused: its actions would always be masked."""
    if not top.has("batching") or top.data["batching"] is None:
        top.get("batching", (dict, type(None)), None)
        return (1,)
    sec = top.section("batching", keys=BATCHING_KEYS)
    where = f"{sec.loc('sizes')}.sizes"
    sizes = sec.get("sizes", list)
    if not sizes or not all(isinstance(x, int) and not isinstance(x, bool) for x in sizes):
        raise ConfigError(f"{where}: must be a non-empty list of integers (requests per batch), got {sizes!r}")
    if sizes[0] != 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ConfigError(f"{where}: must start at 1 and increase strictly, got {sizes!r}")
    if len(sizes) > MAX_BATCH_CHOICES:
        raise ConfigError(f"{where}: at most {MAX_BATCH_CHOICES} batch sizes (each multiplies the action "
                          f"space), got {len(sizes)}")
    largest = float(cluster.var_max_batch.max())
    too_big = [b for b in sizes if b > largest]
    if too_big:
        limits = ", ".join(f"{v.name} {v.max_batch:g}" for v in cluster.variants)
        raise ConfigError(f"{where}: batch size {too_big[0]} is larger than every variant's max_batch "
                          f"({limits}): no variant can take it")
    sec.done()
    return tuple(sizes)


def _parse_continuous(top: Section, cluster: Cluster, source: str) -> ContinuousBatching | None:
    """The ``continuous_batching`` section. Every variant of such a scenario needs
    ``kv_mb_per_token`` (and no variant of another scenario may have it), and one request of the
    variant's ``max_size`` tokens must fit in the KV cache of some device it runs on."""
    has_kv = [v.name for v in cluster.variants if not math.isnan(v.kv_mb_per_token)]
    if not top.has("continuous_batching") or top.data["continuous_batching"] is None:
        top.get("continuous_batching", (dict, type(None)), None)
        if has_kv:
            raise ConfigError(f"{source}: variant '{has_kv[0]}' has kv_mb_per_token (continuous batching) but "
                              f"the scenario has no 'continuous_batching' section")
        return None
    sec = top.section("continuous_batching", keys=CONTINUOUS_KEYS)
    cb = ContinuousBatching(
        max_batch=sec.get("max_batch", int, 64, low=1),
        ttft_slo=sec.get("ttft_slo", (float, type(None)), None, gt=0.0),
        tpot_slo=sec.get("tpot_slo", (float, type(None)), None, gt=0.0),
    )
    sec.done()
    for m, v in enumerate(cluster.variants):
        where = f"{source}: variants.{v.name}"
        if math.isnan(v.kv_mb_per_token):
            raise ConfigError(f"{where}: a continuous_batching scenario needs kv_mb_per_token (KV-cache MB per "
                              f"token) for every variant")
        runs = cluster.var_runs_on[m]
        need = v.kv_mb_per_token * (v.max_size if math.isfinite(v.max_size) else 1.0) / 1000.0
        room = {t.name: t.memory_gb - v.memory_gb for j, t in enumerate(cluster.device_types) if runs[j]}
        if not any(r >= need for r in room.values()):
            what = f"one request of max_size {v.max_size:g} tokens" if math.isfinite(v.max_size) else "one token"
            raise ConfigError(
                f"{where}.kv_mb_per_token: the KV cache of {what} ({need:g} GB) is larger than the memory "
                f"left beside the weights on every device type it runs on: "
                + ", ".join(f"{t} {r:g} GB" for t, r in room.items()))
    return cb


def _check_runnable(cluster: Cluster, source: str) -> None:
    """Refuse a variant that can run on no device type of the cluster; warn about a device
    type of the cluster on which no variant can run (its devices are always masked out)."""
    types = [t.name for t in cluster.device_types]
    memory = {t.name: t.memory_gb for t in cluster.device_types}
    runs = cluster.var_runs_on  # (M, T): profiled there and fits in its memory
    for m, v in enumerate(cluster.variants):
        if runs[m].any():
            continue
        profiled = [t for t in v.profiles if t in memory]
        if not profiled:
            raise ConfigError(
                f"{source}: variant '{v.name}' can run on no device type of the cluster: its latency "
                f"profiles name {sorted(v.profiles)}, the cluster's device types are {types} (add a "
                f"latency profile for one of them, or a device of one of its types)")
        raise ConfigError(
            f"{source}: variant '{v.name}' ({v.memory_gb:g} GB) fits in the memory of none of the "
            f"cluster's device types it has a latency profile for: "
            + ", ".join(f"{t} ({memory[t]:g} GB)" for t in profiled))
    for j, tname in enumerate(types):
        if not runs[:, j].any():
            count = int(cluster.type_count[j])
            warnings.warn(
                f"{source}: device type '{tname}' runs no variant of the scenario (none has a latency "
                f"profile for it that fits its {memory[tname]:g} GB): its {count} device(s) will always "
                f"be masked out", ScenarioWarning, stacklevel=3)


def _parse_device_type(name: str, data: Any, where: str) -> DeviceType:
    sec = Section(data, where, DEVICE_TYPE_KEYS)
    dt = DeviceType(
        name=name,
        memory_gb=sec.get("memory_gb", float, low=1e-6),
        load_bandwidth_gbps=sec.get("load_bandwidth_gbps", float, low=1e-6),
        load_overhead_s=sec.get("load_overhead_s", float, 0.0, low=0.0),
        cost_per_hour=sec.get("cost_per_hour", float, 0.0, low=0.0),
        mtbf_s=sec.get("mtbf_s", float, math.inf, low=1e-6, allow_inf=True),
        mttr_s=sec.get("mttr_s", float, 0.0, low=0.0),
    )
    sec.done()
    return dt


def _parse_variant(name: str, data: Any, where: str) -> ModelVariant:
    sec = Section(data, where, VARIANT_KEYS)
    latency = sec.get("latency", dict)
    profiles = {}
    for tname, coeffs in latency.items():
        ok = isinstance(coeffs, list) and len(coeffs) in (2, 3, 4) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
            for x in coeffs)
        if not ok:
            raise ConfigError(f"{where}: latency.{tname} must be [alpha, beta], [alpha, beta, gamma] or "
                              f"[alpha, beta, gamma, delta] of finite non-negative numbers, got {coeffs!r}")
        if len(coeffs) == 4 and not sec.has("kv_mb_per_token"):
            raise ConfigError(f"{where}: latency.{tname} has a 4th coefficient (delta, the decode slope of "
                              f"continuous batching) but the variant has no kv_mb_per_token")
        if coeffs[0] + coeffs[1] <= 0 and (len(coeffs) < 3 or coeffs[2] <= 0):
            raise ConfigError(f"{where}: latency.{tname} must not be all zero")
        profiles[tname] = LatencyProfile(*map(float, coeffs))
    v = ModelVariant(
        name=name,
        capability=sec.get("capability", str),
        accuracy=sec.get("accuracy", float, low=0.0, high=1.0),
        memory_gb=sec.get("memory_gb", float, low=0.0),
        profiles=profiles,
        max_size=sec.get("max_size", float, math.inf, low=1.0, allow_inf=True),
        scaling_efficiency=sec.get("scaling_efficiency", float, 1.0, low=0.0, high=1.0),
        max_batch=float(sec.get("max_batch", int, low=1)) if sec.has("max_batch") else math.inf,
        kv_mb_per_token=sec.get("kv_mb_per_token", float, gt=0.0) if sec.has("kv_mb_per_token") else math.nan,
    )
    sec.done()
    return v
