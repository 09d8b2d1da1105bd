"""Batched simulator: B instances of one scenario stepped at once, with exactly the dynamics of
:class:`envs.sim.Simulator` (tests compare them step by step on every id).

``BatchedSimulator(scenario, num_envs, backend="cpu")`` keeps the state of all instances in
``[B, ...]`` arrays (:class:`envs.batched.simulator.State`) and runs each instance's event loop,
compiled with numba, to its next decision, in parallel over the CPU cores. Like the reference
core it imports neither gymnasium nor torch; a scenario feature it does not implement (dynamic
batching) is refused by name with :class:`UnsupportedFeature`; the Gymnasium vector env over it is
:class:`envs.vector.BatchedVectorEnv`.
"""

from envs.batched.simulator import (
    BACKENDS,
    BatchedSimulator,
    Episode,
    EpisodeCompiler,
    UnsupportedFeature,
)

__all__ = ["BACKENDS", "BatchedSimulator", "Episode", "EpisodeCompiler", "UnsupportedFeature"]
