"""A genetic-algorithm planner over the visible queue, re-planned at every decision epoch."""

from __future__ import annotations

import numpy as np

from baselines.base import DecisionView, Policy, rng_for


class GeneticPolicy(Policy):
    """``genetic``: at each decision epoch, a seeded genetic algorithm plans the visible tasks
    and the rule executes the plan's first step.

    *Chromosome*: one gene per visible task, a (variant, device) pair among the options the task
    could ever run on an up device (busy devices included). Tasks assigned to the same device
    run there in window (ready-time) order, after the device's current work.

    *Fitness*: the scenario's own reward, predicted for the plan by list-simulating it with the
    noise-free estimates (device wait, cold-start load unless the variant is resident or loaded
    earlier in the plan, execution): for each task
    ``w_accuracy * (accuracy - best accuracy) - w_slo * [finishes after its deadline]
    - w_latency * priority * completion time / ideal time - price * busy seconds``. The last
    term is the opportunity cost of device time, which a plan of the visible tasks alone cannot
    see: ``price = price_factor * max(w_slo, 1) * (tasks arrived per second so far) / (devices
    up)``, i.e. a device-second is worth the misses of the tasks that arrive per device in it.
    Without it the planner upgrades long jobs to accurate variants that block fast devices while
    later tight-SLO requests expire (``price_factor=0`` scores 0.66 effective accuracy on
    serving-small training seeds 0..2, 0.5 scores 0.785, 1.0 scores 0.778: default 0.5).

    *Search*: population ``population`` (default 24) seeded with the ``mct`` plan (earliest
    completion per task), the most-accurate-on-time plan and random plans; up to
    ``generations`` (default 15) of binary-tournament selection, uniform crossover, per-gene
    mutation (``mutation_rate``, default 0.15) and elitism (the best ``elite``, default 2,
    survive), stopping early after ``patience`` (default 5) generations without improvement.
    When the plan space is no larger than the evaluations the GA would spend (``population x
    (generations + 1)``; e.g. one or two visible tasks), it is searched exhaustively instead.

    *Action*: the first task (window order) whose planned device is idle now and that is first
    in that device's sequence is started; if the plan puts every task behind busy devices, the
    rule waits (the plan says waiting is better). Randomness comes only from the generator seeded
    per episode. Source: Braun et al., JPDC 2001 (GA mapping of independent tasks onto
    heterogeneous machines, seeded with the min-min/MCT solution); Holland, *Adaptation in
    Natural and Artificial Systems*, 1975.
    """

    name = "genetic"

    def __init__(self, env, seed=None, population: int = 24, generations: int = 15,
                 mutation_rate: float = 0.15, elite: int = 2, price_factor: float = 0.5,
                 patience: int = 5):
        if population < 4:
            raise ValueError("genetic: population must be >= 4")
        if generations < 0:
            raise ValueError("genetic: generations must be >= 0")
        self.population = int(population)
        self.generations = int(generations)
        self.mutation_rate = float(mutation_rate)
        self.elite = max(1, min(int(elite), self.population - 1))
        self.price_factor = float(price_factor)
        self.patience = max(1, int(patience))
        super().__init__(env, seed)

    def reset(self, seed=None):
        self.rng = rng_for(seed, 0x6E7E71C)

    # ------------------------------------------------------------------ planning
    def decide(self, view: DecisionView):
        n, V, D = view.n, view.V, view.D
        runs = view.runs[:n].reshape(n, V * D)  # (n, V*D) options per task
        has = runs.any(axis=1)
        tasks = np.flatnonzero(has)
        if tasks.size == 0:
            return None
        opts = [np.flatnonzero(runs[k]) for k in tasks]
        ctx = self._context(view, tasks)
        P = self.population
        combos = 1
        for o in opts:
            combos *= o.size
        if combos <= P * (self.generations + 1):  # small plan space: search it exhaustively
            grids = np.meshgrid(*opts, indexing="ij")
            pop = np.stack([g.reshape(-1) for g in grids], axis=1)
            fit = self._fitness(pop, ctx)
            return self._first_step(view, tasks, pop[int(np.argmax(fit))])
        pop = self._random_population(opts, P)
        pop[0] = self._greedy(view, tasks, ctx, accurate=False)
        pop[1] = self._greedy(view, tasks, ctx, accurate=True)
        fit = self._fitness(pop, ctx)
        rng = self.rng
        n_t, n_child = tasks.size, P - self.elite
        best, stale = fit.max(), 0
        for _ in range(self.generations):
            order = np.argsort(-fit)
            elite = pop[order[: self.elite]]
            # Binary tournaments pick the parents.
            a = rng.integers(0, P, size=(4, n_child))
            pa = np.where(fit[a[0]] >= fit[a[1]], a[0], a[1])
            pb = np.where(fit[a[2]] >= fit[a[3]], a[2], a[3])
            cross = rng.random((n_child, n_t)) < 0.5
            children = np.where(cross, pop[pa], pop[pb])
            mutate = rng.random(children.shape) < self.mutation_rate
            if mutate.any():
                children = np.where(mutate, self._random_population(opts, n_child), children)
            pop = np.concatenate([elite, children])
            fit = self._fitness(pop, ctx)
            if fit.max() > best + 1e-12:
                best, stale = fit.max(), 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        return self._first_step(view, tasks, pop[int(np.argmax(fit))])

    def _context(self, view, tasks):
        V, D = view.V, view.D
        exec_ = view.exec[tasks].reshape(tasks.size, V * D)
        load = view.load[tasks].reshape(tasks.size, V * D)
        var = np.repeat(np.maximum(view.variant[tasks], 0), D, axis=1)  # (n, V*D) global variant
        dev = np.tile(np.arange(D), V)  # (V*D,)
        w_acc, w_slo, w_lat = self._weights()
        cl = view.cluster
        acc = np.repeat(view.acc[tasks], D, axis=1)
        best = cl.best_accuracy[view.caps[tasks]][:, None]
        ideal = np.array([max(view.tasks[k].ideal, 1e-12) for k in tasks])
        # Reward of each option apart from lateness and completion time.
        base = w_acc * np.where(np.isfinite(acc), acc - best, 0.0)
        return {
            "exec": np.where(np.isfinite(exec_), exec_, 1e18), "load": load, "var": var, "dev": dev,
            "base": base, "slack": view.slack[tasks], "lat_w": w_lat * view.priority[tasks] / ideal,
            "slo_w": w_slo, "wait": view.wait.copy(), "resident": view.sim.resident,
            "M": view.cluster.num_variants, "D": D, "price": self._device_price(view, w_slo),
        }

    def _device_price(self, view, w_slo):
        """Shadow price of one device-second: the tasks arriving per second per up device, each
        worth a miss (``w_slo``, at least 1) if capacity runs short."""
        sim = view.sim
        if view.now <= 0:
            return 0.0
        rate = sim.counters.arrived / view.now
        up = max(int(sim.dev_up.sum()), 1)
        return self.price_factor * max(w_slo, 1.0) * rate / up

    def _weights(self):
        """The scenario's reward weights (latency only if they are all zero)."""
        w = self.env.scenario.reward
        acc, slo, lat = float(w.accuracy), float(w.slo), float(w.latency)
        if acc == 0 and slo == 0 and lat == 0:
            lat = 1.0
        return acc, slo, lat

    def _random_population(self, opts, P):
        out = np.empty((P, len(opts)), dtype=np.int64)
        for j, o in enumerate(opts):
            out[:, j] = o[self.rng.integers(0, o.size, size=P)]
        return out

    def _fitness(self, pop, ctx):
        P, n_t = pop.shape
        D = ctx["D"]
        avail = np.broadcast_to(ctx["wait"], (P, D)).copy()
        rows = np.arange(P)
        # Variants loaded earlier in the plan, as (variant, device) keys; resident ones are warm.
        loaded = np.zeros((P, ctx["M"] * D), dtype=bool)
        loaded[:] = ctx["resident"].reshape(-1)
        fit = np.zeros(P)
        for j in range(n_t):
            g = pop[:, j]
            d = ctx["dev"][g]
            key = ctx["var"][j, g] * D + d
            cold = ~loaded[rows, key]
            loaded[rows, key] = True
            busy = ctx["exec"][j, g] + cold * ctx["load"][j, g]
            finish = avail[rows, d] + busy
            avail[rows, d] = finish
            fit += ctx["base"][j, g] - ctx["slo_w"] * (finish > ctx["slack"][j]) - ctx["lat_w"][j] * finish \
                - ctx["price"] * busy
        return fit

    def _greedy(self, view, tasks, ctx, accurate):
        """List-schedule the tasks in order: earliest completion (``mct``), or the most accurate
        option that meets the deadline and else the earliest completion."""
        D = ctx["D"]
        avail = ctx["wait"].copy()
        loaded = ctx["resident"].reshape(-1).copy()
        genes = np.empty(tasks.size, dtype=np.int64)
        for j in range(tasks.size):
            cold = ~loaded[ctx["var"][j] * D + ctx["dev"]]
            finish = avail[ctx["dev"]] + ctx["exec"][j] + cold * ctx["load"][j]
            finish = np.where(view.runs[tasks[j]].reshape(-1), finish, np.inf)
            g = int(np.argmin(finish))
            if accurate:
                ok = finish <= ctx["slack"][j]
                if ok.any():
                    score = np.where(ok, ctx["base"][j], -np.inf)
                    top = score >= score.max() - 1e-12
                    g = int(np.argmin(np.where(top, finish, np.inf)))
            genes[j] = g
            d = ctx["dev"][g]
            avail[d] = finish[g]
            loaded[ctx["var"][j, g] * D + d] = True
        return genes

    def _first_step(self, view, tasks, genes):
        D = view.D
        seen = set()
        for j, k in enumerate(tasks):
            v, d = divmod(int(genes[j]), D)
            if d in seen:
                continue
            seen.add(d)
            if view.mask[k, v, d]:
                return view.action(k, v, d)
        return None
