"""Hyperparameters per algorithm and scenario, rl-baselines3-zoo style.

``agents/hyperparams/<algo>.yml`` maps scenario names to hyperparameters; the ``default`` entry
applies to every scenario and a scenario's entry is merged over it (nested dicts merged key by
key). Command-line overrides (``-p key=value``, dotted keys for nested dicts, values parsed with
``yaml.safe_load``) are merged last. The result is validated: a key that is neither one of the
run keys below nor a constructor argument of the algorithm is an error naming the key and file.

Run keys (not passed to the algorithm): ``n_timesteps`` (training budget), ``n_envs`` (parallel
environments), ``policy_net`` (see :data:`agents.policies.POLICY_NETS`), ``env_kwargs``
(keyword arguments for the environment), ``normalize_reward`` (wrap in ``VecNormalize`` for
rewards only), ``reward_shaping`` (training-time reward shaping, keyword arguments of
:class:`agents.shaping.RewardShaping` except ``gamma``, which is the algorithm's; empty: none), ``pretrain`` (behaviour-cloning warm start, see
:mod:`agents.pretrain`: ``heuristic``, ``episodes``, ``epochs``, ``lr``, ``batch_size``; empty:
none; MaskablePPO only). Values that SB3 wants as objects are written as strings: schedules
``lin_<x>`` (linear decay from x to 0), activations ``relu`` / ``tanh`` / ``elu`` / ``gelu``.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from agents.registry import get_algo

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"

RUN_KEYS = {
    "n_timesteps": 100_000,
    "n_envs": 1,
    "policy_net": "mlp",
    "env_kwargs": {},
    "normalize_reward": False,
    "reward_shaping": {},
    "pretrain": {},
}

#: Keys of the ``pretrain`` and ``reward_shaping`` run keys.
PRETRAIN_KEYS = {"heuristic", "episodes", "epochs", "lr", "batch_size", "value_coef", "dagger", "dagger_epochs"}
SHAPING_KEYS = {"base", "potential", "term_scale", "scale"}

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


class HyperparamError(ValueError):
    pass


def merge(base: dict, over: dict) -> dict:
    """Recursive dict merge: values of ``over`` win; nested dicts are merged, except that an empty
    dict in ``over`` replaces (``-p pretrain={}`` turns pretraining off)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and v and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _number(value: Any) -> Any:
    """PyYAML reads ``1e-4`` (no dot) as a string; turn such strings into floats, recursively."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") and not value.startswith("lin_") else value
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_number(v) for v in value]
    return value


def parse_overrides(items: list[str] | None) -> dict:
    """``["a=1", "policy_kwargs.net_arch=[64, 64]"]`` -> ``{"a": 1, "policy_kwargs": {...}}``."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise HyperparamError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise HyperparamError(f"override {item!r}: value is not valid YAML: {e}") from None
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise HyperparamError(f"override {item!r}: {p!r} is already set to a non-mapping")
        node[leaf] = _number(value)
    return out


def hyperparams_file(algo: str) -> Path:
    return HYPERPARAMS_DIR / f"{get_algo(algo).name}.yml"


#: Vectorisations of the training environments (``train.py --vec``).
VEC_KINDS = ("auto", "dummy", "subproc", "batched")


def load_hyperparams(algo: str, scenario: str, overrides: dict | None = None, vec: str = "auto") -> dict:
    """Resolved hyperparameters (plain YAML-able values) for ``algo`` on ``scenario``; with
    ``vec="batched"``, the file's ``vec_batched`` entry is merged over the scenario's (before
    ``overrides``): the rollout and minibatch sizes that suit many instances per step."""
    spec = get_algo(algo)
    path = hyperparams_file(spec.name)
    table: dict = {}
    if path.exists():
        with open(path) as f:
            table = _number(yaml.safe_load(f) or {})
        if not isinstance(table, dict):
            raise HyperparamError(f"{path}: must map scenario names to hyperparameters")
    name = Path(str(scenario)).stem
    resolved = merge(RUN_KEYS, table.get("default") or {})
    resolved = merge(resolved, table.get(name) or {})
    if vec == "batched":
        resolved = merge(resolved, table.get("vec_batched") or {})
    resolved = merge(resolved, overrides or {})
    validate(spec.name, resolved, source=str(path), overrides=overrides)
    return resolved


