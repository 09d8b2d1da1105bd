"""Behaviour-cloning warm start: imitate a heuristic before reinforcement learning.

A scheduling policy trained from scratch spends most of a small budget rediscovering what every
heuristic knows (use the fast GPUs, do not send images to the CPU). Cloning a strong heuristic
first, on *training* seeds, gives PPO a competent starting point, and PPO then has to find only
the improvements (e.g. accurate variants when the cluster has room). The critic is fitted to the
discounted (shaped, if configured) returns of the same trajectories, so the first PPO updates
do not wreck the cloned actor with a random critic's advantages.

Demonstrations are collected with ``baselines.run_episode``'s policies on training seeds
(never on evaluation seeds). Only actor-critic policies with masks (MaskablePPO) are supported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch as th

from agents.envs import make_env


@dataclass
class Demonstrations:
    obs: dict[str, np.ndarray]  # key -> (N, ...)
    masks: np.ndarray  # (N, A) bool
    actions: np.ndarray  # (N,)
    returns: np.ndarray  # (N,) discounted return-to-go of the training reward
    episodes: int
    metric: float  # mean primary metric of the demonstrated episodes


def collect(scenario: str, heuristic: str, seeds, gamma: float, env_kwargs: dict | None = None,
            shaping: dict | None = None, metric: str = "effective_accuracy", learner=None,
            progress: bool = False, desc: str = "pretrain: demonstrations") -> Demonstrations:
    """Decisions labelled by ``heuristic`` on ``seeds``. With ``learner`` (a model), the learner
    acts and the heuristic only labels the states it visits (DAgger, Ross et al. 2011), which
    teaches the learner to recover from its own mistakes; ``returns`` and ``metric`` are then the
    learner's. ``progress`` shows one unit per episode (:class:`baselines.progress.Progress`)."""
    import baselines
    from baselines.progress import Progress

    env = make_env(scenario, env_kwargs, monitor=False, shaping=shaping)
    base = env.unwrapped
    obs_buf: dict[str, list] = {}
    masks, actions, returns = [], [], []
    scores = []
    seeds = [int(s) for s in seeds]
    bar = Progress(len(seeds), desc, "episodes", enabled=progress)
    for seed in seeds:
        policy = baselines.make(heuristic, env, seed=int(seed))
        policy.reset(int(seed))
        obs, _ = env.reset(seed=int(seed))
        rewards = []
        done = False
        info = {}
        while not done:
            mask = base.action_masks()
            a, _ = policy.predict(obs, deterministic=True, action_masks=mask)
            a = int(np.asarray(a).reshape(-1)[0])
            for k, v in obs.items():
                obs_buf.setdefault(k, []).append(v)
            masks.append(mask.copy())
            actions.append(a)
            if learner is not None:
                a = int(np.asarray(learner.predict(obs, deterministic=True, action_masks=mask)[0]).reshape(-1)[0])
            obs, r, term, trunc, info = env.step(a)
            rewards.append(float(r))
            done = term or trunc
        ret = np.zeros(len(rewards))
        acc = 0.0
        for i in range(len(rewards) - 1, -1, -1):
            acc = rewards[i] + gamma * acc
            ret[i] = acc
        returns.append(ret)
        scores.append(info.get("metrics", {}).get(metric, math.nan))
        bar.update(1)
    bar.close()
    env.close()
    return Demonstrations({k: np.stack(v) for k, v in obs_buf.items()}, np.stack(masks), np.array(actions),
                          np.concatenate(returns).astype(np.float32), len(seeds), float(np.nanmean(scores)))


def concat(a: Demonstrations, b: Demonstrations) -> Demonstrations:
    return Demonstrations({k: np.concatenate([a.obs[k], b.obs[k]]) for k in a.obs},
                          np.concatenate([a.masks, b.masks]), np.concatenate([a.actions, b.actions]),
                          np.concatenate([a.returns, b.returns]), a.episodes + b.episodes, b.metric)


def behaviour_clone(model, demos: Demonstrations, epochs: int = 5, batch_size: int = 256, lr: float = 1e-3,
                    value_coef: float = 0.5, seed: int = 0, logger=None, progress: bool = False,
                    desc: str = "pretrain: behaviour cloning") -> dict[str, float]:
    """Fit ``model.policy`` (a MaskableActorCriticPolicy) to the demonstrations: masked
    cross-entropy on actions plus ``value_coef`` * Huber loss of the value on returns.
    ``progress`` shows one unit per minibatch over all epochs."""
    from baselines.progress import Progress

    policy = model.policy
    policy.set_training_mode(True)
    device = policy.device
    opt = th.optim.Adam(policy.parameters(), lr=lr)
    n = len(demos.actions)
    rng = np.random.default_rng(seed)
    stats: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = Progress(epochs * -(-n // batch_size), desc, "batches", enabled=progress)
    for epoch in range(epochs):
        order = rng.permutation(n)
        tot_pi = tot_v = tot_acc = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            obs = {k: th.as_tensor(v[idx], device=device) for k, v in demos.obs.items()}
            actions = th.as_tensor(demos.actions[idx], device=device)
            values, log_prob, _ = policy.evaluate_actions(obs, actions, action_masks=demos.masks[idx])
            pi_loss = -log_prob.mean()
            # Huber: large returns (unscaled rewards) must not swamp the imitation gradient
            v_loss = th.nn.functional.smooth_l1_loss(values.flatten(), th.as_tensor(demos.returns[idx], device=device))
            loss = pi_loss + value_coef * v_loss
            opt.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            with th.no_grad():
                dist = policy.get_distribution(obs, action_masks=demos.masks[idx])
                pred = dist.distribution.probs.argmax(dim=1)
            tot_pi += pi_loss.item() * len(idx)
            tot_v += v_loss.item() * len(idx)
            tot_acc += float((pred == actions).float().sum())
            bar.update(1)
        stats = {"pretrain/policy_loss": tot_pi / n, "pretrain/value_loss": tot_v / n,
                 "pretrain/action_accuracy": tot_acc / n}
        bar.write(f"pretrain epoch {epoch + 1}/{epochs}: policy loss {stats['pretrain/policy_loss']:.4f}, "
              f"value loss {stats['pretrain/value_loss']:.4f}, action accuracy "
              f"{stats['pretrain/action_accuracy']:.3f} ({time.perf_counter() - t0:.0f}s)")
    bar.close()
    policy.set_training_mode(False)
    if logger is not None:  # logged with the first rollout's dump
        for k, v in stats.items():
            logger.record(k, v)
        logger.record("pretrain/demo_" + "metric", demos.metric)
    return stats
