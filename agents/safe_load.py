"""Loading the project's own models without running code from the file.

An SB3 ``.zip`` keeps some of its fields (the policy class, the spaces, schedules, the last
observation) as cloudpickle, and ``PPO.load`` unpickles them: **loading a model file runs code
from it**, so a crafted file can run anything. The networks' weights, however, are plain
``torch.save`` state dicts (``policy.pth``, ``policy.optimizer.pth``), which
``torch.load(weights_only=True)`` reads with a restricted unpickler that builds tensors and
containers only.

For a model written by ``train.py`` (a ``.zip`` inside a run folder, next to the run's
``config.yml``, or in its ``checkpoints/``), :func:`load_run_model` rebuilds the algorithm and
its network from the run's configuration (YAML, read with ``yaml.safe_load``), loads the weights
with ``weights_only=True``, and reads the step counters from the archive's JSON ``data`` file
(plain numbers only; its serialised entries are never decoded). ``evaluate.py``,
``baselines.load_policy`` and ``train.py --resume`` use it by default for such files; other
``.zip`` files go through SB3's loader, which the README warns about.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import yaml

#: Plain counters restored from the archive's ``data`` JSON (never its serialised entries).
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")


class UnsafeModelError(ValueError):
    """The file cannot be loaded weights-only (no run configuration, or a broken archive)."""


def run_config_for(path: str | Path) -> Path | None:
    """The ``config.yml`` of the run folder a model file belongs to, or None."""
    path = Path(path).resolve()
    for folder in (path.parent, path.parent.parent):
        cfg = folder / "config.yml"
        if cfg.is_file():
            return cfg
    return None


def load_run_model(path: str | Path, env=None, device: str = "auto", optimizer: bool = False):
    """Rebuild a ``train.py`` model from its run's ``config.yml`` and load the weights of
    ``path`` weights-only. ``env`` (a Gymnasium env or SB3 VecEnv) gives the spaces; by default
    the run's scenario is made. ``optimizer`` also restores the optimizer state (for resuming).
    Raises :class:`UnsafeModelError` naming what is missing."""
    import torch

    from agents.envs import make_env
    from agents.hyperparams import algo_kwargs
    from agents.policies import policy_for
    from agents.registry import get_algo

    path = Path(path)
    cfg_path = run_config_for(path)
    if cfg_path is None:
        raise UnsafeModelError(f"{path}: no config.yml of a train.py run next to it (or above its checkpoints/)")
    with open(cfg_path) as f:
        config = yaml.safe_load(f)
    try:
        spec = get_algo(str(config["algo"]))
        hp = dict(config["hyperparams"])
    except (KeyError, TypeError, ValueError) as e:
        raise UnsafeModelError(f"{cfg_path}: not a train.py run configuration ({e})") from None
    if env is None:
        env_kwargs = {**spec.env_kwargs, **(config.get("env_kwargs") or {})}
        env = make_env(str(config["scenario"]), env_kwargs, monitor=False)
    kwargs = algo_kwargs(hp)
    if spec.name == "dqn":  # inference needs no replay memory
        kwargs["buffer_size"] = 1
        kwargs["learning_starts"] = 0
    policy, policy_kwargs = policy_for(hp["policy_net"], spec.name, kwargs.pop("policy_kwargs", None))
    model = spec.cls(policy, env, policy_kwargs=policy_kwargs, device=device, verbose=0, **kwargs)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            weights = torch.load(io.BytesIO(zf.read("policy.pth")), map_location=model.device, weights_only=True)
            opt_state = None
            if optimizer and "policy.optimizer.pth" in names:
                opt_state = torch.load(io.BytesIO(zf.read("policy.optimizer.pth")), map_location=model.device,
                                       weights_only=True)
            data = json.loads(zf.read("data").decode()) if "data" in names else {}
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, ValueError) as e:
        raise UnsafeModelError(f"{path}: not a readable SB3 archive ({type(e).__name__}: {e})") from None
    try:
        model.policy.load_state_dict(weights)
    except RuntimeError as e:
        raise UnsafeModelError(f"{path}: its weights do not fit the network of {cfg_path} "
                               f"({str(e).splitlines()[0]})") from None
    if opt_state is not None:
        model.policy.optimizer.load_state_dict(opt_state)
    for key in COUNTERS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(model, key, value)
    model._modelsched_algo = {"maskable_ppo": "MaskablePPO"}.get(spec.name, spec.cls.__name__)  # noqa: SLF001
    model._modelsched_safe = True  # noqa: SLF001 - loaded weights-only
    return model


def is_safe_loaded(model: Any) -> bool:
    return bool(getattr(model, "_modelsched_safe", False))
