"""``planner``: an online rolling-horizon planner over the visible queue and devices (CP-SAT).

At each decision the visible tasks (the first ``max_tasks`` of the observation window, oldest
first) are scheduled by OR-Tools CP-SAT onto the devices that are up, from each device's free
time on; the assignment the plan starts first on an idle device is made, and the rest of the
plan is kept for the other assignments of the same instant. Any later decision plans again
with whatever has arrived or finished since (a rolling horizon, as model-predictive control
does). The plan waits (the ``wait`` action) when it puts every task on a busy device.

The model, per decision (integer microseconds from now):

* each task takes at most one option (variant slot, device): per (task, variant) the
  ``max_devices`` devices expected to finish it first, among those where it could meet its
  deadline with the variant resident (noise-free); an option is an optional interval of the
  variant's expected execution time (noise-free time x the scenario's mean noise factor)
  starting when the device is free;
* a variant not resident on a device it is planned on is loaded there **once**, as an
  optional interval before every task that uses it; a device runs one interval at a time (its
  tasks and its loads); the variants planned on a device fit in its memory together (resident
  variants not in the plan may be evicted);
* objective: the sum of the accuracies of the tasks planned to finish by their deadlines,
  minus ``price`` x device-seconds / SLO per planned task, with a tie-break on earlier
  completion. A cold load that fits in the device's free memory is an *investment* (as
  ``adaptive`` treats it): the task right after it counts as on time if it would be with the
  variant resident. Without that, a scenario whose loads are longer than its SLOs (serving-
  small: ~0.1 s loads, 30-60 ms SLOs) would never load anything. Where expired tasks are not
  dropped, a task that will be late still earns a token value, so it is served after the
  on-time ones and never starves; where they are dropped, it is left to expire.
* The price stands for what the plan cannot see, the requests still to come: without it the
  plan fills the devices with the most accurate variants and the next arrivals miss their
  deadlines (serving-small seed 0: effective accuracy 0.30 at price 0, 0.84 at price 1).

Search: one worker, a fixed random seed and a *deterministic* time limit
(``max_deterministic_time`` = ``time_limit``), so a run is reproducible; a wall-clock cap of 10 x
that limit guards against a pathological instance (``stats['wall_capped']`` counts the solves it
cut, which may then differ between machines). The solver starts from a complete hint, a greedy
schedule (earliest deadline first, each task on its best-valued on-time option).

Fallback (counted in ``stats``): the ``priced`` rule (with the planner's price) decides when the
window holds a task that needs several devices (gang tasks are not modelled) or when the solver
finds no feasible plan. Parameters: ``price`` per built-in serving scenario in
``baselines/tuned.yml`` (``benchmarks/tune_baselines.py``, training seeds), ``priced``'s tuned
thresholds for the fallback, and the class defaults :attr:`PlannerPolicy.DEFAULTS`. It has no
batched form (a search per decision): the batched evaluator runs it on the reference simulator.
"""

from __future__ import annotations

import math

import numpy as np

from baselines.base import NOISE_Z
from baselines.heuristics import PricedPolicy

#: Objective units: accuracy in thousandths, times SCALE, against one unit per microsecond of
#: completion time (the tie-break), so one thousandth of accuracy outweighs 100 ms.
SCALE = 100_000
US = 1e6


def _cp_model(who: str = "the 'planner' policy"):
    try:
        from ortools.sat.python import cp_model
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError(f"{who} needs OR-Tools: pip install ortools") from e
    return cp_model


def single_worker_solver(cp_model, time_limit: float, wall_factor: float):
    """A CP-SAT solver with one worker, seed 0 and a deterministic time limit (reproducible),
    capped at ``wall_factor`` x that limit in wall-clock seconds."""
    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.num_workers = 1
    prm.random_seed = 0
    prm.max_deterministic_time = time_limit
    prm.max_time_in_seconds = wall_factor * time_limit
    return solver


