"""The masked PPO module of :mod:`agents.rllib` (imports RLlib: import it only when Ray is installed)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.utils.torch_utils import FLOAT_MIN


class MaskedPPOTorchRLModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO module built on ``observation_space["observations"]``, with the
    ``"action_mask"`` added to the action logits as ``log(mask)`` (clamped to the lowest float)
    in every forward pass: masked actions get probability 0 when sampling, in inference and in
    the loss. The observation space must be that of :class:`envs.wrappers.ActionMaskObservation`.
    The caller's batch is never modified (RLlib reuses it for the value function)."""

    def __init__(self, *, observation_space=None, action_space=None, **kwargs):
        if (not isinstance(observation_space, gym.spaces.Dict)
                or set(observation_space.spaces) != {"observations", "action_mask"}):
            raise ValueError(f"MaskedPPOTorchRLModule needs the observation Dict{{'observations': ..., "
                             f"'action_mask': ...}} of envs.wrappers.ActionMaskObservation, got {observation_space}")
        self._with_mask = observation_space
        super().__init__(observation_space=observation_space["observations"], action_space=action_space, **kwargs)

    def setup(self):
        super().setup()  # the networks are built for the observations alone
        self.observation_space = self._with_mask

    @staticmethod
    def _split(batch: dict) -> tuple[Any, dict]:
        obs = batch[Columns.OBS]
        if not isinstance(obs, dict) or "action_mask" not in obs:
            raise ValueError("MaskedPPOTorchRLModule: the batch's observations carry no 'action_mask' "
                             "(wrap the env in envs.wrappers.ActionMaskObservation)")
        inner = dict(batch)
        inner[Columns.OBS] = obs["observations"]
        return obs["action_mask"], inner

    @staticmethod
    def _mask(out: dict, mask) -> dict:
        out[Columns.ACTION_DIST_INPUTS] = out[Columns.ACTION_DIST_INPUTS] + torch.clamp(torch.log(mask), min=FLOAT_MIN)
        return out

    def _forward(self, batch, **kwargs):
        mask, inner = self._split(batch)
        return self._mask(super()._forward(inner, **kwargs), mask)

    def _forward_train(self, batch, **kwargs):
        mask, inner = self._split(batch)
        return self._mask(super()._forward_train(inner, **kwargs), mask)

    def compute_values(self, batch, embeddings=None):
        if embeddings is None and isinstance(batch[Columns.OBS], dict):
            _, batch = self._split(batch)
        return super().compute_values(batch, embeddings)
