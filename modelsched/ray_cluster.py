"""Connecting to Ray, the optional distributed engine (``pip install -e ".[ray]"``).

``evaluate.py --ray [ADDRESS]``, ``train.py --sweep`` and ``python -m agents.rllib`` go through
:func:`connect`: with no address a local Ray instance is started on this machine; ``auto``
joins the cluster started here by ``ray start --head``; ``HOST:PORT`` (the head's GCS address)
or ``ray://HOST:10001`` (Ray Client) joins a remote one. If Ray is already initialised in the
process (a test's ``ray.init(num_cpus=2)``, a notebook), that instance is used. Ray is imported
only here and in the modules that need it, so that everything else works without it.
"""

from __future__ import annotations

import socket

#: The install command named by every "Ray is missing" message.
RAY_EXTRA = 'pip install -e ".[ray]"'


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached: the message says which and what to do."""


def require_ray(what: str):
    """``import ray``, or :class:`RayUnavailable` naming the extra to install."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(f"{what} needs Ray, which is not installed ({e}): {RAY_EXTRA} "
                             f"(the optional extra 'ray')") from None
    return ray


def _reachable(address: str, timeout: float = 3.0) -> str | None:
    """None if a TCP connection to ``HOST:PORT`` opens within ``timeout``, else the reason."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return "not HOST:PORT, 'auto' or ray://HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def connect(address: str | None, what: str, **init_kwargs) -> bool:
    """Initialise Ray for ``what`` (a flag, for messages); returns True if this call started or
    joined it (the caller then shuts it down), False if Ray was already initialised here."""
    ray = require_ray(what)
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": "warning", "log_to_driver": False, **init_kwargs}
    if address in (None, "", "local"):
        ray.init(**kwargs)
        return True
    if address != "auto" and not address.startswith("ray://"):
        why = _reachable(address)
        if why is not None:
            raise RayUnavailable(f"{what} {address}: cannot reach a Ray cluster there ({why}); start one with "
                                 f"`ray start --head` and give the address it prints, or 'auto' on the head node")
    kwargs.pop("include_dashboard")  # a cluster's head decides its dashboard
    kwargs.pop("num_cpus", None)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
        raise RayUnavailable(f"{what} {address}: cannot connect to Ray ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); start a cluster with `ray start --head`, "
                             f"or give no address for a local instance") from None
    return True


def cluster_cpus() -> int:
    """CPUs the connected Ray cluster offers (at least 1)."""
    import ray

    return max(int(ray.cluster_resources().get("CPU", 1)), 1)
