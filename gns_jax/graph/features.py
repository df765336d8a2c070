"""Node features of the target graph (§4.1): per-node weight, bias and gradient statistics plus global features.

For node v with weight w_v (kernel, norm ``scale`` or embedding table), bias b_v and gradients g_v of all its
parameters, the raw features are

    mean(w_v), var(w_v), mean(b_v), var(b_v), mean(|g_v|), var(|g_v|)      (bias features 0 without a bias)

and the global features, appended to every node, are the previous learning rate and the mean training loss of
the last decision step: ``X`` is ``[num_nodes, 8]`` (``FEATURE_NAMES``).

**Scaling.** Raw statistics span dozens of decades between an MLP, a ResNet and a Transformer (a conv kernel's
variance is ~1e-4, a LayerNorm scale's is 0 at initialization, gradients move from 1e-2 to 1e-9), so every
feature is put on a log scale in units of 8 decades:

* non-negative magnitudes (variances, mean |g|, learning rate): ``decades(p) = log10(p + 1e-16) / 8``,
  so the floor 1e-16 maps to -2 and 1 maps to 0;
* signed quantities (weight and bias means, loss): ``slog(x) = sign(x) · log10(1 + |x| / 1e-8) / 8``, so
  |x| = 1 maps to about ±1 and |x| ≤ 1e-8 to about 0 (1e-8 is the standard deviation at the variance floor).

Variances are computed in a max-scaled form (``var(x) = m² var(x / m)`` with ``m = max|x|``, logs combined with
``logaddexp``), so weights of 1e30 do not overflow float32; zero tensors hit the floors; any NaN or ±inf left
(a diverged network) becomes 0 or ±10, and every feature is clipped to [-10, 10]. The result is always finite.

The tree is read in one traced pass: the structure lists each node's leaf paths, leaves of one shape are reduced
together (two fused passes per shape group, ``_leaf_moments``) and a node's gradient statistics are pooled from
its leaves' moments. No Python runs per call; the function traces once per architecture.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gns_jax.graph.structure import GraphStructure, Path, params_collection

FEATURE_NAMES = ("weight_mean", "weight_var", "bias_mean", "bias_var", "abs_grad_mean", "abs_grad_var",
                 "prev_lr", "mean_loss")
NUM_FEATURES = len(FEATURE_NAMES)
VAR_FLOOR = 1e-16
MEAN_SCALE = 1e-8
UNIT = 8.0  # decades per feature unit
CLIP = 10.0
_LN10 = math.log(10.0)


@struct.dataclass
class GraphObservation:
    """What the scheduler observes at a decision step: only dynamic arrays, so PPO can stack a leading axis.

    Attributes:
      nodes: ``[num_nodes, NUM_FEATURES]`` scaled node features (``FEATURE_NAMES``), node order of the
        ``GraphStructure``; ``[..., num_nodes, NUM_FEATURES]`` when batched.
    """

    nodes: jax.Array


def slog(x: jax.Array) -> jax.Array:
    """Signed log scaling of means and the loss (module docstring)."""
    return jnp.sign(x) * jnp.log10(1.0 + jnp.abs(x) / MEAN_SCALE) / UNIT


def decades(p: jax.Array) -> jax.Array:
    """Log scaling of non-negative magnitudes with the floor ``VAR_FLOOR`` (module docstring)."""
    return jnp.log10(p + VAR_FLOOR) / UNIT


def _ln_decades(ln_p: jax.Array) -> jax.Array:
    """``decades`` of a magnitude given by its natural log (overflow-free)."""
    return jnp.logaddexp(ln_p, math.log(VAR_FLOOR)) / _LN10 / UNIT


def _leaf_moments(arrays: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(mean, natural log of the variance) of each array, overflow-free.

    Arrays of one shape are stacked and reduced together (a ResNet or Transformer has few distinct shapes), in
    two passes per group: ``max|x|`` and ``sum(x)`` (sibling reductions, one fused pass), then the centered
    second moment of ``x / max|x|``, so that ``var = max|x|² · var(x / max|x|)`` never squares a huge number.
    """
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault((a.shape, a.dtype), []).append(i)
    means, ln_vars, order = [], [], []
    for idx in groups.values():
        x = jnp.stack([arrays[i] for i in idx]).reshape(len(idx), -1).astype(jnp.float32)
        m = jnp.max(jnp.abs(x), axis=1)
        mean = jnp.sum(x, axis=1) / x.shape[1]
        m = jnp.where(jnp.isfinite(m) & (m > 0), m, 1.0)
        var = jnp.mean(jnp.square((x - mean[:, None]) / m[:, None]), axis=1)
        means.append(mean)
        ln_vars.append(2.0 * jnp.log(m) + jnp.log(var))
        order += idx
    inverse = np.argsort(np.asarray(order))
    return jnp.concatenate(means)[inverse], jnp.concatenate(ln_vars)[inverse]


