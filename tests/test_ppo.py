"""Tests for gns_jax.ppo: GAE, clipped surrogate, masks, optimizer routing, vmap, the example and the docs."""

import importlib.util
import pathlib
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gns_jax.policy import ActorCritic, select_action
from gns_jax.ppo import (
    PPOBatch,
    PPOConfig,
    Transition,
    clipped_surrogate_loss,
    compute_gae,
    init_ppo_state,
    make_batch,
    param_labels,
    ppo_loss,
    ppo_update,
    value_loss,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
T, N, OBS = 6, 4, 3


def _gae_loop(rewards, values, dones, last_value, gamma, lam):
    rewards, values, dones = (np.asarray(x, np.float64) for x in (rewards, values, dones))
    adv = np.zeros_like(rewards)
    running = np.zeros_like(np.asarray(last_value, np.float64))
    for t in reversed(range(len(rewards))):
        next_value = last_value if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_value * (1 - dones[t]) - values[t]
        running = delta + gamma * lam * (1 - dones[t]) * running
        adv[t] = running
    return adv, adv + values


@pytest.mark.parametrize("shape", [(9,), (9, 3)])
def test_gae_matches_numpy_loop(shape):
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=shape), rng.normal(size=shape)
    dones = rng.random(shape) < 0.3
    last_value = rng.normal(size=shape[1:])
    adv, ret = compute_gae(
        jnp.asarray(rewards, jnp.float32),
        jnp.asarray(values, jnp.float32),
        jnp.asarray(dones),
        jnp.asarray(last_value, jnp.float32),
        0.99,
        0.95,
    )
    ref_adv, ref_ret = _gae_loop(rewards, values, dones, last_value, 0.99, 0.95)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)
    # λ = 0 gives the paper's one-step target r + γV'.
    _, ret0 = compute_gae(
        jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), jnp.asarray(last_value), 0.99, 0.0
    )
    next_values = np.concatenate([values[1:], last_value[None]], 0)
    np.testing.assert_allclose(ret0, rewards + 0.99 * next_values * (1 - dones), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "ratio, advantage, zero_grad",
    [
        (1.3, 1.0, True),  # A > 0, ratio above 1 + ε: no push further up
        (0.7, -1.0, True),  # A < 0, ratio below 1 − ε: no push further down
        (0.7, 1.0, False),  # A > 0 but ratio low: moving back up is not clipped
        (1.3, -1.0, False),  # A < 0 but ratio high: moving back down is not clipped
        (1.1, 1.0, False),  # inside [1 − ε, 1 + ε]
        (0.9, -1.0, False),
    ],
)
def test_clipped_surrogate_gradient(ratio, advantage, zero_grad):
    old = jnp.array(-0.5)
    grad = jax.grad(clipped_surrogate_loss)(old + jnp.log(ratio), old, jnp.array(advantage), 0.2)
    if zero_grad:
        assert float(grad) == 0.0
    else:
        # d/dlogπ of −ρA is −ρA: descent raises log π when A > 0 and lowers it when A < 0.
        np.testing.assert_allclose(grad, -ratio * advantage, rtol=1e-5)


