"""Batched simulator speed: decisions per second for B instances at once, next to the
reference ``SchedulingEnv`` measured in the same run, and the ratio.

A decision is one step of one instance (one action, run to the next decision, reward, mask and
observation), resets of ended episodes included. Two action rules, each applied the same way to
both sides so that they do the same work:

* ``random``: a uniformly random valid action of the exact mask;
* ``fifo``: the oldest window task with a valid assignment, on the (variant, device) with the
  smallest estimate in the observation (the rule of the ``fifo`` baseline, read from the
  observation's float32 estimates instead of the simulator's float64 ones).

The reference runs one env in this process (one core); the batched simulator runs its
instances on every core numba uses (``NUMBA_NUM_THREADS``; printed). The reference is measured
before and after the batched sizes of each rule, and the ratio uses the mean of the two.

    python benchmarks/batched_speed.py                        # serving-small, B = 1 .. 16384
    python benchmarks/batched_speed.py --scenario faulty-cluster --sizes 64 1024 --seconds 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from envs.batched import BatchedSimulator  # noqa: E402
from envs.env import SchedulingEnv  # noqa: E402
from envs.scenarios.loader import load_scenario  # noqa: E402


def pick(rule: str, masks: np.ndarray, est: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(B,) actions of ``rule`` from (B, A) masks and (B, K, V, D) observation estimates."""
    B, A = masks.shape
    if rule == "random":
        counts = masks.sum(axis=1)
        target = (u[:B] * counts).astype(np.int64)  # the target-th valid action of each row
        return np.argmax(np.cumsum(masks, axis=1) > target[:, None], axis=1)
    K, V, D = est.shape[1:]
    m = masks[:, :-1].reshape(B, K, V * D)
    has = m.any(axis=2)
    k = np.argmax(has, axis=1)
    rows = np.arange(B)
    e = np.where(m[rows, k], est.reshape(B, K, V * D)[rows, k], np.inf)
    a = k * V * D + np.argmin(e, axis=1)
    return np.where(has.any(axis=1), a, A - 1)


def pick_one(rule: str, mask: np.ndarray, est: np.ndarray, u: float) -> int:
    """The same rules for one env, written for one env (what a single-env loop would do)."""
    valid = np.flatnonzero(mask)
    if rule == "random":
        return int(valid[int(u * len(valid))])
    if len(valid) == 1:
        return int(valid[0])
    VD = est.shape[1] * est.shape[2]
    k = int(valid[0]) // VD
    row = valid[valid < (k + 1) * VD]
    return int(row[np.argmin(est.reshape(-1)[row])])


def reference_rate(scenario, rule: str, seconds: float, seed: int = 0) -> float:
    env = SchedulingEnv(scenario)
    u = np.random.default_rng(seed).random(1 << 16)
    obs, _ = env.reset(seed=seed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(32):
            a = pick_one(rule, env.action_masks(), obs["estimates"], u[n & 0xFFFF])
            obs, _, term, trunc, _ = env.step(a)
            n += 1
            if term or trunc:
                obs, _ = env.reset()
    return n / (time.perf_counter() - t0)


def batched_rate(scenario, rule: str, B: int, seconds: float, episodes: float,
                 seed: int = 0) -> tuple[float, int, float, float]:
    """(decisions/s, state bytes per instance, share of the time in resets, episodes per
    instance). Runs for ``seconds`` and until ``episodes`` episodes per instance have ended on
    average, so that resets weigh as in a long run."""
    bs = BatchedSimulator(scenario, B)
    rng = np.random.default_rng(seed)
    bs.reset(seed=seed)
    n, ended, t_reset, t0 = 0, 0, 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or ended < episodes * B:
        a = pick(rule, bs.v.mask, bs.v.oest, rng.random(B))
        bs.step(a)
        n += B
        t1 = time.perf_counter()
        ended += len(bs.reset_done())
        t_reset += time.perf_counter() - t1
    el = time.perf_counter() - t0
    return n / el, bs.state_bytes_per_instance(), t_reset / el, ended / B


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="serving-small")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64, 256, 1024, 4096, 16384])
    ap.add_argument("--rules", nargs="+", default=["random", "fifo"], choices=["random", "fifo"])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--episodes", type=float, default=2.0,
                    help="run each size until this many episodes per instance have ended (on average)")
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    BatchedSimulator(sc, 2).reset(seed=0)  # compile (or load the compiled code) before timing
    print(f"scenario {args.scenario}; backend cpu, {numba.get_num_threads()} threads "
          f"(numba {numba.__version__}, layer {numba.threading_layer()}); {args.seconds:.0f} s per cell\n")
    print("| rule | B | decisions/s | x reference | time in resets | episodes per instance | state per instance "
          "| state total |")
    print("|---|---|---|---|---|---|---|---|")
    for rule in args.rules:
        before = reference_rate(sc, rule, args.seconds)
        rows = [(B, *batched_rate(sc, rule, B, args.seconds, args.episodes)) for B in args.sizes]
        after = reference_rate(sc, rule, args.seconds)
        ref = 0.5 * (before + after)
        print(f"| {rule} | reference (1 env) | {ref:,.0f} ({before:,.0f} / {after:,.0f}) | 1 | | | | |")
        for B, rate, nbytes, reset_share, eps in rows:
            print(f"| {rule} | {B} | {rate:,.0f} | {rate / ref:.1f} | {reset_share:.0%} | {eps:.1f} | "
                  f"{nbytes / 1024:,.0f} KiB | {nbytes * B / 2**20:,.0f} MiB |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
