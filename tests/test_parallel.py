"""Parallel episodes: vmapped environments equal sequential runs, two devices equal one; side-by-side targets."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_mlp_config

from gns_jax import parallel, side_by_side
from gns_jax.agent import Agent
from gns_jax.schedules import Eq7Schedule
from gns_jax.settings import agent_settings, training_options
from gns_jax.targets.build import build_task
from gns_jax.train import episode_decisions, validation_subset

TOL = dict(rtol=1e-4, atol=1e-5)


def small_config(data_dir, cache_dir, **agent):
    return tiny_mlp_config(data_dir, cache_dir, steps=40, **agent)  # 4 decision points, 3 actions per episode


@pytest.fixture(scope="module")
def setup(tiny_fashion_mnist, cache_dir):
    config = small_config(tiny_fashion_mnist, cache_dir)
    task = build_task(config)
    agent = Agent(task, agent_settings(config))
    return config, task, agent, agent.init_params(jax.random.key(3))


def assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


def rollout(agent, params, reset_keys, step_keys, coins):
    """reset + one decision step per coin; returns the stacked infos and actions and the final state."""
    task = agent.task
    data = (task.device_data["train"], task.device_data["val"])
    obs, state, reset_info = agent.reset(reset_keys, *data)
    infos, acts = [], []
    for keys, coin in zip(step_keys, coins, strict=True):
        obs, state, info, act = agent.decision_step(params, keys, state, obs, jnp.asarray(coin), data)
        infos.append(info)
        acts.append(act)
    return reset_info, parallel.stack(infos), parallel.stack(acts), state


def test_vmapped_environments_match_sequential_runs(setup):
    """N environments in one vmapped program = N runs of one environment with the same keys (Eq. 3 coins shared)."""
    _, _, agent, params = setup
    n, coins = 3, [False, True, True]  # one unvalidated point, so both branches of the validation cond run
    reset_keys = jax.random.split(jax.random.key(0), n)
    step_keys = [jax.random.split(jax.random.fold_in(jax.random.key(1), t), n) for t in range(len(coins))]
    batched = rollout(agent, params, reset_keys, step_keys, coins)
    for i in range(n):
        single = rollout(agent, params, reset_keys[i:i + 1], [k[i:i + 1] for k in step_keys], coins)
        take = lambda tree, axis, i=i: jax.tree.map(lambda x: np.take(np.asarray(x), [i], axis=axis), tree)
        assert_trees_close(take(batched[0], 0), single[0])  # reset infos [envs]
        assert_trees_close(take(batched[1], 1), single[1])  # step infos [steps, envs]
        assert_trees_close(take(batched[2], 1), single[2])  # obs, actions, values, log-probs
        assert_trees_close(take(batched[3].target.params, 0), single[3].target.params)
    metrics = np.asarray(batched[1].metric)
    assert np.all(np.isnan(metrics[0])) and np.all(np.isfinite(metrics[1:]))
    # The environments really differ (different initial learning rates and weights).
    assert len(set(np.round(np.asarray(batched[0].learning_rate), 8))) == n


def test_side_by_side_matches_separate_runs(setup):
    """M target trainings vmapped over keys and stacked Eq. 7 schedules = M separate ``train_steps`` runs."""
    _, task, _, _ = setup
    schedules = [Eq7Schedule.from_hparams("polynomial", 20, 1e-2, mu=0.1, power=2.0),
                 Eq7Schedule.from_hparams("cosine", 20, 1e-3, mu=0.01, eta1=0.1),
                 Eq7Schedule.constant(3e-3)]
    keys = jax.random.split(jax.random.key(7), len(schedules))
    # Groups of two: one vmapped pair, then the third run padded to a pair (same compiled program).
    result = side_by_side.train_side_by_side(task, keys, 20, parallel.stack(schedules), chunk=10, eval_group=2,
                                         group_size=2)
    assert result.mean_losses.shape == (3, 2) and bool(jnp.all(result.finite))
    for m, schedule in enumerate(schedules):
        state = task.init(keys[m], schedule(0))
        losses = []
        for _ in range(2):
            state, stats = task.train_steps(state, 10, schedule)
            losses.append(float(stats.mean_loss))
        assert_trees_close(jax.tree.map(lambda x, m=m: x[m], result.state.params), state.params)
        np.testing.assert_allclose(np.asarray(result.mean_losses[m]), losses, **TOL)
        np.testing.assert_allclose(float(result.metrics["val"][m]), float(task.evaluate(state, "val")["metric"]),
                                   atol=1e-6)


def test_follow_policy_matches_deterministic_decision_steps(setup):
    """Deployment in one program (indices drawn once) = the deterministic decision steps of the environment."""
    _, task, agent, params = setup
    data = (task.device_data["train"], task.device_data["val"])
    keys = jax.random.split(jax.random.key(5), 1)
    obs, state, reset_info = agent.reset(keys, *data)
    run = agent.follow_policy(params, jax.tree.map(lambda x: x[0], state.target), reset_info.mean_loss[0],
                              data[0], 3)
    lrs = []
    for _ in range(3):
        obs, state, info, _ = agent.decision_step(params, keys, state, obs, jnp.asarray(False), data, True)
        lrs.append(float(info.learning_rate[0]))
    np.testing.assert_allclose(np.asarray(run.learning_rates), lrs, rtol=1e-5)
    assert_trees_close(run.target.params, jax.tree.map(lambda x: x[0], state.target.params))
    assert int(run.target.step) == 40 and bool(run.finite)


def test_episode_options_and_layout_helpers(setup):
    config, task, _, _ = setup
    options = dataclasses.replace(training_options(config), truncated_episodes=2, truncated_fraction=0.25)
    assert [episode_decisions(options, e, 20) for e in range(4)] == [5, 5, 20, 20]
    assert episode_decisions(options, 0, 4) == 2  # at least one action
    assert episode_decisions(training_options(config), 0, 20) == 20
    val = task.device_data["val"]
    subset = validation_subset(val, jax.random.key(0), 30)
    assert subset["label"].shape == (30,)
    assert validation_subset(val, jax.random.key(0), 0) is val
    assert parallel.resolve_num_devices(0) == jax.local_device_count()
    with pytest.raises(ValueError, match="devices"):
        parallel.resolve_num_devices(jax.local_device_count() + 1)
    x = {"a": jnp.arange(12).reshape(6, 2), "k": jax.random.split(jax.random.key(0), 6)}
    placed = parallel.split_envs(x, 1)  # the environment axis over a one-device mesh: same values, same shapes
    assert placed["a"].shape == (6, 2) and placed["k"].shape == (6,)
    assert placed["a"].sharding.spec == jax.sharding.PartitionSpec(parallel.DEVICE_AXIS)
    assert_trees_close(jax.random.key_data(placed["k"]), jax.random.key_data(x["k"]))
    assert parallel.replicate(x, 1)["a"].sharding.is_fully_replicated


TWO_DEVICES = textwrap.dedent(
    """
    import os, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from test_parallel import small_config
    from gns_jax import parallel, side_by_side
    from gns_jax.schedules import Eq7Schedule
    from gns_jax.targets.build import build_task
    from gns_jax.train import train_agent

    assert jax.local_device_count() == 2, jax.devices()
    data_dir, cache_dir = sys.argv[1], sys.argv[2]
    runs = {}
    for devices, envs in ((2, 1), (1, 2)):  # the same two environments (same keys), split or not
        config = small_config(data_dir, cache_dir, num_devices=devices, num_envs=envs, truncated_episodes=1,
                              truncated_fraction=0.5, val_subsample=60, checkpoint_every=2)
        task = build_task(config)
        with tempfile.TemporaryDirectory() as workdir:
            out = train_agent(config, workdir, task=task, progress=False)
        runs[devices] = out
        assert [e["decisions"] for e in out["results"]["episodes"]] == [2, 4]  # truncated, then full
    init = runs[1]["agent"].init_params(jax.random.fold_in(jax.random.key(0), 10**6))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(runs[1]["state"].ppo.params), jax.tree.leaves(init)))
    assert moved > 1e-5, moved
    for a, b in zip(jax.tree.leaves(runs[2]["state"].ppo), jax.tree.leaves(runs[1]["state"].ppo), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    for e2, e1 in zip(runs[2]["results"]["episodes"], runs[1]["results"]["episodes"], strict=True):
        for key in ("return", "val_metric", "test_metric", "initial_lr"):
            np.testing.assert_allclose(e2[key], e1[key], rtol=1e-4, atol=1e-6)

    # Side-by-side target runs split over the devices (3 runs: one padded) = on one device.
    schedules = parallel.stack([Eq7Schedule.from_hparams("polynomial", 20, lr) for lr in (1e-2, 3e-3, 1e-3)])
    keys = jax.random.split(jax.random.key(1), 3)
    one = side_by_side.train_side_by_side(task, keys, 20, schedules, chunk=10)
    two = side_by_side.train_side_by_side(task, keys, 20, schedules, chunk=10, num_devices=2)
    for a, b in zip(jax.tree.leaves((two.state.params, two.mean_losses, two.metrics)),
                    jax.tree.leaves((one.state.params, one.mean_losses, one.metrics)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    print("DEVICES_EQUIVALENT", moved)
    """
)


def test_two_devices_give_the_same_agent_as_one(tiny_fashion_mnist, cache_dir):
    """pmap over 2 forced CPU devices (1 environment each) = 1 device with 2 vmapped environments, same keys.

    XLA_FLAGS must be set before jax is imported, so this runs in a fresh interpreter.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["TESTS_DIR"] = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES, tiny_fashion_mnist, cache_dir], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DEVICES_EQUIVALENT" in proc.stdout
