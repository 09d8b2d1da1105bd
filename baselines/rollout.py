"""One rollout for every kind of policy, and loading of policies by name or model file.

``run_episode(env, policy, seed)`` plays one episode of ``env`` (reset with ``seed``) with a
heuristic from this package, a policy of your own, or a trained Stable-Baselines3 model, and
returns the episode's metrics, the per-task latencies and the episode's reference bound. Any
policy whose ``predict`` takes an ``action_masks`` argument (MaskablePPO, the heuristics, your
own) gets ``action_masks=env.action_masks()``; other SB3 algorithms just predict and play in the
env's ``invalid_action="penalize"`` mode (an invalid action becomes a penalised wait), as they
were trained. Heuristics read ``env.unwrapped.sim`` and are re-bound to ``env`` if needed.

``load_policy(spec, env)`` returns a heuristic for a registered name, a policy of your own for
``module:Class`` (or ``path/to/file.py:Class``, or the name of a ``modelsched.policies`` entry
point), loads an SB3 ``.zip``, or an RLlib PPO run folder or checkpoint of ``agents.rllib``
(which needs Ray).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from baselines import REGISTRY, PolicyError, make
from baselines.base import Policy
from baselines.bound import ideal_bound_metrics
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


def accepts_masks(policy: Any) -> bool:
    """True if ``policy.predict`` takes an ``action_masks`` argument (by name, or ``**kwargs``)."""
    predict = getattr(type(policy), "predict", None) or getattr(policy, "predict", None)
    return predict is not None and _takes_masks(predict)


@functools.lru_cache(maxsize=256)
def _takes_masks(predict) -> bool:
    try:
        params = inspect.signature(predict).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "action_masks" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def env_kwargs_for(policy: Any) -> dict[str, Any]:
    """Environment options a policy needs: ``invalid_action="penalize"`` for unmasked SB3 models."""
    if is_sb3(policy) and not is_maskable(policy):
        return {"invalid_action": "penalize"}
    return {}


def run_episode(env, policy: Any, seed: int | None, *, deterministic: bool = True,
                max_steps: int | None = None) -> dict[str, Any]:
    """Play one episode of ``env`` with ``policy`` from ``env.reset(seed=seed)``.

    Returns a dict with ``seed``; ``metrics`` (``info["metrics"]`` at the episode's end);
    ``ideal_bound`` (:func:`baselines.bound.ideal_bound_metrics` of the episode's workload, the
    same for every policy on the same seed); ``latencies`` (float array, one entry per completed
    task: finish - arrival, for CDF plots); ``ideal_bound_latencies`` (the ideal service time of
    each task the bound serves); ``workload_digest`` (equal for every policy on the same seed); ``return`` (sum of rewards); ``steps``;
    ``invalid_actions`` (penalised invalid actions, unmasked SB3 models only); ``terminated``,
    ``truncated``; ``accounting`` (the final counters); ``wall_s``.

    ``max_steps`` (default: none) truncates a rollout that would never end.
    """
    base = env.unwrapped
    heuristic = isinstance(policy, Policy)
    masked = heuristic or is_maskable(policy) or accepts_masks(policy)
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
    bound, bound_latencies = ideal_bound_metrics(sim, return_latencies=True)
    return {
        "seed": seed,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "ideal_bound": bound,
        "latencies": latencies,
        "ideal_bound_latencies": bound_latencies,
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
                          f"or the path of an SB3 .zip model, or module:Class for a policy of your own)")
    if not path.is_file():
        raise PolicyError(f"model path is not a file: {name}")
    return path


#: Entry-point group under which installed packages offer policies to ``evaluate.py --policies``
#: (``[project.entry-points."modelsched.policies"] mine = "mypkg.policy:MyPolicy"``).
ENTRY_POINT_GROUP = "modelsched.policies"


def plugin_policies() -> dict[str, str]:
    """Installed ``modelsched.policies`` entry points: name -> ``module:attr``."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def is_rllib_spec(spec: str | Path) -> bool:
    """True for an RLlib checkpoint folder, or a run folder of ``python -m agents.rllib`` (its
    ``checkpoint/``); checked without importing Ray."""
    from agents.rllib import checkpoint_dir

    return checkpoint_dir(spec) is not None


def is_custom_spec(spec: str | Path) -> bool:
    """True for a policy of one's own: ``module:attr``, ``file.py:attr`` or an entry-point name
    (never a registered heuristic, never an existing model file)."""
    name = str(spec)
    if name in REGISTRY or Path(name).is_file():
        return False
    if name in plugin_policies():
        return True
    module, sep, attr = name.rpartition(":")
    return bool(sep and module and attr.isidentifier())


def custom_policy_object(spec: str | Path) -> Any:
    """The class or factory named by a custom spec (imported, not yet instantiated). The
    working directory is importable, as it is for ``python -c``. Raises :class:`PolicyError`
    naming the module or attribute that is missing."""
    name = str(spec)
    target = plugin_policies().get(name, name)
    module_name, _, attr = target.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise PolicyError(f"policy {name!r}: no file {module_name}")
            mod_key = f"_modelsched_policy_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(mod_key)
            if module is None:
                spec_obj = importlib.util.spec_from_file_location(mod_key, path)
                module = importlib.util.module_from_spec(spec_obj)
                sys.modules[mod_key] = module
                spec_obj.loader.exec_module(module)
        else:
            added = "" not in sys.path and str(Path.cwd()) not in sys.path
            if added:
                sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(module_name)
            finally:
                if added:
                    sys.path.remove(str(Path.cwd()))
    except PolicyError:
        raise
    except ImportError as e:
        raise PolicyError(f"policy {name!r}: cannot import module {module_name!r}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PolicyError(f"policy {name!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def make_custom(spec: str | Path, env, *, seed: int | None = None, **kwargs: Any) -> Any:
    """Instantiate a custom policy for ``env``: a :class:`Policy` subclass is called as
    ``cls(env, seed=seed, **kwargs)``; any other class or factory as ``obj(env)`` if it takes an
    argument, else ``obj()``. The result must have ``predict``."""
    obj = custom_policy_object(spec)
    if isinstance(obj, type) and issubclass(obj, Policy):
        policy = obj(env, seed=seed, **kwargs)
    elif callable(obj):
        try:
            params = [p for p in inspect.signature(obj).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        except (TypeError, ValueError):
            params = [None]
        policy = obj(env) if params else obj()
    else:
        policy = obj
    if not callable(getattr(policy, "predict", None)):
        raise PolicyError(f"policy {str(spec)!r}: {type(policy).__name__} has no predict(observation, ...) method")
    if isinstance(policy, Policy) and policy.env is not getattr(env, "unwrapped", env):
        policy.bind(env)
    return policy


def load_policy(spec: str | Path, env, *, device: str = "auto", seed: int | None = None,
                **kwargs: Any) -> Any:
    """A policy for ``spec``: a registered heuristic name (bound to ``env``; ``seed`` and
    ``kwargs`` go to its constructor), a policy of your own (``module:Class``,
    ``path/to/file.py:Class`` or a ``modelsched.policies`` entry-point name; see
    :func:`make_custom`), or the path of an SB3 model ``.zip``.

    A model file inside a ``train.py`` run folder is rebuilt from the run's ``config.yml`` and
    its weights are read weights-only (no code from the file runs; ``env`` gives the spaces, by
    default the run's scenario). Any other ``.zip`` goes through SB3's loader, which unpickles
    parts of the file: **only load such files if you trust them**.

    The algorithm of another model file is, in order: the ``algo``/``algorithm`` key of a sidecar
    ``config.yml`` or ``args.yml`` next to the zip (rl-baselines3-zoo style), what the zip's
    saved policy class says (a ``Maskable*`` policy is MaskablePPO; DQN has a Q-network; PPO and
    A2C are told apart by their saved hyperparameters), and finally the first of MaskablePPO,
    PPO, A2C, DQN whose ``load`` succeeds. ``device`` (auto|cpu|cuda) is where torch runs it.
    Raises :class:`baselines.PolicyError` for an unknown name or an unusable file.
    """
    name = str(spec)
    if name in REGISTRY:
        return make(name, env, seed=seed, **kwargs)
    if is_custom_spec(name):
        return make_custom(name, env, seed=seed, **kwargs)
    if is_rllib_spec(name):
        from agents.rllib import RLlibPolicy

        return RLlibPolicy(name, env, seed=seed)
    path = model_path(name)
    if writes_run_config(path):
        # A train.py model: rebuilt from the run's config.yml, weights loaded weights-only.
        from agents.safe_load import UnsafeModelError, load_run_model

        try:
            return load_run_model(path, env=env, device=device)
        except UnsafeModelError as e:
            raise PolicyError(str(e)) from None
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


def check_spaces(model: Any, env, label: str, scenario: str) -> None:
    """Raise :class:`PolicyError` naming both shapes if an SB3 model was trained on other
    observation or action spaces than ``env``'s (e.g. another scenario's)."""
    def shapes(space):
        spaces = getattr(space, "spaces", None)
        if isinstance(spaces, dict):
            return {k: tuple(v.shape) for k, v in spaces.items()}
        return getattr(space, "shape", space)

    ms, es = getattr(model, "observation_space", None), env.observation_space
    mn, en = getattr(getattr(model, "action_space", None), "n", None), getattr(env.action_space, "n", None)
    if shapes(ms) != shapes(es) or mn != en:
        raise PolicyError(f"model '{label}' was trained on other spaces than scenario '{scenario}': observation "
                          f"{shapes(ms)} and {mn} actions, the scenario has {shapes(es)} and {en} actions")


def writes_run_config(path: str | Path) -> bool:
    """True for a model file in a ``train.py`` run folder (its ``config.yml`` next to it, or
    above its ``checkpoints/``): such files are loaded weights-only (:mod:`agents.safe_load`)."""
    path = Path(path).resolve()
    return any((folder / "config.yml").is_file() for folder in (path.parent, path.parent.parent))


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
    """Name under which a policy spec is reported: the heuristic name; for a model file, the
    file's stem prefixed by its run folder (``<run>/best_model``) when the file is in one
    (a folder with ``config.yml``, or its ``checkpoints/``); for a custom policy, the spec."""
    name = str(spec)
    if name in REGISTRY or is_custom_spec(name):
        return name
    path = Path(name)
    if is_rllib_spec(name):  # <run>, or <run>/checkpoint: the run's folder name
        return (path.resolve().parent if path.name == "checkpoint" else path.resolve()).name
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yml").is_file() or (folder / "args.yml").is_file():
            return f"{folder.resolve().name}/{path.stem}"
    return path.stem


def policy_labels(specs: list[str]) -> list[str]:
    """Distinct report labels for ``specs`` (:func:`policy_label`); model files whose labels
    collide get more of their path (``a/best_model``, ``b/best_model``), never a counter."""
    labels = [policy_label(s) for s in specs]
    for depth in range(1, 8):
        dup = {lbl for lbl in labels if labels.count(lbl) > 1}
        if not dup:
            break
        for i, s in enumerate(specs):
            if labels[i] in dup and s not in REGISTRY and not is_custom_spec(s):
                parts = Path(s).resolve().with_suffix("").parts
                labels[i] = "/".join(parts[-(depth + 1):])
    seen: dict[str, int] = {}
    for i, lbl in enumerate(labels):  # still equal: the same file named twice
        if lbl in seen:
            seen[lbl] += 1
            labels[i] = f"{lbl} ({seen[lbl]})"
        else:
            seen[lbl] = 1
    return labels


def describe(policy: Any, spec: str | Path | None = None) -> str:
    """``heuristic`` (a built-in rule), ``reference`` (``clairvoyant``: not a baseline), ``custom`` (a policy of your own, named by ``spec``) or
    ``sb3:<Algorithm>``."""
    if getattr(policy, "reference", False) is True:  # e.g. baselines.optimum:ClairvoyantPolicy
        return "reference"
    if spec is not None and is_custom_spec(spec):
        return "custom"
    if isinstance(policy, Policy):
        return "heuristic"
    if type(policy).__name__ == "RLlibPolicy":
        return "rllib:PPO"
    return f"sb3:{getattr(policy, '_modelsched_algo', type(policy).__name__)}"
