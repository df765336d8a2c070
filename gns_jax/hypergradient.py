"""Hypergradient descent on the learning rate: Adam-HD and SGD-HD (App. B.4; Baydin et al., 2018).

The update of step t is u_t = -alpha_t d_t with d_t the base optimizer's direction: the bias-corrected Adam direction
m_hat_t / (sqrt(v_hat_t) + eps) (plus lambda theta for decoupled weight decay), or the (heavy-ball) SGD direction.
Since theta_{t-1} = theta_{t-2} + u_{t-1}, the derivative of the loss at theta_{t-1} with respect to the learning rate
of the previous step is

    h_t = g_t . grad_alpha u_{t-1} = -g_t . d_{t-1}         (a dot product over all parameters)

and one step of gradient descent on alpha with the hypergradient learning rate beta gives

    alpha_t = max(alpha_{t-1} - beta h_t, 0),               then the base step u_t = -alpha_t d_t.

At t = 1 there is no previous update (d_0 = 0), so alpha_1 = alpha_0. The paper's search space (App. B.4) is
alpha_0 in {1e-1, 1e-2, 1e-3} (images) or {1e-5, 2e-5} (GLUE) and beta in {1e-7, 1e-8, 1e-9}.

Both transformations keep alpha_t and beta in ``state.hyperparams`` like ``optax.inject_hyperparams`` does, so
``gns_jax.targets.task.get_learning_rate`` reads the current alpha_t (after an update: the alpha used by it) and
``set_learning_rate`` sets alpha_0 at initialization. A learning rate written between updates replaces alpha and the
adaptation continues from it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class HypergradientState(NamedTuple):
    """State of ``adam_hd`` / ``sgd_hd``; ``hyperparams`` mirrors ``optax.InjectHyperparamsState.hyperparams``."""

    count: jnp.ndarray  # updates taken (int32)
    hyperparams: dict[str, jnp.ndarray]  # 'learning_rate' (alpha_t) and 'hypergrad_lr' (beta)
    mu: PyTree  # Adam: first moment; SGD: momentum buffer (zeros without momentum)
    nu: PyTree  # Adam: second moment; SGD: unused (empty)
    direction: PyTree  # d_{t-1}: grad_alpha u_{t-1} = -d_{t-1}


def _tree_vdot(a: PyTree, b: PyTree) -> jnp.ndarray:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _new_alpha(state: HypergradientState, grads: PyTree) -> jnp.ndarray:
    alpha, beta = state.hyperparams["learning_rate"], state.hyperparams["hypergrad_lr"]
    h = -_tree_vdot(grads, state.direction)
    return jnp.maximum(alpha - beta * h, 0.0).astype(alpha.dtype)


def _hyperparams(learning_rate: float, hypergrad_lr: float) -> dict[str, jnp.ndarray]:
    return {"learning_rate": jnp.asarray(learning_rate, jnp.float32),
            "hypergrad_lr": jnp.asarray(hypergrad_lr, jnp.float32)}


def adam_hd(learning_rate: float = 1e-3, hypergrad_lr: float = 1e-8, b1: float = 0.9, b2: float = 0.999,
            eps: float = 1e-8, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam-HD (App. B.4): Adam whose learning rate follows its hypergradient; ``weight_decay`` > 0 gives AdamW-HD.

    Args:
      learning_rate: alpha_0.
      hypergrad_lr: beta, the step size of the descent on alpha.
      b1, b2, eps: Adam's; weight_decay: decoupled (AdamW) weight decay lambda, part of d_t.
    """

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return HypergradientState(count=jnp.zeros((), jnp.int32), hyperparams=_hyperparams(learning_rate,
                                                                                           hypergrad_lr),
                                  mu=zeros, nu=zeros, direction=zeros)

    def update_fn(grads, state: HypergradientState, params=None):
        if weight_decay and params is None:
            raise ValueError("adam_hd with weight_decay needs params")
        alpha = _new_alpha(state, grads)
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        c1 = 1 - b1 ** count.astype(jnp.float32)
        c2 = 1 - b2 ** count.astype(jnp.float32)
        direction = jax.tree.map(lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
        if weight_decay:
            direction = jax.tree.map(lambda d, p: d + weight_decay * p, direction, params)
        updates = jax.tree.map(lambda d: (-alpha * d).astype(d.dtype), direction)
        hyperparams = dict(state.hyperparams, learning_rate=alpha)
        return updates, HypergradientState(count=count, hyperparams=hyperparams, mu=mu, nu=nu, direction=direction)

    return optax.GradientTransformation(init_fn, update_fn)


def sgd_hd(learning_rate: float = 1e-2, hypergrad_lr: float = 1e-8, momentum: float = 0.0) -> \
        optax.GradientTransformation:
    """SGD-HD (Baydin et al., 2018): d_t = g_t, or the heavy-ball buffer d_t = momentum d_{t-1} + g_t.

    Args:
      learning_rate: alpha_0.
      hypergrad_lr: beta.
      momentum: 0 for plain SGD-HD.
    """

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return HypergradientState(count=jnp.zeros((), jnp.int32), hyperparams=_hyperparams(learning_rate,
                                                                                           hypergrad_lr),
                                  mu=zeros, nu={}, direction=zeros)

    def update_fn(grads, state: HypergradientState, params=None):
        del params
        alpha = _new_alpha(state, grads)
        direction = jax.tree.map(lambda m, g: momentum * m + g, state.mu, grads) if momentum else grads
        updates = jax.tree.map(lambda d: (-alpha * d).astype(d.dtype), direction)
        hyperparams = dict(state.hyperparams, learning_rate=alpha)
        return updates, HypergradientState(count=state.count + 1, hyperparams=hyperparams,
                                           mu=direction if momentum else state.mu, nu=state.nu,
                                           direction=direction)

    return optax.GradientTransformation(init_fn, update_fn)

