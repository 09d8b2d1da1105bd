"""Heuristic evaluation speed: the batched evaluator against the reference one, in one run.

For each heuristic with a batched form, episodes per second of

* the reference evaluator (``baselines.run_episode`` on one ``SchedulingEnv``: what
  ``evaluate.py --backend reference`` runs per episode), on ``--ref-seeds`` seeds;
* the batched evaluator (``baselines.batched_eval.run_batched``: what ``evaluate.py --backend
  batched`` runs), on ``--seeds`` seeds in chunks of ``--batch-size``;

and their ratio. Both exclude what the harness adds once per seed for every policy (the bound
and the workload digest) and the statistics. The seeds are evaluation seeds (nothing is chosen
on them here). Usage::

    .venv/bin/python benchmarks/batched_eval_speed.py                          # serving-small
    .venv/bin/python benchmarks/batched_eval_speed.py --scenario pipelines --seeds 1000-1199

The machine is shared and noisy: compare the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402

import baselines  # noqa: E402
import envs  # noqa: E402, F401
from baselines.batched import BATCHED  # noqa: E402
from baselines.batched_eval import DEFAULT_BATCH, run_batched  # noqa: E402
from baselines.evaluation import seed_arg  # noqa: E402
from envs.scenarios.loader import load_scenario  # noqa: E402


class _NoFacts:
    def get(self, seed):
        return {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="serving-small")
    p.add_argument("--policies", nargs="+", default=list(BATCHED))
    p.add_argument("--seeds", type=seed_arg, default=seed_arg("1000-1999"), help="batched seeds (default 1000-1999)")
    p.add_argument("--ref-seeds", type=seed_arg, default=seed_arg("1000-1009"),
                   help="reference seeds (default 1000-1009)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    a = p.parse_args(argv)
    sc = load_scenario(a.scenario)
    env = gym.make("modelsched/Scheduling-v1", scenario=a.scenario, disable_env_checker=True)
    print(f"{a.scenario}: reference on {len(a.ref_seeds)} seeds, batched on {len(a.seeds)} seeds "
          f"(chunks of {a.batch_size})", flush=True)
    run_batched(sc, "fifo", "fifo", a.seeds[:2], facts=_NoFacts())  # compile the kernels first
    rows, tot_ref, tot_bat = [], 0.0, 0.0
    for name in a.policies:
        pol = baselines.make(name, env)
        t0 = time.perf_counter()
        for s in a.ref_seeds:
            baselines.run_episode(env, pol, s)
        ref = len(a.ref_seeds) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_batched(sc, name, name, a.seeds, facts=_NoFacts(), batch_size=a.batch_size)
        wall = time.perf_counter() - t0
        bat = len(a.seeds) / wall
        tot_ref += len(a.seeds) / ref
        tot_bat += wall
        rows.append((name, ref, bat, wall))
        print(f"  {name}: reference {ref:.2f} ep/s, batched {bat:.1f} ep/s ({wall:.1f} s), {bat / ref:.1f}x",
              flush=True)
    print()
    print(f"| policy | reference ep/s | batched ep/s | batched wall ({len(a.seeds)} seeds) | ratio |")
    print("|---|---|---|---|---|")
    for name, ref, bat, wall in rows:
        print(f"| {name} | {ref:.2f} | {bat:.1f} | {wall:.1f} s | {bat / ref:.1f}x |")
    print(f"| all {len(rows)} | | | {tot_bat:.0f} s (reference at its rate: {tot_ref:.0f} s) | "
          f"{tot_ref / tot_bat:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
