"""``evaluate.py --ray [ADDRESS]``: the episodes of an evaluation as Ray tasks over a cluster.

The work items (scenario, policy, seed, episode) are grouped by (scenario, policy) and cut into
seed chunks, one Ray task each (one CPU). A task plays its chunk exactly as the local run
would: on the batched simulator with ``--backend batched`` (policies with no batched form on
the reference, as locally), else episode by episode on the reference simulator. Results come
back as tasks finish: each is kept in the run's journal at once (``<out>/.partial``, the same
as a local run's) and counted on the progress bar, so an interrupted run resumes from what
finished, locally or on Ray. A task whose worker dies (killed, out of memory, node lost) is run
again by Ray, up to :data:`MAX_RETRIES` times; an error raised by the policy or the simulator is
not retried (it would fail again) and stops the run with that error. The outputs are written
only when every item is done, with the local run's writer: same files, same values.

Each task starts in the driver's working directory when that folder exists on the worker's node
(relative paths of model files and ``file.py:Class`` policies work on a local cluster and on
nodes that share the file system); the nodes need the project installed.
"""

from __future__ import annotations

import math
import os
import sys
from types import SimpleNamespace

#: Times Ray runs a task again after its worker died.
MAX_RETRIES = 3
#: Tasks per (scenario, policy) group per cluster CPU: small enough chunks to balance the load.
TASKS_PER_CPU = 2


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def run_chunk(items: list, backend: str, batch_size: int | None, device: str, threads: int, env_kwargs: dict,
              cwd: str) -> list[dict]:
    """Play ``items`` (work items of one scenario and one policy) in this Ray worker; returns
    their results in the same order."""
    from baselines.evaluation import _run_batched_items, _set_threads, run_item

    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)
    _set_threads(threads)
    results: dict[int, dict] = {}
    order = list(range(len(items)))
    if backend == "batched":
        args = SimpleNamespace(device=device, batch_size=batch_size)
        order, _ = _run_batched_items(items, order, results.__setitem__, args, env_kwargs, _NoBar(), notify=False)
    for i in order:
        results[i] = run_item(items[i])
    return [results[i] for i in range(len(items))]


def chunks(items: list, order: list[int], cpus: int, batch_size: int | None, backend: str) -> list[list[int]]:
    """``order`` cut into tasks: per (scenario, policy, label) group, in order of first
    appearance, about :data:`TASKS_PER_CPU` x ``cpus`` chunks (at most ``batch_size`` items
    each with the batched backend)."""
    groups: dict[tuple, list[int]] = {}
    for i in order:
        it = items[i]
        groups.setdefault((it.scenario, it.policy, it.label), []).append(i)
    out = []
    for idx in groups.values():
        size = max(1, math.ceil(len(idx) / (TASKS_PER_CPU * cpus)))
        if backend == "batched" and batch_size:
            size = min(size, batch_size)
        out.extend(idx[c:c + size] for c in range(0, len(idx), size))
    return out


def run_on_ray(items: list, order: list[int], done, args, env_kwargs: dict, bar) -> None:
    """Run ``items[order]`` as Ray tasks (Ray initialised by the caller), calling ``done(i,
    result)`` and ``bar.update`` as each task finishes. On an error or an interrupt the tasks
    still running are cancelled and the exception propagates."""
    import ray

    from modelsched.ray_cluster import cluster_cpus

    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(run_chunk)
    cwd = os.getcwd()
    pending = {}
    for chunk in chunks(items, order, cluster_cpus(), args.batch_size, args.backend):
        ref = task.remote([items[i] for i in chunk], args.backend, args.batch_size, args.device,
                          getattr(args, "threads", 1), env_kwargs, cwd)
        pending[ref] = chunk
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                chunk = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the task's own exception, re-raised as it was
                    cause = e.as_instanceof_cause()
                    raise (cause if isinstance(cause, Exception) else RuntimeError(str(e))) from None
                except ray.exceptions.RayError as e:
                    it = items[chunk[0]]
                    raise RuntimeError(f"policy '{it.label}' on scenario '{it.scenario}': a Ray task of {len(chunk)} "
                                       f"episode(s) failed after {MAX_RETRIES} retries: {type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
                for i, res in zip(chunk, results):
                    done(i, res)
                bar.update(len(chunk))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def fallback_labels(items: list, order: list[int]) -> list[str]:
    """Labels of the policies that ``--backend batched`` plays on the reference simulator, in the
    order the local run names them (with its notice)."""
    from baselines.evaluation import _needs_reference

    labels: list[str] = []
    for i in order:
        if _needs_reference(items[i]) and items[i].label not in labels:
            labels.append(items[i].label)
            print(f"evaluate.py: '{items[i].label}' has no batched form: its episodes run on the reference "
                  f"simulator", file=sys.stderr)
    return labels