def test_value_loss_plain_and_clipped():
    value, old, target = jnp.array([1.0, 1.0]), jnp.array([0.0, 0.0]), jnp.array([0.5, 3.0])
    np.testing.assert_allclose(value_loss(value, old, target), [0.25, 4.0])
    # Clipped prediction old ± 0.2 = 0.2: the max of (V − t)² and (0.2 − t)².
    np.testing.assert_allclose(value_loss(value, old, target, clip_value=0.2), [0.25, 7.84], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# A small actor-critic problem shared by the update tests.

MODEL = ActorCritic(encoder=nn.Dense(8))


def _apply(params, obs):
    return MODEL.apply(params, obs)


def _problem(seed=0, valid=None):
    return _problem_jit(seed, jnp.ones((T, N), bool) if valid is None else valid)


@jax.jit
def _problem_jit(seed, valid):
    k_obs, k_act, k_rew, k_init = jax.random.split(jax.random.key(seed), 4)
    obs = jax.random.normal(k_obs, (T, N, OBS))
    params = MODEL.init(k_init, obs[0])
    dist, value = MODEL.apply(params, obs)
    action, log_prob = select_action(k_act, dist)
    reward = obs[..., 0] + action + 0.1 * jax.random.normal(k_rew, (T, N))
    done = jnp.zeros((T, N), bool).at[-1].set(True) | (valid & ~jnp.roll(valid, -1, axis=0))
    trajectory = Transition(
        obs=obs, action=action, reward=reward, done=done, value=value, log_prob=log_prob, valid=valid
    )
    return params, trajectory, jnp.zeros((N,))


# One config (and one problem shape) for most update tests, so the jitted update compiles once. Minibatching
# is covered by test_pytree_obs.
CONFIG = PPOConfig(epochs=2, num_minibatches=1, clip_value=0.5)
_update = jax.jit(ppo_update, static_argnames=("apply_fn", "config"))
_loss = jax.jit(ppo_loss, static_argnames=("apply_fn", "config"))
_make_batch = jax.jit(make_batch, static_argnames=("config",))


def _assert_trees_close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def test_update_improves_surrogate_and_counts_steps():
    config = CONFIG
    params, trajectory, last_value = _problem()
    state = init_ppo_state(params, config)
    new_state, metrics = _update(jax.random.key(1), state, trajectory, last_value, _apply, config)
    assert int(new_state.step) == 2
    assert all(np.isfinite(float(v)) for v in metrics.values())
    batch = _make_batch(trajectory, last_value, config)
    before = _loss(params, _apply, batch, config)[1]
    after = _loss(new_state.params, _apply, batch, config)[1]
    assert after["policy_loss"] < before["policy_loss"]
    assert after["value_loss"] < before["value_loss"]


def test_critic_warmup_moves_only_the_critic_then_the_actor_starts_with_a_fresh_adam():
    """``actor_warmup_steps``: the first steps change the critic alone (actor and encoder frozen); the actor's Adam
    state is left at its init, so its first real step equals a fresh optimizer's step from the same parameters."""
    plain = PPOConfig(epochs=1, clip_value=0.5)
    warmup = PPOConfig(epochs=1, clip_value=0.5, actor_warmup_steps=1)
    params, trajectory, last_value = _problem()
    labels = jax.tree.leaves(param_labels(params))
    warm, _ = _update(jax.random.key(1), init_ppo_state(params, warmup), trajectory, last_value, _apply, warmup)
    moved = [bool(np.any(np.asarray(a) != np.asarray(b)))
             for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(warm.params), strict=True)]
    assert moved == [label == "critic" for label in labels] and any(moved)
    after, _ = _update(jax.random.key(2), warm, trajectory, last_value, _apply, warmup)
    fresh, _ = _update(jax.random.key(2), init_ppo_state(warm.params, plain), trajectory, last_value, _apply, plain)
    for label, a, b, w in zip(labels, jax.tree.leaves(after.params), jax.tree.leaves(fresh.params),
                              jax.tree.leaves(warm.params), strict=True):
        if label != "critic":
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
            assert np.any(np.asarray(a) != np.asarray(w))


def test_target_kl_stops_the_update_once_the_kl_exceeds_it():
    """``target_kl`` (stable-baselines3's early stop): a limit every step's KL stays under changes nothing; a limit
    below the KL after one step keeps exactly that first step, which equals a one-epoch update."""
    params, trajectory, last_value = _problem()
    key = jax.random.key(1)

    def update(**kw):
        config = PPOConfig(epochs=3, clip_value=0.5, **kw)
        return _update(key, init_ppo_state(params, config), trajectory, last_value, _apply, config)

    full, full_metrics = update()
    loose, loose_metrics = update(target_kl=1e6)
    assert int(full.step) == int(loose.step) == 3 and float(loose_metrics["steps_taken"]) == 3
    _assert_trees_close(loose.params, full.params, rtol=0, atol=0)
    assert float(full_metrics["approx_kl"]) > 0
    tight, tight_metrics = update(target_kl=1e-12)
    assert int(tight.step) == 1 and float(tight_metrics["steps_taken"]) == 1
    first = PPOConfig(epochs=1, clip_value=0.5)
    one, _ = _update(key, init_ppo_state(params, first), trajectory, last_value, _apply, first)
    _assert_trees_close(tight.params, one.params, rtol=1e-5, atol=1e-6)
    leaves = zip(jax.tree.leaves(tight.params), jax.tree.leaves(params), strict=True)
    assert not all(np.allclose(a, b) for a, b in leaves)


