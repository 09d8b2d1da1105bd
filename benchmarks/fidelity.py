"""Fidelity of the simulator's batching models against measurements they were not fitted on.

Two tables, each row a measurement, the simulator's prediction, and the error; then the mean
absolute percentage error (MAPE) per table.

1. **Continuous batching (LLM)**, against Splitwise's measured Llama-2-70B runs
   (``../shared/traces/splitwise/perf_model.csv``; Patel et al., "Splitwise: Efficient
   Generative LLM Inference Using Phase Splitting", ISCA 2024), tensor parallel 2 on A100-80GB
   and H100, the setting the profiles are anchored on. The calibration used only: batch-1
   prompt times at prompts 128..4096 (alpha, beta: ``library.yaml``), the batch-1 token time
   (gamma), and the token times at batch 2, 8 and 32 (delta, ``llm-continuous.yaml``). Every row
   here is held out of that: prompt and token times at batch 4 and 16, the batched prefills
   (batch 2..32 of 512-token prompts), the 8192-token prompt, and end-to-end times. Each row is
   *simulated*: ``batch`` requests join one device of the measured profile at t = 0 in
   :class:`envs.sim.continuous.ContinuousBatchingSimulator` (no noise, KV cache large enough),
   and the TTFT (prompt time), the mean time per output token and the end-to-end time are read
   from the episode. The batch-64 rows are listed apart and left out of the MAPE: their prompt
   time is *lower* than at batch 32 (0.79 s vs 6.6 s on A100-80GB), which no batched prefill
   can be; the measurement looks broken. So are end-to-end times that break the file's own
   identity (end-to-end = prompt time + (tokens - 1) x token time, within 10%): runs that did
   not generate all ``token_size`` tokens at the measured pace.
2. **Dynamic batching (DNN)**: the model form ``alpha + beta x batch`` the reference simulator
   uses for a batch, fitted per (model, accelerator) on Proteus' measured median latencies at
   batch 1 and 16 (``../shared/traces/proteus/aggregate_profiled.csv``; Ahmad et al., "Proteus:
   A High-Throughput Inference-Serving System with Accuracy Scaling", ASPLOS 2024), predicting
   the held-out batch sizes 2, 4 and 8. (The Proteus GPU timings are ONNX Runtime on Pascal and
   Ampere with framework overhead; this checks the *form* of the batch model, not our absolute
   GPU speeds.)

Run: ``python benchmarks/fidelity.py`` (a few seconds); ``--markdown`` prints the README's tables.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.sim.cluster import Cluster, DeviceSpec  # noqa: E402
from envs.sim.continuous import ContinuousBatchingSimulator  # noqa: E402
from envs.sim.model import DeviceType, JobSpec, LatencyProfile, ModelVariant, StageSpec  # noqa: E402
from envs.workloads.base import GeneratedWorkload, Workload  # noqa: E402

TRACES = ROOT.parent / "shared" / "traces"

#: The per-GPU-pair (tensor parallel 2) coefficients the Llama-2-70B profiles are anchored on:
#: alpha, beta (library.yaml's fit of batch-1 prompt times 128..4096), gamma (batch-1 median
#: token time), delta (fit of token times at batch 2, 8, 32; llm-continuous.yaml).
TP2 = {
    "a100-80gb": (0.0166, 0.000352, 0.0559, 0.000551),
    "h100-80gb": (0.0097, 0.000152, 0.0373, 0.000480),
}
#: Batch sizes of the calibration of delta (rows of these batch sizes are not held out).
DELTA_FIT_BATCHES = (2, 8, 32)


class _Jobs(Workload):
    def __init__(self, jobs):
        self.jobs = jobs

    def generate(self, rng, ctx):
        return GeneratedWorkload(list(self.jobs))


def simulate(coeffs, prompt: int, batch: int, tokens: int) -> tuple[float, float, float]:
    """(TTFT, mean time per output token, end-to-end) of ``batch`` identical requests joining
    one device at t = 0 (no noise)."""
    gpu = DeviceType("GPU", memory_gb=1e6, load_bandwidth_gbps=1e9)
    v = ModelVariant("llama2-70b-tp2", "gen", 1.0, 0.0, {"GPU": LatencyProfile(*coeffs)}, kv_mb_per_token=1.0)
    cl = Cluster([gpu], [DeviceSpec("GPU", "n0")], [v])
    jobs = [JobSpec(0.0, (StageSpec("gen", float(prompt), float(tokens)),), 1e9) for _ in range(batch)]
    sim = ContinuousBatchingSimulator(cl, _Jobs(jobs), visible_tasks=max(batch, 1), noise_cv=0.0,
                                      failures=False, max_batch=max(batch, 1))
    sim.reset(np.random.SeedSequence(0))
    sim.advance_to_next_decision()
    while sim.queue_ids:
        sim.assign(0, 0, 0)
    sim.process_until(math.inf)
    first = np.array(sim._tttft)
    finish = np.array(sim._tfinish)
    ttft = float(first.mean())
    tpot = float(((finish - first) / (tokens - 1)).mean())
    return ttft, tpot, float(finish.mean())


def splitwise_rows(path: Path) -> tuple[list[dict], list[dict]]:
    """(held-out rows, batch-64 rows) of the continuous-batching table."""
    groups = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["model"] != "llama2-70b" or r["tensor_parallel"] != "2" or r["hardware"] not in TP2:
                continue
            key = (r["hardware"], int(r["prompt_size"]), int(r["batch_size"]), int(r["token_size"]))
            groups[key].append(tuple(float(r[c]) / 1000.0 for c in ("prompt_time", "token_time", "e2e_time")))
    held, odd = [], []
    for (hw, prompt, batch, tokens), vals in sorted(groups.items()):
        measured = [statistics.median(v[i] for v in vals) for i in range(3)]
        # The file's own identity: end-to-end = prompt time + (tokens - 1) x token time. Where it
        # is off by more than 10%, the run did not generate ``tokens`` tokens at that pace (e.g.
        # it stopped at an end-of-sequence token): its end-to-end time is listed apart.
        implied = measured[0] + (tokens - 1) * measured[1]
        consistent = abs(measured[2] - implied) <= 0.1 * implied
        pred = simulate(TP2[hw], prompt, batch, tokens)
        for i, what in enumerate(("prompt time (TTFT)", "time per output token", "end-to-end")):
            # What the calibration saw: batch-1 prompts up to 4096 (alpha, beta); batch-1 token
            # time (gamma) and the delta batches; held out: everything else.
            if i == 0 and batch == 1 and prompt <= 4096:
                continue
            if i == 1 and (batch in DELTA_FIT_BATCHES or batch == 1) and prompt == 512 and tokens == 128:
                continue
            row = {"hardware": hw, "prompt": prompt, "batch": batch, "tokens": tokens, "what": what,
                   "measured": measured[i], "simulated": pred[i],
                   "error": (pred[i] - measured[i]) / measured[i], "excluded": ""}
            if batch == 64:
                row["excluded"] = "batch 64: prompt time below batch 32's"
            elif i == 2 and not consistent:
                row["excluded"] = f"end-to-end {measured[2]:.1f} s, not prompt + {tokens - 1} x token time = {implied:.1f} s"
            (odd if row["excluded"] else held).append(row)
    return held, odd


def proteus_rows(path: Path) -> list[dict]:
    groups = defaultdict(dict)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            groups[(r["Model"], r["Accel"])][int(r["batchsize"])] = float(r["50th_pct"]) / 1000.0
    rows = []
    for (model, accel), lat in sorted(groups.items()):
        if not {1, 16} <= set(lat):
            continue
        beta = (lat[16] - lat[1]) / 15.0
        alpha = lat[1] - beta
        for b in (2, 4, 8):
            if b in lat:
                pred = alpha + beta * b
                rows.append({"model": model, "accel": accel, "batch": b, "measured": lat[b], "simulated": pred,
                             "error": (pred - lat[b]) / lat[b]})
    return rows


def mape(rows) -> float:
    return 100.0 * float(np.mean([abs(r["error"]) for r in rows])) if rows else math.nan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=Path, default=TRACES, help="the shared traces folder")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (for the README)")
    args = ap.parse_args(argv)
    split = args.traces / "splitwise" / "perf_model.csv"
    prot = args.traces / "proteus" / "aggregate_profiled.csv"
    for p in (split, prot):
        if not p.exists():
            print(f"fidelity.py: {p} not found (the shared traces folder; --traces)", file=sys.stderr)
            return 2
    held, odd = splitwise_rows(split)
    prows = proteus_rows(prot)
    md = args.markdown
    print("## Continuous batching vs Splitwise (Llama-2-70B, tensor parallel 2; held-out rows)\n")
    print("| GPU | prompt | batch | output tokens | quantity | measured (s) | simulated (s) | error |" if md else
          f"{'GPU':10} {'prompt':>6} {'batch':>5} {'tokens':>6} {'quantity':22} {'measured':>9} {'simulated':>9} {'error':>7}")
    if md:
        print("|---|---:|---:|---:|---|---:|---:|---:|")
    for r in held + odd:
        mark = f" (excluded: {r['excluded']})" if r["excluded"] else ""
        if md:
            print(f"| {r['hardware']} | {r['prompt']} | {r['batch']} | {r['tokens']} | {r['what']}{mark} | "
                  f"{r['measured']:.4f} | {r['simulated']:.4f} | {100 * r['error']:+.1f}% |")
        else:
            print(f"{r['hardware']:10} {r['prompt']:6d} {r['batch']:5d} {r['tokens']:6d} {r['what'][:22]:22} "
                  f"{r['measured']:9.4f} {r['simulated']:9.4f} {100 * r['error']:+6.1f}%{mark}")
    by = defaultdict(list)
    for r in held:
        by[r["what"]].append(r)
    print()
    print(f"MAPE over {len(held)} held-out rows: {mape(held):.1f}% "
          + "(" + ", ".join(f"{w} {mape(rs):.1f}% over {len(rs)}" for w, rs in by.items()) + "); "
          f"excluded rows (inconsistent measurements): {mape(odd):.1f}% over {len(odd)}")
    print("\n## Dynamic batching: alpha + beta x batch (fitted at batch 1 and 16) vs Proteus, held-out batches 2/4/8\n")
    acc = defaultdict(list)
    for r in prows:
        acc[(r["accel"], r["batch"])].append(r)
    if md:
        print("| accelerator | batch | rows | MAPE | worst |")
        print("|---|---:|---:|---:|---:|")
    for (accel, b), rs in sorted(acc.items()):
        worst = max(rs, key=lambda r: abs(r["error"]))
        line = (f"| {accel} | {b} | {len(rs)} | {mape(rs):.1f}% | {100 * worst['error']:+.1f}% ({worst['model']}) |"
                if md else f"{accel:24} batch {b:2d}: {len(rs):3d} rows, MAPE {mape(rs):5.1f}%, worst "
                f"{100 * worst['error']:+.1f}% ({worst['model']})")
        print(line)
    gpu = [r for r in prows if "gpu" in r["accel"]]
    print()
    print(f"MAPE over {len(prows)} held-out rows: {mape(prows):.1f}% (GPU rows {mape(gpu):.1f}% over {len(gpu)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
