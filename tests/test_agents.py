"""Tests of agents/: algorithm registry, hyperparameters, policy networks, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch as th
import yaml

from agents.envs import make_env
from agents.hyperparams import HyperparamError, algo_kwargs, load_hyperparams, parse_overrides
from agents.policies import POLICY_NETS, policy_for
from agents.registry import ALGOS, get_algo


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small networks on a shared 2-core machine: one torch thread avoids oversubscription."""
    before = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(before)


# ---------------------------------------------------------------- registry and hyperparameters
def test_registry_rejects_unknown_algo_with_clear_message():
    with pytest.raises(ValueError, match=r"unknown algorithm 'sac'.*maskable_ppo.*ppo.*a2c.*dqn"):
        get_algo("sac")
    assert get_algo("Maskable-PPO").name == "maskable_ppo"


def test_unmasked_algos_use_penalized_invalid_actions():
    assert ALGOS["maskable_ppo"].env_kwargs == {}
    for name in ("ppo", "a2c", "dqn"):
        assert ALGOS[name].env_kwargs == {"invalid_action": "penalize"}


def test_hyperparams_default_scenario_and_overrides_merge():
    over = parse_overrides(["learning_rate=1e-4", "policy_kwargs.net_arch=[32, 32]", "n_epochs=3"])
    assert over == {"learning_rate": 1e-4, "policy_kwargs": {"net_arch": [32, 32]}, "n_epochs": 3}
    hp = load_hyperparams("maskable_ppo", "serving-small", over)
    assert hp["learning_rate"] == 1e-4 and hp["n_epochs"] == 3
    assert hp["policy_kwargs"]["net_arch"] == [32, 32]
    assert hp["policy_net"] in POLICY_NETS and hp["n_timesteps"] > 0
    # An unknown scenario gets the default entry.
    assert load_hyperparams("ppo", "no-such-scenario")["n_steps"] > 0


def test_hyperparams_reject_unknown_keys_and_bad_overrides():
    with pytest.raises(HyperparamError, match="unknown hyperparameter 'learning_rat'"):
        load_hyperparams("maskable_ppo", "serving-small", {"learning_rat": 1e-3})
    with pytest.raises(HyperparamError, match="set by train.py"):
        load_hyperparams("ppo", "serving-small", {"seed": 3})
    with pytest.raises(HyperparamError, match="key=value"):
        parse_overrides(["learning_rate"])


def test_schedules_and_activations_become_objects():
    kw = algo_kwargs({"learning_rate": "lin_1e-3", "policy_kwargs": {"activation_fn": "relu"}, "n_envs": 2})
    assert "n_envs" not in kw
    assert kw["learning_rate"](0.5) == pytest.approx(5e-4)
    assert kw["policy_kwargs"]["activation_fn"] is th.nn.ReLU