def test_normalized_advantages_use_valid_steps_only():
    valid = jnp.arange(T)[:, None] < jnp.array([6, 2, 4, 1])[None, :]
    params, trajectory, last_value = _problem(valid=valid)
    batch = _make_batch(trajectory, last_value, PPOConfig())
    adv, v = np.asarray(batch.advantage), np.asarray(batch.valid)
    np.testing.assert_allclose(adv[v].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(adv[v].std(), 1.0, rtol=1e-4)
    assert np.all(adv[~v] == 0.0)


def test_uncentered_advantages_keep_the_batch_sign():
    valid = jnp.arange(T)[:, None] < jnp.array([6, 2, 4, 1])[None, :]
    params, trajectory, last_value = _problem(valid=valid)
    trajectory = trajectory.replace(reward=trajectory.reward - 10.0)  # every return falls short of V(s)
    raw = _make_batch(trajectory, last_value, PPOConfig(normalize_advantages=False))
    centered = _make_batch(trajectory, last_value, PPOConfig())
    scaled = _make_batch(trajectory, last_value, PPOConfig(center_advantages=False))
    v = np.asarray(raw.valid)
    a = np.asarray(raw.advantage)[v]
    assert np.all(a < 0)
    np.testing.assert_allclose(np.asarray(scaled.advantage)[v], a / np.sqrt(np.mean(a**2)), rtol=1e-5)
    assert np.all(np.asarray(scaled.advantage)[~v] == 0.0)
    assert np.asarray(centered.advantage)[v].max() > 0  # centering re-signs part of an all-negative batch


def test_mask_excludes_steps():
    valid = jnp.arange(T)[:, None] < jnp.array([6, 2, 4, 1])[None, :]
    config = CONFIG
    params, trajectory, last_value = _problem(valid=valid)

    # Loss over a masked batch == loss over the valid samples alone.
    batch = _make_batch(trajectory, last_value, config)
    keep = np.asarray(batch.valid)
    only_valid = jax.tree.map(lambda x: x[keep], batch)
    masked_loss, masked_metrics = ppo_loss(params, _apply, batch, config)
    kept_loss, kept_metrics = ppo_loss(params, _apply, only_valid, config)
    np.testing.assert_allclose(masked_loss, kept_loss, rtol=1e-5)
    _assert_trees_close(masked_metrics, kept_metrics, rtol=1e-4, atol=1e-6)

    # Whatever sits in the padding (here NaN vs. large numbers) does not change the update.
    def fill(value):
        pad = lambda x: jnp.where(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), x, value).astype(x.dtype)
        return trajectory.replace(
            **{f: pad(getattr(trajectory, f)) for f in ("obs", "action", "reward", "value", "log_prob")}
        )

    state = init_ppo_state(params, config)
    out_nan, m_nan = _update(jax.random.key(1), state, fill(jnp.nan), last_value, _apply, config)
    out_big, m_big = _update(jax.random.key(1), state, fill(1e3), last_value, _apply, config)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(out_nan.params))
    _assert_trees_close(out_nan.params, out_big.params, rtol=1e-5, atol=1e-6)
    _assert_trees_close(m_nan, m_big, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("group", ["actor", "critic"])
def test_encoder_gradients_follow_encoder_group(group):
    # Zero the learning rate of the encoder's group: those parameters must stay put, the others must move.
    lrs = {"actor_lr": 0.0, "critic_lr": 1e-2} if group == "actor" else {"actor_lr": 1e-2, "critic_lr": 0.0}
    config = PPOConfig(epochs=1, encoder_group=group, **lrs)
    params, trajectory, last_value = _problem()
    labels = param_labels(params, group)["params"]
    assert set(jax.tree.leaves(labels["encoder"])) == {group}
    assert set(jax.tree.leaves(labels["actor"])) == {"actor"}
    assert set(jax.tree.leaves(labels["critic"])) == {"critic"}
    new, _ = _update(jax.random.key(1), init_ppo_state(params, config), trajectory, last_value, _apply, config)
    for name in ("encoder", "actor", "critic"):
        before = jax.tree.leaves(params["params"][name])
        after = jax.tree.leaves(new.params["params"][name])
        moved = any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        assert moved == (name not in (group, "encoder")), name


def test_pytree_obs_with_minibatches_and_mask():
    class DictEncoder(nn.Module):
        @nn.compact
        def __call__(self, obs):
            c = obs["b"]["c"] * obs["b"]["count"]
            return nn.Dense(8)(jnp.concatenate([obs["a"], c[..., None]], -1))

    model = ActorCritic(encoder=DictEncoder())
    obs = {
        "a": jax.random.normal(jax.random.key(0), (T, N, 2)),
        "b": {"c": jnp.linspace(-1.0, 1.0, T * N).reshape(T, N), "count": jnp.ones((T, N), jnp.int32)},
    }
    params = jax.jit(model.init)(jax.random.key(1), jax.tree.map(lambda x: x[0], obs))

    @jax.jit
    def act(params, obs):
        dist, value = model.apply(params, obs)
        action, log_prob = select_action(jax.random.key(2), dist)
        return action, value, log_prob

    action, value, log_prob = act(params, obs)
    trajectory = Transition(
        obs=obs,
        action=action,
        reward=jnp.ones((T, N)),
        done=jnp.zeros((T, N), bool).at[-1].set(True).at[2, 3].set(True),
        value=value,
        log_prob=log_prob,
        valid=jnp.ones((T, N), bool).at[3:, 3].set(False),
    )
    config = PPOConfig(epochs=1, num_minibatches=3)
    new, metrics = _update(
        jax.random.key(3), init_ppo_state(params, config), trajectory, jnp.zeros(N), model.apply, config
    )
    assert int(new.step) == 3 and np.isfinite(float(metrics["total_loss"]))
    with pytest.raises(ValueError, match="minibatches"):
        ppo_update(
            jax.random.key(3),
            init_ppo_state(params, config),
            trajectory,
            jnp.zeros(N),
            model.apply,
            config.replace(num_minibatches=5),
        )


def test_vmap_with_axis_name_equals_single_update():
    # N environments as N shards of one under vmap, gradients pmean'ed == one update on all of them, also
    # when the shards hold different numbers of valid steps.
    valid = jnp.arange(T)[:, None] < jnp.array([6, 2, 4, 1])[None, :]
    config = CONFIG
    params, trajectory, last_value = _problem(valid=valid)
    state = init_ppo_state(params, config)
    single, m_single = _update(jax.random.key(1), state, trajectory, last_value, _apply, config)

    sharded = config.replace(axis_name="envs")
    split = jax.tree.map(lambda x: x[:, :, None], trajectory)  # [T, N, 1, ...]: one env per shard
    update = jax.vmap(
        lambda tr, lv: ppo_update(jax.random.key(1), state, tr, lv, _apply, sharded),
        in_axes=(1, 0),
        axis_name="envs",
    )
    multi, m_multi = jax.jit(update)(split, last_value[:, None])
    for i in range(N):
        _assert_trees_close(jax.tree.map(lambda x, i=i: x[i], multi.params), single.params, rtol=2e-4, atol=1e-6)
    _assert_trees_close(jax.tree.map(lambda x: x[0], m_multi), m_single, rtol=2e-4, atol=1e-6)


def test_vmap_over_independent_learners_matches_loop():
    config = CONFIG
    problems = [_problem(seed) for seed in (0, 1)]
    stack = lambda *xs: jnp.stack(xs)
    params, trajectory, last_value = jax.tree.map(stack, *problems)
    states = jax.jit(jax.vmap(lambda p: init_ppo_state(p, config)))(params)
    keys = jax.random.split(jax.random.key(5), 2)
    batched, _ = jax.jit(jax.vmap(lambda k, s, tr, lv: ppo_update(k, s, tr, lv, _apply, config)))(
        keys, states, trajectory, last_value
    )
    for i, (p, tr, lv) in enumerate(problems):
        single, _ = _update(keys[i], init_ppo_state(p, config), tr, lv, _apply, config)
        mine = jax.tree.map(lambda x, i=i: x[i], batched.params)
        _assert_trees_close(mine, single.params, rtol=1e-4, atol=1e-6)


def test_ppo_loss_matches_manual_computation():
    config = PPOConfig(vf_coef=0.7, ent_coef=0.01)
    params, trajectory, last_value = _problem()
    batch = _make_batch(trajectory, last_value, config)
    batch = batch.replace(log_prob=batch.log_prob + 0.3 * jnp.sin(jnp.arange(T * N)))  # ratios ≠ 1, some clipped
    loss, metrics = ppo_loss(params, _apply, batch, config)
    dist, value = MODEL.apply(params, batch.obs)
    ratio = np.exp(np.asarray(dist.log_prob(batch.action) - batch.log_prob))
    adv = np.asarray(batch.advantage)
    surrogate = np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv).mean()
    v_loss = np.mean((np.asarray(value) - np.asarray(batch.target)) ** 2)
    entropy = 0.5 * np.log(2 * np.pi * np.e * 0.05**2)
    np.testing.assert_allclose(metrics["policy_loss"], -surrogate, rtol=1e-4)
    np.testing.assert_allclose(metrics["value_loss"], v_loss, rtol=1e-4)
    np.testing.assert_allclose(loss, -surrogate + 0.7 * v_loss - 0.01 * entropy, rtol=1e-4)
    assert 0.0 < float(metrics["clip_frac"]) < 1.0
    assert isinstance(batch, PPOBatch)


