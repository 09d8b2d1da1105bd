"""Ray: evaluation speed-up with 2 local workers against 1, and RLlib's sampling throughput
against SB3's, each against a reference measured in the same run.

1. ``evaluate.py --ray`` on the same sweep (policies x seeds on one scenario) on a local Ray
   instance of 1 CPU, then of 2 CPUs (one task per CPU at a time): wall time of the whole
   evaluation, Ray's start-up excluded, the workers' imports and first episodes included; the
   local ``evaluate.py`` (no Ray, one process) is printed for reference. Both Ray runs give the
   local run's results (checked).
2. Sampling env steps/s on the scenario: RLlib PPO's env runners (the masked module of
   ``agents.rllib``, 1 and 2 runners, their ``sample()`` calls timed alone) against SB3
   MaskablePPO's rollout collection (``MultiInputPolicy`` with the same [128, 128] hidden
   layers, one env in a ``DummyVecEnv``, ``collect_rollouts`` timed alone by a callback).

Usage::

    .venv/bin/python benchmarks/ray_speed.py                      # serving-small, both parts
    .venv/bin/python benchmarks/ray_speed.py --part eval --seeds 1000-1023

Figures depend on the machine and on what else runs on it: compare the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))




def eval_part(scenario: str, policies: list[str], seeds: str) -> None:
    import ray

    from baselines.evaluation import build_parser, evaluate, without_run_fields

    tmp = Path(tempfile.mkdtemp(prefix="ray_speed_"))
    common = ["--scenario", scenario, "--policies", *policies, "--seeds", seeds, "--no-progress", "--no-resume"]
    t0 = time.perf_counter()
    local = evaluate(build_parser().parse_args([*common, "--out", str(tmp / "local")]))[0]
    local_s = time.perf_counter() - t0
    n = len(local["seeds"]) * len(policies)
    rows = [("local, 1 process (reference)", local_s, None)]
    walls = {}
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
        try:
            t0 = time.perf_counter()
            res = evaluate(build_parser().parse_args([*common, "--out", str(tmp / f"ray{cpus}"), "--ray"]))[0]
            walls[cpus] = time.perf_counter() - t0
        finally:
            ray.shutdown()
        assert without_run_fields(res) == without_run_fields(local), "Ray results differ from the local run"
        rows.append((f"--ray, local instance of {cpus} CPU(s)", walls[cpus], None))
    print(f"\n## evaluate.py --ray: {scenario}, {len(policies)} policies x {len(local['seeds'])} seeds = {n} episodes\n")
    print("| run | wall (s) | episodes/s | x 1 Ray worker |")
    print("|---|---|---|---|")
    for name, wall, _ in rows:
        ratio = f"{walls[1] / wall:.2f}" if name.startswith("--ray") else ""
        print(f"| {name} | {wall:.1f} | {n / wall:.2f} | {ratio} |")
    print(f"\nspeed-up, 2 Ray workers against 1: {walls[1] / walls[2]:.2f}x (results identical to the local run)")


class _RolloutTimer:
    """SB3 callback: seconds spent in collect_rollouts."""

    def __new__(cls):
        from stable_baselines3.common.callbacks import BaseCallback

        class Timer(BaseCallback):
            def __init__(self):
                super().__init__()
                self.seconds = 0.0
                self.steps = 0
                self._t0 = 0.0

            def _on_rollout_start(self) -> None:
                self._t0 = time.perf_counter()

            def _on_rollout_end(self) -> None:
                self.seconds += time.perf_counter() - self._t0

            def _on_step(self) -> bool:
                self.steps += self.training_env.num_envs
                return True

        return Timer()


def _sample(group) -> int:
    """Env steps of one fragment from every env runner of ``group``, sampled in parallel."""
    return sum(e.env_steps() for eps in group.foreach_env_runner(lambda w: w.sample(), local_env_runner=False)
               for e in eps)


def sampling_part(scenario: str, steps: int) -> None:
    import ray
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.envs import make_env
    from agents.rllib import ppo_config

    torch.set_num_threads(1)
    env = DummyVecEnv([lambda: make_env(scenario)])
    model = MaskablePPO("MultiInputPolicy", env, n_steps=2048, batch_size=256, n_epochs=1, seed=0, device="cpu",
                        policy_kwargs={"net_arch": [128, 128]})
    timer = _RolloutTimer()
    model.learn(2048, callback=timer)  # warm-up rollout
    timer.seconds, timer.steps = 0.0, 0
    model.learn(steps, callback=timer, reset_num_timesteps=False)
    sb3 = timer.steps / timer.seconds
    rows = [("SB3 MaskablePPO, 1 env (DummyVecEnv) (reference)", timer.steps, timer.seconds, sb3)]
    for runners in (1, 2):
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
        try:
            algo = ppo_config(scenario, seed=0, env_runners=runners).build_algo()
            group = algo.env_runner_group
            _sample(group)  # warm-up
            n, t0 = 0, time.perf_counter()
            while n < steps:
                n += _sample(group)
            wall = time.perf_counter() - t0
            algo.stop()
        finally:
            ray.shutdown()
        rows.append((f"RLlib PPO, {runners} env runner(s)", n, wall, n / wall))
    print(f"\n## sampling throughput: {scenario}, about {steps} env steps each (masks and observations included)\n")
    print("| sampler | env steps | seconds | env steps/s | x SB3 |")
    print("|---|---|---|---|---|")
    for name, n, wall, fps in rows:
        print(f"| {name} | {n} | {wall:.1f} | {fps:,.0f} | {fps / sb3:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("all", "eval", "sampling"), default="all")
    p.add_argument("--scenario", default="serving-small")
    p.add_argument("--policies", nargs="+", default=["fifo", "edf", "mct", "random"])
    p.add_argument("--seeds", default="1000-1011")
    p.add_argument("--steps", type=int, default=16384, help="env steps per sampling measurement")
    a = p.parse_args(argv)
    if a.part in ("all", "eval"):
        eval_part(a.scenario, a.policies, a.seeds)
    if a.part in ("all", "sampling"):
        sampling_part(a.scenario, a.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
