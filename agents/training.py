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
DEFAULT_EVAL_HEURISTICS = ("infaas", "mct", "adaptive", "priced", "tetris")
#: Added to the default candidates on scenarios with dynamic batching.
BATCHING_EVAL_HEURISTICS = ("clockwork", "triton", "infaas-batch")
#: The rule made for continuous batching, added on scenarios with it.
CONTINUOUS_EVAL_HEURISTICS = ("vllm",)


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
    """Also keep ``checkpoints/model_<steps>_steps.zip`` every this many steps (0: never;
    ``checkpoints/last.zip`` is written after every update whatever this says)."""
    resume: str | None = None
    """Continue a stopped run exactly, in its own folder: a run folder (its
    ``checkpoints/last.zip``) or one of its checkpoints (see :func:`resume_config`). The run's
    arguments are its ``args.yml``'s; of this config only the :data:`RESUME_ARGS` that are not
    None apply."""
    init_from: str | None = None
    """Start a new run from a saved model's weights and step counters (its steps continue)."""
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


def build_model(cfg: TrainConfig, hp: dict, env, device: str, checkpoint: Path | None = None):
    """A new model (seeded with ``cfg.seed``), or the weights, optimizer and counters of
    ``checkpoint`` (a resumed run) or of ``cfg.init_from``."""
    spec = get_algo(cfg.algo)
    source = str(checkpoint) if checkpoint is not None else cfg.init_from
    if source:
        from agents.safe_load import load_run_model, run_config_for

        if run_config_for(source) is not None:  # a train.py model: weights-only, no code from the file
            model = load_run_model(source, env=env, device=device, optimizer=True)
        else:
            print(f"--init-from: {source} is not in a train.py run folder: loading it with SB3's loader, which "
                  f"unpickles (runs) code from the file; only load files you trust", file=sys.stderr)
            model = spec.cls.load(source, env=env, device=device)
        model.set_random_seed(cfg.seed)
        return model
    kwargs = algo_kwargs(hp)
    policy, policy_kwargs = policy_for(hp["policy_net"], spec.name, kwargs.pop("policy_kwargs", None))
    return spec.cls(policy, env, policy_kwargs=policy_kwargs, seed=cfg.seed, device=device, verbose=0, **kwargs)


#: Arguments a resumed run may change (the rest are the run's own, from its args.yml).
RESUME_ARGS = ("timesteps", "device", "threads", "progress_bar", "final_eval", "command")


@dataclass
class ResumePoint:
    """Where a resumed run continues from: its folder, the checkpoint (None: the run stopped
    before its first checkpoint, so it starts again in its folder), and the checkpoint's state."""

    run_dir: Path
    checkpoint: Path | None
    info: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.info.get("steps", 0)) if self.checkpoint is not None else 0


