"""Text and image renderings of the simulator state.

:func:`render_ansi` is plain text. :func:`render_gantt` draws a Gantt chart with matplotlib (Agg,
imported inside the function: the simulator core never imports it)."""

from __future__ import annotations

import numpy as np

#: Colours of the model variants (cycled): tab10/tab20 without red (the SLO-miss mark) and grey
#: (device-down periods).
VARIANT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                   "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
#: Outline of a task that finished after its deadline (pure red: no variant colour is close).
MISS_COLOUR = "#ff0000"
DOWN_COLOUR = "#b0b0b0"
NOW_COLOUR = "#202020"


def render_ansi(sim) -> str:
    cl = sim.cluster
    lines = [f"t={sim.now:10.4f}s  queue={len(sim.queue)}  " +
             "  ".join(f"{k}={v}" for k, v in sim.accounting().items())]
    lines.append(f"{'dev':>4} {'type':<10} {'node':<8} {'state':<8} {'until':>10} {'mem GB':>13}  resident")
    for dev in sim.devices:
        state = "down" if not dev.up else ("idle" if dev.task is None else
                                           ("loading" if dev.loading_until > sim.now else "busy"))
        n = len(sim.running_batch(dev.index)) if hasattr(sim, "running_batch") else 0
        if n > 1:  # dynamic batching: the requests of the running execution
            state = f"{state}x{n}"
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


def _hex_rgb(c: str) -> np.ndarray:
    return np.array([int(c[k:k + 2], 16) for k in (1, 3, 5)], dtype=float) / 255.0


def render_gantt(sim, width: int = 1000, height: int | None = None, window: float | None = None,
                 title: str | None = None, name: str | None = None, dpi: int = 100) -> np.ndarray:
    """A Gantt chart of device activity as an (H, W, 3) uint8 array.

    One lane per device (labelled ``d<index> <type> @<node>``), a time axis in simulated seconds
    over the last ``window`` seconds (default: the whole episode so far), one bar per task run
    coloured by model variant (legend of variant names), the model-load part of a cold start
    hatched and darker, a red outline around runs of tasks that finished after their deadline,
    hatched grey periods where a device was down, and a dashed line at the current time.
    ``height`` defaults to what the lanes need; ``title`` replaces the default title (time and
    counters), which ``name`` (e.g. the scenario's) prefixes. Takes about 0.1-0.4 s."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cl = sim.cluster
    D = cl.num_devices
    now = float(sim.now)
    t0 = 0.0 if window is None else max(0.0, now - window)
    t1 = now if now > t0 else t0 + 1.0
    height = height or int(min(max(120 + 26 * D, 260), 1400))
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    labels = [f"d{dev.index} {dev.type.name} @{dev.node}" for dev in sim.devices]
    left = min(0.35, (18 + 7.0 * max((len(x) for x in labels), default=4)) / width)
    ax = fig.add_axes((left, 48 / height, 0.80 - left, 1 - 80 / height))

    g = sim._gantt
    seg = np.array([r[:8] for r in g], dtype=float).reshape(-1, 8) if g else np.zeros((0, 8))
    seg = seg[seg[:, 2] >= t0] if window is not None else seg
    dev, start, end, var, cold, cut, tid, load_end = seg.T
    end = np.minimum(end, now)  # a running task is drawn up to now
    load_end = np.minimum(np.maximum(load_end, start), end)
    var = var.astype(np.int64)
    cols = np.array([_hex_rgb(c) for c in VARIANT_COLOURS])[var % len(VARIANT_COLOURS)].reshape(-1, 3)
    h = 0.38

    def rects(x0, x1, y):
        return np.stack([np.stack([x0, y - h], 1), np.stack([x0, y + h], 1),
                         np.stack([x1, y + h], 1), np.stack([x1, y - h], 1)], 1)

    # Device-down periods (behind the bars).
    downs = [(d, a, min(b, now)) for d, a, b in getattr(sim, "_gantt_down", ()) if b >= t0 and a <= now]
    if downs:
        dd = np.array(downs, dtype=float)
        ax.add_collection(PolyCollection(rects(dd[:, 1], np.maximum(dd[:, 2], dd[:, 1] + 1e-9 * t1), dd[:, 0]),
                                         facecolors=DOWN_COLOUR, edgecolors="#606060", hatch="xx",
                                         linewidths=0, zorder=1))
    run = end > load_end  # executing part
    if run.any():
        ax.add_collection(PolyCollection(rects(load_end[run], end[run], dev[run]), facecolors=cols[run],
                                         edgecolors="none", linewidths=0, zorder=2))
    loading = (cold > 0) & (load_end > start)
    if loading.any():
        ax.add_collection(PolyCollection(rects(start[loading], load_end[loading], dev[loading]),
                                         facecolors=cols[loading] * 0.55, edgecolors="white", hatch="////",
                                         linewidths=0, zorder=2))
    # Runs that completed after their task's deadline (interrupted runs did not complete).
    deadline = np.asarray(sim._tdeadline, dtype=float)
    done = (cut == 0) & (seg[:, 2] <= now)
    late = done & (seg[:, 2] > deadline[tid.astype(np.int64)] + 1e-12) if len(seg) else done
    if late.any():
        ax.add_collection(PolyCollection(rects(start[late], end[late], dev[late]), facecolors="none",
                                         edgecolors=MISS_COLOUR, linewidths=1.8, zorder=3))
    ax.axvline(now, color=NOW_COLOUR, ls="--", lw=1.2, zorder=4)

    ax.set_xlim(t0, t1 + 0.01 * (t1 - t0))
    ax.set_ylim(D - 0.5, -0.5)
    ax.set_yticks(range(D))
    ax.set_yticklabels(labels, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("simulated time (s)", fontsize=9)
    if D > 1:
        ax.hlines(np.arange(D - 1) + 0.5, t0, t1 + 0.01 * (t1 - t0), colors="#e4e4e4", lw=0.6, zorder=0)
    c = sim.counters
    ax.set_title(title or (f"{name}   " if name else "") + f"t = {now:.2f} s   queue {len(sim.queue_ids)}   completed {c.completed}   "
                 f"late tasks {len(np.unique(tid[late]))}{' in view' if window is not None else ''}   "
                 f"dropped {c.dropped}   failures {c.failures}", fontsize=9)

    used = sorted(set(var.tolist()))
    handles = [Patch(facecolor=VARIANT_COLOURS[m % len(VARIANT_COLOURS)], label=cl.variants[m].name)
               for m in used[:24]]
    if len(used) > 24:
        handles.append(Patch(facecolor="white", label=f"... {len(used) - 24} more"))
    handles += [Patch(facecolor="#555555", edgecolor="white", hatch="////", lw=0, label="model load (cold)"),
                Patch(facecolor="none", edgecolor=MISS_COLOUR, lw=1.8, label="missed SLO"),
                Patch(facecolor=DOWN_COLOUR, edgecolor="#606060", hatch="xx", lw=0, label="device down"),
                Line2D([], [], color=NOW_COLOUR, ls="--", lw=1.2, label="now")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
              borderaxespad=0.0, title="variant", title_fontsize=8, alignment="left")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