class PlannerPolicy(PricedPolicy):
    """``planner``: an online rolling-horizon planner. At each decision, OR-Tools CP-SAT
    schedules the visible tasks onto the devices that are up (variant and device per task, one
    load per cold variant and device, memory respected, no overlap on a device), maximising the
    accuracy of the tasks expected to meet their deadlines minus ``price`` x device-seconds /
    SLO, and the first assignment the plan starts on an idle device is made; the next decision
    plans again (receding horizon, as in model-predictive control; Camacho and Bordons, "Model
    Predictive Control", 2007). Gang tasks and solver failures fall back to ``priced``. The
    model, the search limits and the fallback are in :mod:`baselines.planner`."""

    name = "planner"

    #: Defaults where ``baselines/tuned.yml`` has no entry (a user scenario).
    DEFAULTS = {"price": 0.5, "time_limit": 0.02, "max_tasks": 8, "max_devices": 2}

    def __init__(self, env, seed=None, price: float | None = None, time_limit: float | None = None,
                 max_tasks: int | None = None, max_devices: int | None = None, **priced):
        from baselines.tuned import scenario_name, tuned

        p = {**self.DEFAULTS, **tuned(self.name, scenario_name(env))}
        given = {"price": price, "time_limit": time_limit, "max_tasks": max_tasks, "max_devices": max_devices}
        p.update({k: v for k, v in given.items() if v is not None})
        if not (float(p["time_limit"]) > 0 and math.isfinite(float(p["time_limit"]))):
            raise ValueError(f"planner: time_limit must be a positive number of deterministic seconds, "
                             f"got {p['time_limit']!r}")
        for key in ("max_tasks", "max_devices"):
            if int(p[key]) < 1:
                raise ValueError(f"planner: {key} must be >= 1, got {p[key]!r}")
        if not float(p["price"]) >= 0:
            raise ValueError(f"planner: price must be >= 0, got {p['price']!r}")
        self.time_limit, self.max_tasks, self.max_devices = float(p["time_limit"]), int(p["max_tasks"]), int(p["max_devices"])
        self.cp = _cp_model()
        super().__init__(env, seed, price=float(p["price"]), **priced)

    def reset(self, seed=None):
        super().reset(seed)
        self._plan_now = None
        self._plan: dict[int, tuple[int, int, int]] = {}
        self._unplanned: set[int] = set()
        self.stats = {"solves": 0, "optimal": 0, "reused": 0, "fallback_gang": 0, "fallback_infeasible": 0,
                      "wall_capped": 0}

    # ------------------------------------------------------------------ decision
    def decide(self, view):
        self._update_min_slo(view)  # every decision, so the fallback is priced exactly
        if any(t.devices_required > 1 for t in view.tasks):
            self.stats["fallback_gang"] += 1
            return super().decide(view)
        ids = [t.id for t in view.tasks]
        if self._plan_now == view.now and all(i in self._plan or i in self._unplanned for i in ids):
            a = self._from_plan(view, ids)
            if a is not False:
                self.stats["reused"] += 1
                return a
        if not self._solve(view, ids):
            self.stats["fallback_infeasible"] += 1
            self._plan_now = None
            return super().decide(view)
        a = self._from_plan(view, ids)
        if a is False:  # the plan starts something the mask refuses now: let priced decide
            self.stats["fallback_infeasible"] += 1
            return super().decide(view)
        return a

    def _from_plan(self, view, ids):
        """The planned assignment that starts first on an idle device (an action), ``None`` to
        wait (everything planned goes to busy devices), ``False`` if the plan is stale."""
        avail = view.sim.dev_idle & view.sim.dev_up
        best = None
        for k, tid in enumerate(ids):
            p = self._plan.get(tid)
            if p is None:
                continue
            v, d, start = p
            if avail[d] and (best is None or (start, d) < (best[0], best[3])):
                best = (start, k, v, d)
        if best is None:
            return None
        _, k, v, d = best
        if not view.mask[k, v, d]:
            return False
        return view.action(k, v, d)

    # ------------------------------------------------------------------ model
    def _options(self, view, n):
        """Candidate (k, v, d, variant, duration, safe duration, load) per task, pruned: per
        (task, variant) the ``max_devices`` devices expected to finish it first; an option that
        cannot be on time even started at once is kept only where late tasks are served (and
        then only the task's fastest such option)."""
        sim, cl = view.sim, view.cluster
        sigma = float(getattr(sim, "noise_sigma", 0.0))
        mean_factor = float(getattr(cl, "service_factor", 1.0))
        safe_factor = math.exp(NOISE_Z * sigma) if sigma > 0 else 1.0
        late_ok = not bool(sim.drop_expired)
        opts = []
        for k in range(n):
            est = np.where(view.runs[k], view.est[k] - view.cold[k] * view.load[k], np.inf)  # (V, D), noise-free, warm
            slack = float(view.slack[k])
            mine, late = [], None
            for v in range(view.V):
                row = est[v]
                if not np.isfinite(row).any():
                    continue
                for d in np.argsort(row, kind="stable")[: self.max_devices]:
                    if not np.isfinite(row[d]):
                        break
                    ex = float(view.exec[k, v, d])
                    o = (k, v, int(d), int(view.variant[k, v]), max(int(round(ex * mean_factor * US)), 1),
                         int(math.ceil(ex * safe_factor * US)), int(round(float(view.load[k, v, d]) * US)))
                    if row[d] <= slack:
                        mine.append(o)
                    elif late_ok and (late is None or row[d] < late[0]):
                        late = (row[d], o)
            if not mine and late is not None:
                mine.append(late[1])
            opts.extend(mine)
        return opts

    def _greedy(self, view, n, opts, wait_us, slack_us, late_ok):
        """A complete schedule for the hint: tasks earliest deadline first, each on its most accurate
        option that is on time (then the earliest end), late ones (where served) on the earliest
        end; loads once per (variant, device), memory respected."""
        cl = view.cluster
        free = [int(w) for w in wait_us]
        loaded = {(var, d) for var, d in zip(*np.nonzero(view.sim.resident))}
        planned_vars = {d: set() for d in range(view.D)}
        mem_used = {d: 0.0 for d in range(view.D)}
        by_task: dict[int, list[int]] = {}
        for i, o in enumerate(opts):
            by_task.setdefault(o[0], []).append(i)
        choice, load_at = {}, {}
        free_mem = cl.dev_memory - view.sim.dev_memory_used
        for k in sorted(range(n), key=lambda k: (slack_us[k], k)):  # earliest deadline first
            best = None
            for i in by_task.get(k, ()):
                _, v, d, var, dur, dur_safe, load = opts[i]
                if var not in planned_vars[d] and mem_used[d] + float(cl.var_memory[var]) > float(cl.dev_memory[d]) + 1e-9:
                    continue
                need = 0 if (var, d) in loaded else load
                s = free[d] + need
                on = s + dur <= slack_us[k] or (need > 0 and float(cl.var_memory[var]) <= free_mem[d] + 1e-9
                                                and s - need + dur <= slack_us[k])
                worth = float(view.acc[k, v]) - self.price * (dur / US) / float(view.slo[k])
                key = (-(worth if on else -1e9), s + dur, i)
                if on or late_ok:
                    if best is None or key < best[0]:
                        best = (key, i, s, need)
            if best is None:
                continue
            _, i, s, need = best
            _, v, d, var, dur, _, _ = opts[i]
            if need:
                load_at[(var, d)] = s - need
                loaded.add((var, d))
            if var not in planned_vars[d]:
                planned_vars[d].add(var)
                mem_used[d] += float(cl.var_memory[var])
            free[d] = s + dur
            choice[i] = s
        return choice, load_at

    def _solve(self, view, ids) -> bool:
        cp_model = self.cp
        sim, cl = view.sim, view.cluster
        n = min(view.n, self.max_tasks)
        late_ok = not bool(sim.drop_expired)
        wait_us = np.where(sim.dev_up, np.round(view.wait * US), 0).astype(np.int64)
        opts = self._options(view, n)
        if not opts:
            return False
        slack_us = [int(math.floor(min(float(view.slack[k]), 1e6) * US)) for k in range(n)]
        horizon = int(wait_us.max() + sum(o[4] + o[6] for o in opts) + 1)
        hint_start, hint_load = self._greedy(view, n, opts, wait_us, slack_us, late_ok)
        m = cp_model.CpModel()
        dev_iv: dict[int, list] = {d: [] for d in range(view.D)}
        users: dict[tuple[int, int], list] = {}  # (variant, device) -> (start, presence, option) of its tasks
        for i, o in enumerate(opts):
            users.setdefault((o[3], o[2]), []).append(i)
        load_var = {}  # (variant, device) -> (presence, start, duration) of its load
        free_mem = cl.dev_memory - sim.dev_memory_used
        for (var, d), idx in users.items():
            if sim.resident[var, d]:
                continue
            load = opts[idx[0]][6]
            y = m.NewBoolVar(f"y{var}_{d}")
            ls = m.NewIntVar(int(wait_us[d]), horizon, f"ls{var}_{d}")
            dev_iv[d].append(m.NewOptionalFixedSizeIntervalVar(ls, load, y, f"l{var}_{d}"))
            load_var[(var, d)] = (y, ls, load, float(cl.var_memory[var]) <= free_mem[d] + 1e-9)
            hl = hint_load.get((var, d))
            m.AddHint(y, hl is not None)
            m.AddHint(ls, int(wait_us[d]) if hl is None else hl)
        per_task: dict[int, list] = {}
        presence: dict[tuple[int, int], list] = {}
        objective = []
        records = []
        for i, (k, v, d, var, dur, _dur_safe, _load) in enumerate(opts):
            x = m.NewBoolVar(f"x{i}")
            s = m.NewIntVar(int(wait_us[d]), horizon, f"s{i}")
            dev_iv[d].append(m.NewOptionalFixedSizeIntervalVar(s, dur, x, f"i{i}"))
            presence.setdefault((var, d), []).append(x)
            per_task.setdefault(k, []).append(x)
            hs = hint_start.get(i)
            m.AddHint(x, hs is not None)
            m.AddHint(s, int(wait_us[d]) if hs is None else hs)
            z = m.NewBoolVar(f"z{i}")  # counted on time
            m.AddImplication(z, x)
            lv = load_var.get((var, d))
            if lv is not None:
                y, ls, load, invest = lv
                m.AddImplication(x, y)
                m.Add(s >= ls + load).OnlyEnforceIf(x)
            if lv is not None and invest:
                # a cold load that fits in free memory is an investment: the task right after it
                # counts as on time if it would be with the variant resident
                w = m.NewBoolVar(f"w{i}")
                late = m.NewBoolVar(f"t{i}")
                m.Add(s + dur <= slack_us[k]).OnlyEnforceIf(late)
                m.Add(s == ls + load).OnlyEnforceIf(w)
                m.Add(ls + dur <= slack_us[k]).OnlyEnforceIf(w)
                m.AddBoolOr([late, w]).OnlyEnforceIf(z)
                on_hint = hs is not None and (hs + dur <= slack_us[k] or
                                              (hint_load.get((var, d)) is not None and hs == hint_load[(var, d)] + load
                                               and hint_load[(var, d)] + dur <= slack_us[k]))
            else:
                m.Add(s + dur <= slack_us[k]).OnlyEnforceIf(z)
                on_hint = hs is not None and hs + dur <= slack_us[k]
            m.AddHint(z, on_hint)
            value = int(round(1000 * float(view.acc[k, v]))) * SCALE
            price = int(round(1000 * self.price * (dur / US) / float(view.slo[k]) * SCALE)) if self.price else 0
            objective.append(value * z - (price + dur) * x - s)
            if late_ok:
                objective.append(SCALE * x)  # a late task is still served, after the on-time ones
            records.append((k, v, d, s, x))
        for xs in per_task.values():
            m.AddAtMostOne(xs)
        for d, ivs in dev_iv.items():
            m.AddNoOverlap(ivs)
            if not ivs:
                continue
            on_d = [(var, xs) for (var, dd), xs in presence.items() if dd == d]
            cap = float(cl.dev_memory[d])
            if sum(float(cl.var_memory[var]) for var, _ in on_d) > cap + 1e-9:
                u = []
                for var, xs in on_d:
                    b = m.NewBoolVar(f"u{var}_{d}")
                    m.AddMaxEquality(b, xs)
                    u.append((b, var))
                    m.AddHint(b, any(hint_start.get(i) is not None for i in users[(var, d)]))
                m.Add(sum(int(math.ceil(float(cl.var_memory[var]) * 1000)) * b for b, var in u)
                      <= int(math.floor(cap * 1000)))
        m.Maximize(sum(objective))
        solver = single_worker_solver(cp_model, self.time_limit, 10)
        prm = solver.parameters
        prm.cp_model_presolve = False  # small models solved hundreds of times per episode: presolve and
        prm.linearization_level = 0  # the LP relaxation cost more than they save (~30% of the time)
        status = solver.solve(m)
        self.stats["solves"] += 1
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if solver.wall_time >= prm.max_time_in_seconds:
                self.stats["wall_capped"] += 1
            return False
        if status == cp_model.OPTIMAL:
            self.stats["optimal"] += 1
        plan = {}
        for k, v, d, s, x in records:
            if solver.BooleanValue(x):
                plan[ids[k]] = (v, d, solver.Value(s))
        self._plan_now, self._plan = view.now, plan
        self._unplanned = {tid for tid in ids if tid not in plan}
        return True
