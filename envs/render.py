"""Text and image renderings of the simulator state (numpy only; no plotting library)."""

from __future__ import annotations

import numpy as np

# A colour per variant (cycled); cold-start (load) segments are drawn darker.
_PALETTE = np.array([
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
], dtype=np.uint8)


def render_ansi(sim) -> str:
    cl = sim.cluster
    lines = [f"t={sim.now:10.4f}s  queue={len(sim.queue)}  " +
             "  ".join(f"{k}={v}" for k, v in sim.accounting().items())]
    lines.append(f"{'dev':>4} {'type':<10} {'node':<8} {'state':<8} {'until':>10} {'mem GB':>13}  resident")
    for dev in sim.devices:
        state = "down" if not dev.up else ("idle" if dev.task is None else
                                           ("loading" if dev.loading_until > sim.now else "busy"))
        res = ",".join(cl.variants[m].name for m in sorted(dev.resident))
        lines.append(f"{dev.index:>4} {dev.type.name:<10} {dev.node:<8} {state:<8} {dev.busy_until:>10.4f} "
                     f"{dev.memory_used:>6.1f}/{dev.type.memory_gb:<6.1f}  {res}")
    lines.append(f"{'slot':>4} {'task':>6} {'capability':<24} {'size':>8} {'waited':>9} {'slack':>9} {'min acc':>7}")
    for k, t in enumerate(sim.queue[: sim.K]):
        lines.append(f"{k:>4} {t.id:>6} {t.capability:<24} {t.size:>8.0f} {sim.now - t.arrival:>9.4f} "
                     f"{t.deadline - sim.now:>9.4f} {t.min_accuracy:>7.2f}")
    if len(sim.queue) > sim.K:
        lines.append(f"     ... {len(sim.queue) - sim.K} more queued")
    return "\n".join(lines) + "\n"


def render_gantt(sim, width: int = 600, row: int = 24, window: float | None = None) -> np.ndarray:
    """A Gantt chart of device activity over the last ``window`` seconds (default: the whole
    episode so far), as an (H, W, 3) uint8 array. One row per device; a red column marks now;
    failed devices are grey."""
    D = sim.cluster.num_devices
    img = np.full((D * row, width, 3), 255, dtype=np.uint8)
    now = sim.now
    t0 = 0.0 if window is None else max(0.0, now - window)
    span = max(now - t0, 1e-9)
    scale = (width - 1) / span
    for (d, start, end, m, cold, _cut) in sim._gantt:
        if end < t0:
            continue
        end = min(end, now)
        x0 = int((max(start, t0) - t0) * scale)
        x1 = max(int((end - t0) * scale), x0 + 1)
        colour = _PALETTE[m % len(_PALETTE)]
        img[d * row + 3:(d + 1) * row - 3, x0:x1] = colour if not cold else colour // 2 + 64
    for dev in sim.devices:
        if not dev.up:
            img[dev.index * row + 3:(dev.index + 1) * row - 3, -4:] = 160
        img[(dev.index + 1) * row - 1, :] = 220
    img[:, -1] = [220, 0, 0]
    return img
