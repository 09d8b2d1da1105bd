"""The environment with the rest of the ecosystem: the README's SB3 examples (run as written,
with tiny timesteps), the flat-observation wrappers, masks and sampling on vector envs,
``info["metrics"]`` on TimeLimit truncations, ``import modelsched``, and rl-baselines3-zoo
(skipped, saying why, when rl_zoo3 is not installed: it is the optional extra ``[zoo]``).

The README's tested examples are the Python blocks between ``<!-- tested: sb3-examples -->``
and ``<!-- end tested: sb3-examples -->``; ``MODELSCHED_README`` names another Markdown file
to read them from (the README part before it is merged).
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.wrappers import TimeLimit

import envs
from envs.env import SchedulingEnv
from envs.vector import BatchedVectorEnv
from envs.wrappers import FLAT_ORDER, ActionMaskObservation, FlattenScheduling

ROOT = Path(__file__).resolve().parents[1]
README = Path(os.environ.get("MODELSCHED_README", ROOT / "README.md"))
MARKER, END = "<!-- tested: sb3-examples -->", "<!-- end tested: sb3-examples -->"
TINY = 256
SMALL = {"workload_overrides": {"num_jobs": 40}, "warmup_s": 0.0}


# ------------------------------------------------------------------ README examples
def readme_blocks() -> list[str]:
    text = README.read_text() if README.is_file() else ""
    if MARKER not in text or END not in text.split(MARKER, 1)[1]:
        return []
    region = text.split(MARKER, 1)[1].split(END, 1)[0]
    return re.findall(r"```python\n(.*?)```", region, flags=re.S)


BLOCKS = readme_blocks()


def test_readme_has_the_tested_sb3_examples():
    assert BLOCKS, (f"{README} has no Python blocks between {MARKER!r} and {END!r} "
                    f"(merge /tmp/readme_parts/sb3.md into README.md)")
    code = "\n".join(BLOCKS)
    for name in ("PPO(", "A2C(", "DQN(", "MaskablePPO(", "MultiInputPolicy", "invalid_action=\"penalize\"",
                 "action_masks", "FlattenScheduling", "make_vec"):
        assert name in code, f"the README's tested examples do not show {name}"


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_sb3_example_runs(i):
    code = BLOCKS[i]
    trains = ".learn(" in code
    if trains:  # every training example takes its budget from TIMESTEPS, set tiny here
        assert re.search(r"^TIMESTEPS = [\d_]+$", code, flags=re.M), "a training example without TIMESTEPS"
        code = re.sub(r"^TIMESTEPS = [\d_]+$", f"TIMESTEPS = {TINY}", code, flags=re.M)
    ns: dict = {"__name__": f"readme_example_{i}"}
    exec(compile(code, f"README example {i}", "exec"), ns)
    models = [v for v in ns.values() if hasattr(v, "num_timesteps") and hasattr(v, "learn")]
    assert len(models) == code.count(".learn("), "each training example's models trained"
    for m in models:
        assert m.num_timesteps >= TINY
    if "metrics" in ns:
        assert 0.0 <= ns["metrics"]["effective_accuracy"] <= 1.0


# ------------------------------------------------------------------ flat observations
def test_flatten_scheduling_layout_bounds_and_masks():
    base = gym.make("modelsched/ServingHetero-v1", **SMALL)
    env = FlattenScheduling(base)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box) and space.dtype == np.float32 and len(space.shape) == 1
    assert np.all(space.low == -1.0) and np.all(space.high == 1.0)
    d = base.observation_space
    assert space.shape[0] == sum(int(np.prod(d[k].shape)) for k in FLAT_ORDER)
    flat, _ = env.reset(seed=3)
    dict_obs, _ = base.reset(seed=3)  # the same state, seen unflattened
    assert np.array_equal(flat, np.concatenate([dict_obs[k].ravel() for k in FLAT_ORDER]))
    back = env.unflatten(flat)
    assert all(np.array_equal(back[k], dict_obs[k]) for k in FLAT_ORDER)
    assert np.array_equal(flat[env.slices["global"]], dict_obs["global"])
    for _ in range(200):
        mask = env.action_masks()
        assert np.array_equal(mask, env.unwrapped.action_masks())
        a = env.action_space.sample()  # still the env's masked sampling
        assert mask[a]
        flat, _, term, trunc, _ = env.step(a)
        assert space.contains(flat)
        if term or trunc:
            flat, _ = env.reset()


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*not having a spec")
def test_flattened_env_passes_the_checkers_and_trains_mlp_ppo():
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    gym_check_env(FlattenScheduling(SchedulingEnv("serving-small", **SMALL)))
    sb3_check_env(FlattenScheduling(SchedulingEnv("serving-small", **SMALL)))
    vec = DummyVecEnv([lambda: FlattenScheduling(gym.make("modelsched/ServingSmall-v1", **SMALL))] * 2)
    vec.reset()
    assert get_action_masks(vec).shape == (2, vec.action_space.n)  # masks reach MaskablePPO too
    env = FlattenScheduling(gym.make("modelsched/ServingSmall-v1", invalid_action="penalize", **SMALL))
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(TINY)
    assert model.num_timesteps >= TINY
    assert type(model.policy.features_extractor).__name__ == "FlattenExtractor"


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*not having a spec")
@pytest.mark.parametrize("flatten", [True, False])
def test_action_mask_observation(flatten):
    env = ActionMaskObservation(SchedulingEnv("pipelines", **SMALL), flatten=flatten)
    gym_check_env(ActionMaskObservation(SchedulingEnv("pipelines", **SMALL), flatten=flatten))
    obs, _ = env.reset(seed=1)
    n = env.action_space.n
    for _ in range(150):
        assert env.observation_space.contains(obs)
        m = obs["action_mask"]
        assert m.shape == (n,) and m.dtype == np.float32 and m[-1] == 1.0
        assert np.array_equal(m.astype(bool), env.action_masks())
        obs, _, term, trunc, _ = env.step(int(np.flatnonzero(m)[-2 if m.sum() > 1 else -1]))
        if term or trunc:
            obs, _ = env.reset()


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*not having a spec")
@pytest.mark.parametrize("env_id", envs.registered_ids())
def test_action_mask_observation_on_every_id(env_id):
    """The canonical masked form (RLlib, TorchRL): Gymnasium's checker passes, every observation
    is in the space and its mask is env.action_masks() at every step of whole episodes."""
    gym_check_env(ActionMaskObservation(gym.make(env_id, disable_env_checker=True).unwrapped))
    env = ActionMaskObservation(gym.make(env_id, disable_env_checker=True))
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    episodes = steps = 0
    while episodes < 2 and steps < 400:
        assert env.observation_space.contains(obs)
        assert np.array_equal(obs["action_mask"], env.unwrapped.action_masks().astype(np.float32))
        obs, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        steps += 1
        if term or trunc:
            episodes += 1
            obs, _ = env.reset()
    assert steps > 20


def test_wrappers_refuse_other_observations():
    with pytest.raises(TypeError, match="Dict observation"):
        FlattenScheduling(gym.make("CartPole-v1"))


# ------------------------------------------------------------------ vector envs
def test_make_vec_default_is_the_batched_env_and_samples_valid_actions():
    vec = gym.make_vec("modelsched/ServingSmall-v1", num_envs=4, **SMALL)
    assert isinstance(vec.unwrapped, BatchedVectorEnv)
    vec.action_space.sample()  # before reset: unmasked, but no error
    vec.reset(seed=0)
    vec.action_space.seed(1)
    ends = 0
    for _ in range(400):
        masks = vec.unwrapped.action_masks()
        a = vec.action_space.sample()
        assert vec.action_space.contains(a)
        assert masks[np.arange(4), a].all()
        _, _, term, trunc, _ = vec.step(a)  # raises on an invalid action (invalid_action="raise")
        ends += int(np.sum(term | trunc))
    assert ends >= 4
    assert not all(np.all(vec.action_space.sample() == vec.action_space.sample()) for _ in range(5))
    copied = pickle.loads(pickle.dumps(vec.action_space))  # the bound env does not travel
    assert copied == vec.action_space and copied.sample().shape == (4,)
    assert copy.deepcopy(vec.action_space) == vec.action_space


def test_sync_vector_env_masks_through_call_and_sampling_with_them():
    sync = gym.make_vec("modelsched/ServingSmall-v1", num_envs=3, vectorization_mode="sync", **SMALL)
    batched = gym.make_vec("modelsched/ServingSmall-v1", num_envs=3, **SMALL)
    sync.reset(seed=4)
    batched.reset(seed=4)
    for _ in range(100):
        masks = np.stack(sync.call("action_masks"))
        assert np.array_equal(masks, batched.unwrapped.action_masks())
        a = sync.action_space.sample(mask=tuple(m.astype(np.int8) for m in masks))
        assert masks[np.arange(3), a].all()
        sync.step(a)
        batched.step(a)


# ------------------------------------------------------------------ metrics on truncation
def _run(env, steps, seed=0):
    env.reset(seed=seed)
    infos = []
    for _ in range(steps):
        mask = env.unwrapped.action_masks()
        _, _, term, trunc, info = env.step(int(np.flatnonzero(mask)[0]))
        infos.append((term, trunc, info))
        if term or trunc:
            break
    return infos


@pytest.mark.parametrize("how", ["make", "wrapper", "nested"])
def test_time_limit_truncation_carries_the_metrics(how):
    N = 30
    if how == "make":
        env = gym.make("modelsched/ServingSmall-v1", max_episode_steps=N)
    elif how == "wrapper":
        env = TimeLimit(SchedulingEnv(), N)
    else:  # the tighter of two limits, under other wrappers
        env = gym.wrappers.RecordEpisodeStatistics(TimeLimit(TimeLimit(SchedulingEnv(), N + 10), N))
    for episode in range(2):  # and again after a reset
        infos = _run(env, 10 * N, seed=episode)
        assert len(infos) == N
        assert [("metrics" in i) for _, _, i in infos] == [False] * (N - 1) + [True]
        term, trunc, info = infos[-1]
        assert trunc and not term
        assert info["metrics"] == env.unwrapped.episode_metrics()
        sim = env.unwrapped.sim
        assert info["metrics"]["arrived"] == sum(sim._ttimes[t, 0] >= sim.warmup for t in sim._arrived)


def test_no_time_limit_no_metrics_before_the_end():
    env = gym.make("modelsched/ServingSmall-v1", **SMALL)
    infos = _run(env, 100_000)
    assert not any("metrics" in i for _, _, i in infos[:-1])
    term, trunc, info = infos[-1]
    assert (term or trunc) and "metrics" in info
    assert env.unwrapped._step_limit is None
    # a limit longer than the episode changes nothing
    long = _run(gym.make("modelsched/ServingSmall-v1", max_episode_steps=len(infos) + 5, **SMALL), 100_000)
    assert len(long) == len(infos) and long[-1][0] == term and long[-1][2]["metrics"] == info["metrics"]


def test_sync_vector_env_with_a_step_limit_has_metrics_at_truncation():
    sync = gym.make_vec("modelsched/ServingSmall-v1", num_envs=2, vectorization_mode="sync",
                        max_episode_steps=20)
    sync.reset(seed=0)
    for t in range(20):
        masks = np.stack(sync.call("action_masks"))
        _, _, _, trunc, infos = sync.step(masks.argmax(axis=1))
        assert trunc.all() == (t == 19)
        assert ("metrics" in infos) == (t == 19)
    assert infos["_metrics"].all()


def test_batched_vector_env_refuses_a_step_limit_by_name():
    with pytest.raises(ValueError, match="max_episode_steps"):
        gym.make_vec("modelsched/ServingSmall-v1", num_envs=2, max_episode_steps=10)
    with pytest.raises(ValueError, match="max_episode_steps"):
        BatchedVectorEnv("serving-small", 2, max_episode_steps=10)


def test_pickled_env_keeps_its_step_limit():
    env = TimeLimit(SchedulingEnv(), 12)
    _run(env, 5)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped._step_limit == 12
    infos = [clone.step(int(np.flatnonzero(clone.unwrapped.action_masks())[0]))[-1] for _ in range(7)]
    assert "metrics" in infos[-1] and not any("metrics" in i for i in infos[:-1])


# ------------------------------------------------------------------ import modelsched
def test_import_modelsched_registers_the_ids_without_torch_or_sb3():
    code = ("import sys, modelsched, gymnasium as gym\n"
            "assert modelsched.make is gym.make\n"
            "assert all(i in gym.registry for i in modelsched.registered_ids())\n"
            "assert modelsched.env_id('serving-small') == 'modelsched/ServingSmall-v1'\n"
            "assert 'serving-small' in modelsched.builtin_scenarios()\n"
            "import modelsched.zoo\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'stable_baselines3', 'sb3_contrib', 'rl_zoo3')]\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_modelsched_ids_are_the_envs_ids():
    import modelsched
    assert modelsched.registered_ids() == envs.registered_ids()
    env = modelsched.make("modelsched/Pipelines-v1")
    assert isinstance(env.unwrapped, SchedulingEnv)


# ------------------------------------------------------------------ rl-baselines3-zoo
def test_zoo_arguments_default_to_our_package_and_hyperparameters():
    from modelsched.zoo import ALGOS, hyperparams_file, zoo_argv

    for algo in ALGOS:
        import yaml
        hp = yaml.safe_load(hyperparams_file(algo).read_text())["default"]
        assert hp["policy"] == "MultiInputPolicy"
        assert hp.get("env_kwargs", {}).get("invalid_action") == (None if algo == "ppo_mask" else "penalize")
    args = zoo_argv("train", ["--algo", "ppo_mask", "--env", "modelsched/ServingSmall-v1"])
    assert args[-4:] == ["--gym-packages", "modelsched", "--conf-file", str(hyperparams_file("ppo_mask"))]
    assert zoo_argv("train", ["--algo", "a2c", "--conf-file", "x.yml", "--gym-packages", "envs"]) == \
        ["--algo", "a2c", "--conf-file", "x.yml", "--gym-packages", "envs"]
    assert zoo_argv("enjoy", ["--algo", "ppo"])[-1] == "--no-render"
    with pytest.raises(ValueError, match="no modelsched hyperparameters"):
        hyperparams_file("sac")


def test_zoo_trains_maskable_ppo_with_exact_masks_evaluates_and_enjoys(tmp_path):
    pytest.importorskip("rl_zoo3", reason="rl_zoo3 is not installed (the optional extra modelsched[zoo])")
    small = "workload_overrides:dict(num_jobs=30)"
    common = ["--algo", "ppo_mask", "--env", "modelsched/ServingSmall-v1", "-f", str(tmp_path),
              "--num-threads", "1", "--seed", "0"]
    train = [sys.executable, "-m", "modelsched.zoo", "train", *common, "-n", "512", "--eval-freq", "256",
             "--eval-episodes", "1", "--env-kwargs", small, "-params", "n_envs:2", "n_steps:128", "batch_size:128"]
    out = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "ppo_mask" / "modelsched-ServingSmall-v1_1"
    # trained with invalid_action="raise": one unmasked action would have stopped it
    assert (run / "modelsched-ServingSmall-v1.zip").is_file()
    assert "invalid_action" not in (run / "modelsched-ServingSmall-v1" / "config.yml").read_text()
    evaluations = np.load(run / "evaluations.npz")  # the masked evaluation during training
    assert len(evaluations["timesteps"]) >= 1
    from sb3_contrib import MaskablePPO
    assert MaskablePPO.load(run / "modelsched-ServingSmall-v1.zip", device="cpu").num_timesteps >= 512
    enjoy = [sys.executable, "-m", "modelsched.zoo", "enjoy", *common, "-n", "300", "--env-kwargs", small]
    out = subprocess.run(enjoy, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Episode Length" in out.stdout  # whole episodes, every action valid
