"""Tests for gns_jax.policy: Eq. 4 heads, the Gaussian, deterministic mode and the LR update."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gns_jax.policy import ActorCritic, ActorHead, CriticHead, decide, lr_update, select_action


def _init(model, obs):
    return model.init(jax.random.key(0), obs)


def test_identity_encoder_shapes_and_param_tree():
    model = ActorCritic(encoder=lambda x: x)
    obs = jnp.ones((5, 3))
    params = _init(model, obs)
    assert set(params["params"]) == {"actor", "critic"}
    dist, value = model.apply(params, obs)
    assert dist.loc.shape == (5,) and value.shape == (5,)


def test_module_encoder_is_named_encoder():
    model = ActorCritic(encoder=nn.Dense(4), action_dim=2)
    obs = jnp.ones((5, 3))
    params = _init(model, obs)
    assert set(params["params"]) == {"encoder", "actor", "critic"}
    dist, value = model.apply(params, obs)
    assert dist.loc.shape == (5, 2) and value.shape == (5,)
    # One hidden layer of 32 in both heads (Eq. 4's m_f, m_s).
    assert params["params"]["actor"]["m_f"]["Dense_0"]["kernel"].shape == (4, 32)
    assert params["params"]["critic"]["m_s"]["Dense_0"]["kernel"].shape == (4, 32)


@pytest.mark.parametrize("scale", [0.1, 0.5])
def test_mean_is_bounded_by_action_scale(scale):
    model = ActorCritic(encoder=lambda x: x, action_scale=scale)
    obs = 100.0 * jax.random.normal(jax.random.key(1), (256, 3))
    params = _init(model, obs)
    # Blow up the weights so tanh saturates: |μ| must still be ≤ scale, and reach close to it.
    params = jax.tree.map(lambda p: 1e3 * p, params)
    mu = model.apply(params, obs)[0].loc
    assert float(jnp.max(jnp.abs(mu))) <= scale + 1e-7
    assert float(jnp.max(jnp.abs(mu))) > 0.9 * scale


def test_mean_formula():
    head = ActorHead(action_scale=0.1, sigma=0.3)
    h = jax.random.normal(jax.random.key(2), (7, 4))
    params = head.init(jax.random.key(3), h)
    m_f = params["params"]["m_f"]
    hidden = jnp.tanh(h @ m_f["Dense_0"]["kernel"] + m_f["Dense_0"]["bias"])
    raw = (hidden @ m_f["Dense_1"]["kernel"] + m_f["Dense_1"]["bias"])[:, 0]
    dist = head.apply(params, h)
    np.testing.assert_allclose(dist.loc, 0.1 * jnp.tanh(raw), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dist.scale, 0.3)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 1.0])
def test_entropy_matches_closed_form(sigma):
    model = ActorCritic(encoder=lambda x: x, sigma=sigma)
    obs = jnp.ones((3, 2))
    dist, _ = model.apply(_init(model, obs), obs)
    np.testing.assert_allclose(dist.entropy(), 0.5 * np.log(2 * np.pi * np.e * sigma**2), rtol=1e-5)


def test_log_prob_under_vmap_matches_loop():
    model = ActorCritic(encoder=nn.Dense(8))
    obs = jax.random.normal(jax.random.key(4), (6, 3))
    actions = 0.1 * jax.random.normal(jax.random.key(5), (6,))
    params = _init(model, obs[:1])

    def single(o, a):
        dist, _ = model.apply(params, o)
        return dist.log_prob(a)

    batched = jax.vmap(single)(obs, actions)
    looped = np.array([float(single(obs[i], actions[i])) for i in range(6)])
    np.testing.assert_allclose(batched, looped, rtol=1e-5)
    mu = model.apply(params, obs)[0].loc
    manual = -0.5 * ((actions - mu) / 0.05) ** 2 - np.log(0.05 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(batched, manual, rtol=1e-5)


def test_select_action_deterministic_is_mean_and_stochastic_samples():
    model = ActorCritic(encoder=lambda x: x, sigma=0.05)
    obs = jax.random.normal(jax.random.key(6), (1000, 2))
    dist, _ = model.apply(_init(model, obs), obs)
    action, log_prob = select_action(jax.random.key(7), dist, deterministic=True)
    np.testing.assert_array_equal(action, dist.loc)
    np.testing.assert_allclose(log_prob, dist.log_prob(dist.loc))
    traced, _ = jax.jit(select_action)(jax.random.key(7), dist, jnp.array(True))
    np.testing.assert_array_equal(traced, dist.loc)

    sampled, _ = select_action(jax.random.key(8), dist, deterministic=False)
    noise = np.asarray(sampled - dist.loc)
    assert abs(noise.std() - 0.05) < 0.005 and abs(noise.mean()) < 0.005


def test_lr_update_multiplicative_and_clipped():
    lr = jnp.array([1e-3, 1e-3, 1e-3, 5e-2, 1e-5])
    a = jnp.array([0.1, -0.1, 0.0, 0.1, -0.1])
    new = lr_update(lr, a, lr_min=1e-5, lr_max=5e-2)
    np.testing.assert_allclose(new, [1.1e-3, 0.9e-3, 1e-3, 5e-2, 1e-5], rtol=1e-6)
    # Repeated application compounds: α·(1 + a)^k until the clip.
    lr_k = jnp.array(1e-3)
    for _ in range(10):
        lr_k = lr_update(lr_k, 0.05, 1e-5, 1.0)
    np.testing.assert_allclose(lr_k, 1e-3 * 1.05**10, rtol=1e-5)


def test_decide_is_eq4_on_the_policy_of_the_observation():
    """decide: observation, agent parameters, alpha -> clip(alpha (1 + a)) with a = mu(s) or a ~ pi, and V(s)."""
    model = ActorCritic(encoder=nn.Dense(4), sigma=0.05)
    obs = jnp.linspace(-1.0, 1.0, 3)
    params = _init(model, obs)
    dist, value = model.apply(params, obs)
    mean = decide(model.apply, params, obs, 1e-3, 1e-5, 1.0)
    np.testing.assert_allclose(mean.learning_rate, 1e-3 * (1.0 + dist.loc), rtol=1e-6)
    np.testing.assert_allclose(mean.value, value)
    assert float(mean.action) == float(dist.loc)
    sampled = decide(model.apply, params, obs, 1e-3, 1e-5, 1.0, jax.random.key(1), deterministic=False)
    np.testing.assert_allclose(sampled.learning_rate, lr_update(1e-3, sampled.action, 1e-5, 1.0), rtol=1e-6)
    np.testing.assert_allclose(sampled.log_prob, dist.log_prob(sampled.action), rtol=1e-6)
    assert float(sampled.action) != float(dist.loc)
    assert float(decide(model.apply, params, obs, 1.0, 1e-5, 2e-3).learning_rate) == pytest.approx(2e-3)  # clipped


def test_critic_head_scalar_value():
    head = CriticHead()
    h = jnp.ones((4, 5, 6))
    assert head.apply(head.init(jax.random.key(0), h), h).shape == (4, 5)
