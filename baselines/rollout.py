"""One rollout for every kind of policy, and loading of policies by name or model file.

``run_episode(env, policy, seed)`` plays one episode of ``env`` (reset with ``seed``) with a
heuristic from this package or a trained Stable-Baselines3 model, and returns the episode's
metrics, the per-task latencies and the episode's reference bound. MaskablePPO (sb3-contrib)
gets ``action_masks=env.action_masks()``; other SB3 algorithms just predict and play in the
env's ``invalid_action="penalize"`` mode (an invalid action becomes a penalised wait), as they
were trained. Heuristics read ``env.unwrapped.sim`` and are re-bound to ``env`` if needed.

``load_policy(spec, env)`` returns a heuristic for a registered name, or loads an SB3 ``.zip``.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from baselines import REGISTRY, PolicyError, make
from baselines.base import Policy
from baselines.bound import lower_bound_metrics
from envs.sim.metrics import task_latencies

#: SB3 algorithms tried, in this order, when a model file says nothing about its algorithm.
ALGORITHMS = ("MaskablePPO", "PPO", "A2C", "DQN")


# ====================================================================== rollout
def is_maskable(policy: Any) -> bool:
    """True for sb3-contrib's MaskablePPO (its ``predict`` takes ``action_masks``)."""
    if type(policy).__name__ == "MaskablePPO":
        return True
    return hasattr(policy, "policy") and type(policy.policy).__name__.startswith("Maskable")


def is_sb3(policy: Any) -> bool:
    """True for a Stable-Baselines3 (or sb3-contrib) model rather than a built-in heuristic."""
    return not isinstance(policy, Policy) and hasattr(policy, "policy") and hasattr(policy, "predict")


def env_kwargs_for(policy: Any) -> dict[str, Any]:
    """Environment options a policy needs: ``invalid_action="penalize"`` for unmasked SB3 models."""
    if is_sb3(policy) and not is_maskable(policy):
        return {"invalid_action": "penalize"}
    return {}


def run_episode(env, policy: Any, seed: int | None, *, deterministic: bool = True,
                max_steps: int | None = None) -> dict[str, Any]:
    """Play one episode of ``env`` with ``policy`` from ``env.reset(seed=seed)``.

    Returns a dict with ``seed``; ``metrics`` (``info["metrics"]`` at the episode's end);
    ``lower_bound`` (:func:`baselines.bound.lower_bound_metrics` of the episode's workload, the
    same for every policy on the same seed); ``latencies`` (float array, one entry per completed
    task: finish - arrival, for CDF plots); ``lower_bound_latencies`` (the ideal service time of
    each task the bound serves); ``workload_digest`` (equal for every policy on the same seed); ``return`` (sum of rewards); ``steps``;
    ``invalid_actions`` (penalised invalid actions, unmasked SB3 models only); ``terminated``,
    ``truncated``; ``accounting`` (the final counters); ``wall_s``.

    ``max_steps`` (default: none) truncates a rollout that would never end.
    """
    base = env.unwrapped
    heuristic = isinstance(policy, Policy)
    masked = heuristic or is_maskable(policy)
    saved_mode = getattr(base, "invalid_action", None)
    if is_sb3(policy) and not masked:
        base.invalid_action = "penalize"
    try:
        if heuristic:
            if policy.env is not base:
                policy.bind(env)
            policy.reset(seed)
        t0 = time.perf_counter()
        obs, info = env.reset(seed=seed)
        state = None
        episode_start = np.ones((1,), dtype=bool)
        total = 0.0
        steps = invalid = 0
        terminated = truncated = False
        if base.sim.done:  # an empty workload: nothing to decide
            terminated = True
            info = dict(info)
            info.setdefault("metrics", _final_metrics(base))
        while not (terminated or truncated):
            if masked:
                action, state = policy.predict(obs, state=state, episode_start=episode_start,
                                               deterministic=deterministic, action_masks=base.action_masks())
            else:
                action, state = policy.predict(obs, state=state, episode_start=episode_start,
                                               deterministic=deterministic)
            episode_start = np.zeros((1,), dtype=bool)
            obs, reward, terminated, truncated, info = env.step(int(np.asarray(action).reshape(-1)[0]))
            total += float(reward)
            steps += 1
            terms = info.get("reward_terms")
            if terms and terms.get("invalid", 0.0) < 0:
                invalid += 1
            if max_steps is not None and steps >= max_steps and not (terminated or truncated):
                truncated = True
                info = dict(info)
                info["metrics"] = _final_metrics(base)
        wall = time.perf_counter() - t0
    finally:
        if saved_mode is not None:
            base.invalid_action = saved_mode
    sim = base.sim
    latencies = task_latencies(sim)
    metrics = info.get("metrics") or _final_metrics(base)
    bound, bound_latencies = lower_bound_metrics(sim, return_latencies=True)
    return {
        "seed": seed,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "lower_bound": bound,
        "latencies": latencies,
        "lower_bound_latencies": bound_latencies,
        "workload_digest": workload_digest(sim),
        "return": total,
        "steps": steps,
        "invalid_actions": invalid,
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "accounting": dict(info.get("accounting", sim.accounting())),
        "wall_s": wall,
    }


