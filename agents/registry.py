"""Algorithm registry: which SB3 class trains a scheduler, and how it copes with invalid actions.

``maskable_ppo`` (sb3-contrib) samples only valid actions through ``env.action_masks()``; the
other algorithms see every action, so their environments turn invalid actions into a penalized
wait (``invalid_action="penalize"``) instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass

from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    cls: type[BaseAlgorithm]
    masked: bool
    """Uses the env's action masks (else the env penalizes invalid actions)."""
    on_policy: bool
    """Actor-critic on-policy algorithm (policy network choices apply to its actor and critic)."""

    @property
    def env_kwargs(self) -> dict:
        """Keyword arguments the algorithm needs from the environment."""
        return {} if self.masked else {"invalid_action": "penalize"}


ALGOS: dict[str, AlgoSpec] = {
    "maskable_ppo": AlgoSpec("maskable_ppo", MaskablePPO, masked=True, on_policy=True),
    "ppo": AlgoSpec("ppo", PPO, masked=False, on_policy=True),
    "a2c": AlgoSpec("a2c", A2C, masked=False, on_policy=True),
    "dqn": AlgoSpec("dqn", DQN, masked=False, on_policy=False),
}

DEFAULT_ALGO = "maskable_ppo"


def algo_names() -> list[str]:
    return list(ALGOS)


def get_algo(name: str) -> AlgoSpec:
    """The registered algorithm ``name``; unknown names raise ``ValueError`` listing the known."""
    key = name.strip().lower().replace("-", "_")
    if key not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGOS)}")
    return ALGOS[key]