# ---------------------------------------------------------------- policy networks
def _masked_rollout_obs(env, steps: int, seed: int = 0):
    """Observations and masks along a random valid-action trajectory."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        mask = env.unwrapped.action_masks()
        out.append((obs, mask.copy()))
        valid = np.flatnonzero(mask)
        obs, _, te, tr, _ = env.step(int(rng.choice(valid)))
        if te or tr:
            obs, _ = env.reset()
    return out


@pytest.mark.parametrize("net", ["attention", "deepsets", "attention-flat", "mlp"])
def test_maskable_policy_nets_respect_masks(net, tiny_scenario):
    from sb3_contrib import MaskablePPO

    env = make_env(tiny_scenario, monitor=False)
    policy, kwargs = policy_for(net, "maskable_ppo", {"features_extractor_kwargs": {"embed_dim": 16}}
                                if net != "mlp" else {})
    model = MaskablePPO(policy, env, policy_kwargs=kwargs, n_steps=64, batch_size=32, n_epochs=1, seed=0,
                        device="cpu")
    samples = _masked_rollout_obs(env, 40)
    for obs, mask in samples:
        for det in (True, False):
            a, _ = model.predict(obs, deterministic=det, action_masks=mask)
            assert mask[int(a)], (net, int(a))
    # The distribution puts zero probability on masked actions.
    obs_t, _ = model.policy.obs_to_tensor(samples[0][0])
    dist = model.policy.get_distribution(obs_t, action_masks=samples[0][1][None])
    probs = dist.distribution.probs.detach().numpy()[0]
    assert probs.shape == (env.action_space.n,)
    assert np.all(probs[~samples[0][1]] == 0) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    model.learn(64)  # one update runs


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_candidate_policy_for_unmasked_algos(algo, tiny_scenario):
    spec = get_algo(algo)
    env = make_env(tiny_scenario, spec.env_kwargs, monitor=False)
    policy, kwargs = policy_for("attention", algo, {"features_extractor_kwargs": {"embed_dim": 16}})
    extra = {"dqn": {"learning_starts": 16, "buffer_size": 500}, "ppo": {"n_steps": 32, "batch_size": 32},
             "a2c": {"n_steps": 32}}[algo]
    model = spec.cls(policy, env, policy_kwargs=kwargs, seed=0, device="cpu", **extra)
    model.learn(64)
    obs, _ = env.reset(seed=1)
    a, _ = model.predict(obs, deterministic=True)
    assert 0 <= int(a) < env.action_space.n


def test_candidate_scores_are_equivariant_to_task_slot_order(tiny_scenario):
    """Swapping two task slots (and their estimate rows) swaps their candidates' logits."""
    from sb3_contrib import MaskablePPO

    env = make_env(tiny_scenario, monitor=False)
    policy, kwargs = policy_for("attention", "maskable_ppo", {"features_extractor_kwargs": {"embed_dim": 16}})
    model = MaskablePPO(policy, env, policy_kwargs=kwargs, seed=0, device="cpu")
    K, V, D = env.unwrapped.K, env.unwrapped.V, env.unwrapped.D
    rng = np.random.default_rng(0)
    obs = {k: rng.uniform(-1, 1, size=s.shape).astype(np.float32) for k, s in env.observation_space.spaces.items()}
    obs["tasks"][:, 0] = 1.0  # all slots present
    perm = np.arange(K)
    perm[[0, 3]] = [3, 0]
    pobs = dict(obs, tasks=obs["tasks"][perm], estimates=obs["estimates"][perm])
    with th.no_grad():
        logits = [model.policy.mlp_extractor.forward_actor(model.policy.extract_features(model.policy.obs_to_tensor(o)[0]))
                  .numpy()[0] for o in (obs, pobs)]
    a = logits[0][:-1].reshape(K, V, D)
    b = logits[1][:-1].reshape(K, V, D)
    np.testing.assert_allclose(a[perm], b, rtol=1e-4, atol=1e-5)
    assert logits[0][-1] == pytest.approx(logits[1][-1], abs=1e-5)


def test_unknown_policy_net_is_refused():
    with pytest.raises(ValueError, match="unknown policy net 'cnn'"):
        policy_for("cnn", "maskable_ppo")


# ---------------------------------------------------------------- determinism
def test_same_seed_trains_to_same_actions(tmp_path, tiny_scenario):
    from sb3_contrib import MaskablePPO

    from agents.training import TrainConfig, train

    paths = []
    for i in range(2):
        cfg = TrainConfig(scenario=tiny_scenario, timesteps=256, seed=7, device="cpu", logdir=str(tmp_path),
                          run_name=f"run{i}", eval_freq=0, checkpoint_freq=0, final_eval=False,
                          progress_bar=False, policy_net="attention",
                          overrides=["n_steps=128", "batch_size=64", "n_epochs=2",
                                     "policy_kwargs.features_extractor_kwargs={embed_dim: 16}"])
        paths.append(train(cfg).model_path)
    env = make_env(tiny_scenario, monitor=False)
    models = [MaskablePPO.load(p, device="cpu") for p in paths]
    for p0, p1 in zip(models[0].policy.parameters(), models[1].policy.parameters(), strict=True):
        assert th.equal(p0, p1)
    for obs, mask in _masked_rollout_obs(env, 60, seed=3):
        acts = [int(m.predict(obs, deterministic=True, action_masks=mask)[0]) for m in models]
        assert acts[0] == acts[1]


# ---------------------------------------------------------------- training rewards and warm start
@pytest.mark.parametrize("gamma,warmup", [(1.0, 0.0), (0.99, 0.0), (1.0, 0.2)])
def test_effective_accuracy_reward_sums_to_the_metric(gamma, warmup, tiny_scenario):
    """The training reward pays on-time accuracy: with gamma = 1 the potential telescopes and the
    episode's reward is exactly effective_accuracy * arrived; with gamma < 1 it differs only by
    the discounting of the potential. With a warm-up (about half of the 40 requests), both
    sides count only the tasks arriving after it."""
    import baselines

    shaping = {"base": "effective_accuracy", "potential": True, "gamma": gamma, "scale": 0.5}
    env = make_env(tiny_scenario, env_kwargs={"warmup_s": warmup}, shaping=shaping)
    for name in ("mct", "random"):
        obs, _ = env.reset(seed=11)
        policy = baselines.make(name, env, seed=11)
        policy.reset(11)
        total, done, info = 0.0, False, {}
        while not done:
            a, _ = policy.predict(obs, action_masks=env.action_masks())
            obs, r, te, tr, info = env.step(int(a))
            total += r
            done = te or tr
        m = info["metrics"]
        target = 0.5 * m["effective_accuracy"] * m["arrived"]
        if warmup:
            assert 5 <= m["arrived"] <= 35 and m["arrived"] < len(env.unwrapped.sim.tasks)
        if gamma == 1.0:
            assert total == pytest.approx(target, rel=1e-9, abs=1e-9)
        else:
            assert 0.5 * target <= total <= target + 1e-9


