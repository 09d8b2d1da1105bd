"""``import modelsched``: the package's import name matching its distribution name.

Importing it registers the Gymnasium ids (as ``import envs`` does) and imports neither torch nor
SB3::

    import modelsched
    env = modelsched.make("modelsched/ServingSmall-v1")      # = gymnasium.make
    modelsched.registered_ids(), modelsched.builtin_scenarios(), modelsched.env_id("serving-small")

The code lives in the ``envs`` (environment), ``agents`` (SB3 training) and ``baselines``
(heuristics) packages; ``modelsched.zoo`` runs rl-baselines3-zoo on the ids (MaskablePPO included).
"""

from __future__ import annotations

from gymnasium import make, make_vec

from envs import builtin_scenarios, env_id, registered_ids

__all__ = ["builtin_scenarios", "env_id", "make", "make_vec", "registered_ids"]