def workload_digest(sim) -> str:
    """Fingerprint of the episode's workload (arrival times, SLOs, stages, sizes, priorities):
    equal digests mean two policies saw the same jobs (common random numbers)."""
    h = hashlib.sha1()
    for spec in sim.job_specs:
        h.update(repr((spec.arrival, spec.slo, spec.priority,
                       [(s.capability, s.size, s.size2, s.parents, s.devices_required, s.min_accuracy)
                        for s in spec.stages])).encode())
    return h.hexdigest()


def _final_metrics(base) -> dict[str, float]:
    from envs.sim.metrics import episode_metrics

    return episode_metrics(base.sim)


# ====================================================================== loading
def model_path(name: str, known: str | None = None) -> Path:
    """The path of an SB3 model file named by a policy spec that is not a registered heuristic.
    Raises :class:`baselines.PolicyError` saying what is wrong (``known``: the names to list
    for an unknown policy; default: the registry)."""
    path = Path(name)
    if not path.exists():
        if path.suffix == ".zip" or len(path.parts) > 1:
            raise PolicyError(f"model file not found: {name}")
        raise PolicyError(f"unknown policy '{name}' (known: {known or ', '.join(REGISTRY)}; "
                          f"or the path of an SB3 .zip model)")
    if not path.is_file():
        raise PolicyError(f"model path is not a file: {name}")
    return path


def load_policy(spec: str | Path, env, *, device: str = "auto", seed: int | None = None,
                **kwargs: Any) -> Any:
    """A policy for ``spec``: a registered heuristic name (bound to ``env``; ``seed`` and
    ``kwargs`` go to its constructor), or the path of an SB3 model ``.zip``.

    The algorithm of a model file is, in order: the ``algo``/``algorithm`` key of a sidecar
    ``config.yml`` or ``args.yml`` next to the zip (rl-baselines3-zoo style), what the zip's
    saved policy class says (a ``Maskable*`` policy is MaskablePPO; DQN has a Q-network; PPO and
    A2C are told apart by their saved hyperparameters), and finally the first of MaskablePPO,
    PPO, A2C, DQN whose ``load`` succeeds. ``device`` (auto|cpu|cuda) is where torch runs it.
    Raises :class:`baselines.PolicyError` for an unknown name or an unusable file.
    """
    name = str(spec)
    if name in REGISTRY:
        return make(name, env, seed=seed, **kwargs)
    path = model_path(name)
    algo = detect_algorithm(path)
    candidates = [algo] if algo else list(ALGORITHMS)
    errors = []
    for a in candidates:
        cls = _algorithm_class(a)
        try:
            model = cls.load(str(path), device=device)
        except Exception as e:  # noqa: BLE001 - report every attempt below
            errors.append(f"{a}: {type(e).__name__}: {e}")
            continue
        model._modelsched_algo = a  # noqa: SLF001 - remembered for reports
        return model
    raise PolicyError(f"cannot load SB3 model {name}: " + "; ".join(errors))


def detect_algorithm(path: str | Path) -> str | None:
    """Algorithm name of an SB3 ``.zip`` (see :func:`load_policy`), or None if undecided.
    Raises :class:`PolicyError` if the file is not an SB3 model archive."""
    path = Path(path)
    for side in ("config.yml", "args.yml"):
        algo = _sidecar_algo(path.parent / side)
        if algo:
            return algo
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data").decode())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise PolicyError(f"{path} is not a Stable-Baselines3 model archive ({type(e).__name__}: {e})") from None
    pc = data.get("policy_class", {})
    text = json.dumps(pc) if isinstance(pc, dict) else str(pc)
    if "Maskable" in text or "maskable" in text:
        return "MaskablePPO"
    if "dqn" in text.lower() or "exploration_rate" in data or "target_update_interval" in data:
        return "DQN"
    if "n_epochs" in data or "clip_range" in data:
        return "PPO"
    if "normalize_advantage" in data and "n_epochs" not in data:
        return "A2C"
    return None


def _sidecar_algo(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f)
    except Exception:  # noqa: BLE001 - an unreadable sidecar is ignored, detection goes on
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("algo", data.get("algorithm"))
    if not isinstance(value, str):
        return None
    for a in ALGORITHMS:
        if value.lower().replace("-", "").replace("_", "") == a.lower():
            return a
    return None


def _algorithm_class(name: str):
    if name == "MaskablePPO":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    import stable_baselines3

    return getattr(stable_baselines3, name)


def policy_label(spec: str | Path) -> str:
    """Name under which a policy spec is reported: the heuristic name, or the model file's stem."""
    name = str(spec)
    return name if name in REGISTRY else Path(name).stem


def describe(policy: Any) -> str:
    """``heuristic`` or ``sb3:<Algorithm>``."""
    if isinstance(policy, Policy):
        return "heuristic"
    return f"sb3:{getattr(policy, '_modelsched_algo', type(policy).__name__)}"