def test_env_reward_terms_can_be_rescaled(tiny_scenario):
    env = make_env(tiny_scenario, shaping={"base": "env", "potential": False, "term_scale": {"latency": 0.0}})
    env.reset(seed=2)
    _, r, *_, info = env.step(env.unwrapped.wait_action)
    assert r == pytest.approx(sum(v for k, v in info["reward_terms"].items() if k != "latency"))


def test_behaviour_cloning_warm_start_imitates_the_heuristic(tiny_scenario):
    from sb3_contrib import MaskablePPO

    from agents.pretrain import behaviour_clone, collect

    env = make_env(tiny_scenario, monitor=False)
    policy, kwargs = policy_for("attention", "maskable_ppo", {"features_extractor_kwargs": {"embed_dim": 16}})
    model = MaskablePPO(policy, env, policy_kwargs=kwargs, seed=0, device="cpu")
    demos = collect(tiny_scenario, "mct", range(500, 503), gamma=0.99)
    assert len(demos.actions) == len(demos.masks) == len(demos.returns) > 0
    assert demos.masks[np.arange(len(demos.actions)), demos.actions].all()  # the heuristic only acts validly
    before = behaviour_clone(model, demos, epochs=1, batch_size=32, seed=0)["pretrain/action_accuracy"]
    after = behaviour_clone(model, demos, epochs=8, batch_size=32, seed=0)["pretrain/action_accuracy"]
    assert after > before and after > 0.8, (before, after)


def test_train_with_warm_start_and_shaping(tmp_path, tiny_scenario):
    """The serving-small recipe end to end on the tiny scenario: BC + one DAgger round, shaped
    reward, candidate policy; the run records it and trains."""
    from agents.training import TrainConfig, train

    cfg = TrainConfig(scenario=tiny_scenario, timesteps=128, seed=1, device="cpu", logdir=str(tmp_path),
                      run_name="warm", eval_freq=64, eval_seeds=(10000,), eval_heuristics=("mct",),
                      checkpoint_freq=0, final_eval=False, progress_bar=False, policy_net="attention",
                      overrides=["n_steps=64", "batch_size=32", "n_epochs=1",
                                 "policy_kwargs.features_extractor_kwargs={embed_dim: 16}",
                                 "reward_shaping={base: effective_accuracy, potential: queue, scale: 0.1}",
                                 "pretrain={heuristic: mct, episodes: 2, epochs: 2, dagger: 1, dagger_epochs: 1}"])
    result = train(cfg)
    assert result.num_timesteps >= 128 and result.best_model_path.is_file()
    config = yaml.safe_load((result.run_dir / "config.yml").read_text())
    assert config["hyperparams"]["pretrain"]["heuristic"] == "mct"
    with pytest.raises(ValueError, match="unknown pretrain keys"):  # refused before a run folder exists
        train(TrainConfig(scenario=tiny_scenario, timesteps=64, logdir=str(tmp_path), eval_freq=0,
                          final_eval=False, progress_bar=False, overrides=["pretrain={heuristc: mct}"]))


def test_final_table_uses_t_intervals_and_names_what_it_leaves_out(tiny_scenario, tmp_path):
    """The training run's final table: Student-t intervals as evaluate.py, paired differences
    against the best listed heuristic, and the heuristics it did not run named in the result."""
    from agents.report import compare_with_baselines
    from baselines.stats import t_interval

    out = compare_with_baselines(tiny_scenario, {}, [0, 1, 2], "effective_accuracy", heuristics=["fifo", "mct"],
                                 out_path=tmp_path / "final.json", show=False)
    assert set(out["policies"]) == {"fifo", "mct"} and "planner" in out["left_out"]
    for row in out["policies"].values():
        assert row["ci"] == list(t_interval(row["values"]))
    best = out["best_heuristic"]
    other = ({"fifo", "mct"} - {best}).pop()
    diffs = [a - b for a, b in zip(out["policies"][other]["values"], out["policies"][best]["values"])]
    assert out["policies"][other]["diff_vs_best"]["ci"] == list(t_interval(diffs))
    assert json.loads((tmp_path / "final.json").read_text())["left_out"] == out["left_out"]
