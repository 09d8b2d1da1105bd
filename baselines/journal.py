"""The journal of an evaluation: every finished episode kept on disk as soon as it finishes.

``evaluate.py`` writes each finished (scenario, policy, seed, episode) result to
``<out>/.partial/<key>.npz`` (atomically: a temporary file, then a rename), so a run that is
interrupted or killed keeps its work, and running the same command again skips what is done.
The key fingerprints everything a result depends on: the resolved scenario (and the contents of
a trace file), the policy (a heuristic's name and options, a model file's bytes, a custom
policy's source file), the seed and episode, the environment options, and the source code of
``envs`` and ``baselines``. Changing any of them gives new keys: stale results are never reused.
The journal is removed once the outputs are complete.

Files hold numpy arrays and one JSON string (``np.load(allow_pickle=False)``): reading a journal
never executes code.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from baselines.files import atomic_write

#: Fields of a result that are arrays (the rest is JSON).
ARRAY_FIELDS = ("latencies", "ideal_bound_latencies")
#: Fields a journal entry never stores (rebuilt by the caller).
TRANSIENT = ("item", "_extra")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-1 over the source of the packages that produce results (``envs``, ``baselines``)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for pkg in ("envs", "baselines"):
        for path in sorted((root / pkg).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def file_fingerprint(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def policy_fingerprint(spec: str, policy_kwargs: tuple = ()) -> str:
    """What a policy spec's results depend on besides the code: a model file's bytes, a custom
    policy's source file, a heuristic's options."""
    from baselines import REGISTRY
    from baselines.rollout import custom_policy_object, is_custom_spec

    if spec in REGISTRY:
        return f"heuristic:{spec}:{policy_kwargs!r}"
    if is_custom_spec(spec):
        import inspect

        obj = custom_policy_object(spec)
        try:
            source = inspect.getsourcefile(obj) or ""
        except TypeError:
            source = ""
        return f"custom:{spec}:{file_fingerprint(source) if source and os.path.isfile(source) else ''}"
    from baselines.rollout import is_rllib_spec

    if is_rllib_spec(spec):  # every file of the checkpoint
        from agents.rllib import checkpoint_dir

        root = checkpoint_dir(spec)
        files = sorted(f for f in root.rglob("*") if f.is_file())
        return "rllib:" + hashlib.sha1(repr([(str(f.relative_to(root)), file_fingerprint(str(f.resolve())))
                                             for f in files]).encode()).hexdigest()
    return f"model:{file_fingerprint(str(Path(spec).resolve()))}"


def scenario_fingerprint(spec: str, env_kwargs: dict) -> str:
    from envs.scenarios.loader import load_scenario

    scenario = load_scenario(spec, **env_kwargs)
    text = json.dumps(scenario.raw, sort_keys=True, default=repr)
    trace = env_kwargs.get("trace")
    extra = file_fingerprint(str(Path(trace).resolve())) if trace and os.path.isfile(trace) else ""
    return hashlib.sha1((text + extra).encode()).hexdigest()


class Journal:
    """Finished episodes under ``folder`` (one ``.npz`` each); ``enabled=False`` keeps nothing."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.folder = Path(folder)
        self.enabled = enabled
        self._scenarios: dict[tuple, str] = {}

    def key(self, item, env_kwargs: dict) -> str:
        skey = (item.scenario, tuple(sorted(env_kwargs.items())))
        if skey not in self._scenarios:
            self._scenarios[skey] = scenario_fingerprint(item.scenario, env_kwargs)
        parts = (code_fingerprint(), self._scenarios[skey], policy_fingerprint(item.policy, item.policy_kwargs),
                 item.label, item.seed, item.episode, item.env_kwargs)
        return hashlib.sha1(repr(parts).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> dict | None:
        """The stored result for ``key``, or None (also for an unreadable or partial file)."""
        if not self.enabled:
            return None
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                result = json.loads(str(data["meta"]))
                for name in ARRAY_FIELDS:
                    if name in data:
                        result[name] = np.array(data[name])
        except (OSError, ValueError, KeyError):
            return None
        return result

    def save(self, key: str, result: dict) -> None:
        if not self.enabled:
            return
        meta = {k: v for k, v in result.items() if k not in ARRAY_FIELDS and k not in TRANSIENT}
        arrays = {k: np.asarray(result[k], dtype=float) for k in ARRAY_FIELDS if k in result}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta, default=_json_default)), **arrays)
        atomic_write(self.path(key), lambda f: f.write(buf.getvalue()))


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