# ----------------------------------------------------------------------------------------------------------
# The worked example and the docs.


def _load_example():
    path = ROOT / "examples" / "ppo_hidden_lr.py"
    spec = importlib.util.spec_from_file_location("ppo_hidden_lr", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_example_env_dynamics():
    ex = _load_example()
    cfg = ex.EnvConfig()
    _, state = ex.reset(jax.random.key(0), cfg)
    x0 = float(jnp.log(state.lr / state.target_lr))
    _, state1, reward, done, _ = ex.step(None, state, jnp.array(0.1), cfg)
    np.testing.assert_allclose(state1.lr, state.lr * 1.1, rtol=1e-5)  # Eq. 4
    np.testing.assert_allclose(reward, abs(x0) - abs(x0 + np.log(1.1)), rtol=1e-4, atol=1e-6)
    assert not bool(done)
    # Far above the target the episode "diverges": done, penalty, then NaN observations and a frozen state.
    high = state.replace(lr=state.target_lr * np.exp(cfg.diverge_at - 0.01))
    obs, dead, reward, done, info = ex.step(None, high, jnp.array(0.1), cfg)
    assert bool(done) and bool(info["diverged"]) and float(reward) < -0.5 and np.isnan(obs).all()
    _, frozen, reward, _, _ = ex.step(None, dead, jnp.array(0.1), cfg)
    assert float(reward) == 0.0 and float(frozen.lr) == float(dead.lr)


def test_example_learns_to_beat_random():
    ex = _load_example()
    result = ex.run(ex.TrainConfig(num_updates=30), seed=0)
    assert result["mean_return"] > result["threshold"] > result["random_return"] + 0.3, result


def test_docs_snippets_run():
    text = (ROOT / "docs" / "ppo.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    namespace = {"__name__": "docs_ppo"}
    for block in blocks:
        exec(compile(block, "docs/ppo.md", "exec"), namespace)
    assert np.isfinite(np.asarray(namespace["returns"])).all()
    leaves = jax.tree.leaves(namespace["params_after"])
    assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)
