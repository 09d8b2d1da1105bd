"""``python -m envs``: list the built-in library and scenarios, or show a resolved scenario.

    python -m envs list devices      # device types of envs/scenarios/library.yaml
    python -m envs list variants     # model variants of the library
    python -m envs list scenarios    # built-in scenarios, their gym ids and primary metrics
    python -m envs show SCENARIO     # a built-in name or a YAML path, resolved and validated

Imports neither gymnasium nor torch (only the simulator core). Key reference: docs/scenarios.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import envs
from envs.config import ConfigError
from envs.scenarios.load import offered_load
from envs.scenarios.loader import (
    _parse_device_type,
    _parse_variant,
    builtin_names,
    library,
    load_scenario,
    read_scenario_dict,
)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def list_devices() -> str:
    rows = []
    for name, spec in library()["device_types"].items():
        t = _parse_device_type(name, spec, f"library.yaml: device_types.{name}")
        rows.append([name, _num(t.memory_gb), _num(t.load_bandwidth_gbps), _num(t.load_overhead_s),
                     _num(t.cost_per_hour), _num(t.mtbf_s), _num(t.mttr_s)])
    return _table(["name", "memory_gb", "load_GB/s", "load_overhead_s", "$/hour", "mtbf_s", "mttr_s"], rows)


def list_variants() -> str:
    rows = []
    for name, spec in library()["variants"].items():
        v = _parse_variant(name, spec, f"library.yaml: variants.{name}")
        rows.append([name, v.capability, f"{v.accuracy:g}", _num(v.memory_gb), _num(v.max_size),
                     ",".join(v.profiles)])
    return _table(["name", "capability", "accuracy", "memory_gb", "max_size", "profiled on"], rows)


def list_scenarios() -> str:
    rows = []
    for name in builtin_names():
        raw, _, _ = read_scenario_dict(name)
        desc = str(raw.get("description", "")).strip().splitlines()
        rows.append([name, envs.env_id(name), str(raw.get("primary_metric", "")), desc[0] if desc else ""])
    return _table(["name", "gym id", "primary metric", "description"], rows)


def show(spec: str) -> str:
    sc = load_scenario(spec)
    cl = sc.cluster
    out = [f"scenario {sc.name} ({sc.source})"]
    if sc.name in builtin_names():
        out.append(f"gym id: {envs.env_id(sc.name)}")
    if sc.description:
        out.append(f"description: {sc.description.strip()}")
    out.append(f"primary metric: {sc.primary_metric}; horizon: {_num(sc.horizon)} s; visible_tasks: "
               f"{sc.visible_tasks}; queue_capacity: {sc.queue_capacity}; drop_expired: {sc.drop_expired}; "
               f"noise_cv: {sc.noise_cv:g} (mean service-time factor {sc.cluster.service_factor:.3f}); "
               f"failures: {sc.failures}; warmup_s: {sc.warmup_s:g}")
    out.append(f"action space: Discrete({sc.visible_tasks * cl.num_slots * cl.num_devices + 1}) "
               f"(K={sc.visible_tasks} x V={cl.num_slots} x D={cl.num_devices} + wait)")
    w = sc.reward
    out.append(f"reward weights: latency {w.latency:g}, slo {w.slo:g}, drop {w.drop:g}, accuracy {w.accuracy:g}, "
               f"utilization {w.utilization:g}")
    out.append("")
    out.append(f"devices ({cl.num_devices}):")
    rows = []
    for j, t in enumerate(cl.device_types):
        nodes = sorted({cl.nodes[d] for d in range(cl.num_devices) if cl.dev_type[d] == j})
        rows.append([t.name, str(int(cl.type_count[j])), ",".join(nodes), _num(t.memory_gb),
                     _num(t.load_bandwidth_gbps), _num(t.mtbf_s), _num(t.mttr_s)])
    out.append(_table(["type", "count", "nodes", "memory_gb", "load_GB/s", "mtbf_s", "mttr_s"], rows))
    out.append("")
    out.append(f"variants ({cl.num_variants}, {cl.num_caps} capabilities):")
    types = [t.name for t in cl.device_types]
    rows = []
    for m, v in enumerate(cl.variants):
        runs = [types[j] for j in range(cl.num_types) if cl.var_runs_on[m, j]]
        rows.append([v.name, v.capability, f"{v.accuracy:g}", _num(v.memory_gb), ",".join(runs)])
    out.append(_table(["name", "capability", "accuracy", "memory_gb", "runs on"], rows))
    out.append("")
    wl = sc.workload
    wraw = sc.raw.get("workload", {}) if isinstance(sc.raw.get("workload"), dict) else {}
    out.append(f"workload: {wraw.get('kind', type(wl).__name__)} ({type(wl).__name__})")
    for key, value in wraw.items():
        if key == "templates" and isinstance(value, list):
            out.append(f"  templates ({len(value)}):")
            for t in value:
                t = t if isinstance(t, dict) else {}
                stages = [st.get("capability", "?") for st in t.get("stages", []) if isinstance(st, dict)]
                out.append(f"    {t.get('name', '')} (weight {t.get('weight', 1.0)}): {' / '.join(stages)}")
        elif isinstance(value, dict) and any(isinstance(x, dict) for x in value.values()):
            out.append(f"  {key}:")
            out.extend(f"    {k}: {x}" for k, x in value.items())
        elif key != "kind":
            out.append(f"  {key}: {value}")
    try:
        load = offered_load(sc)
    except ValueError as e:  # (a capability no device can serve: refused elsewhere with its name)
        out.append(f"offered load: not computed ({e})")
    else:
        out.append(f"offered load (work / capacity over {load['span_s']:.4g} s of arrivals, mean of 8 episodes, "
                   f"service noise included): {load['median']:.1%} with the median-accuracy variants, "
                   f"{load['fastest']:.1%} with the fastest, {load['most_accurate']:.1%} with the most accurate")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m envs",
        description="List the built-in device types, model variants and scenarios of modelsched, or show "
                    "a resolved scenario. Scenario keys: docs/scenarios.md.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list device types, variants or scenarios",
                            description="List the library's device types or variants, or the built-in scenarios.")
    p_list.add_argument("what", choices=("devices", "variants", "scenarios"))
    p_show = sub.add_parser("show", help="show a scenario resolved and validated",
                            description="Load a scenario (built-in name or YAML path) and print its devices, "
                                        "variants and workload.")
    p_show.add_argument("scenario", help="built-in name (e.g. serving-small) or path to a YAML file")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            text = {"devices": list_devices, "variants": list_variants, "scenarios": list_scenarios}[args.what]()
        else:
            text = show(args.scenario)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        print(text)
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
