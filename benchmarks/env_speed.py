"""Environment speed: steps per second of every registered modelsched id with random valid
actions, next to CartPole-v1 measured in the same run, and the ratio.

Both go through ``gym.make(..., disable_env_checker=True)``. Each modelsched step includes
fetching the action mask (an agent needs it) and choosing a uniformly random valid action;
CartPole steps choose a uniformly random action the same cheap way. Episodes are reset as they
end (reset time counts). CartPole is measured before and after each env measurement, and each
env figure is divided by the mean of the two, so that a noisy shared machine hits both alike;
the median of these ratios over the rounds is reported, with their range.

    python benchmarks/env_speed.py                 # every id, 5 rounds of 2 s
    python benchmarks/env_speed.py --ids modelsched/ServingSmall-v1 --rounds 3 --seconds 1
    python benchmarks/env_speed.py --profile modelsched/ServingSmall-v1   # where the time goes
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402

FLOOR = {"modelsched/ServingSmall-v1": 0.15}
CPU_TIME = False  # --cpu-time: measure process CPU time instead of wall time (busy machines)
DEFAULT_FLOOR = 0.10


def steps_per_second(env_id: str, seconds: float, seed: int = 0) -> float:
    env = gym.make(env_id, disable_env_checker=True)
    masked = hasattr(env.unwrapped, "action_masks")
    n_actions = env.action_space.n
    u = np.random.default_rng(seed).random(1 << 16)
    env.reset(seed=seed)
    steps = 0
    clock = time.process_time if CPU_TIME else time.perf_counter
    t0 = clock()
    deadline = t0 + seconds
    while True:
        for _ in range(64):
            if masked:
                valid = np.flatnonzero(env.unwrapped.action_masks())
                a = int(valid[int(u[steps & 0xFFFF] * len(valid))])
            else:
                a = int(u[steps & 0xFFFF] * n_actions)
            _, _, term, trunc, _ = env.step(a)
            steps += 1
            if term or trunc:
                env.reset()
        now = clock()
        if now >= deadline:
            return steps / (now - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", nargs="*", default=None, help="env ids (default: every registered modelsched id)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--profile", metavar="ID", help="profile one id for --seconds and print the top functions")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process CPU time (less sensitive to other load than wall time)")
    args = ap.parse_args()
    global CPU_TIME
    CPU_TIME = args.cpu_time
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(steps_per_second, args.profile, args.seconds)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return 0
    ids = args.ids or envs.registered_ids()
    # CartPole is measured before and after every env measurement (C E C E C ...) and each env
    # figure is divided by the mean of its two neighbours: on a shared machine the load drifts,
    # and a ratio of measurements taken seconds apart follows it. The median ratio is reported.
    rows = {i: [] for i in ids}
    ratios = {i: [] for i in ids}
    ref = [steps_per_second("CartPole-v1", args.seconds / 2)]
    for _ in range(args.rounds):
        for env_id in ids:
            sps = steps_per_second(env_id, args.seconds)
            ref.append(steps_per_second("CartPole-v1", args.seconds / 2))
            rows[env_id].append(sps)
            ratios[env_id].append(sps / (0.5 * (ref[-2] + ref[-1])))
    cart = statistics.median(ref)
    print(f"CartPole-v1: {cart:,.0f} steps/s (median of {len(ref)})")
    print(f"{'env id':<36} {'steps/s':>10} {'ratio':>7} {'range':>13} {'floor':>6}")
    ok = True
    for env_id in ids:
        sps = statistics.median(rows[env_id])
        ratio = statistics.median(ratios[env_id])
        spread = f"{min(ratios[env_id]):.3f}-{max(ratios[env_id]):.3f}"
        floor = FLOOR.get(env_id, DEFAULT_FLOOR)
        flag = "" if ratio >= floor else "  BELOW FLOOR"
        ok &= ratio >= floor
        print(f"{env_id:<36} {sps:>10,.0f} {ratio:>7.3f} {spread:>13} {floor:>6.2f}{flag}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
