"""Write the README's 200-seed heuristic tables from an ``evaluate.py`` results.json.

The README section between ``<!-- heuristics-200:begin -->`` and ``<!-- heuristics-200:end -->``
is generated, never typed: run the evaluation, then this script.

    .venv/bin/python evaluate.py --scenario serving-small --scenario serving-hetero --scenario llm-serving \\
        --scenario pipelines --scenario faulty-cluster --scenario training-cluster \\
        --policies all --exclude genetic --seeds 1000-1199 --backend batched --out results/heuristics-200
    .venv/bin/python benchmarks/readme_tables.py results/heuristics-200/results.json        # rewrites README.md
    .venv/bin/python benchmarks/readme_tables.py results/heuristics-200/results.json --print
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- heuristics-200:begin -->", "<!-- heuristics-200:end -->"


def _num(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def _signed(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.4f}"


def tables(results: dict) -> str:
    out = []
    for s in results["scenarios"]:
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="results.json of a multi-scenario evaluate.py run")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--print", action="store_true", help="print the tables instead of writing the README")
    args = ap.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        text = tables(results)
    except (OSError, ValueError, KeyError) as e:
        print(f"readme_tables.py: {args.results}: not an evaluate.py results.json ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 2
    if args.print:
        print(text)
        return 0
    readme = args.readme.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"readme_tables.py: {args.readme} has no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    from baselines.files import write_text

    write_text(args.readme, head + BEGIN + "\n" + text + "\n" + END + tail)
    print(f"wrote the tables of {len(results['scenarios'])} scenarios into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
