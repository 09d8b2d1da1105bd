"""modelsched environments.

``import envs`` registers the Gymnasium ids: ``modelsched/Scheduling-v1`` (takes ``scenario=``:
a built-in name, a YAML path or a dict) and one id per built-in scenario, named in CamelCase
(``serving-small`` -> ``modelsched/ServingSmall-v1``). Registration uses string entry points, so
it imports nothing heavy (``import modelsched`` does the same). Each id's ``vector_entry_point``
is the batched simulator's vector env, which ``gym.make_vec(id, num_envs=B)`` picks by default:
masks from ``vec.unwrapped.action_masks()`` (B, n_actions), and ``vec.action_space.sample()``
draws valid actions; with ``vectorization_mode="sync"``/``"async"`` the masks come from
``vec.call("action_masks")`` and ``action_space.sample()`` is unmasked unless given
``mask=tuple(m.astype(np.int8) for m in masks)``. ``envs.wrappers`` flattens the observation
(``FlattenScheduling``) or puts the mask in it (``ActionMaskObservation``). The simulator core
(``envs.sim``) imports neither gymnasium nor torch.
"""

from __future__ import annotations

from pathlib import Path

_SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


def builtin_scenarios() -> list[str]:
    return sorted(p.stem for p in _SCENARIO_DIR.glob("*.yaml") if p.stem != "library")


def env_id(scenario: str) -> str:
    """``serving-small`` -> ``modelsched/ServingSmall-v1``."""
    camel = "".join(part[:1].upper() + part[1:] for part in scenario.replace("_", "-").split("-"))
    return f"modelsched/{camel}-v1"


def registered_ids() -> list[str]:
    return ["modelsched/Scheduling-v1"] + [env_id(s) for s in builtin_scenarios()]


def _register() -> None:
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # the pure simulator core is usable without gymnasium
        return
    vec = "envs.vector:BatchedVectorEnv"
    if "modelsched/Scheduling-v1" not in registry:
        register(id="modelsched/Scheduling-v1", entry_point="envs.env:SchedulingEnv", vector_entry_point=vec)
    for name in builtin_scenarios():
        eid = env_id(name)
        if eid not in registry:
            register(id=eid, entry_point="envs.env:SchedulingEnv", vector_entry_point=vec,
                     kwargs={"scenario": name})


_register()
