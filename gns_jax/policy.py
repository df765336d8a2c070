"""Actor-critic heads over any encoder and the multiplicative learning-rate action (paper Eq. 4).

Given a state embedding h_t (in GNS the graph feature h_G of the hierarchical GCN, §4.1), the policy is

    μ_t = s · tanh(m_f(h_t)),    a_t ~ N(μ_t, σ²),    α_{t+1} = clip(α_t · (1 + a_t), α_min, α_max)    (Eq. 4)

with s = `action_scale` = 0.1 in the paper and a fixed σ, and the critic is V(s_t) = m_s(h_t). m_f and m_s are
MLPs with one hidden layer of 32 units. The tanh bound keeps |μ| ≤ s, i.e. the mean action changes the
learning rate by at most ±10 % per decision step. The paper does not give σ; `DEFAULT_SIGMA` is this code's
choice (half the action scale) and is a field of `ActorHead`/`ActorCritic`. Clipping α to [α_min, α_max] is
also this code's addition: it keeps a long run of one-signed actions from driving α to 0 or to divergence.

`ActorCritic` takes the encoder as an attribute (a Flax module, or any callable such as `lambda x: x`) and
names its parameter subtrees 'encoder', 'actor' and 'critic', which is what `gns_jax.ppo.param_labels` keys
on. `decide` is Eq. 4 as one function, (observation, agent parameters, α) -> next α: every place that lets the
policy set a learning rate (agent training, deployment, the optax transformation) goes through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from gns_jax.obs_norm import OBS_STATS, identity_stats, normalize, observed_features

DEFAULT_ACTION_SCALE = 0.1
DEFAULT_SIGMA = 0.05
HIDDEN = 32


class MLP(nn.Module):
    """One hidden layer MLP (m_f, m_s of Eq. 4): Dense(hidden) → activation → Dense(features)."""

    features: int
    hidden: int = HIDDEN
    activation: Callable[[jax.Array], jax.Array] = nn.tanh
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        h = self.activation(nn.Dense(self.hidden, kernel_init=nn.initializers.orthogonal(jnp.sqrt(2.0)))(h))
        return nn.Dense(self.features, kernel_init=nn.initializers.orthogonal(self.out_scale))(h)


class ActorHead(nn.Module):
    """π(a|h) = N(μ, σ²) with μ = action_scale · tanh(m_f(h)) (Eq. 4).

    Attributes:
      action_dim: None for one scalar action per state (the GNS learning-rate factor), else the action size.
      action_scale: bound on |μ| (paper 0.1).
      sigma: fixed standard deviation of the Gaussian.
      hidden: hidden width of m_f (paper 32).
    """

    action_dim: int | None = None
    action_scale: float = DEFAULT_ACTION_SCALE
    sigma: float = DEFAULT_SIGMA
    hidden: int = HIDDEN

    @nn.compact
    def __call__(self, h: jax.Array) -> distrax.Normal:
        # Small last-layer init: the initial policy is close to "keep the learning rate" (μ ≈ 0).
        out = MLP(self.action_dim or 1, self.hidden, out_scale=0.01, name="m_f")(h)
        if self.action_dim is None:
            out = out[..., 0]
        mu = self.action_scale * jnp.tanh(out)
        return distrax.Normal(mu, jnp.full_like(mu, self.sigma))


class CriticHead(nn.Module):
    """V(s) = m_s(h): one scalar per state (Eq. 4's critic)."""

    hidden: int = HIDDEN

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        return MLP(1, self.hidden, out_scale=1.0, name="m_s")(h)[..., 0]


class ActorCritic(nn.Module):
    """Shared encoder, then actor and critic heads: obs → (N(μ, σ²), V).

    Attributes:
      encoder: a Flax module or any callable obs → h (e.g. the hierarchical GCN, or `lambda x: x`).
      action_dim, action_scale, sigma, hidden: see `ActorHead`.
      obs_norm: standardize the observed features by running statistics held in the variable collection
        'obs_stats' (`gns_jax.obs_norm`; beyond the paper) before the encoder.
    """

    encoder: Callable[[Any], jax.Array]
    action_dim: int | None = None
    action_scale: float = DEFAULT_ACTION_SCALE
    sigma: float = DEFAULT_SIGMA
    hidden: int = HIDDEN
    obs_norm: bool = False

    @nn.compact
    def __call__(self, obs: Any) -> tuple[distrax.Normal, jax.Array]:
        if self.obs_norm:
            x = observed_features(obs)
            init = identity_stats(x.shape[-1])
            stats = {name: self.variable(OBS_STATS, name, lambda v=value: v).value
                     for name, value in init.items()}
            x = normalize(x, stats["mean"], stats["var"])
            obs = obs.replace(nodes=x) if hasattr(obs, "nodes") else x
        h = self.encoder(obs)
        dist = ActorHead(self.action_dim, self.action_scale, self.sigma, self.hidden, name="actor")(h)
        value = CriticHead(self.hidden, name="critic")(h)
        return dist, value


def select_action(
    key: jax.Array, dist: distrax.Distribution, deterministic: bool | jax.Array = False
) -> tuple[jax.Array, jax.Array]:
    """Samples a ~ π (training) or takes a = μ (deployment, §4.3); returns (action, log π(action)).

    `deterministic` may be a Python bool or a traced boolean.
    """
    if isinstance(deterministic, bool):
        action = dist.mode() if deterministic else dist.sample(seed=key)
    else:
        action = jnp.where(deterministic, dist.mode(), dist.sample(seed=key))
    return action, dist.log_prob(action)


def lr_update(lr: jax.Array, action: jax.Array, lr_min: float, lr_max: float) -> jax.Array:
    """Eq. 4's multiplicative rule α ← α·(1 + a), clipped to [α_min, α_max]."""
    return jnp.clip(lr * (1.0 + action), lr_min, lr_max)


class PolicyStep(NamedTuple):
    """One decision of the scheduler (Eq. 4) at a state s with learning rate α."""

    learning_rate: jax.Array  # the next α = clip(α (1 + a))
    action: jax.Array  # a ~ N(μ(s), σ²), or μ(s) when deterministic
    log_prob: jax.Array  # log π(a | s)
    value: jax.Array  # V(s)


def decide(apply_fn: Callable[[Any, Any], tuple[distrax.Distribution, jax.Array]], agent_params: Any, obs: Any,
           learning_rate: jax.Array, lr_min: float, lr_max: float, key: jax.Array | None = None,
           deterministic: bool | jax.Array = True) -> PolicyStep:
    """Eq. 4 in one place: observation, agent parameters and α -> the next α.

    π(·|s) and V(s) from ``apply_fn(agent_params, obs)``; a ~ π (training, needs ``key``) or a = μ(s)
    (deployment, §4.3); α' = clip(α (1 + a), α_min, α_max). The environment's decision step, deployment
    (``follow_policy``, ``LearnedScheduler``) and the optax transformation ``scheduled`` all decide through it.
    """
    dist, value = apply_fn(agent_params, obs)
    action, log_prob = select_action(key, dist, deterministic)
    return PolicyStep(lr_update(learning_rate, action, lr_min, lr_max), action, log_prob, value)
