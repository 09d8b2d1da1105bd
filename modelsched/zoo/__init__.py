"""rl-baselines3-zoo (``pip install modelsched[zoo]``) on the modelsched ids.

PPO, A2C and DQN need nothing of ours but the hyperparameters files next to this module::

    python -m rl_zoo3.train --algo ppo --env modelsched/ServingSmall-v1 \\
        --gym-packages modelsched --conf-file modelsched/zoo/ppo.yml

rl_zoo3 has no MaskablePPO. ``python -m modelsched.zoo train|enjoy [rl_zoo3 arguments]`` runs the
zoo's own ``train`` / ``enjoy`` with the algorithm ``ppo_mask`` (sb3-contrib's MaskablePPO) added:
masks reach it from ``action_masks()`` through the zoo's ``DummyVecEnv`` / ``SubprocVecEnv``
(``env_method``), its evaluation during training uses ``MaskableEvalCallback`` and ``enjoy``
predicts with the masks. It also defaults ``--gym-packages modelsched``, ``--conf-file`` to this
folder's ``<algo>.yml`` (train), the evaluation env's kwargs to the config's ``env_kwargs``
(rl_zoo3 takes them from ``--eval-env-kwargs`` only: with plain rl_zoo3, pass
``--eval-env-kwargs invalid_action:"'penalize'"`` for PPO/A2C/DQN when evaluating) and
``--no-render`` (enjoy: the envs have no ``human`` render mode)::

    python -m modelsched.zoo train --algo ppo_mask --env modelsched/ServingSmall-v1 -n 4096
    python -m modelsched.zoo enjoy --algo ppo_mask --env modelsched/ServingSmall-v1 -f logs -n 2000
"""

from __future__ import annotations

import sys
from pathlib import Path

HYPERPARAMS_DIR = Path(__file__).resolve().parent
ALGOS = ("ppo", "a2c", "dqn", "ppo_mask")


def hyperparams_file(algo: str) -> Path:
    """This package's rl_zoo3 hyperparameters file for ``algo``."""
    path = HYPERPARAMS_DIR / f"{algo}.yml"
    if not path.is_file():
        raise ValueError(f"no modelsched hyperparameters for {algo!r}: have {', '.join(ALGOS)}")
    return path


def _option(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def _has(args: list[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in args for n in names)


def zoo_argv(command: str, args: list[str]) -> list[str]:
    """The rl_zoo3 arguments ``python -m modelsched.zoo <command> <args>`` runs with."""
    args = list(args)
    if not _has(args, "--gym-packages"):
        args += ["--gym-packages", "modelsched"]
    if command == "train" and not _has(args, "--conf-file", "-conf", "--conf"):
        algo = _option(args, "--algo") or "ppo"
        args += ["--conf-file", str(hyperparams_file(algo))]
    if command == "enjoy" and not _has(args, "--no-render"):
        args.append("--no-render")
    return args


def add_maskable_ppo(command: str) -> None:
    """Add ``ppo_mask`` (MaskablePPO) to rl_zoo3: its algorithm table, hyperparameter sampler,
    masked evaluation during training, and masked predictions in ``enjoy``; and evaluate during
    training on the config's ``env_kwargs`` (rl_zoo3 uses only ``--eval-env-kwargs`` there)."""
    import rl_zoo3.exp_manager as exp_manager
    import rl_zoo3.hyperparams_opt as opt
    from rl_zoo3.utils import ALGOS as ZOO_ALGOS
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
    from sb3_contrib.common.maskable.utils import get_action_masks

    if command == "enjoy":
        import rl_zoo3.enjoy as enjoy

        class EnjoyMaskablePPO(MaskablePPO):
            """MaskablePPO whose ``predict`` without masks takes them from the enjoy env."""

            mask_env = None

            def predict(self, observation, state=None, episode_start=None, deterministic=False,
                        action_masks=None):
                if action_masks is None and self.mask_env is not None:
                    action_masks = get_action_masks(self.mask_env)
                return super().predict(observation, state, episode_start, deterministic, action_masks)

        create_test_env = enjoy.create_test_env

        def create_masked_test_env(*args, **kwargs):
            env = create_test_env(*args, **kwargs)
            EnjoyMaskablePPO.mask_env = env
            return env

        enjoy.create_test_env = create_masked_test_env
        ZOO_ALGOS["ppo_mask"] = EnjoyMaskablePPO
    else:
        ZOO_ALGOS["ppo_mask"] = MaskablePPO
    opt.HYPERPARAMS_SAMPLER.setdefault("ppo_mask", opt.HYPERPARAMS_SAMPLER["ppo"])
    opt.HYPERPARAMS_CONVERTER.setdefault("ppo_mask", opt.HYPERPARAMS_CONVERTER["ppo"])
    exp_manager.HYPERPARAMS_SAMPLER.setdefault("ppo_mask", opt.HYPERPARAMS_SAMPLER["ppo"])
    exp_manager.HYPERPARAMS_CONVERTER.setdefault("ppo_mask", opt.HYPERPARAMS_CONVERTER["ppo"])

    algo_of_run = {"algo": None}
    evaluation_callback = exp_manager.EvalCallback

    def eval_callback(*args, **kwargs):  # masked evaluation for MaskablePPO runs only
        cls = MaskableEvalCallback if algo_of_run["algo"] == "ppo_mask" else evaluation_callback
        return cls(*args, **kwargs)

    manager_init = exp_manager.ExperimentManager.__init__

    def init(self, args, algo, *rest, **kwargs):
        algo_of_run["algo"] = algo
        manager_init(self, args, algo, *rest, **kwargs)

    preprocess = exp_manager.ExperimentManager._preprocess_hyperparams

    def preprocess_hyperparams(self, hyperparams):
        # rl_zoo3 gives the evaluation env the command line's env_kwargs only, not the config's:
        # without --eval-env-kwargs, evaluate on the env trained on (invalid_action included).
        out = preprocess(self, hyperparams)
        if self._eval_env_kwargs_args is None:
            self.eval_env_kwargs = self.env_kwargs
        return out

    if not getattr(exp_manager.ExperimentManager, "_modelsched_patched", False):
        exp_manager.EvalCallback = eval_callback
        exp_manager.ExperimentManager.__init__ = init
        exp_manager.ExperimentManager._preprocess_hyperparams = preprocess_hyperparams
        exp_manager.ExperimentManager._modelsched_patched = True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "enjoy"):
        print(__doc__)
        print("usage: python -m modelsched.zoo {train,enjoy} [rl_zoo3 arguments]")
        return 2
    command, args = argv[0], argv[1:]
    try:
        import rl_zoo3  # noqa: F401
    except ImportError:
        print("rl_zoo3 is not installed: pip install 'modelsched[zoo]' (or pip install rl_zoo3)")
        return 1
    add_maskable_ppo(command)
    sys.argv = [f"rl_zoo3.{command}", *zoo_argv(command, args)]
    if command == "train":
        from rl_zoo3.train import train
        train()
    else:
        from rl_zoo3.enjoy import enjoy
        enjoy()
    return 0