def _pooled(means: jax.Array, ln_vars: jax.Array, index: np.ndarray, weight: np.ndarray):
    """Mean and log-variance of the union of several arrays from their own (``weight`` = size share, 0 = none)."""
    mean = jnp.sum(weight * means[index], axis=1)
    spread = jnp.logaddexp(ln_vars[index], 2.0 * jnp.log(jnp.abs(means[index] - mean[:, None])))
    with np.errstate(divide="ignore"):
        log_w = np.log(weight)
    return mean, jax.nn.logsumexp(spread + log_w, axis=1)


def _get(tree: Mapping[str, Any], path: Path) -> jax.Array:
    for k in path:
        tree = tree[k]
    return tree


@functools.partial(jax.jit, static_argnums=0)
def node_features(structure: GraphStructure, params, grads, lr, loss) -> GraphObservation:
    """Node features ``X`` of a target network at a decision step (§4.1), jitted.

    Args:
      structure: the static ``GraphStructure`` (hashable; a static argument, so one trace per architecture).
      params: the target's ``params`` collection (or a variables dict holding it).
      grads: gradients with the same tree (e.g. of the last optimizer step).
      lr: the learning rate used during the decision step (scalar).
      loss: the mean training loss over the decision step (scalar).

    Returns:
      ``GraphObservation(nodes=[num_nodes, 8])``; always finite.
    """
    params, grads = params_collection(params), params_collection(grads)
    n = structure.num_nodes
    has_bias = np.array([b is not None for b in structure.bias_paths])
    leaves = [_get(params, p) for p in structure.weight_paths]
    leaves += [_get(params, p) for p in structure.bias_paths if p is not None]
    grad_paths = [p for paths in structure.param_paths for p in paths]
    leaves += [jnp.abs(_get(grads, p)) for p in grad_paths]
    means, ln_vars = _leaf_moments(leaves)

    w_mean, w_lnv = means[:n], ln_vars[:n]
    k = int(has_bias.sum())
    bias_slot = np.cumsum(has_bias) - 1 + n  # where each node's bias moments sit (if it has a bias)
    b_mean = jnp.where(has_bias, slog(means[bias_slot]), 0.0)
    b_var = jnp.where(has_bias, _ln_decades(ln_vars[bias_slot]), 0.0)

    width = max(len(paths) for paths in structure.param_paths)
    index = np.full((n, width), n + k, np.int32)
    weight = np.zeros((n, width), np.float32)
    start = n + k
    for v, paths in enumerate(structure.param_paths):
        sizes = np.array([np.size(_get(grads, p)) for p in paths], np.float64)
        index[v, :len(paths)] = start + np.arange(len(paths))
        weight[v, :len(paths)] = sizes / sizes.sum()
        start += len(paths)
    g_mean, g_lnv = _pooled(means, ln_vars, index, weight)

    local = jnp.stack([slog(w_mean), _ln_decades(w_lnv), b_mean, b_var, decades(g_mean), _ln_decades(g_lnv)], 1)
    glob = jnp.stack([decades(jnp.abs(jnp.asarray(lr, jnp.float32))), slog(jnp.asarray(loss, jnp.float32))])
    x = jnp.concatenate([local, jnp.broadcast_to(glob, (local.shape[0], 2))], axis=1)
    x = jnp.clip(jnp.nan_to_num(x, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)
    return GraphObservation(nodes=x)
