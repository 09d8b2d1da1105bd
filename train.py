"""Train an RL scheduler on a modelsched scenario (thin CLI over ``agents``).

A run has four phases, each printed as it runs (a progress bar on a terminal, plain lines
when the output goes to a file):

1. pretraining (MaskablePPO only, when the hyperparameters have a ``pretrain`` entry, as
   the built-in scenarios do): behaviour cloning, then DAgger rounds, of a heuristic on
   training seeds. Off: ``--no-pretrain`` (or ``-p pretrain=null``).
2. RL training for ``--timesteps`` environment steps. On-policy algorithms collect whole
   rollouts, so the run ends at the next multiple of ``n_steps x n_envs`` (printed at the
   start); pretraining's demonstration decisions are not counted; with ``--resume`` the steps
   are added to the model's own.
3. periodic evaluation every ``--eval-freq`` steps against the strongest of
   ``--eval-heuristics`` on ``--eval-seeds`` (keeps ``best_model.zip``). Off: ``--eval-freq 0``.
4. final evaluation of the best and last models against every heuristic on
   ``--test-seeds``, printed as a table. Off: ``--no-final-eval``.

``train_summary.json`` reports each phase's wall time and the RL phase's own fps.

Examples::

    python train.py                                   # MaskablePPO on serving-small, then a table vs all baselines
    python train.py --timesteps 4096 --no-pretrain --eval-freq 0 --no-final-eval   # a quick smoke run
    python train.py --scenario serving-small --algo maskable_ppo --timesteps 200000 --policy-net attention
    python train.py --algo ppo -p learning_rate=1e-4 -p policy_kwargs.net_arch=[128,128]
    python train.py --resume runs/<run>               # continue a stopped run exactly, in its folder
    python train.py --resume runs/<run> --timesteps 400000   # ... or train a finished one further
    python train.py --init-from runs/<run>/best_model.zip -p learning_rate=1e-5   # a new run from a model

Sweeps (Ray Tune; ``pip install -e ".[ray]"``): ``python train.py --sweep SWEEP.yml [--ray ADDRESS]``
runs recipes x seeds x hyperparameters as trials, one run folder each, and continues an
interrupted sweep when run again; see ``agents/sweep.py`` for the file's keys.

Hyperparameters come from ``agents/hyperparams/<algo>.yml`` (the scenario's entry over
``default``), then ``-p key=value`` overrides (values parsed as YAML), then the explicit flags
(``--timesteps``, ``--n-envs``, ``--policy-net``, ``--no-pretrain``).

Stopping and resuming: ``checkpoints/last.zip`` is written after every policy update (and after
pretraining) with everything the run needs to continue: the training environments' episodes,
the random generators, the optimizer, the evaluation's best score. Ctrl-C (or SIGTERM) also
saves ``model.zip`` before exiting. ``--resume RUN_FOLDER`` (or one of its checkpoints)
continues the run in its folder, with its own arguments, to the same parameters an
uninterrupted run reaches (on CPU: the tests compare them), the same TensorBoard run and
``progress.csv`` (cut at the checkpoint), and best-model tracking kept. Only ``--timesteps``
(a new total), ``--device``, ``--threads``, ``--progress-bar`` and ``--final-eval`` may change.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys

from agents.envs import TEST_SEEDS, VALIDATION_SEEDS
from agents.hyperparams import VEC_KINDS
from agents.policies import POLICY_NETS
from agents.registry import DEFAULT_ALGO, algo_names
from agents.training import DEFAULT_EVAL_HEURISTICS, RESUME_ARGS, TrainConfig, train


class _Help(argparse.RawDescriptionHelpFormatter):
    """The docstring as written, and ``(default: X)`` after options whose default says something
    (not None, not already in the help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" not in text and action.default not in (None, argparse.SUPPRESS, False, [])
                and action.option_strings):
            default = action.default
            if isinstance(default, (list, tuple)):
                default = " ".join(map(str, default))
            text += f" (default: {default})"
        return text


