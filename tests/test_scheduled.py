"""``gns_jax.scheduled``: the learned schedule as an optax transformation equals deployment (``follow_policy``),
composes with ``optax.chain``, survives an orbax save/restore and runs under ``jax.vmap``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import decisive, tiny_mlp_config, user_loop

import gns_jax
from gns_jax import checkpoints
from gns_jax.agent import Agent
from gns_jax.scheduled import ScheduledState, TrainedPolicy, current_learning_rate
from gns_jax.settings import agent_settings
from gns_jax.targets.build import build_task

K, T, TAIL = 10, 50, 5  # N = 5 decision points: 4 decisions, then 5 steps at the last alpha
LR0 = 3e-3
TOL = dict(rtol=2e-5, atol=1e-7)


def make_setup(data_dir, cache_dir, **agent_options):
    config = tiny_mlp_config(data_dir, cache_dir, steps=T, decision_interval=K, **agent_options)
    task = build_task(config)
    agent = Agent(task, agent_settings(config))
    agent_params = decisive(agent.init_params(jax.random.key(1)))
    return task, agent, agent_params, gns_jax.scheduled(optax.adam, agent, agent_params, learning_rate=LR0)


@pytest.fixture(scope="module")
def setup(tiny_fashion_mnist, cache_dir):
    return make_setup(tiny_fashion_mnist, cache_dir)


@functools.cache
def runner(task, tx, num_steps: int, clip: float | None = None, vmapped: bool = False):
    """``user_loop`` jitted once per (task, transformation, length, clip, vmap): tests share compiled programs."""
    run = user_loop(task, tx, num_steps, clip)
    return jax.jit(jax.vmap(run) if vmapped else run)


def start(task, seed: int = 0):
    target = task.init(jax.random.key(seed), LR0)
    return target, (target.params, target.key, target.data_key)


def assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or dict(rtol=1e-4, atol=1e-6)))


@pytest.mark.parametrize("options", [{}, {"progress_feature": True, "mean_features": False}],
                         ids=["paper", "progress"])
def test_same_learning_rates_as_deployment(tiny_fashion_mnist, cache_dir, setup, options):
    """Same initial state and batches: the per-block learning rates equal ``Agent.follow_policy``'s, and the T - N K
    steps after the last decision keep the last alpha (deployment's tail)."""
    task, agent, agent_params, tx = make_setup(tiny_fashion_mnist, cache_dir, **options) if options else setup
    target, (params, key, data_key) = start(task)
    # Deployment: the first K steps at alpha_1, then N - 1 decisions, each followed by K steps.
    first, stats = task.train_steps(target, K)
    deployed = agent.follow_policy(agent_params, first, stats.mean_loss, task.device_data["train"], T // K - 1)
    expected = np.concatenate([[LR0], np.asarray(deployed.learning_rates)])
    factors = expected[1:] / expected[:-1] - 1.0  # the mean actions (Eq. 4; no clipping at these learning rates)
    assert np.all(np.abs(factors) > 1e-3) and np.ptp(factors) > 1e-4  # they move alpha and depend on the state

    params, opt_state, lrs = runner(task, tx, T + TAIL)(params, tx.init(params), key, data_key)
    lrs = np.asarray(lrs)
    for block, lr in enumerate(expected):
        np.testing.assert_allclose(lrs[block * K:(block + 1) * K], lr, **TOL)
    np.testing.assert_allclose(lrs[T:], expected[-1], **TOL)
    assert int(opt_state.count) == T + TAIL and int(opt_state.decisions) == T // K - 1
    # The inner optimizer ran with the same learning rates: the parameters after T steps agree.
    reference, _ = task.train_steps(deployed.target, TAIL)
    assert_trees_close(params, reference.params)


def test_trained_policy_bundle_and_horizon(setup, tmp_path, tiny_fashion_mnist, cache_dir):
    """A ``TrainedPolicy`` from (Agent, params) or from a train_agent checkpoint; ``total_steps`` sets N."""
    task, agent, agent_params, _ = setup
    config = tiny_mlp_config(tiny_fashion_mnist, cache_dir, steps=T, decision_interval=K)  # the setup's config
    _, (params, key, data_key) = start(task)
    policy = TrainedPolicy.from_agent(agent, agent_params)
    cfg = agent.env.config
    assert (policy.decision_interval, policy.num_decisions, policy.lr_min, policy.lr_max) == (
        K, T // K, cfg.lr_min, cfg.lr_max)
    # train_agent saves the agent under ("ppo", "params") of its state, one directory per episode.
    checkpoints.save(str(tmp_path / "checkpoints"), 3, {"ppo": {"params": agent_params}}, {"episodes": []})
    loaded = TrainedPolicy.from_checkpoint(config, str(tmp_path / "checkpoints"), task)
    assert loaded.num_decisions == T // K
    for x, y in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(agent_params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # A longer run (T' = 8 K) takes 7 decisions, at block boundaries only, then keeps alpha.
    longer = gns_jax.scheduled(optax.adam, policy, learning_rate=LR0, total_steps=8 * K)
    _, state, lrs = runner(task, longer, 9 * K)(params, longer.init(params), key, data_key)
    lrs = np.asarray(lrs)
    assert int(state.decisions) == 7 and np.all(lrs[8 * K:] == lrs[8 * K - 1])
    assert set(np.flatnonzero(np.diff(lrs)) + 1) <= {K * b for b in range(1, 8)}
    assert float(state.learning_rate) == lrs[-1]


def test_composes_with_chain(setup):
    """``optax.chain(clip_by_global_norm, scheduled)`` = clipping by hand, then ``scheduled``; the scheduler
    observes the clipped gradients and the state of the chain exposes alpha."""
    task, _, _, tx = setup
    _, (params, key, data_key) = start(task)
    clip = 0.05
    chained = optax.chain(optax.clip_by_global_norm(clip), tx)
    p_chain, s_chain, lr_chain = runner(task, chained, T)(params, chained.init(params), key, data_key)
    p_hand, s_hand, lr_hand = runner(task, tx, T, clip)(params, tx.init(params), key, data_key)
    np.testing.assert_allclose(np.asarray(lr_chain), np.asarray(lr_hand), **TOL)
    assert_trees_close(p_chain, p_hand)
    assert isinstance(s_chain[1], ScheduledState)
    assert float(current_learning_rate(s_chain)) == pytest.approx(float(s_hand.learning_rate), rel=1e-5)


def test_state_survives_orbax_save_and_restore(setup, tmp_path):
    """Save mid-block (after one decision), restore into the abstract state, continue: the same run."""
    task, agent, agent_params, _ = setup
    _, (params, key, data_key) = start(task)
    tx = gns_jax.scheduled(optax.adamw, agent, agent_params, learning_rate=LR0, weight_decay=1e-2)
    run = runner(task, tx, 15)
    params, state, _ = run(params, tx.init(params), key, data_key)
    assert int(state.decisions) == 1 and int(state.count) == 15

    path = tmp_path / "opt_state"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
    assert isinstance(restored, ScheduledState)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # Continue both for 15 more steps (the loop's step index restarts at 0: same keys and batches for both).
    out_a, out_b = run(params, state, key, data_key), run(params, restored, key, data_key)
    for x, y in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(out_b[1].decisions) == 3  # at the ends of blocks 0, 1, 2 (steps 10, 20, 30)


def test_vmap_over_seeds(setup):
    """Three seeds (weights, data order, step keys) in one vmapped program = three separate runs."""
    task, _, _, tx = setup
    starts = [start(task, seed)[1] for seed in range(3)]
    params, keys, data_keys = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
    batched = runner(task, tx, T + TAIL, vmapped=True)(params, jax.vmap(tx.init)(params), keys, data_keys)
    for i, (p, k, dk) in enumerate(starts):
        p_i, _, lrs_i = runner(task, tx, T + TAIL)(p, tx.init(p), k, dk)
        np.testing.assert_allclose(np.asarray(batched[2][i]), np.asarray(lrs_i), **TOL)
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched[0]), p_i)
    final = np.asarray(batched[1].learning_rate)
    assert len(set(np.round(final, 9))) == 3  # the seeds really took different schedules


def test_needs_params_loss_and_agent_params(setup):
    task, agent, agent_params, _ = setup
    tx = gns_jax.scheduled(optax.sgd, agent, agent_params, learning_rate=LR0, momentum=0.9)
    params = start(task)[1][0]
    grads = jax.tree.map(jnp.ones_like, params)
    with pytest.raises(ValueError, match="value="):
        tx.update(grads, tx.init(params), params)
    with pytest.raises(ValueError, match="params"):
        tx.update(grads, tx.init(params), value=1.0)
    with pytest.raises(TypeError, match="parameters"):
        gns_jax.scheduled(optax.adam, agent, learning_rate=LR0)
    with pytest.raises(ValueError, match="T >= 2 K"):
        gns_jax.scheduled(optax.adam, agent, agent_params, learning_rate=LR0, total_steps=K)
    _, state = jax.jit(tx.update)(grads, tx.init(params), params, value=1.0)
    assert int(state.count) == 1 and float(state.mean_loss) == 1.0 and int(state.decisions) == 0
