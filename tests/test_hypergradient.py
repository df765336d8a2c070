"""Adam-HD and SGD-HD (App. B.4) against a float64 numpy implementation on a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gns_jax.hypergradient import adam_hd, sgd_hd
from gns_jax.targets.task import get_learning_rate, set_learning_rate

RNG = np.random.default_rng(0)
Q = RNG.normal(size=(5, 5))
A = Q @ Q.T / 5 + np.eye(5)  # positive definite
B = RNG.normal(size=5)
THETA0 = {"w": RNG.normal(size=3), "b": RNG.normal(size=2)}  # two leaves: h_t is a dot product over both


def flat(theta):
    return np.concatenate([np.asarray(theta["b"], np.float64), np.asarray(theta["w"], np.float64)])


def grad_np(x):
    return A @ x - B  # f(x) = x'Ax/2 - b'x


def loss_jax(theta):
    x = jnp.concatenate([theta["b"], theta["w"]])
    return 0.5 * x @ jnp.asarray(A, jnp.float32) @ x - jnp.asarray(B, jnp.float32) @ x


def run_jax(opt, steps, alpha0):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), THETA0)
    state = opt.init(params)
    state = set_learning_rate(state, alpha0)  # alpha_0 is set the way Task.init_state sets it
    alphas = []

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(loss_jax)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
        alphas.append(float(get_learning_rate(state)))
    return flat(params), np.array(alphas)


def adam_hd_np(steps, alpha, beta, b1=0.9, b2=0.999, eps=1e-8):
    x = flat(THETA0)
    m, v, d_prev = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    alphas = []
    for t in range(1, steps + 1):
        g = grad_np(x)
        h = g @ (-d_prev)  # h_t = g_t . grad_alpha u_{t-1}
        alpha = max(alpha - beta * h, 0.0)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        d = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        x = x - alpha * d
        d_prev = d
        alphas.append(alpha)
    return x, np.array(alphas)


def sgd_hd_np(steps, alpha, beta, momentum=0.0):
    x = flat(THETA0)
    buf, d_prev = np.zeros_like(x), np.zeros_like(x)
    alphas = []
    for _ in range(steps):
        g = grad_np(x)
        alpha = max(alpha + beta * (g @ d_prev), 0.0)
        buf = momentum * buf + g
        x = x - alpha * buf
        d_prev = buf
        alphas.append(alpha)
    return x, np.array(alphas)


@pytest.mark.parametrize("beta", [0.0, 1e-3, 1e-2])
def test_adam_hd_matches_numpy(beta):
    x, alphas = run_jax(adam_hd(hypergrad_lr=beta), 60, 0.05)
    x_ref, alphas_ref = adam_hd_np(60, 0.05, beta)
    np.testing.assert_allclose(alphas, alphas_ref, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(x, x_ref, rtol=1e-3, atol=1e-5)
    if beta > 0:  # the comparison is not vacuous: alpha moved
        assert np.ptp(alphas_ref) > 1e-3


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_sgd_hd_matches_numpy(momentum):
    x, alphas = run_jax(sgd_hd(hypergrad_lr=1e-3, momentum=momentum), 60, 0.02)
    x_ref, alphas_ref = sgd_hd_np(60, 0.02, 1e-3, momentum)
    np.testing.assert_allclose(alphas, alphas_ref, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(x, x_ref, rtol=1e-3, atol=1e-5)
    assert np.ptp(alphas_ref) > 1e-4


def test_beta_zero_is_plain_adam():
    x, alphas = run_jax(adam_hd(hypergrad_lr=0.0), 20, 0.05)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), THETA0)
    opt = optax.adam(0.05)
    state = opt.init(params)
    for _ in range(20):
        updates, state = opt.update(jax.grad(loss_jax)(params), state)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(x, flat(params), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alphas, 0.05)


def test_alpha_is_clipped_at_zero():
    # Overshooting steps make consecutive gradients point against each other: h_2 > alpha_1 / beta, so the
    # unclipped alpha_2 = alpha_1 - beta h_2 would be negative; it is kept at 0.
    x1 = flat(THETA0) - 1.0 * grad_np(flat(THETA0))
    assert 1.0 + 1.0 * grad_np(x1) @ grad_np(flat(THETA0)) < 0
    _, alphas = run_jax(sgd_hd(hypergrad_lr=1.0), 3, 1.0)
    _, alphas_ref = sgd_hd_np(3, 1.0, 1.0)
    assert alphas[1] == 0.0
    np.testing.assert_allclose(alphas, alphas_ref, rtol=1e-5)
