"""RLlib PPO (new API stack) on the modelsched ids, with exact action masks.

The environment reaches RLlib through :class:`envs.wrappers.ActionMaskObservation`: the
observation ``Dict{"observations": Box, "action_mask": Box(0, 1, (n_actions,))}``, the exact
mask of ``env.action_masks()`` (the canonical layout of RLlib's and TorchRL's masked models).
:class:`MaskedPPOTorchRLModule` builds RLlib's default PPO networks on the ``"observations"``
part only and adds ``log(mask)`` (clamped to the most negative float) to the action logits in
every forward pass (sampling, inference, training), so a masked action has probability 0 and is
never sampled. Training uses ``--env-runners`` Ray actors that sample in parallel and one local
learner.

Train (a local Ray instance, or ``--ray auto`` / ``--ray HOST:PORT`` for a cluster)::

    python -m agents.rllib --scenario serving-small --iterations 30 --env-runners 2 --seed 0

The run folder ``runs/<scenario>__rllib_ppo__s<seed>__<time>/`` holds ``rllib_config.yml`` (the
resolved settings), ``command.txt``, ``progress.jsonl`` (one line per iteration: mean episode
return, episodes, env steps, sampling throughput), TensorBoard events (``rllib/``) and
``checkpoint/`` (RLlib's algorithm checkpoint). ``evaluate.py`` takes the run folder (or its
``checkpoint/``) as a policy and plays it deterministically (the most likely valid action),
on the same seeds as the heuristics::

    python evaluate.py --scenario serving-small --policies all runs/<run>

Loading a checkpoint unpickles RLlib's module class from it: only evaluate checkpoints you trust.
Ray is imported lazily: without it, the commands say to ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Name under which the masked env is registered with Ray Tune's registry.
ENV_NAME = "modelsched_masked"
#: Files that mark an RLlib algorithm checkpoint folder.
CHECKPOINT_MARKER = "rllib_checkpoint.json"
#: Where the policy's module lives inside an algorithm checkpoint.
MODULE_SUBDIR = ("learner_group", "learner", "rl_module", "default_policy")
#: Defaults of :func:`ppo_config` (small, fast settings that learn on serving-small).
#: ``episodes_for_mean``: the episodes behind each iteration's mean return (RLlib's
#: ``metrics_num_episodes_for_smoothing``; about one iteration's worth).
DEFAULTS: dict[str, Any] = {
    "env_runners": 2, "envs_per_runner": 1, "train_batch_size": 2000, "minibatch_size": 128,
    "num_epochs": 10, "lr": 1e-3, "gamma": 0.99, "lambda_": 0.95, "entropy_coeff": 0.0,
    "clip_param": 0.2, "hiddens": [128, 128], "episodes_for_mean": 50,
}


def make_masked_env(config: dict | None = None):
    """The env RLlib's env runners build: ``ActionMaskObservation(Scheduling-v1(scenario=...))``.
    ``config`` holds ``scenario`` and any ``gym.make`` keyword (RLlib's ``env_config``)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids)
    from envs.wrappers import ActionMaskObservation

    kwargs = {k: v for k, v in dict(config or {}).items()}
    kwargs.setdefault("scenario", "serving-small")
    return ActionMaskObservation(gym.make("modelsched/Scheduling-v1", disable_env_checker=True, **kwargs))


def _module_class():
    """:class:`agents.rllib_module.MaskedPPOTorchRLModule` (imports RLlib)."""
    from agents.rllib_module import MaskedPPOTorchRLModule

    return MaskedPPOTorchRLModule


def ppo_config(scenario: str = "serving-small", env_kwargs: dict | None = None, *, seed: int = 0,
               **settings: Any):
    """RLlib ``PPOConfig`` (new API stack) for ``scenario`` with the masked module; ``settings``
    override :data:`DEFAULTS` (unknown names are refused)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown RLlib PPO setting(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    s = {**DEFAULTS, **settings}
    register_env(ENV_NAME, make_masked_env)
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config={"scenario": scenario, **(env_kwargs or {})})
        .env_runners(num_env_runners=int(s["env_runners"]), num_envs_per_env_runner=int(s["envs_per_runner"]),
                     num_cpus_per_env_runner=1)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=int(s["train_batch_size"]), minibatch_size=int(s["minibatch_size"]),
                  num_epochs=int(s["num_epochs"]), lr=float(s["lr"]), gamma=float(s["gamma"]),
                  lambda_=float(s["lambda_"]), entropy_coeff=float(s["entropy_coeff"]),
                  clip_param=float(s["clip_param"]))
        .rl_module(rl_module_spec=RLModuleSpec(module_class=_module_class(),
                                               model_config={"fcnet_hiddens": list(s["hiddens"]),
                                                             "fcnet_activation": "tanh"}))
        .reporting(metrics_num_episodes_for_smoothing=int(s["episodes_for_mean"]))
        .debugging(seed=int(seed))
    )


def iteration_record(result: dict, iteration: int) -> dict:
    """The figures of one ``algo.train()`` result that ``progress.jsonl`` keeps."""
    runners = result.get("env_runners", {})
    timers = result.get("timers", {})
    sample_s = timers.get("env_runner_sampling_timer")
    steps = runners.get("num_env_steps_sampled")
    ret = runners.get("episode_return_mean")
    return {
        "iteration": iteration,
        "episode_return_mean": None if ret is None or not np.isfinite(ret) else float(ret),
        "episodes": int(runners.get("num_episodes", 0) or 0),
        "env_steps": int(steps or 0),
        "env_steps_lifetime": int(runners.get("num_env_steps_sampled_lifetime", 0) or 0),
        "sample_s": None if sample_s is None else float(sample_s),
        "sample_steps_per_s": float(steps) / float(sample_s) if steps and sample_s else None,
    }


def train(scenario: str = "serving-small", *, iterations: int = 30, seed: int = 0, logdir: str | Path = "runs",
          run_name: str | None = None, env_kwargs: dict | None = None, command: str | None = None,
          progress: bool = True, **settings: Any) -> Path:
    """Train RLlib PPO for ``iterations`` iterations (Ray must be initialised); returns the run
    folder (see the module docstring for its contents)."""
    import yaml

    from agents.files import write_text

    config = ppo_config(scenario, env_kwargs, seed=seed, **settings)
    name = run_name or f"{Path(scenario).stem}__rllib_ppo__s{seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(logdir) / name
    run_dir.mkdir(parents=True, exist_ok=False)
    write_text(run_dir / "rllib_config.yml", yaml.safe_dump(
        {"algo": "rllib_ppo", "scenario": scenario, "seed": seed, "iterations": iterations,
         "env_kwargs": dict(env_kwargs or {}), "settings": {**DEFAULTS, **settings}}, sort_keys=False))
    write_text(run_dir / "command.txt", (command or " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
               + "\n")
    from torch.utils.tensorboard import SummaryWriter

    algo = config.build_algo()
    writer = SummaryWriter(log_dir=str(run_dir))
    lines = []
    try:
        for it in range(1, iterations + 1):
            rec = iteration_record(algo.train(), it)
            lines.append(json.dumps(rec))
            write_text(run_dir / "progress.jsonl", "\n".join(lines) + "\n")
            step = rec["env_steps_lifetime"]
            for key in ("episode_return_mean", "sample_steps_per_s"):
                if rec[key] is not None:
                    writer.add_scalar(f"rllib/{key}", rec[key], step)
            if progress:
                ret = rec["episode_return_mean"]
                fps = rec["sample_steps_per_s"]
                print(f"rllib ppo: iteration {it}/{iterations}: {step} env steps, mean episode return "
                      f"{'n/a' if ret is None else f'{ret:.3f}'} over {rec['episodes']} episodes, sampling "
                      f"{'n/a' if fps is None else f'{fps:.0f}'} steps/s", flush=True)
        algo.save_to_path(str((run_dir / "checkpoint").resolve()))
    finally:
        writer.close()
        algo.stop()
    return run_dir


# ====================================================================== evaluation by evaluate.py
def checkpoint_dir(path: str | Path) -> Path | None:
    """The algorithm checkpoint a policy spec names (the folder itself, or a run folder's
    ``checkpoint/``), or None if it names none."""
    p = Path(path)
    for cand in (p, p / "checkpoint"):
        if cand.is_dir() and (cand / CHECKPOINT_MARKER).is_file():
            return cand
    return None


class RLlibPolicy:
    """A trained RLlib module behind the project's ``predict`` protocol: the most likely valid
    action (``deterministic``) or one sampled from the masked distribution (``seed``)."""

    def __init__(self, path: str | Path, env, seed: int | None = None):
        from baselines import PolicyError

        ckpt = checkpoint_dir(path)
        if ckpt is None:
            raise PolicyError(f"{path} is not an RLlib checkpoint (no {CHECKPOINT_MARKER} in it or in its checkpoint/)")
        module_dir = ckpt.joinpath(*MODULE_SUBDIR)
        if not module_dir.is_dir():
            raise PolicyError(f"{ckpt}: no policy module at {module_dir}")
        try:
            import torch
            from ray.rllib.core.rl_module.rl_module import RLModule
        except ImportError as e:
            raise PolicyError(f"{path} is an RLlib checkpoint: evaluating it needs Ray ({e}): "
                              f'pip install -e ".[ray]"') from None
        _module_class()
        self._torch = torch
        self.module = RLModule.from_checkpoint(str(module_dir.resolve()))
        self.module.eval()
        self.path = Path(path)
        from envs.wrappers import ActionMaskObservation

        expected = ActionMaskObservation(env).observation_space
        got = self.module.observation_space
        if (getattr(got, "spaces", None) is None or got["observations"].shape != expected["observations"].shape
                or got["action_mask"].shape != expected["action_mask"].shape):
            raise PolicyError(f"RLlib policy {path} was trained on other spaces than this scenario: observation "
                              f"{got}, the scenario has {expected}")
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self._rng = np.random.default_rng(seed)

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True,
                action_masks=None):
        from envs.wrappers import obs_order

        torch = self._torch
        keys = obs_order(observation)  # (as FlattenScheduling)
        flat = np.concatenate([np.asarray(observation[k], dtype=np.float32).ravel() for k in keys])
        mask = np.asarray(action_masks, dtype=np.float32)
        with torch.no_grad():
            out = self.module.forward_inference({"obs": {"observations": torch.from_numpy(flat[None]),
                                                         "action_mask": torch.from_numpy(mask[None])}})
        logits = out["action_dist_inputs"][0].double().numpy()
        if deterministic:
            action = int(np.argmax(logits))
        else:
            p = np.exp(logits - logits.max())
            action = int(self._rng.choice(p.size, p=p / p.sum()))
        return np.array(action), state


# ====================================================================== CLI
def main(argv: list[str] | None = None) -> int:
    from modelsched.ray_cluster import RayUnavailable, connect

    p = argparse.ArgumentParser(prog="python -m agents.rllib", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="serving-small", help="built-in scenario name or YAML path")
    p.add_argument("--iterations", type=int, default=30, help="PPO iterations (each samples --train-batch-size steps)")
    p.add_argument("--seed", type=int, default=0, help="root seed (RLlib seeds each env runner from it)")
    p.add_argument("--env-runners", type=int, default=DEFAULTS["env_runners"], help="sampling actors")
    p.add_argument("--envs-per-runner", type=int, default=DEFAULTS["envs_per_runner"])
    p.add_argument("--train-batch-size", type=int, default=DEFAULTS["train_batch_size"])
    p.add_argument("--minibatch-size", type=int, default=DEFAULTS["minibatch_size"])
    p.add_argument("--num-epochs", type=int, default=DEFAULTS["num_epochs"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--logdir", default="runs", help="parent folder of run folders")
    p.add_argument("--run-name", default=None)
    p.add_argument("--ray", nargs="?", const="local", default="local", metavar="ADDRESS",
                   help="Ray cluster: none (a local instance), 'auto' (the cluster of `ray start --head` here) "
                        "or HOST:PORT")
    a = p.parse_args(argv)
    for name in ("iterations", "env_runners", "envs_per_runner", "train_batch_size", "minibatch_size", "num_epochs"):
        if getattr(a, name) < (0 if name == "env_runners" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'env_runners' else 1}")
    try:
        started = connect(None if a.ray == "local" else a.ray, "--ray")
    except RayUnavailable as e:
        print(f"agents.rllib: error: {e}", file=sys.stderr)
        return 2
    import ray

    try:
        run = train(a.scenario, iterations=a.iterations, seed=a.seed, logdir=a.logdir, run_name=a.run_name,
                    command=" ".join(shlex.quote(x) for x in ["python", "-m", "agents.rllib", *(argv or sys.argv[1:])]),
                    env_runners=a.env_runners, envs_per_runner=a.envs_per_runner,
                    train_batch_size=a.train_batch_size, minibatch_size=a.minibatch_size,
                    num_epochs=a.num_epochs, lr=a.lr)
    finally:
        if started:
            ray.shutdown()
    print(f"RLlib PPO run -> {run}; evaluate it: python evaluate.py --scenario {a.scenario} --policies all {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
