"""How fast a trained model evaluates with 1 torch thread against torch's default thread count.

``evaluate.py --threads`` (default 1) exists because the project's policy networks are small:
per decision, torch's intra-op thread pool costs more than it saves, and on a machine where other
jobs run, the extra threads wait for cores. This script measures it on one scenario: the same
model, the same seeds, one episode after another, alternating the settings (A B A B ...) so that
the machine's load is shared evenly; it prints seconds per episode and the ratio.

    python benchmarks/eval_threads.py                            # a freshly initialised attention MaskablePPO
    python benchmarks/eval_threads.py --model runs/<run>/best_model.zip --seeds 1000 1001 1002
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch

import envs  # noqa: F401  (registers the ids)
from baselines import load_policy, run_episode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="serving-small")
    ap.add_argument("--model", default=None, help="SB3 .zip (default: an untrained attention MaskablePPO)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001])
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two settings")
    a = ap.parse_args()
    default_threads = torch.get_num_threads()
    env = gym.make("modelsched/Scheduling-v1", scenario=a.scenario, disable_env_checker=True)
    if a.model:
        model = load_policy(a.model, None, device="cpu")
    else:
        from sb3_contrib import MaskablePPO

        from agents.policies import policy_for

        policy, kwargs = policy_for("attention", "maskable_ppo", None)
        model = MaskablePPO(policy, env, policy_kwargs=kwargs, device="cpu", seed=0)
    times: dict[int, list[float]] = {1: [], default_threads: []}
    steps = 0
    for _ in range(a.rounds):
        for threads in times:
            torch.set_num_threads(threads)
            for s in a.seeds:
                t0 = time.perf_counter()
                res = run_episode(env, model, s)
                times[threads].append(time.perf_counter() - t0)
                steps = res["steps"]
    per = {t: sum(v) / len(v) for t, v in times.items()}
    print(f"{a.scenario}: {len(a.seeds)} seeds x {a.rounds} rounds, {steps} decisions in the last episode; "
          f"torch default threads = {default_threads}")
    for t, v in per.items():
        print(f"  threads {t}: {v:.2f} s/episode ({steps / v:.0f} decisions/s)")
    if default_threads != 1:
        print(f"  ratio default/1 thread: {per[default_threads] / per[1]:.2f}x")
    else:
        print("  torch's default is already 1 thread here: nothing to compare")


if __name__ == "__main__":
    main()
