"""Observation normalization with running statistics (``agent.obs_norm``; beyond the paper, off by default).

The node features of §4.1 are on a common log scale (``gns_jax.graph.features``), but their spreads differ by
orders of magnitude: over a whole run the loss feature moves by about 0.1 and the learning-rate feature by 0.25
across the prior D_alpha, while the weight-variance features of different layers sit units apart. With
``obs_norm`` the policy sees every feature standardized by running statistics of the observations it was trained
on, as stable-baselines' ``VecNormalize`` or brax's ``normalize_observations`` do:

    x' = clip((x - mean) / sqrt(var + EPS), -CLIP, CLIP)

with one mean and variance per feature, pooled over the graph's nodes (so the statistics do not depend on the
number of nodes and the agent still reads any graph of its architecture, ``gns_jax.pretrained``).

The statistics are Flax variables of the collection ``obs_stats`` of ``ActorCritic`` (``mean``, ``var``,
``count``), stored with the parameters, so checkpoints, exported schedulers and ``gns_jax.scheduled`` carry and
use them with nothing else to pass. The network reads them through ``stop_gradient``: PPO's Adam sees zero
gradients there and leaves them unchanged. Agent training (``gns_jax.train``) merges each episode's observations
into them (Chan et al.'s parallel update of mean and variance) *before* that episode's PPO update and recomputes
the trajectory's log pi and V with the new statistics, so the update starts at probability ratio 1 and the policy
it optimizes is the one it saves. Before the first merge (count 0) the statistics are the identity (mean 0,
variance 1).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
OBS_STATS = "obs_stats"  # the Flax variable collection of the statistics
EPS = 1e-4  # variance floor: a feature that never moves (a zeroed column) stays 0
CLIP = 5.0  # standardized features are clipped to [-CLIP, CLIP]


def identity_stats(width: int) -> dict[str, jax.Array]:
    """The statistics before any observation: mean 0, variance 1, count 0."""
    return {"mean": jnp.zeros((width,), jnp.float32), "var": jnp.ones((width,), jnp.float32),
            "count": jnp.zeros((), jnp.float32)}


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """``clip((x - mean) / sqrt(var + EPS), -CLIP, CLIP)`` over the last axis; no gradient reaches the statistics."""
    mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    return jnp.clip((x - mean) / jnp.sqrt(var + EPS), -CLIP, CLIP)


def merge(stats: dict[str, jax.Array], x: jax.Array, valid: jax.Array | None = None) -> dict[str, jax.Array]:
    """``stats`` updated with the rows of ``x`` (``[..., F]``, every leading axis pooled) where ``valid``.

    ``valid`` broadcasts against the leading axes of ``x`` from the left (a ``[T, N]`` mask for ``[T, N, nodes, F]``
    features). Chan et al.'s pairwise update: the result equals the statistics of all rows seen so far.
    """
    x = x.astype(jnp.float32)
    w = jnp.ones(x.shape[:-1], jnp.float32)
    if valid is not None:
        valid = valid.astype(jnp.float32)
        w = w * valid.reshape(valid.shape + (1,) * (w.ndim - valid.ndim))
    x, w = x.reshape(-1, x.shape[-1]), w.reshape(-1, 1)
    n_b = jnp.sum(w)
    mean_b = jnp.sum(w * x, axis=0) / jnp.maximum(n_b, 1.0)
    var_b = jnp.sum(w * jnp.square(x - mean_b), axis=0) / jnp.maximum(n_b, 1.0)
    n_a, mean_a, var_a = stats["count"], stats["mean"], stats["var"]
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / jnp.maximum(n, 1.0)
    m2 = var_a * n_a + var_b * n_b + jnp.square(delta) * n_a * n_b / jnp.maximum(n, 1.0)
    var = jnp.where(n > 0, m2 / jnp.maximum(n, 1.0), var_a)
    return {"mean": mean, "var": var, "count": n}


def observed_features(obs: PyTree) -> jax.Array:
    """The feature array the statistics describe: ``obs.nodes`` of a graph observation, else ``obs`` itself."""
    return obs.nodes if hasattr(obs, "nodes") else obs


def update_agent_stats(agent_params: PyTree, obs: PyTree, valid: jax.Array | None = None) -> PyTree:
    """``agent_params`` with its ``obs_stats`` merged with the observations ``obs`` (leading axes pooled)."""
    if OBS_STATS not in agent_params:
        raise ValueError(f"these agent parameters hold no {OBS_STATS!r} collection (trained without agent.obs_norm)")
    return {**agent_params, OBS_STATS: merge(agent_params[OBS_STATS], observed_features(obs), valid)}