def _int_at_least(low: int, name: str | None = None):
    """An argparse type: an integer >= ``low`` (the message names the flag, or says 0 is off)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be >= {low}, got {value}" if name else
                                             f"must be >= {low} (0: off), got {value}")
        return value
    return parse


def _positive(name: str):
    return _int_at_least(1, name)


_non_negative = _int_at_least(0)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\nExamples::")[0],
                                formatter_class=_Help)
    p.add_argument("--scenario", default="serving-small", help="built-in scenario name or YAML path")
    p.add_argument("--algo", default=DEFAULT_ALGO, help=f"one of {', '.join(algo_names())}")
    p.add_argument("--timesteps", type=_positive("--timesteps"), default=None,
                   help="RL environment steps of this run, rounded up to whole rollouts (default: the "
                        "hyperparameters' n_timesteps)")
    p.add_argument("--n-envs", type=_positive("--n-envs"), default=None,
                   help="parallel envs (default: the hyperparameters' n_envs)")
    p.add_argument("--vec", default="auto", choices=list(VEC_KINDS),
                   help="env vectorisation: auto (SubprocVecEnv if n_envs > 1, else DummyVecEnv), dummy, subproc, "
                        "or batched (the batched simulator, all envs in one process, with the hyperparameters' "
                        "vec_batched entry: large rollouts and minibatches)")
    p.add_argument("--seed", type=int, default=0, help="root seed (training env i is seeded with seed + i)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="torch device of the policy (auto: CUDA when present)")
    p.add_argument("--logdir", default="runs", help="parent folder of run folders")
    p.add_argument("--eval-freq", type=_non_negative, default=20_000,
                   help="steps between periodic evaluations vs the strongest heuristic (0: off)")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=list(VALIDATION_SEEDS), help="periodic evaluation seeds")
    p.add_argument("--eval-heuristics", nargs="+", default=list(DEFAULT_EVAL_HEURISTICS),
                   help="candidate reference heuristics (the strongest on the eval seeds is kept)")
    p.add_argument("--checkpoint-freq", type=_non_negative, default=50_000, help="steps between checkpoints (0: off)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue a stopped run exactly, in its folder: a run folder (its checkpoints/last.zip) or "
                        "one of its checkpoints")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start a new run from this model's weights and step counters (no pretraining)")
    p.add_argument("-p", "--param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter override, repeatable; dotted keys for nested values")
    p.add_argument("--policy-net", default=None, choices=list(POLICY_NETS),
                   help="policy network (default: the hyperparameters' policy_net)")
    p.add_argument("--no-pretrain", dest="pretrain", action="store_false", default=None,
                   help="skip the behaviour-cloning warm start (phase 1), whatever the hyperparameters say")
    p.add_argument("--final-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="after training, evaluate the best and last models vs all heuristics on the test seeds "
                        "and print a table (phase 4)")
    p.add_argument("--test-seeds", type=int, nargs="+", default=list(TEST_SEEDS), help="final evaluation seeds")
    p.add_argument("--threads", type=_positive("--threads"), default=1,
                   help="torch CPU threads (small networks on few cores train fastest with 1)")
    p.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True,
                   help="progress display of each phase (plain lines when the output is not a terminal)")
    p.add_argument("--sweep", default=None, metavar="SWEEP.yml",
                   help="run the sweep file's trials (recipes x seeds x hyperparameters) as Ray Tune trials, one run "
                        "folder each in --logdir/<name>/runs; only --logdir and --ray go with it (agents/sweep.py)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="with --sweep: the Ray cluster (default a local instance; 'auto': the cluster of "
                        "`ray start --head` here; HOST:PORT: a remote one)")
    p.add_argument("--run-name", default=None,
                   help="run folder name inside --logdir (default: <scenario>__<algo>__s<seed>__<time>)")
    a = p.parse_args(argv)
    if a.sweep is not None or a.ray is not None:
        p.error("--sweep and --ray are handled by main() (train.py --sweep SWEEP.yml [--ray ADDRESS])")
    argv = sys.argv[1:] if argv is None else argv
    if a.resume:
        fixed = sorted(_given(p, argv) - {"resume", *RESUME_ARGS})
        if fixed:
            flags = ", ".join(next(o for o in act.option_strings if o.startswith("--"))
                              for act in p._actions if act.dest in fixed)  # noqa: SLF001
            p.error(f"--resume continues the run with its own arguments (its args.yml): {flags} cannot be "
                    f"changed; start a new run for that (--init-from starts one from a checkpoint's weights)")
    if a.resume:  # the run's own values unless given
        given = _given(p, argv)
        for key in RESUME_ARGS:
            if key != "command" and key not in given:
                setattr(a, key, None)
    return TrainConfig(
        scenario=a.scenario, algo=a.algo, timesteps=a.timesteps, n_envs=a.n_envs, vec=a.vec, seed=a.seed,
        device=a.device, logdir=a.logdir, eval_freq=a.eval_freq, eval_seeds=tuple(a.eval_seeds),
        eval_heuristics=tuple(a.eval_heuristics), checkpoint_freq=a.checkpoint_freq, resume=a.resume,
        init_from=a.init_from,
        overrides=a.overrides, policy_net=a.policy_net, pretrain=a.pretrain, final_eval=a.final_eval,
        test_seeds=tuple(a.test_seeds), threads=a.threads, progress_bar=a.progress_bar,
        run_name=a.run_name, command=" ".join(shlex.quote(x) for x in ["python", "train.py", *argv]),
    )


def _given(p: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options ``argv`` gives explicitly (abbreviations included)."""
    actions = p._actions  # noqa: SLF001
    saved = [act.default for act in actions]
    try:
        for act in actions:
            act.default = argparse.SUPPRESS
        return set(vars(p.parse_args(argv)))
    finally:
        for act, default in zip(actions, saved):
            act.default = default


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # Lines appear as they are printed when the output goes to a file or a pipe.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    args = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(prog="train.py", add_help=False, allow_abbrev=False)
    pre.add_argument("--sweep", default=None)
    pre.add_argument("--ray", nargs="?", const="local", default=None)
    pre.add_argument("--logdir", default="runs")
    known, rest = pre.parse_known_args(args)
    if known.sweep is not None or known.ray is not None:
        return _sweep_main(known, rest, args)
    cfg = parse_args(argv)
    # `kill <pid>` of a background run saves the model too, like Ctrl-C; and SIGINT interrupts
    # even when the run was started with it ignored (a shell script's background job is).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


def _sweep_main(known: argparse.Namespace, rest: list[str], argv: list[str]) -> int:
    """``train.py --sweep SWEEP.yml [--ray ADDRESS] [--logdir DIR]``."""
    if known.sweep is None:
        print("train.py: error: --ray goes with --sweep SWEEP.yml (a single run trains on this machine)",
              file=sys.stderr)
        return 2
    if rest:
        print(f"train.py: error: --sweep runs the trials its file describes: {' '.join(rest)} cannot be given with "
              f"it (put training options under the file's 'train:' and hyperparameters under 'params:' or 'grid:')",
              file=sys.stderr)
        return 2
    from agents.sweep import SweepError, run_sweep
    from modelsched.ray_cluster import RayUnavailable

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_sweep(known.sweep, known.logdir, None if known.ray in (None, "local") else known.ray,
                         command=" ".join(shlex.quote(x) for x in ["python", "train.py", *argv]))
    except (SweepError, RayUnavailable) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train.py: sweep interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
