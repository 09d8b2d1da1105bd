"""Observation wrappers for libraries that want something other than the ``Dict`` observation.

* :class:`FlattenScheduling`: the observation as one flat float32 ``Box`` in [-1, 1] (for
  ``PPO("MlpPolicy")``, CleanRL-style scripts, anything that takes a single vector).
* :class:`ActionMaskObservation`: ``Dict{"observations": Box, "action_mask": Box}``, the exact
  action mask inside the observation (RLlib's and TorchRL's convention for masked actions).

Both keep ``action_masks()`` callable on the wrapper (and reachable through SB3's
``env_method("action_masks")``), and keep the action space (so ``action_space.sample()`` still
draws valid actions). Gymnasium only: this module imports no SB3 and no torch.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: The order in which :class:`FlattenScheduling` concatenates the observation's arrays (each
#: flattened in C order): the task window, the devices, the per-assignment estimates, the globals.
FLAT_ORDER = ("tasks", "devices", "estimates", "global")
#: The keys a scenario with dynamic batching adds, concatenated after :data:`FLAT_ORDER`.
BATCH_ORDER = ("batch", "queues", "device_batch")
#: The keys a scenario with continuous batching adds, concatenated after :data:`FLAT_ORDER`.
CONTINUOUS_ORDER = ("queues", "device_batch", "kv_use")


def _dict_space(env: gym.Env) -> spaces.Dict:
    space = env.observation_space
    if not isinstance(space, spaces.Dict) or set(space.spaces) not in (
            set(FLAT_ORDER), set(FLAT_ORDER + BATCH_ORDER), set(FLAT_ORDER + CONTINUOUS_ORDER)):
        raise TypeError(f"expected a modelsched env with the Dict observation {FLAT_ORDER} (plus {BATCH_ORDER} "
                        f"with dynamic batching, {CONTINUOUS_ORDER} with continuous batching), got {space}")
    return space


def obs_order(keys) -> tuple[str, ...]:
    """The concatenation order of a modelsched observation with these keys."""
    if "batch" in keys:
        return FLAT_ORDER + BATCH_ORDER
    if "kv_use" in keys:
        return FLAT_ORDER + CONTINUOUS_ORDER
    return FLAT_ORDER


def _order(space: spaces.Dict) -> tuple[str, ...]:
    return obs_order(space.spaces)


class FlattenScheduling(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The observation as one float32 ``Box(-1, 1, (n,))``: ``tasks`` (K x task features),
    ``devices`` (D x device features), ``estimates`` (K x V x D) and ``global`` (5), each
    flattened in C order and concatenated in that order (:data:`FLAT_ORDER`; with dynamic
    batching, then ``batch``, ``queues`` and ``device_batch``, :data:`BATCH_ORDER`; with
    continuous batching ``queues``, ``device_batch``, ``kv_use``, :data:`CONTINUOUS_ORDER`). ``slices[key]``
    gives each array's range in the flat vector; ``unflatten(x)`` gives the Dict back.
    ``FlattenScheduling(gym.make("modelsched/ServingSmall-v1"))``.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = _dict_space(env)
        self._keys = _order(space)
        self._shapes = {k: space[k].shape for k in self._keys}
        self.slices: dict[str, slice] = {}
        start = 0
        for k in self._keys:
            n = int(np.prod(self._shapes[k]))
            self.slices[k] = slice(start, start + n)
            start += n
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(start,), dtype=np.float32)

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(observation[k], dtype=np.float32).ravel() for k in self._keys])

    def unflatten(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The Dict observation of a flat one (views into ``x``)."""
        return {k: x[self.slices[k]].reshape(self._shapes[k]) for k in self._keys}

    def action_masks(self) -> np.ndarray:
        """The exact mask of the wrapped env (``env.unwrapped.action_masks()``)."""
        return self.env.unwrapped.action_masks()


class ActionMaskObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """``Dict{"observations": ..., "action_mask": Box(0, 1, (n_actions,), float32)}``: the
    observation (flattened as :class:`FlattenScheduling` does, or the original ``Dict`` with
    ``flatten=False``) and the exact mask of valid actions (1 valid, 0 invalid; waiting, the
    last action, is always 1), the layout RLlib's and TorchRL's action-masking models read
    (``agents.rllib`` trains RLlib PPO on it, tested; TorchRL's ``ActionMask`` transform expects
    the same ``"action_mask"`` entry, not tested here). Both wrappers record their arguments,
    so ``env.spec`` recreates them (``gym.make(env.spec)``)."""

    def __init__(self, env: gym.Env, flatten: bool = True):
        gym.utils.RecordConstructorArgs.__init__(self, flatten=flatten)
        gym.ObservationWrapper.__init__(self, env)
        base = _dict_space(env)
        self._flat = FlattenScheduling(env) if flatten else None
        n = int(env.action_space.n)
        self.observation_space = spaces.Dict({
            "observations": self._flat.observation_space if flatten else base,
            "action_mask": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
        })

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, Any]:
        obs = self._flat.observation(observation) if self._flat is not None else observation
        return {"observations": obs, "action_mask": self.env.unwrapped.action_masks().astype(np.float32)}

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()
