"""Training loop behind ``train.py``: resolve hyperparameters, build environments and model, attach
callbacks, train, save, and evaluate against the baselines.

Every run writes a self-describing folder ``<logdir>/<scenario>__<algo>__s<seed>__<timestamp>``:
``config.yml`` (algorithm, scenario and resolved hyperparameters), ``args.yml`` (the run's
arguments), ``command.txt``, ``git.txt`` (revision and dirty flag), TensorBoard events (with a
``hyperparameters`` text table), ``progress.csv``, ``evaluations.jsonl``, ``model.zip``,
``best_model.zip``, ``checkpoints/`` and, after the final evaluation, ``final_eval.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.envs import TEST_SEEDS, VALIDATION_SEEDS, check_seed_sets, make_env, make_vec_env
from agents.files import copy_file, save_model, write_text
from agents.hyperparams import algo_kwargs, load_hyperparams, merge, parse_overrides
from agents.policies import policy_for
from agents.registry import DEFAULT_ALGO, get_algo
from baselines.interrupts import caused_by_interrupt

REPO = Path(__file__).resolve().parents[1]

#: Heuristics tried, at training start, as the reference of periodic evaluation (the strongest
#: on the validation seeds is kept). Cheap, strong rules; the genetic planner is left out for cost.
DEFAULT_EVAL_HEURISTICS = ("infaas", "mct", "adaptive", "tetris")


@dataclass
class TrainConfig:
    """Arguments of one training run (``train.py`` fills it from the command line)."""

    scenario: str = "serving-small"
    """Built-in scenario name or path of a scenario YAML."""
    algo: str = DEFAULT_ALGO
    """Algorithm registry name (see ``agents.registry``)."""
    timesteps: int | None = None
    """Environment steps to train (None: ``n_timesteps`` of the hyperparameters)."""
    n_envs: int | None = None
    """Parallel environments (None: hyperparameters' ``n_envs``)."""
    vec: str = "auto"
    """How the training envs are vectorised: ``auto`` (SubprocVecEnv when n_envs > 1, else
    DummyVecEnv), ``dummy``, ``subproc``, or ``batched`` (:class:`agents.batched_vec.BatchedVecEnv`:
    the batched simulator, all instances in one process; hyperparameters' ``vec_batched``
    entry applies)."""
    seed: int = 0
    """Root seed: model initialisation and sampling, and training env i reset with seed + i."""
    device: str = "auto"
    """Torch device: auto, cpu or cuda."""
    logdir: str = "runs"
    """Parent folder of run folders."""
    eval_freq: int = 20_000
    """Evaluate against the strongest heuristic every this many steps (0: never)."""
    eval_seeds: tuple[int, ...] = VALIDATION_SEEDS
    """Seeds of the periodic evaluation (model selection)."""
    eval_heuristics: tuple[str, ...] = DEFAULT_EVAL_HEURISTICS
    """Candidate reference heuristics of the periodic evaluation."""
    checkpoint_freq: int = 50_000
    """Save ``checkpoints/model_<steps>_steps.zip`` every this many steps (0: never)."""
    resume: str | None = None
    """Continue training a saved model (timesteps continue from it)."""
    overrides: list[str] = field(default_factory=list)
    """``key=value`` hyperparameter overrides (dotted keys for nested values)."""
    policy_net: str | None = None
    """Policy network (None: hyperparameters' ``policy_net``); see ``agents.policies.POLICY_NETS``."""
    pretrain: bool | None = None
    """False: no behaviour-cloning warm start whatever the hyperparameters say (None: as they say)."""
    final_eval: bool = True
    """After training, evaluate the agent and every baseline on ``test_seeds`` and print a table."""
    test_seeds: tuple[int, ...] = TEST_SEEDS
    """Seeds of the final evaluation."""
    threads: int = 1
    """Torch CPU threads (small networks on few cores train fastest single-threaded)."""
    progress_bar: bool = True
    """Show each phase's progress (a bar on a terminal, plain lines otherwise)."""
    run_name: str | None = None
    """Run folder name (None: ``<scenario>__<algo>__s<seed>__<timestamp>``)."""
    command: str | None = None
    """The command line, for ``command.txt`` (None: ``sys.argv``)."""


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    best_model_path: Path
    num_timesteps: int
    wall_s: float
    interrupted: bool = False
    final_eval: dict | None = None


def resolve_hyperparams(cfg: TrainConfig) -> dict:
    cli: dict[str, Any] = {}
    if cfg.timesteps is not None:
        cli["n_timesteps"] = int(cfg.timesteps)
    if cfg.n_envs is not None:
        cli["n_envs"] = int(cfg.n_envs)
    if cfg.policy_net is not None:
        cli["policy_net"] = cfg.policy_net
    if cfg.pretrain is False:
        cli["pretrain"] = None
    return load_hyperparams(cfg.algo, cfg.scenario, merge(parse_overrides(cfg.overrides), cli), vec=cfg.vec)


def git_revision(repo: Path = REPO) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"revision": rev, "dirty": None if status is None else bool(status)}


