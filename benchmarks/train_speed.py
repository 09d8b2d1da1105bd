"""Training speed: what does the environment cost MaskablePPO?

Measures, in one run and with the same hyperparameters (``agents/hyperparams/maskable_ppo.yml``
for the scenario):

* MaskablePPO on the scenario (frames per second of ``learn``);
* MaskablePPO on a zero-cost stand-in with identical observation and action spaces, random masks
  and the same episode length, so ``scenario / stand-in`` isolates the environment's share of
  training time (1.0: the environment is free);
* both again with ``--n-envs`` > 1 environments in a ``SubprocVecEnv``;
* SB3 PPO (MlpPolicy, default hyperparameters) on CartPole-v1, for reference;
* the bare environment step rate (random valid actions, mask and observation included);
* the vectorisations of ``train.py --vec`` on the same policy network (``--vecs``, default
  ``dummy:1 subproc:2 batched:64``): today's path (``DummyVecEnv`` of one env, the
  hyperparameters' rollout and minibatch) against ``SubprocVecEnv`` and the batched VecEnv
  (with the ``vec_batched`` hyperparameters: rollouts of 16,384 steps, minibatches of 2,048),
  each as fps and as a ratio to the first.

Usage::

    .venv/bin/python benchmarks/train_speed.py                      # serving-small, 16384 steps
    .venv/bin/python benchmarks/train_speed.py --timesteps 32768 --policy-net attention
    .venv/bin/python benchmarks/train_speed.py --no-standin --vecs dummy:1 batched:64 --device cuda

Figures depend on the machine and on what else runs on it: compare ratios, not absolute fps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.envs import make_env, make_vec_env  # noqa: E402
from agents.hyperparams import algo_kwargs, load_hyperparams  # noqa: E402
from agents.policies import policy_for  # noqa: E402


class StandInEnv(gym.Env):
    """Zero-cost environment with the spaces of a scheduling scenario: observations and masks are
    drawn once from a bank of random ones (masks always allow "wait"), rewards are 0, episodes
    last ``episode_len`` steps."""

    def __init__(self, observation_space: spaces.Dict, n_actions: int, episode_len: int = 1000,
                 bank: int = 64, valid_frac: float = 0.15, seed: int = 0):
        self.observation_space = observation_space
        self.action_space = spaces.Discrete(n_actions)
        self.episode_len = episode_len
        rng = np.random.default_rng(seed)
        self._obs = [{k: rng.uniform(-1, 1, size=s.shape).astype(np.float32)
                      for k, s in observation_space.spaces.items()} for _ in range(bank)]
        self._masks = rng.random((bank, n_actions)) < valid_frac
        self._masks[:, -1] = True
        self._i = 0
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs[self._i], {}

    def step(self, action):
        self._t += 1
        self._i = (self._i + 1) % len(self._obs)
        return self._obs[self._i], 0.0, self._t >= self.episode_len, False, {}

    def action_masks(self) -> np.ndarray:
        return self._masks[self._i]


class _StandInFactory:
    def __init__(self, observation_space, n_actions, episode_len, seed):
        self.args = (observation_space, n_actions, episode_len)
        self.seed = seed

    def __call__(self):
        from stable_baselines3.common.monitor import Monitor

        return Monitor(StandInEnv(*self.args, seed=self.seed))


def episode_length(scenario: str, episodes: int = 2) -> float:
    """Mean steps per episode of ``scenario`` under the ``mct`` heuristic (else random valid)."""
    env = make_env(scenario, monitor=False)
    try:
        import baselines

        lengths = [baselines.run_episode(env, baselines.make("mct", env), s)["steps"] for s in range(episodes)]
        return float(np.mean(lengths))
    except Exception:  # noqa: BLE001 - baselines missing or changed: fall back to random actions
        rng = np.random.default_rng(0)
        steps = 0
        for s in range(episodes):
            env.reset(seed=s)
            done = False
            while not done:
                a = rng.choice(np.flatnonzero(env.unwrapped.action_masks()))
                _, _, te, tr, _ = env.step(a)
                done = te or tr
                steps += 1
        return steps / episodes


def env_step_rate(scenario: str, steps: int) -> float:
    env = make_env(scenario, monitor=False)
    base = env.unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        valid = np.flatnonzero(base.action_masks())
        # Prefer assignments (as a trained policy does) so episodes look like real ones.
        a = valid[rng.integers(len(valid) - 1)] if len(valid) > 1 else valid[0]
        _, _, te, tr, _ = env.step(a)
        if te or tr:
            env.reset()
    return steps / (time.perf_counter() - t0)


def fps_of(model, timesteps: int) -> float:
    model.learn(min(2048, timesteps))  # warm-up: first rollout, allocations
    t0 = time.perf_counter()
    model.learn(timesteps, reset_num_timesteps=False)
    return timesteps / (time.perf_counter() - t0)


def maskable_ppo(env, hp: dict, policy_net: str, seed: int, device: str = "cpu"):
    from sb3_contrib import MaskablePPO

    kwargs = algo_kwargs(hp)
    policy, policy_kwargs = policy_for(policy_net, "maskable_ppo", kwargs.pop("policy_kwargs", None))
    return MaskablePPO(policy, env, policy_kwargs=policy_kwargs, seed=seed, device=device, verbose=0, **kwargs)


def parse_vec(text: str) -> tuple[str, int]:
    kind, _, n = text.partition(":")
    if kind not in ("dummy", "subproc", "batched") or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KIND:N with KIND dummy, subproc or batched, N >= 1")
    return kind, int(n)


def vec_rows(a, net: str, device: str) -> list[tuple[str, int, dict, float]]:
    """fps of MaskablePPO through each vectorisation of ``a.vecs`` (same network)."""
    rows = []
    for kind, n in a.vecs:
        over = {"n_envs": n}
        if net != load_hyperparams("maskable_ppo", a.scenario)["policy_net"]:
            over["policy_kwargs"] = None  # the scenario's kwargs belong to its own network
        hp = load_hyperparams("maskable_ppo", a.scenario, over, vec=kind)
        env = make_vec_env(a.scenario, n, vec=kind)
        steps = max(a.timesteps, 2 * n * int(hp["n_steps"]))  # at least two rollouts timed
        model = maskable_ppo(env, hp, net, a.seed, device)
        model.learn(n * int(hp["n_steps"]))  # warm-up: one rollout and update (compilation, allocations)
        t0 = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        fps = steps / (time.perf_counter() - t0)
        env.close()
        rows.append((f"{kind}:{n}", n, hp, fps))
        print(f"  {kind} x{n}: n_steps {hp['n_steps']}, batch {hp['batch_size']}, {steps} timed steps: "
              f"{fps:,.0f} fps", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="MaskablePPO training speed: scenario vs a zero-cost stand-in.")
    p.add_argument("--scenario", default="serving-small")
    p.add_argument("--timesteps", type=int, default=16_384, help="timed steps per measurement")
    p.add_argument("--n-envs", type=int, nargs="+", default=[1, 2], help="environment counts to measure")
    p.add_argument("--policy-net", default=None, help="policy net (default: the hyperparameters')")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cartpole", action="store_true", help="skip the CartPole reference")
    p.add_argument("--no-standin", action="store_true", help="skip the stand-in and CartPole measurements")
    p.add_argument("--vecs", nargs="*", type=parse_vec, default=[("dummy", 1), ("subproc", 2), ("batched", 64)],
                   metavar="KIND:N", help="vectorisations to compare (empty: none)")
    p.add_argument("--device", default="cpu", help="torch device of the vectorisation comparison (cpu, cuda, auto)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    hp = load_hyperparams("maskable_ppo", a.scenario)
    net = a.policy_net or hp["policy_net"]
    probe = make_env(a.scenario, monitor=False)
    obs_space, n_actions = probe.observation_space, int(probe.action_space.n)
    ep_len = max(int(round(episode_length(a.scenario))), 1)
    print(f"scenario {a.scenario}: Discrete({n_actions}), ~{ep_len} steps/episode; policy net {net}; "
          f"torch threads {a.threads}; n_steps {hp['n_steps']}, batch {hp['batch_size']}, epochs {hp['n_epochs']}")
    raw = env_step_rate(a.scenario, 5_000)
    print(f"bare env step (random valid action, mask + observation): {raw:,.0f} steps/s")
    if a.vecs:
        print(f"vectorisations (train.py --vec), MaskablePPO {net} on {device}:")
        vrows = vec_rows(a, net, device)
        print()
        print(f"| vec | n_envs | n_steps | batch_size | fps | ratio to {vrows[0][0]} |")
        print("|---|---|---|---|---|---|")
        for label, n, hp, fps in vrows:
            print(f"| {label.split(':')[0]} | {n} | {hp['n_steps']} | {hp['batch_size']} | {fps:,.0f} | "
                  f"{fps / vrows[0][3]:.2f} |")
        print()
    if a.no_standin:
        return 0

    rows = []
    for n in a.n_envs:
        sc_env = make_vec_env(a.scenario, n)
        fns = [_StandInFactory(obs_space, n_actions, ep_len, a.seed + i) for i in range(n)]
        si_env = SubprocVecEnv(fns) if n > 1 else DummyVecEnv(fns)
        fps_sc = fps_of(maskable_ppo(sc_env, hp, net, a.seed), a.timesteps)
        fps_si = fps_of(maskable_ppo(si_env, hp, net, a.seed), a.timesteps)
        sc_env.close()
        si_env.close()
        rows.append((n, fps_sc, fps_si))
        print(f"  n_envs={n}: {a.scenario} {fps_sc:,.0f} fps, stand-in {fps_si:,.0f} fps, ratio {fps_sc / fps_si:.2f}")

    cart = None
    if not a.no_cartpole:
        from stable_baselines3 import PPO

        cart = fps_of(PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("CartPole-v1")]), seed=a.seed,
                          device="cpu", verbose=0), a.timesteps)

    print()
    print(f"| run | n_envs | fps | ratio to stand-in |{' ratio to CartPole PPO |' if cart else ''}")
    print(f"|---|---|---|---|{'---|' if cart else ''}")
    for n, fps_sc, fps_si in rows:
        extra = f" {fps_sc / cart:.2f} |" if cart else ""
        print(f"| MaskablePPO {a.scenario} | {n} | {fps_sc:,.0f} | {fps_sc / fps_si:.2f} |{extra}")
        extra = f" {fps_si / cart:.2f} |" if cart else ""
        print(f"| MaskablePPO stand-in | {n} | {fps_si:,.0f} | 1.00 |{extra}")
    if cart:
        print(f"| PPO CartPole-v1 (MlpPolicy, defaults) | 1 | {cart:,.0f} | | 1.00 |")
    worst = min(fps_sc / fps_si for _, fps_sc, fps_si in rows)
    print(f"\nenvironment share of training time at n_envs={rows[0][0]}: "
          f"{1 - rows[0][1] / rows[0][2]:.0%} (target: ratio >= 0.8; worst ratio {worst:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