def resume_config(cfg: TrainConfig) -> tuple[TrainConfig, dict, ResumePoint]:
    """The run ``cfg.resume`` names (a run folder, or a checkpoint inside one), its arguments
    (``args.yml``, with the changes :data:`RESUME_ARGS` allow from ``cfg``), its
    hyperparameters (``config.yml``), and where it continues from."""
    from agents.resume import ResumeError, read_checkpoint
    from agents.safe_load import run_config_for

    path = Path(cfg.resume)
    if path.is_dir():
        run_dir, ckpt = path, path / "checkpoints" / "last.zip"
    elif path.is_file():
        cfg_file = run_config_for(path)
        if cfg_file is None:
            raise ValueError(f"--resume {path}: not in a train.py run folder (no config.yml next to it or above its "
                             f"checkpoints/); --init-from {path} starts a new run from its weights")
        run_dir, ckpt = cfg_file.parent, path
    else:
        raise FileNotFoundError(f"--resume: no run folder or checkpoint {path}")
    for name in ("args.yml", "config.yml"):
        if not (run_dir / name).is_file():
            raise ValueError(f"--resume {path}: {run_dir / name} is missing: not a train.py run folder")
    with open(run_dir / "args.yml") as f:
        saved = yaml.safe_load(f) or {}
    with open(run_dir / "config.yml") as f:
        config = yaml.safe_load(f) or {}
    names = {fl.name for fl in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise ValueError(f"{run_dir / 'args.yml'}: unknown key(s) {', '.join(unknown)} (written by another version "
                         f"of train.py?)")
    for key in ("eval_seeds", "eval_heuristics", "test_seeds"):
        if isinstance(saved.get(key), list):
            saved[key] = tuple(saved[key])
    run = TrainConfig(**saved)
    for key in RESUME_ARGS:
        value = getattr(cfg, key)
        if value is not None and (key != "timesteps" or value):
            setattr(run, key, value)
    run.resume = str(path)
    run.logdir, run.run_name = str(run_dir.parent), run_dir.name
    hp = dict(config.get("hyperparams") or {})
    if cfg.timesteps is not None:
        hp["n_timesteps"] = int(cfg.timesteps)
    state = read_checkpoint(ckpt) if ckpt.is_file() else None
    if ckpt.is_file() and state is None:
        raise ResumeError(f"--resume: {ckpt} has no resume state (a final model, or a checkpoint of an older "
                          f"train.py): --init-from {ckpt} starts a new run from its weights")
    if state is None:
        summary = run_dir / "train_summary.json"
        stopped_in = json.loads(summary.read_text()).get("phase") if summary.is_file() else None
        if (run_dir / "model.zip").is_file() and stopped_in != "pretrain":
            raise ResumeError(f"--resume: {run_dir} has a model but no checkpoints/last.zip (an older train.py): "
                              f"--init-from {run_dir / 'model.zip'} starts a new run from it")
        point = ResumePoint(run_dir, None)  # starts again as it started (from its --init-from model, if any)
    else:
        point = ResumePoint(run_dir, ckpt, *state)
        run.init_from = None  # the checkpoint holds the weights
    total = planned_timesteps(run.algo, hp)
    if point.steps >= total:
        raise ValueError(f"--resume: {ckpt} is at {point.steps} steps and the run's total is {total}: "
                         f"give --timesteps above {point.steps} to train it further")
    if state is not None and state[0].get("algo") not in (None, get_algo(run.algo).name):
        raise ResumeError(f"--resume: {ckpt} was written by {state[0]['algo']}, the run's algo is {run.algo}")
    return run, hp, point


def _validate(cfg: TrainConfig) -> None:
    check_run_name(cfg.run_name)
    for name, value in (("--timesteps", cfg.timesteps), ("--n-envs", cfg.n_envs), ("--threads", cfg.threads)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, value in (("--eval-freq", cfg.eval_freq), ("--checkpoint-freq", cfg.checkpoint_freq)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0 (0: off), got {value}")
    if cfg.resume and cfg.init_from:
        raise ValueError("--resume continues a run, --init-from starts a new one from a model: give one of them")
    if cfg.init_from and not Path(cfg.init_from).is_file():
        raise FileNotFoundError(f"--init-from: no model file {cfg.init_from}")


def train(cfg: TrainConfig) -> TrainResult:
    import torch

    from envs.scenarios.loader import load_scenario

    _validate(cfg)
    point: ResumePoint | None = None
    if cfg.resume:
        cfg, hp, point = resume_config(cfg)
    spec = get_algo(cfg.algo)
    cfg.algo = spec.name
    if tuple(cfg.eval_heuristics) == DEFAULT_EVAL_HEURISTICS and point is None:
        try:  # a scenario with dynamic batching: the rules that batch are candidates too
            sc = load_scenario(cfg.scenario)
            if sc.batch_sizes != (1,):
                cfg.eval_heuristics = DEFAULT_EVAL_HEURISTICS + BATCHING_EVAL_HEURISTICS
            elif sc.continuous is not None:
                cfg.eval_heuristics = DEFAULT_EVAL_HEURISTICS + CONTINUOUS_EVAL_HEURISTICS
        except Exception:  # noqa: BLE001 (a bad scenario is reported where it is made, below)
            pass
    if point is None:
        hp = resolve_hyperparams(cfg)
    n_envs = int(hp["n_envs"])
    if cfg.vec == "batched" and point is None:
        from agents.hyperparams import load_hyperparams

        plain = load_hyperparams(cfg.algo, cfg.scenario, parse_overrides(cfg.overrides))
        changed = {k: hp[k] for k in hp if hp[k] != plain.get(k)}
        print(f"--vec batched: {n_envs} instances of the batched simulator; hyperparameters changed by the "
              f"vec_batched entry and the flags: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    check_seed_sets(cfg.seed, n_envs)
    resumed = point is not None and point.checkpoint is not None
    pretraining = bool(hp["pretrain"]) and not cfg.init_from and not resumed
    if pretraining:
        pt = hp["pretrain"]
        n_demo = (int(pt.get("dagger", 0)) + 1) * int(pt.get("episodes", 20))
        if n_demo > 1000 - DEMO_SEED_START:
            raise ValueError(f"pretrain: {n_demo} demonstration episodes do not fit in the seeds "
                             f"{DEMO_SEED_START}..999 (inside the training range): use fewer")
    primary = load_scenario(cfg.scenario).primary_metric
    torch.set_num_threads(max(int(cfg.threads), 1))
    print_plan(cfg, hp, pretraining, point)
    if point is None:
        run_dir = make_run_dir(cfg, spec.name)
        describe_run(run_dir, cfg, hp, primary)
    else:
        run_dir = point.run_dir
        continue_description(run_dir, cfg, hp)
    try:
        return _train(cfg, hp, spec, run_dir, point, pretraining, primary)
    except BaseException as e:
        if point is None and not caused_by_interrupt(e) and not (run_dir / "checkpoints" / "last.zip").exists():
            # a run that failed before its first checkpoint leaves nothing behind
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"train.py: the run failed before its first checkpoint: {run_dir} removed", file=sys.stderr)
        elif point is None and not caused_by_interrupt(e):
            write_text(run_dir / "train_summary.json", json.dumps(
                {"phase": "failed", "error": f"{type(e).__name__}: {e}"}, indent=2) + "\n")
        raise


def _train(cfg: TrainConfig, hp: dict, spec, run_dir: Path, point: ResumePoint | None, pretraining: bool,
           primary: str) -> TrainResult:
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.callbacks import HeuristicEvalCallback, HyperparamsTextCallback, SimMetricsCallback
    from agents.checkpoints import UpdateCheckpoint
    from agents.progress import TrainingProgress
    from agents.resume import (
        check_observation,
        continue_logs,
        csv_rows,
        loop_state,
        recorder_of,
        restore_loop_state,
        rng_state,
        truncate_logs,
        write_checkpoint,
    )

    n_envs = int(hp["n_envs"])
    env_kwargs = {**spec.env_kwargs, **hp["env_kwargs"]}
    shaping = dict(hp["reward_shaping"] or {})
    if shaping:
        shaping["gamma"] = float(hp.get("gamma", 0.99))
    env = make_vec_env(cfg.scenario, n_envs, env_kwargs, shaping=shaping, vec=cfg.vec, record=True)
    recorder = recorder_of(env)
    if hp["normalize_reward"]:
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=hp.get("gamma", 0.99))
    resumed = point is not None and point.checkpoint is not None
    model = build_model(cfg, hp, env, cfg.device, point.checkpoint if resumed else None)
    start_steps = point.steps if point is not None else 0
    obs = None
    if resumed and point.info["loop"]["env_started"]:  # rebuilt and checked before the run's logs are touched
        obs = recorder.restore(point.arrays)
        check_observation(point.arrays, obs)
    csv_kept = None
    if point is not None:  # keep what was logged up to the checkpoint (nothing if there is none)
        csv_kept = truncate_logs(run_dir, start_steps if resumed else -1,
                                 int(point.info.get("csv_rows", 0)) if resumed else 0)
    model.set_logger(configure(str(run_dir), ["tensorboard", "csv"]))
    if point is not None:  # the same TensorBoard run and progress.csv, cut to the checkpoint
        continue_logs(model.logger, run_dir, start_steps + 1 if resumed else 0, csv_kept)
    if resumed:
        restore_loop_state(model, point.info["loop"], point.arrays, obs)
        if not spec.on_policy:
            print(f"--resume: {spec.name}'s replay buffer is not kept in checkpoints: the run continues with an "
                  f"empty one, so it is not the run an uninterrupted {spec.name} would have been", file=sys.stderr)
        print(f"resumed {run_dir} at {start_steps} steps from {point.checkpoint.name} "
              f"(environments, random generators and evaluation state restored)")
    eval_env = make_env(cfg.scenario, env_kwargs, monitor=False)
    best_path = run_dir / "best_model.zip"
    callbacks = [
        SimMetricsCallback(),
        HyperparamsTextCallback({"algo": spec.name, "scenario": cfg.scenario, "seed": cfg.seed,
                                 **{k: _yaml_safe(v) for k, v in hp.items()}}, written=resumed),
    ]
    eval_cb = None
    if cfg.eval_freq > 0:
        eval_cb = HeuristicEvalCallback(
            eval_env, cfg.eval_seeds, primary, cfg.eval_heuristics, cfg.eval_freq, best_path,
            log_path=run_dir / "evaluations.jsonl")
        if resumed and point.info.get("eval"):
            eval_cb.load_state_dict(point.info["eval"])
        callbacks.append(eval_cb)

    def resume_state() -> tuple[dict, dict]:
        """Everything besides the weights that continuing exactly needs (agents.resume)."""
        loop, arrays = loop_state(model)
        rinfo, rarrays = rng_state(model)
        if loop["env_started"]:
            arrays.update(recorder.state())
        info = {"phase": "rl", "algo": spec.name, "steps": int(model.num_timesteps), "loop": loop, "rng": rinfo,
                "eval": eval_cb.state_dict() if eval_cb is not None else None,
                "csv_rows": csv_rows(run_dir / "progress.csv")}
        return info, {**arrays, **rarrays}

    # checkpoints/last.zip after every update (off-policy: every 10,000 steps at most), and
    # model_<N>_steps.zip every --checkpoint-freq steps
    checkpoint = UpdateCheckpoint(run_dir / "checkpoints", cfg.checkpoint_freq, state=resume_state,
                                  rng=(point.info["rng"], point.arrays) if resumed else None,
                                  min_interval=0 if spec.on_policy else 10_000)
    callbacks.append(checkpoint)
    if cfg.progress_bar:
        callbacks.append(TrainingProgress(f"train ({spec.name})",
                                          total=planned_timesteps(spec.name, hp) - start_steps))
    model_path = run_dir / "model.zip"
    interrupted = False
    phase = "pretrain" if pretraining else "rl"
    phases: dict[str, float] = {}
    rl_start = int(model.num_timesteps)
    t0 = time.perf_counter()
    try:
        if pretraining:
            warm_start(model, cfg, hp, env_kwargs, shaping, primary)
            phases["pretrain_s"] = time.perf_counter() - t0
            write_checkpoint(model, run_dir / "checkpoints" / "last.zip", *resume_state())  # RL starts here
        phase = "rl"
        t_rl = time.perf_counter()
        try:
            model.learn(total_timesteps=int(hp["n_timesteps"]) - start_steps, callback=callbacks,
                        progress_bar=False, reset_num_timesteps=not (resumed or cfg.init_from))
        finally:
            phases["rl_s"] = time.perf_counter() - t_rl
        phase = "done"
    except BaseException as e:  # noqa: BLE001 - only interrupts (however wrapped) are handled here
        if not caused_by_interrupt(e):
            raise
        interrupted = True
        if phase == "pretrain":
            print(f"\ninterrupted during pretraining: saving the unfinished warm start as {model_path} "
                  f"(no best_model.zip: nothing was evaluated); python train.py --resume {run_dir} starts the "
                  f"run again", file=sys.stderr)
        else:
            print(f"\ninterrupted at {model.num_timesteps} steps: saving {model_path}; python train.py --resume "
                  f"{run_dir} continues from the last completed update (checkpoints/last.zip)", file=sys.stderr)
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
    rl_steps = result.num_timesteps - rl_start
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
    if point is not None:
        summary["resumed_from_timesteps"] = start_steps
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


def continue_description(run_dir: Path, cfg: TrainConfig, hp: dict) -> None:
    """A resumed run's folder: its command appended to ``command.txt``, and a new step total
    (``--timesteps``) written to ``config.yml`` and ``args.yml``."""
    command = cfg.command or " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    old = (run_dir / "command.txt").read_text() if (run_dir / "command.txt").is_file() else ""
    write_text(run_dir / "command.txt", old + f"# resumed {time.strftime('%Y-%m-%d %H:%M:%S')}\n{command}\n")
    with open(run_dir / "config.yml") as f:
        config = yaml.safe_load(f)
    if config["hyperparams"].get("n_timesteps") != hp["n_timesteps"]:
        config["hyperparams"]["n_timesteps"] = int(hp["n_timesteps"])
        write_text(run_dir / "config.yml", yaml.safe_dump(config, sort_keys=False))
        with open(run_dir / "args.yml") as f:
            args = yaml.safe_load(f)
        args["timesteps"] = int(hp["n_timesteps"])
        write_text(run_dir / "args.yml", yaml.safe_dump(args, sort_keys=False))


def print_plan(cfg: TrainConfig, hp: dict, pretraining: bool, point: ResumePoint | None = None) -> None:
    """Say what the run will do, phase by phase, before it starts."""
    spec = get_algo(cfg.algo)
    steps = planned_timesteps(spec.name, hp)
    lines = [f"plan: {spec.name} on {cfg.scenario}, seed {cfg.seed}, {hp['n_envs']} env(s), policy {hp['policy_net']}"]
    if point is not None and point.checkpoint is not None:
        lines.append(f"  resuming {point.run_dir} at {point.steps} steps ({point.checkpoint.name}): "
                     f"{steps - point.steps} steps to go")
    elif point is not None:
        lines.append(f"  resuming {point.run_dir}: it stopped before its first checkpoint, so it starts again")
    if pretraining:
        pt = hp["pretrain"]
        lines.append(f"  1. pretraining: behaviour cloning of {pt.get('heuristic', 'adaptive')} on "
                     f"{pt.get('episodes', 20)} training episodes, then {pt.get('dagger', 0)} DAgger round(s) "
                     f"(off: --no-pretrain)")
    else:
        lines.append("  1. pretraining: " + ("done before the checkpoint" if point is not None and hp["pretrain"]
                                               else "off (the model given by --init-from)" if cfg.init_from
                                               else "off"))
    rounding = ""
    if steps != int(hp["n_timesteps"]):
        unit = f"{hp.get('n_steps')} x {hp['n_envs']}" if spec.on_policy else f"{hp['n_envs']} env(s)"
        rounding = f" (asked {int(hp['n_timesteps'])}: whole rollouts of {unit})"
    lines.append(f"  2. RL training: {steps} environment steps{rounding}"
                 + (" on top of the --init-from model's" if cfg.init_from else ""))
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
