"""agent.obs_norm: running feature statistics held with the agent, merged before each PPO update, used wherever the
policy acts (training, deployment, the optax scheduler, exported schedulers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_mlp_config

from gns_jax.agent import Agent
from gns_jax.checkpoints import load_agent_params
from gns_jax.obs_norm import CLIP, EPS, OBS_STATS, identity_stats, merge, normalize, update_agent_stats
from gns_jax.policy import ActorCritic
from gns_jax.scheduled import TrainedPolicy
from gns_jax.settings import agent_settings
from gns_jax.targets.build import build_task
from gns_jax.train import run_episode, train_agent


def test_merge_equals_the_statistics_of_every_valid_row_seen():
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 3.0, size=(5, 3, 4, 6)).astype(np.float32)  # [T, envs, nodes, features]
    b = rng.normal(-1.0, 0.5, size=(7, 3, 4, 6)).astype(np.float32)
    valid_b = rng.random((7, 3)) > 0.3
    stats = merge(identity_stats(6), jnp.asarray(a))
    stats = merge(stats, jnp.asarray(b), jnp.asarray(valid_b))
    rows = np.concatenate([a.reshape(-1, 6), b[valid_b].reshape(-1, 6)])
    np.testing.assert_allclose(np.asarray(stats["mean"]), rows.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats["var"]), rows.var(0), rtol=1e-4)
    assert float(stats["count"]) == len(rows)
    # Nothing valid: the statistics stay as they were.
    same = merge(stats, jnp.asarray(b), jnp.zeros((7, 3), bool))
    for k in stats:
        np.testing.assert_allclose(np.asarray(same[k]), np.asarray(stats[k]))


def test_normalize_clips_floors_and_passes_no_gradient_to_the_statistics():
    x = jnp.array([[0.0, 1.0, 100.0]])
    mean, var = jnp.array([0.0, 0.5, 0.0]), jnp.array([0.0, 0.25, 1.0])
    out = np.asarray(normalize(x, mean, var))
    np.testing.assert_allclose(out, [[0.0, 0.5 / np.sqrt(0.25 + EPS), CLIP]], rtol=1e-6)
    grads = jax.grad(lambda m, v: jnp.sum(normalize(x, m, v)), argnums=(0, 1))(mean, var)
    assert all(np.all(np.asarray(g) == 0) for g in grads)


def test_network_with_identity_statistics_is_the_network_without_them():
    encoder = lambda o: o.mean(axis=-2)
    plain = ActorCritic(encoder=encoder, hidden=8)
    normed = ActorCritic(encoder=encoder, hidden=8, obs_norm=True)
    obs = jax.random.uniform(jax.random.key(0), (3, 4, 5), minval=-2, maxval=2)
    variables = normed.init(jax.random.key(1), obs)
    assert set(variables) == {"params", OBS_STATS}
    for k, v in identity_stats(5).items():
        np.testing.assert_array_equal(np.asarray(variables[OBS_STATS][k]), np.asarray(v))
    # Identity statistics: x / sqrt(1 + EPS), and nothing else.
    d1, v1 = plain.apply({"params": variables["params"]}, obs / np.sqrt(1.0 + EPS))
    d2, v2 = normed.apply(variables, obs)
    np.testing.assert_allclose(np.asarray(d1.mean()), np.asarray(d2.mean()), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v2), rtol=1e-5, atol=1e-7)
    # Other statistics change what the policy computes: it reads them.
    moved = update_agent_stats(variables, obs * 10.0 + 3.0)
    assert not np.allclose(np.asarray(normed.apply(moved, obs)[0].mean()), np.asarray(d2.mean()))


@pytest.fixture(scope="module")
def task_and_config(tiny_fashion_mnist, cache_dir):
    config = tiny_mlp_config(tiny_fashion_mnist, cache_dir, steps=40, decision_interval=10, num_envs=2,
                             obs_norm=True, episodes=2, progress_feature=True)
    return build_task(config), config


def test_statistics_are_merged_before_the_update_and_not_stepped_by_adam(task_and_config, tmp_path):
    task, config = task_and_config
    agent = Agent(task, agent_settings(config))
    params = agent.init_params(jax.random.key(0))
    assert OBS_STATS in params
    rollout = run_episode(agent, params, jax.random.key(3), 2)
    traj = rollout["trajectory"]
    new_params, relabeled = agent.update_obs_stats(params, traj)
    nodes = np.asarray(traj.obs.nodes)
    valid = np.asarray(traj.valid)
    rows = nodes[valid].reshape(-1, nodes.shape[-1])
    np.testing.assert_allclose(np.asarray(new_params[OBS_STATS]["mean"]), rows.mean(0), rtol=1e-4, atol=1e-5)
    assert float(new_params[OBS_STATS]["count"]) == len(rows)
    # The trajectory's log pi and V are those of the new statistics, so PPO starts at ratio 1.
    dist, value = agent.apply(new_params, jax.tree.map(lambda x: x[1, 0], traj.obs))
    np.testing.assert_allclose(float(dist.log_prob(traj.action[1, 0]).sum()), float(relabeled.log_prob[1, 0]),
                               rtol=1e-5)
    np.testing.assert_allclose(float(value.squeeze()), float(relabeled.value[1, 0]), rtol=1e-5)
    assert not np.allclose(np.asarray(relabeled.value), np.asarray(traj.value))
    # A PPO update leaves the statistics as they were (zero gradient: Adam's step is 0) and changes the rest.
    from gns_jax.ppo import init_ppo_state

    ppo_state, _ = agent.ppo_update(jax.random.key(1), init_ppo_state(new_params, agent.ppo), relabeled)
    for k in ("mean", "var", "count"):
        np.testing.assert_array_equal(np.asarray(ppo_state.params[OBS_STATS][k]),
                                      np.asarray(new_params[OBS_STATS][k]))
    assert not np.allclose(np.asarray(jax.tree.leaves(ppo_state.params["params"])[0]),
                           np.asarray(jax.tree.leaves(new_params["params"])[0]))


def test_training_saves_the_statistics_and_every_deployment_path_reads_them(task_and_config, tmp_path):
    task, config = task_and_config
    out = train_agent(config, str(tmp_path), task=task, progress=False)
    agent = out["agent"]
    params = out["state"].ppo.params
    n_nodes = agent.structure.num_nodes
    per_episode = (agent.env.config.num_decisions - 1) * config.agent.num_envs * n_nodes
    assert float(params[OBS_STATS]["count"]) == 2 * per_episode
    assert np.all(np.asarray(params[OBS_STATS]["var"]) >= 0)
    restored = load_agent_params(out["results"]["agent_checkpoint"], agent.init_params(jax.random.key(0)))
    for k in ("mean", "var", "count"):
        np.testing.assert_array_equal(np.asarray(restored[OBS_STATS][k]), np.asarray(params[OBS_STATS][k]))
    # The optax scheduler and Agent.decide give the same learning rate, and it differs from identity statistics'.
    target = task.init(jax.random.key(4), 1e-3)
    policy = TrainedPolicy.from_agent(agent, restored)
    lr = policy.next_learning_rate(target.params, target.params, jnp.float32(1e-3), jnp.float32(1.0), 0.5)
    obs = agent.observe(target.params, target.params, jnp.float32(1e-3), jnp.float32(1.0), 0.5)
    np.testing.assert_allclose(float(lr), float(agent.decide(restored, obs, jnp.float32(1e-3)).learning_rate),
                               rtol=1e-6)
    identity = {**restored, OBS_STATS: identity_stats(obs.nodes.shape[-1])}
    assert float(agent.decide(identity, obs, jnp.float32(1e-3)).learning_rate) != pytest.approx(float(lr), rel=1e-7)
