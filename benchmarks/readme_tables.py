"""Write the README's generated result sections from the files the commands wrote.

Each section lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` and is generated,
never typed: run the command, then this script.

* ``heuristics-200`` (default) and ``planner``: tables from an ``evaluate.py`` results.json
  (several scenarios, or one);
* ``demo``: the final table of a ``train.py`` run folder (``final_eval.json`` and
  ``train_summary.json``), e.g. the one ``make demo`` writes;
* ``agent-study`` and ``agent-study-dagger``: the table of a ``benchmarks/agent_study.py`` run
  (its ``summary.json``).

``make results`` runs every command and this script for each section.

    .venv/bin/python evaluate.py --scenario serving-small --scenario serving-hetero --scenario llm-serving \\
        --scenario pipelines --scenario faulty-cluster --scenario training-cluster \\
        --policies all --exclude genetic planner --seeds 1000-1199 --backend batched --out results/heuristics-200
    .venv/bin/python benchmarks/readme_tables.py results/heuristics-200/results.json        # rewrites README.md
    .venv/bin/python benchmarks/readme_tables.py results/heuristics-200/results.json --print
    .venv/bin/python benchmarks/readme_tables.py results/planner-30/results.json --section planner
    .venv/bin/python benchmarks/readme_tables.py results/batching-30/results.json --section batching
    .venv/bin/python benchmarks/readme_tables.py results/continuous-30/results.json --section continuous
    .venv/bin/python benchmarks/readme_tables.py runs/demo/<run> --section demo
    .venv/bin/python benchmarks/readme_tables.py results/agent-study/summary.json --section agent-study
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("heuristics-200", "planner", "batching", "continuous", "demo", "agent-study", "agent-study-dagger")


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


def _num(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def _signed(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.4f}"


def tables(results: dict) -> str:
    out = []
    for s in results["scenarios"] if "scenarios" in results else [results]:
        metric, best = s["primary_metric"], s["best_heuristic"]
        better = "higher" if s["primary_higher_is_better"] else "lower"
        sign = 1.0 if s["primary_higher_is_better"] else -1.0
        pols = s["policies"]
        order = sorted(pols, key=lambda n: -sign * pols[n]["metrics"][metric]["mean"])
        n = pols[order[0]]["metrics"][metric]["n"]
        out.append(f"**{s['scenario']}** ({metric}, {better} is better; best heuristic `{best}`; {n} seeds)\n")
        out.append(f"| policy | {metric} [95% CI] | Δ vs {best} [95% paired CI] |")
        out.append("|---|---|---|")
        for name in order:
            m = pols[name]["metrics"][metric]
            lo, hi = m["ci95"]
            cell = f"{_num(m['mean'])} [{_num(lo)}, {_num(hi)}]"
            pair = pols[name].get("paired_vs_best_heuristic")
            if name == best or not pair:
                diff = "—"
            else:
                plo, phi = pair["ci95"]
                diff = f"{_signed(pair['mean'])} [{_signed(plo)}, {_signed(phi)}]"
            out.append(f"| {name} | {cell} | {diff} |")
        bound = (s.get("ideal_bound") or {}).get("metrics", {}).get(metric, {}).get("mean")
        if bound is not None:
            out.append(f"| *bound (ideal, no queueing)* | {_num(bound)} | |")
        out.append("")
    return "\n".join(out)


def demo_table(run: Path) -> str:
    """The final table of a train.py run: every policy's mean [95% CI] and paired difference."""
    ev = json.loads((run / "final_eval.json").read_text())
    summ = json.loads((run / "train_summary.json").read_text())
    metric, best, pols = ev["metric"], ev["best_heuristic"], ev["policies"]
    sign = 1.0 if metric not in ("mean_slowdown", "mean_latency", "p99_latency") else -1.0
    order = sorted(pols, key=lambda n: -sign * pols[n]["mean"] if math.isfinite(pols[n]["mean"]) else math.inf)
    seeds = ev["seeds"]
    out = [f"`make demo` (run `{run.name}`): {summ['num_timesteps']:,} steps in {summ['wall_s']:.0f} s "
           f"(behaviour-cloning warm start {summ['pretrain_s']:.0f} s, RL {summ['fps']:.0f} steps/s), then the "
           f"final table on its test seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} seeds; {metric}, mean [95% "
           f"Student-t CI], paired difference against the best heuristic `{best}`):\n",
           f"| policy | {metric} [95% CI] | Δ vs {best} [95% paired CI] | drops / seed |", "|---|---|---|---|"]
    for name in order:
        row = pols[name]
        lo, hi = row["ci"]
        d = row.get("diff_vs_best")
        diff = "—" if name == best or not d else f"{_signed(d['mean'])} [{_signed(d['ci'][0])}, {_signed(d['ci'][1])}]"
        label = f"**{name}**" if row["kind"] == "agent" else name
        out.append(f"| {label} | {_num(row['mean'])} [{_num(lo)}, {_num(hi)}] | {diff} | "
                   f"{row['secondary'].get('drops', math.nan):.1f} |")
    if ev.get("left_out"):
        out.append(f"\nNot in this table: {', '.join(ev['left_out'])} (slow; see its own section).")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="results.json of an evaluate.py run, or (--section demo) a "
                                               "train.py run folder")
    ap.add_argument("--section", default="heuristics-200", choices=SECTIONS)
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--print", action="store_true", help="print the tables instead of writing the README")
    args = ap.parse_args(argv)
    try:
        if args.section == "demo":
            text, what = demo_table(args.results), "the demo's table"
        elif args.section.startswith("agent-study"):
            sys.path.insert(0, str(REPO / "benchmarks"))
            from agent_study import markdown

            report = json.loads(args.results.read_text())
            text, what = markdown(report), f"the agent study of {len(report['scenarios'])} scenario(s)"
        else:
            results = json.loads(args.results.read_text())
            text = tables(results)
            what = f"the tables of {len(results.get('scenarios', [results]))} scenario(s)"
    except (OSError, ValueError, KeyError) as e:
        kind = ("a train.py run folder" if args.section == "demo" else "an agent_study.py summary.json"
                if args.section.startswith("agent-study") else "an evaluate.py results.json")
        print(f"readme_tables.py: {args.results}: not {kind} ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    if args.print:
        print(text)
        return 0
    BEGIN, END = markers(args.section)
    readme = args.readme.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"readme_tables.py: {args.readme} has no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    from baselines.files import write_text

    write_text(args.readme, head + BEGIN + "\n" + text + "\n" + END + tail)
    print(f"wrote {what} into {args.readme} ({args.section})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
