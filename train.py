"""Train an RL scheduler on a modelsched scenario (thin CLI over ``agents``).

Examples::

    python train.py                                   # MaskablePPO on serving-small, then a table vs all baselines
    python train.py --scenario serving-small --algo maskable_ppo --timesteps 200000 --policy-net attention
    python train.py --algo ppo -p learning_rate=1e-4 -p policy_kwargs.net_arch=[128,128]
    python train.py --resume runs/<run>/checkpoints/model_50000_steps.zip --timesteps 50000

Hyperparameters come from ``agents/hyperparams/<algo>.yml`` (the scenario's entry over
``default``), then ``-p key=value`` overrides (values parsed as YAML), then the explicit flags
(``--timesteps``, ``--n-envs``, ``--policy-net``). Ctrl-C (or SIGTERM) saves the model before exiting.
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
from agents.training import DEFAULT_EVAL_HEURISTICS, TrainConfig, train


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="serving-small", help="built-in scenario name or YAML path")
    p.add_argument("--algo", default=DEFAULT_ALGO, help=f"one of {', '.join(algo_names())}")
    p.add_argument("--timesteps", type=int, default=None, help="training steps (default: hyperparameters' n_timesteps)")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: hyperparameters)")
    p.add_argument("--vec", default="auto", choices=list(VEC_KINDS),
                   help="env vectorisation: auto (SubprocVecEnv if n_envs > 1, else DummyVecEnv), dummy, subproc, "
                        "or batched (the batched simulator, all envs in one process, with the hyperparameters' "
                        "vec_batched entry: large rollouts and minibatches; default auto)")
    p.add_argument("--seed", type=int, default=0, help="root seed (training env i is seeded with seed + i)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--logdir", default="runs", help="parent folder of run folders")
    p.add_argument("--eval-freq", type=int, default=20_000, help="steps between evaluations vs the strongest heuristic (0: off)")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=list(VALIDATION_SEEDS), help="periodic evaluation seeds")
    p.add_argument("--eval-heuristics", nargs="+", default=list(DEFAULT_EVAL_HEURISTICS),
                   help="candidate reference heuristics (the strongest on the eval seeds is kept)")
    p.add_argument("--checkpoint-freq", type=int, default=50_000, help="steps between checkpoints (0: off)")
    p.add_argument("--resume", default=None, metavar="PATH", help="continue training this model .zip")
    p.add_argument("-p", "--param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter override, repeatable; dotted keys for nested values")
    p.add_argument("--policy-net", default=None, choices=list(POLICY_NETS), help="policy network (default: hyperparameters)")
    p.add_argument("--final-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="after training, evaluate vs all baselines on the test seeds and print a table")
    p.add_argument("--test-seeds", type=int, nargs="+", default=list(TEST_SEEDS), help="final evaluation seeds")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--run-name", default=None, help="run folder name (default: scenario__algo__s<seed>__<time>)")
    a = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    return TrainConfig(
        scenario=a.scenario, algo=a.algo, timesteps=a.timesteps, n_envs=a.n_envs, vec=a.vec, seed=a.seed,
        device=a.device, logdir=a.logdir, eval_freq=a.eval_freq, eval_seeds=tuple(a.eval_seeds),
        eval_heuristics=tuple(a.eval_heuristics), checkpoint_freq=a.checkpoint_freq, resume=a.resume,
        overrides=a.overrides, policy_net=a.policy_net, final_eval=a.final_eval,
        test_seeds=tuple(a.test_seeds), threads=a.threads, progress_bar=a.progress_bar,
        run_name=a.run_name, command=" ".join(shlex.quote(x) for x in ["python", "train.py", *argv]),
    )


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # `kill <pid>` of a background run saves the model too, like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
