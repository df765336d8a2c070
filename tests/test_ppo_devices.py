"""pmap over two host devices gives the same PPO update as one device on the same data.

XLA_FLAGS must be set before jax is imported, and pytest has imported jax already for the other test files, so
the check runs in a fresh interpreter.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gns_jax.policy import ActorCritic, select_action
    from gns_jax.ppo import PPOConfig, Transition, init_ppo_state, ppo_update

    assert jax.local_device_count() == 2, jax.devices()
    T, N = 6, 4


    class DictEncoder(nn.Module):
        @nn.compact
        def __call__(self, obs):
            return nn.tanh(nn.Dense(8)(jnp.concatenate([obs["x"], obs["y"][..., None]], -1)))


    model = ActorCritic(encoder=DictEncoder())
    k_obs, k_init, k_act = jax.random.split(jax.random.key(0), 3)
    obs = {"x": jax.random.normal(k_obs, (T, N, 3)), "y": jnp.linspace(-1, 1, T * N).reshape(T, N)}
    params = model.init(k_init, jax.tree.map(lambda x: x[0], obs))
    dist, value = model.apply(params, obs)
    action, log_prob = select_action(k_act, dist)
    # Episodes of different lengths, so the two devices hold different numbers of valid steps (6 + 2 vs 4 + 1).
    valid = jnp.arange(T)[:, None] < jnp.array([6, 2, 4, 1])[None, :]
    done = valid & ~jnp.roll(valid, -1, axis=0) | (jnp.arange(T) == T - 1)[:, None]
    trajectory = Transition(obs=obs, action=action, reward=obs["x"][..., 0] - action, done=done, value=value,
                            log_prob=log_prob, valid=valid)
    last_value = jnp.zeros(N)
    config = PPOConfig(epochs=3, num_minibatches=1, clip_value=0.5)
    key = jax.random.key(1)
    state = init_ppo_state(params, config)

    single, m_single = jax.jit(ppo_update, static_argnames=("apply_fn", "config"))(
        key, state, trajectory, last_value, model.apply, config)

    pconfig = config.replace(axis_name="devices")
    update = jax.pmap(lambda tr, lv: ppo_update(key, state, tr, lv, model.apply, pconfig),
                      axis_name="devices", in_axes=(1, 0))
    shard = lambda x: x.reshape(x.shape[:1] + (2, N // 2) + x.shape[2:])
    multi, m_multi = update(jax.tree.map(shard, trajectory), last_value.reshape(2, N // 2))

    leaf = jax.tree.leaves(multi.params)[0]
    assert len(leaf.sharding.device_set) == 2, leaf.sharding
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(single.params), jax.tree.leaves(params)))
    assert moved > 1e-4, moved
    for d in range(2):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[d], b, rtol=2e-4, atol=1e-6),
                     multi.params, single.params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[d], b, rtol=2e-4, atol=1e-6),
                     m_multi, m_single)
    assert int(multi.step[0]) == int(single.step) == 3
    print("PMAP_EQUIVALENT", moved)
    """
)


def test_two_devices_match_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PMAP_EQUIVALENT" in proc.stdout