def algo_arguments(algo: str) -> set[str]:
    cls = get_algo(algo).cls
    return {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "policy", "env")}


def validate(algo: str, hp: dict, source: str = "<overrides>", overrides: dict | None = None) -> None:
    """Refuse unknown keys and ill-typed values; a key set by ``overrides`` (``-p`` or a flag)
    is blamed on the override, other keys on ``source``."""
    allowed = algo_arguments(algo) | set(RUN_KEYS)
    refused = {"seed", "device", "tensorboard_log", "verbose", "_init_setup_model"}
    for key in hp:
        if key in refused:
            raise HyperparamError(f"{source}: {key!r} is set by train.py's command line, not by hyperparameters")
        if key not in allowed:
            raise HyperparamError(f"{source}: unknown hyperparameter {key!r} for {algo} "
                                  f"(known: {', '.join(sorted(allowed - refused))})")
    for key, known in (("pretrain", PRETRAIN_KEYS), ("reward_shaping", SHAPING_KEYS)):
        value = hp.get(key) or {}
        if not isinstance(value, dict):
            raise HyperparamError(f"{source}: {key} must be a mapping, got {value!r}")
        if set(value) - known:
            raise HyperparamError(f"{source}: unknown {key} keys {sorted(set(value) - known)} "
                                  f"(known: {', '.join(sorted(known))})")
    _check_types(algo, hp, source, overrides or {})
    if hp.get("pretrain") and not get_algo(algo).masked:
        raise HyperparamError(f"{source}: pretrain (behaviour cloning) is implemented for maskable_ppo only")


#: Hyperparameters that may also be a schedule string ``lin_<x>``.
SCHEDULES = ("learning_rate", "clip_range", "clip_range_vf")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_types(algo: str, hp: dict, source: str, overrides: dict) -> None:
    """Refuse a value whose type cannot be what the key means, naming the key: numbers where
    the algorithm's default is a number (or a ``lin_<x>`` schedule where schedules are allowed),
    booleans where it is a boolean, and the run keys' own types."""
    params = inspect.signature(get_algo(algo).cls.__init__).parameters

    def where(key: str) -> str:
        return f"-p {key}=..." if key in overrides else source

    for key, value in hp.items():
        if key in RUN_KEYS:
            continue
        default = params[key].default if key in params else None
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise HyperparamError(f"{where(key)}: hyperparameter {key!r} must be true or false, got {value!r}")
        elif _is_number(default) and value is not None and not _is_number(value):
            if key in SCHEDULES and isinstance(value, str) and value.startswith("lin_"):
                try:
                    float(value[4:])
                    continue
                except ValueError:
                    pass
            hint = " or a schedule lin_<x>" if key in SCHEDULES else ""
            raise HyperparamError(f"{where(key)}: hyperparameter {key!r} must be a number{hint}, got {value!r}")
    for key in ("n_timesteps", "n_envs"):
        value = hp.get(key)
        if not (_is_number(value) and float(value) == int(value) and int(value) >= 1):
            raise HyperparamError(f"{where(key)}: {key} must be a positive integer, got {value!r}")
    if not isinstance(hp.get("env_kwargs"), dict):
        raise HyperparamError(f"{source}: env_kwargs must be a mapping, got {hp.get('env_kwargs')!r}")


def _schedule(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])

        def linear(progress_remaining: float) -> float:
            return progress_remaining * start

        return linear
    return value


def algo_kwargs(hp: dict) -> dict:
    """The part of resolved hyperparameters passed to the algorithm, with strings turned into the
    objects SB3 expects (schedules, activation classes)."""
    kwargs = {k: copy.deepcopy(v) for k, v in hp.items() if k not in RUN_KEYS}
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        if key in kwargs:
            kwargs[key] = _schedule(kwargs[key])
    pk = kwargs.get("policy_kwargs")
    if isinstance(pk, dict) and isinstance(pk.get("activation_fn"), str):
        name = pk["activation_fn"].lower()
        if name not in ACTIVATIONS:
            raise HyperparamError(f"unknown activation_fn {name!r}: choose one of {', '.join(ACTIVATIONS)}")
        pk["activation_fn"] = ACTIVATIONS[name]
    return kwargs