def check_run_name(name: str | None) -> None:
    """A run name is one folder name inside ``--logdir``: no separators, no ``..``, not absolute."""
    if name is None:
        return
    if (not name.strip() or Path(name).is_absolute() or "/" in name or "\\" in name
            or name in (".", "..") or name.startswith("-")):
        raise ValueError(f"--run-name {name!r} must be a plain folder name (it is created inside --logdir): "
                         f"no '/', no '..', not absolute")


def planned_timesteps(algo: str, hp: dict) -> int:
    """The step count ``model.learn(hp["n_timesteps"])`` ends at: on-policy algorithms collect
    whole rollouts of ``n_steps x n_envs`` steps, DQN steps all envs at once."""
    spec = get_algo(algo)
    total, n_envs = int(hp["n_timesteps"]), int(hp["n_envs"])
    if spec.on_policy:
        import inspect

        default = inspect.signature(spec.cls.__init__).parameters["n_steps"].default
        rollout = int(hp.get("n_steps", default)) * n_envs
    else:
        rollout = n_envs
    return -(-total // rollout) * rollout


def make_run_dir(cfg: TrainConfig, algo: str) -> Path:
    name = cfg.run_name or f"{Path(cfg.scenario).stem}__{algo}__s{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    base = Path(cfg.logdir) / name
    run_dir, i = base, 1
    while run_dir.exists():
        run_dir = base.with_name(f"{base.name}_{i}")
        i += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _yaml_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _yaml_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_yaml_safe(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def describe_run(run_dir: Path, cfg: TrainConfig, hp: dict, primary_metric: str) -> None:
    spec = get_algo(cfg.algo)
    args = _yaml_safe(dataclasses.asdict(cfg))
    args["algo"] = spec.name
    write_text(run_dir / "args.yml", yaml.safe_dump(args, sort_keys=False))
    config = {"algo": spec.name, "scenario": cfg.scenario, "primary_metric": primary_metric,
              "seed": cfg.seed, "env_kwargs": {**spec.env_kwargs, **hp.get("env_kwargs", {})},
              "hyperparams": _yaml_safe(hp)}
    write_text(run_dir / "config.yml", yaml.safe_dump(config, sort_keys=False))
    command = cfg.command or " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    write_text(run_dir / "command.txt", command + "\n")
    git = git_revision()
    write_text(run_dir / "git.txt", f"revision: {git['revision']}\ndirty: {git['dirty']}\n")


def build_model(cfg: TrainConfig, hp: dict, env, device: str):
    spec = get_algo(cfg.algo)
    if cfg.resume:
        from agents.safe_load import load_run_model, run_config_for

        if run_config_for(cfg.resume) is not None:  # a train.py model: weights-only, no code from the file
            model = load_run_model(cfg.resume, env=env, device=device, optimizer=True)
        else:
            print(f"--resume: {cfg.resume} is not in a train.py run folder: loading it with SB3's loader, which "
                  f"unpickles (runs) code from the file; only resume from files you trust", file=sys.stderr)
            model = spec.cls.load(cfg.resume, env=env, device=device)
        model.set_random_seed(cfg.seed)
        return model
    kwargs = algo_kwargs(hp)
    policy, policy_kwargs = policy_for(hp["policy_net"], spec.name, kwargs.pop("policy_kwargs", None))
    return spec.cls(policy, env, policy_kwargs=policy_kwargs, seed=cfg.seed, device=device, verbose=0, **kwargs)


def train(cfg: TrainConfig) -> TrainResult:
    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.callbacks import HeuristicEvalCallback, HyperparamsTextCallback, SimMetricsCallback
    from agents.checkpoints import UpdateCheckpoint
    from agents.progress import TrainingProgress
    from envs.scenarios.loader import load_scenario

    spec = get_algo(cfg.algo)
    cfg.algo = spec.name
    check_run_name(cfg.run_name)
    for name, value in (("--timesteps", cfg.timesteps), ("--n-envs", cfg.n_envs), ("--threads", cfg.threads)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, value in (("--eval-freq", cfg.eval_freq), ("--checkpoint-freq", cfg.checkpoint_freq)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0 (0: off), got {value}")
    hp = resolve_hyperparams(cfg)
    n_envs = int(hp["n_envs"])
    if cfg.vec == "batched":
        from agents.hyperparams import load_hyperparams

        plain = load_hyperparams(cfg.algo, cfg.scenario, parse_overrides(cfg.overrides))
        changed = {k: hp[k] for k in hp if hp[k] != plain.get(k)}
        print(f"--vec batched: {n_envs} instances of the batched simulator; hyperparameters changed by the "
              f"vec_batched entry and the flags: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    check_seed_sets(cfg.seed, n_envs)
    pretraining = bool(hp["pretrain"]) and not cfg.resume
    if pretraining:
        pt = hp["pretrain"]
        n_demo = (int(pt.get("dagger", 0)) + 1) * int(pt.get("episodes", 20))
        if n_demo > 1000 - DEMO_SEED_START:
            raise ValueError(f"pretrain: {n_demo} demonstration episodes do not fit in the seeds "
                             f"{DEMO_SEED_START}..999 (inside the training range): use fewer")
    if cfg.resume and not Path(cfg.resume).is_file():
        raise FileNotFoundError(f"--resume: no model file {cfg.resume}")
    primary = load_scenario(cfg.scenario).primary_metric
    torch.set_num_threads(max(int(cfg.threads), 1))
    print_plan(cfg, hp, pretraining)
    run_dir = make_run_dir(cfg, spec.name)
    describe_run(run_dir, cfg, hp, primary)
    env_kwargs = {**spec.env_kwargs, **hp["env_kwargs"]}

    shaping = dict(hp["reward_shaping"] or {})
    if shaping:
        shaping["gamma"] = float(hp.get("gamma", 0.99))
    env = make_vec_env(cfg.scenario, n_envs, env_kwargs, shaping=shaping, vec=cfg.vec)
    if hp["normalize_reward"]:
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=hp.get("gamma", 0.99))
    model = build_model(cfg, hp, env, cfg.device)
    model.set_logger(configure(str(run_dir), ["tensorboard", "csv"]))
    eval_env = make_env(cfg.scenario, env_kwargs, monitor=False)
    best_path = run_dir / "best_model.zip"
    callbacks = [
        SimMetricsCallback(),
        HyperparamsTextCallback({"algo": spec.name, "scenario": cfg.scenario, "seed": cfg.seed,
                                 **{k: _yaml_safe(v) for k, v in hp.items()}}),
    ]
    eval_cb = None
    if cfg.eval_freq > 0:
        eval_cb = HeuristicEvalCallback(
            eval_env, cfg.eval_seeds, primary, cfg.eval_heuristics, cfg.eval_freq, best_path,
            log_path=run_dir / "evaluations.jsonl")
        callbacks.append(eval_cb)
    # checkpoints/last.zip after every update; model_<N>_steps.zip every --checkpoint-freq steps
    callbacks.append(UpdateCheckpoint(run_dir / "checkpoints", cfg.checkpoint_freq))
    if cfg.progress_bar:
        callbacks.append(TrainingProgress(f"train ({spec.name})", total=planned_timesteps(spec.name, hp)))
    model_path = run_dir / "model.zip"
    interrupted = False
    phase = "pretrain" if pretraining else "rl"
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    start_steps = int(model.num_timesteps)
    try:
        if pretraining:
            warm_start(model, cfg, hp, env_kwargs, shaping, primary)
            phases["pretrain_s"] = time.perf_counter() - t0
        phase = "rl"
        t_rl = time.perf_counter()
        try:
            model.learn(total_timesteps=int(hp["n_timesteps"]), callback=callbacks,
                        progress_bar=False, reset_num_timesteps=not cfg.resume)
        finally:
            phases["rl_s"] = time.perf_counter() - t_rl
        phase = "done"
    except BaseException as e:  # noqa: BLE001 - only interrupts (however wrapped) are handled here
        if not caused_by_interrupt(e):
            raise
        interrupted = True
        if phase == "pretrain":
            print(f"\ninterrupted during pretraining: saving the unfinished warm start as {model_path} "
                  f"(no best_model.zip: nothing was evaluated)", file=sys.stderr)
        else:
            print(f"\ninterrupted at {model.num_timesteps} steps: saving {model_path} (the last completed "
                  f"update is checkpoints/last.zip)", file=sys.stderr)
    wall = time.perf_counter() - t0
    save_model(model, model_path)
    if isinstance(env, VecNormalize):
        env.save(str(run_dir / "vecnormalize.pkl"))
    if not best_path.exists() and phase == "done":
        # No periodic evaluation ran: the final model of a finished run is the best known. An
        # interrupted run gets no best_model.zip that nothing chose.
        copy_file(model_path, best_path)
    env.close()
    result = TrainResult(run_dir, model_path, best_path, int(model.num_timesteps), wall, interrupted)
    rl_steps = result.num_timesteps - start_steps
    eval_s = float(getattr(eval_cb, "seconds", 0.0)) if eval_cb is not None else 0.0
    rl_s = phases.get("rl_s", 0.0)
    summary = {
        "num_timesteps": result.num_timesteps, "rl_timesteps": rl_steps,
        "requested_timesteps": int(hp["n_timesteps"]), "wall_s": wall,
        "pretrain_s": phases.get("pretrain_s", 0.0), "rl_s": rl_s, "periodic_eval_s": eval_s,
        "fps": rl_steps / max(rl_s - eval_s, 1e-9),
        "fps_note": "RL phase alone: environment steps over the RL phase's wall time minus periodic evaluation",
        "interrupted": interrupted, "phase": phase,
    }
    print(f"trained {result.num_timesteps} steps in {wall:.0f}s (pretraining {summary['pretrain_s']:.0f}s, "
          f"RL {rl_s:.0f}s of which periodic evaluation {eval_s:.0f}s; RL {summary['fps']:.0f} steps/s) -> {run_dir}")
    summary_path = run_dir / "train_summary.json"
    write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    if cfg.final_eval and not interrupted:
        from agents.report import compare_with_baselines

        t_eval = time.perf_counter()
        result.final_eval = compare_with_baselines(
            cfg.scenario, {"agent:best_model": best_path, "agent:model": model_path}, cfg.test_seeds,
            primary, device=cfg.device, out_path=run_dir / "final_eval.json", progress=cfg.progress_bar)
        summary["final_eval_s"] = time.perf_counter() - t_eval
        write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    from agents.callbacks import hparam_dict, log_run_hparams, run_metrics

    log_run_hparams(  # TensorBoard's HPARAMS tab: the run's hyperparameters and final numbers
        model.logger, hparam_dict(spec.name, cfg.scenario, cfg.seed, hp, vec=cfg.vec),
        run_metrics(primary, eval_cb, result.final_eval), result.num_timesteps)
    return result


def print_plan(cfg: TrainConfig, hp: dict, pretraining: bool) -> None:
    """Say what the run will do, phase by phase, before it starts."""
    spec = get_algo(cfg.algo)
    steps = planned_timesteps(spec.name, hp)
    lines = [f"plan: {spec.name} on {cfg.scenario}, seed {cfg.seed}, {hp['n_envs']} env(s), policy {hp['policy_net']}"]
    if pretraining:
        pt = hp["pretrain"]
        lines.append(f"  1. pretraining: behaviour cloning of {pt.get('heuristic', 'adaptive')} on "
                     f"{pt.get('episodes', 20)} training episodes, then {pt.get('dagger', 0)} DAgger round(s) "
                     f"(off: --no-pretrain)")
    else:
        lines.append("  1. pretraining: off" + (" (resumed run)" if cfg.resume and hp["pretrain"] else ""))
    rounding = ""
    if steps != int(hp["n_timesteps"]):
        unit = f"{hp.get('n_steps')} x {hp['n_envs']}" if spec.on_policy else f"{hp['n_envs']} env(s)"
        rounding = f" (asked {int(hp['n_timesteps'])}: whole rollouts of {unit})"
    lines.append(f"  2. RL training: {steps} environment steps{rounding}"
                 + (" on top of the resumed model's" if cfg.resume else ""))
    if cfg.eval_freq > 0:
        lines.append(f"  3. periodic evaluation every {cfg.eval_freq} steps vs the strongest of "
                     f"{', '.join(cfg.eval_heuristics)} on seeds {list(cfg.eval_seeds)} (off: --eval-freq 0)")
    else:
        lines.append("  3. periodic evaluation: off")
    if cfg.final_eval:
        lines.append(f"  4. final evaluation vs every heuristic on seeds {list(cfg.test_seeds)} (off: --no-final-eval)")
    else:
        lines.append("  4. final evaluation: off")
    print("\n".join(lines))


#: Demonstration seeds of the behaviour-cloning warm start: a block of 500..999 chosen by the
#: run's seed, inside the training range (0..999) and so disjoint from every evaluation set.
DEMO_SEED_START = 500


def warm_start(model, cfg: TrainConfig, hp: dict, env_kwargs: dict, shaping: dict, metric: str) -> None:
    """Behaviour cloning (then ``dagger`` rounds of DAgger) of ``pretrain.heuristic``."""
    from agents.pretrain import behaviour_clone, collect, concat

    pt = dict(hp["pretrain"])  # keys validated by agents.hyperparams.validate
    heuristic = pt.get("heuristic", "adaptive")
    episodes = int(pt.get("episodes", 20))
    rounds = int(pt.get("dagger", 0))
    n_demo = (rounds + 1) * episodes
    start = DEMO_SEED_START + (cfg.seed * n_demo) % (1000 - DEMO_SEED_START - n_demo + 1)
    gamma = float(hp.get("gamma", 0.99))
    bc = {"batch_size": int(pt.get("batch_size", 256)), "lr": float(pt.get("lr", 1e-3)),
          "value_coef": float(pt.get("value_coef", 0.5)), "seed": cfg.seed}
    t0 = time.perf_counter()
    show = cfg.progress_bar
    demos = collect(cfg.scenario, heuristic, range(start, start + episodes), gamma, env_kwargs, shaping or None, metric,
                    progress=show, desc=f"pretrain: {heuristic} demonstrations")
    print(f"pretrain: {len(demos.actions)} decisions from {episodes} {heuristic} episodes "
          f"({metric} {demos.metric:.4f}; {time.perf_counter() - t0:.0f}s)")
    behaviour_clone(model, demos, epochs=int(pt.get("epochs", 5)), logger=model.logger, progress=show, **bc)
    for r in range(rounds):
        s0 = start + (r + 1) * episodes
        more = collect(cfg.scenario, heuristic, range(s0, s0 + episodes), gamma, env_kwargs, shaping or None,
                       metric, learner=model, progress=show, desc=f"dagger round {r + 1}/{rounds}: learner episodes")
        print(f"dagger round {r + 1}/{rounds}: learner {metric} {more.metric:.4f}; "
              f"{len(more.actions)} more decisions labelled")
        demos = concat(demos, more)
        behaviour_clone(model, demos, epochs=int(pt.get("dagger_epochs", 2)), logger=model.logger, progress=show,
                        desc=f"dagger round {r + 1}/{rounds}: behaviour cloning", **bc)
    model.logger.record("pretrain/decisions", len(demos.actions))
    model.logger.record("pretrain/seconds", time.perf_counter() - t0)
