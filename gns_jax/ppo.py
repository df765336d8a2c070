"""Functional PPO in pure JAX: GAE, clipped surrogate, value loss, entropy bonus (paper Eq. 5-6, App. D).

GNS trains its scheduler with PPO (Schulman et al. 2017) once per episode, with GAE(γ = 0.99, λ = 0.95),
clip ε = 0.2, entropy coefficient 0.01, value loss (V − (r + γV'))² and separate Adam optimizers for the actor
(1e-3) and the critic (5e-3). Everything here is a pure function of explicit state, so a whole update is one
`jax.jit`-able program that also runs under `jax.vmap` and `jax.pmap`.

Advantages (GAE). With the TD residual δ_t = r_t + γ (1 − d_t) V(s_{t+1}) − V(s_t), where d_t = 1 if the
episode ended after step t,

    Â_t = δ_t + γ λ (1 − d_t) Â_{t+1},        V_targ_t = Â_t + V(s_t),

computed right to left by a reverse `lax.scan`. V_targ is the λ-return; with λ = 0 it is the paper's one-step
target r + γV'.

Clipped surrogate (Eq. 5-6). With the probability ratio ρ_t(θ) = π_θ(a_t|s_t) / π_old(a_t|s_t),

    L^CLIP(θ) = E_t[ min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t) ].

The unclipped term ρ Â is the importance-sampled policy-gradient surrogate: its gradient at θ = θ_old is the
policy gradient. Taking the min with the clipped term makes the objective a pessimistic bound: if Â > 0 the
objective stops growing once ρ > 1 + ε (the min selects the constant clipped term, so ∂/∂ log π = 0), and
if Â < 0 it stops once ρ < 1 − ε. Moves *against* the advantage are never clipped, so a bad step can still be
undone. The loss minimized here is

    L(θ) = −L^CLIP + c_v · E[(V_θ(s_t) − V_targ_t)²] − c_e · E[H(π_θ(·|s_t))],

optionally with the value clipped to V_old ± `clip_value` (the max of the clipped and unclipped squared
errors). With the paper's fixed σ the entropy of the Gaussian is a constant, so the bonus has no gradient
there; it is kept for policies that learn their scale.

Optimizers and the shared encoder. The policy parameters are a pytree whose subtrees are named 'encoder',
'actor' and 'critic' (anywhere on the path, e.g. under Flax's top-level 'params'). `param_labels` routes
'critic' to the critic's Adam (critic_lr) and everything else to the actor's Adam (actor_lr). The shared
encoder receives the gradient of the *total* loss (policy, value and entropy terms) and, by default
(`encoder_group='actor'`), is stepped with the actor's optimizer: it shapes the action, and the slower rate
keeps the critic's larger steps from dragging the representation the policy relies on. Set
`encoder_group='critic'` to route it the other way. Gradient clipping, when enabled, acts on the global norm
of all gradients together.

Masks. Trajectories are fixed-length arrays; GNS episodes may end early (a NaN loss). `Transition.valid` marks
the real steps. Invalid steps are zeroed before use (so NaNs there cannot leak into gradients), are treated as
terminal in GAE, and are excluded from every mean, including the advantage-normalization statistics.

Devices. With `PPOConfig.axis_name` set, the update must run inside `pmap`/`vmap` with that axis name:
gradients and metrics are `pmean`ed, and every masked mean and the advantage statistics are computed over the
global batch (counts are `psum`ed), so with one minibatch the result equals a single-device update on the
concatenated data. With several minibatches each device shuffles its own shard, which is a different (equally
valid) partition.

Deliberate differences from common PPO code: advantages are normalized once per update over the full (global)
batch instead of per minibatch, and `PPOState.step` counts the gradient steps taken (epochs × minibatches per
update, fewer when `target_kl` stops an update early).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any
ApplyFn = Callable[[PyTree, PyTree], tuple[distrax.Distribution, jax.Array]]

ACTOR, CRITIC, ENCODER = "actor", "critic", "encoder"


@struct.dataclass
class Transition:
    """One environment step per entry; arrays are time-major, [T] or [T, N] leading dims.

    Attributes:
      obs: observation before the action; any pytree whose leaves have the leading dims [T(, N)].
      action: the action taken, [T(, N), ...].
      reward: reward received after the action, [T(, N)].
      done: True if the episode ended after this step (no bootstrapping through it), [T(, N)].
      value: critic value V(obs) at collection time, [T(, N)].
      log_prob: log π_old(action | obs) at collection time, [T(, N)] (or with trailing event dims, summed).
      valid: optional bool mask, False for padding after an episode ended early; None means all valid.
    """

    obs: PyTree
    action: jax.Array
    reward: jax.Array
    done: jax.Array
    value: jax.Array
    log_prob: jax.Array
    valid: jax.Array | None = None


@struct.dataclass
class PPOBatch:
    """Flattened samples for the loss: a Transition plus its advantage and value target.

    Attributes:
      obs, action, log_prob, value: as in `Transition` (log_prob and value are the collection-time ones).
      advantage: Â_t (already normalized if the config asks for it).
      target: the value target V_targ_t = Â_t + V(s_t) (from the unnormalized advantage).
      valid: float or bool mask, 0 for steps excluded from the losses.
    """

    obs: PyTree
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array
    valid: jax.Array


@struct.dataclass
class PPOConfig:
    """PPO hyperparameters; every field is static, so a config can be a `jit` static argument.

    Defaults are the paper's values (App. D) where it gives them.

    Attributes:
      gamma: discount γ (paper 0.99).
      gae_lambda: GAE λ (paper 0.95).
      clip_eps: surrogate clip range ε (paper 0.2).
      vf_coef: weight c_v of the value loss in the total loss.
      ent_coef: entropy bonus c_e (paper 0.01).
      actor_lr: Adam learning rate of the actor and, by default, the encoder (paper 1e-3).
      critic_lr: Adam learning rate of the critic (paper 5e-3).
      epochs: passes over the batch per update.
      num_minibatches: minibatches per epoch; T·N (per device) must be divisible by it.
      normalize_advantages: standardize Â over the (global, masked) batch before the epochs.
      center_advantages: with normalization, subtract the batch mean first (standard PPO). False only divides
        by the root mean square, which keeps the sign of a whole batch: with one environment per update, a
        batch whose every return fell short of V(s) (e.g. an episode that collapsed) still pushes its actions down.
      group_size: > 1 subtracts, at every time step, the mean advantage of each group of `group_size`
        consecutive environments (axis 1 of a [T, N] trajectory) before the normalization. Meant for groups that
        share everything but the policy's noise (common random numbers): what is left is the effect of the actions.
      max_grad_norm: clip the global gradient norm to this value; None disables clipping.
      actor_warmup_steps: > 0 gives the critic this many gradient steps alone at the start: the actor's optimizer
        (the actor and, with `encoder_group` 'actor', the encoder) returns zero updates and keeps its Adam state
        (`optax.transforms.conditionally_mask`). 0 = the paper. The global-norm clip still counts the masked
        gradients.
      clip_value: if set, clip V to V_old ± clip_value in the value loss; None disables it.
      target_kl: if set, an early stop of the update (stable-baselines3's `target_kl`): before each gradient step
        the approximate KL(π_old ‖ π_θ) on its minibatch is measured, and once it exceeds 1.5 × target_kl that step
        and every later one of the update are skipped (parameters and optimizer state kept). None = the paper
        (every epoch runs).
      encoder_group: which optimizer ('actor' or 'critic') steps parameters outside 'actor'/'critic'.
      axis_name: None, or the pmap/vmap axis name over which gradients and statistics are averaged.
    """

    gamma: float = struct.field(pytree_node=False, default=0.99)
    gae_lambda: float = struct.field(pytree_node=False, default=0.95)
    clip_eps: float = struct.field(pytree_node=False, default=0.2)
    vf_coef: float = struct.field(pytree_node=False, default=0.5)
    ent_coef: float = struct.field(pytree_node=False, default=0.01)
    actor_lr: float = struct.field(pytree_node=False, default=1e-3)
    critic_lr: float = struct.field(pytree_node=False, default=5e-3)
    epochs: int = struct.field(pytree_node=False, default=4)
    num_minibatches: int = struct.field(pytree_node=False, default=1)
    normalize_advantages: bool = struct.field(pytree_node=False, default=True)
    center_advantages: bool = struct.field(pytree_node=False, default=True)
    group_size: int = struct.field(pytree_node=False, default=1)
    max_grad_norm: float | None = struct.field(pytree_node=False, default=0.5)
    actor_warmup_steps: int = struct.field(pytree_node=False, default=0)
    clip_value: float | None = struct.field(pytree_node=False, default=None)
    target_kl: float | None = struct.field(pytree_node=False, default=None)
    encoder_group: str = struct.field(pytree_node=False, default=ACTOR)
    axis_name: str | None = struct.field(pytree_node=False, default=None)


@struct.dataclass
class PPOState:
    """Learner state.

    Attributes:
      params: policy parameters (a pytree with 'encoder'/'actor'/'critic' subtrees).
      opt_state: state of `make_optimizer(config)`.
      step: number of gradient steps taken.
    """

    params: PyTree
    opt_state: optax.OptState
    step: jax.Array


# ----------------------------------------------------------------------------------------------------------
# Optimizer


def param_labels(params: PyTree, encoder_group: str = ACTOR) -> PyTree:
    """Labels each leaf 'actor' or 'critic' for `optax.multi_transform`.

    The first path key equal to 'actor' or 'critic' decides; any other leaf (the shared encoder, or anything
    else outside the two heads) gets `encoder_group`.
    """
    if encoder_group not in (ACTOR, CRITIC):
        raise ValueError(f"encoder_group must be '{ACTOR}' or '{CRITIC}', got {encoder_group!r}")

    def label(path, _):
        for entry in path:
            name = getattr(entry, "key", getattr(entry, "name", None))
            if name in (ACTOR, CRITIC):
                return name
        return encoder_group

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(config: PPOConfig) -> optax.GradientTransformation:
    """Optional global-norm clipping, then Adam(actor_lr) for actor + encoder, Adam(critic_lr) for critic; the
    actor's Adam masked for the first `actor_warmup_steps` steps."""
    actor = optax.adam(config.actor_lr)
    if config.actor_warmup_steps > 0:
        warm = config.actor_warmup_steps
        actor = optax.transforms.conditionally_mask(actor, lambda step: step >= warm)
    split = optax.multi_transform(
        {ACTOR: actor, CRITIC: optax.adam(config.critic_lr)},
        lambda p: param_labels(p, config.encoder_group),
    )
    if config.max_grad_norm is None:
        return split
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), split)


def init_ppo_state(params: PyTree, config: PPOConfig) -> PPOState:
    """Fresh learner state for `params`."""
    opt_state = make_optimizer(config).init(params)
    return PPOState(params=params, opt_state=opt_state, step=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------------------------------------
# Advantages


def compute_gae(
    rewards: jax.Array,
    values: jax.Array,
    dones: jax.Array,
    last_value: jax.Array,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation by a reverse `lax.scan` over time (App. D: γ 0.99, λ 0.95).

    Args:
      rewards, values, dones: time-major arrays of the same shape, [T] or [T, N]; dones[t] means the episode
        ended after step t.
      last_value: V(s_T) for bootstrapping after the last step, shape rewards.shape[1:].
    Returns:
      (advantages, returns) with returns = advantages + values.
    """
    next_values = jnp.concatenate([values[1:], jnp.expand_dims(last_value, 0).astype(values.dtype)], axis=0)
    not_done = 1.0 - dones.astype(values.dtype)
    # jnp.where rather than a product: a NaN value behind a terminal step must not leak into δ.
    deltas = rewards + gamma * jnp.where(dones, 0.0, next_values) - values

    def backward(carry, x):
        delta, nd = x
        adv = delta + gamma * lam * nd * carry
        return adv, adv

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(last_value, dtype=values.dtype), (deltas, not_done), reverse=True
    )
    return advantages, advantages + values


# ----------------------------------------------------------------------------------------------------------
# Losses


def clipped_surrogate_loss(
    log_prob: jax.Array, old_log_prob: jax.Array, advantage: jax.Array, clip_eps: float
) -> jax.Array:
    """Per-sample −min(ρÂ, clip(ρ, 1 − ε, 1 + ε)Â) with ρ = exp(log_prob − old_log_prob) (Eq. 5-6)."""
    ratio = jnp.exp(log_prob - old_log_prob)
    unclipped = ratio * advantage
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    return -jnp.minimum(unclipped, clipped)


def value_loss(
    value: jax.Array, old_value: jax.Array, target: jax.Array, clip_value: float | None = None
) -> jax.Array:
    """Per-sample (V − V_targ)², or with `clip_value` max((V − V_targ)², (V_clip − V_targ)²)."""
    loss = jnp.square(value - target)
    if clip_value is None:
        return loss
    value_clipped = old_value + jnp.clip(value - old_value, -clip_value, clip_value)
    return jnp.maximum(loss, jnp.square(value_clipped - target))


def _sum_event(x: jax.Array, batch_ndim: int) -> jax.Array:
    """Sums trailing event dims (e.g. a [B, A] Normal log-prob) down to the batch shape."""
    return x.sum(axis=tuple(range(batch_ndim, x.ndim))) if x.ndim > batch_ndim else x


def _broadcast_mask(mask: jax.Array, x: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)).astype(bool)


def _masked_where(mask: jax.Array, tree: PyTree) -> PyTree:
    """Zeroes every leaf at masked-out positions (leaves share the mask's leading dims)."""
    return jax.tree.map(lambda x: jnp.where(_broadcast_mask(mask, x), x, jnp.zeros((), x.dtype)), tree)


def _masked_mean(x: jax.Array, valid: jax.Array, axis_name: str | None) -> jax.Array:
    """Mean of x over valid entries of the global batch.

    Under a named axis it returns (n_devices × local sum / global count), so that `pmean` of it, or of its
    gradient, is exactly the global masked mean.
    """
    valid = valid.astype(x.dtype)
    total = jnp.sum(jnp.where(valid > 0, x, 0.0) * valid)
    count = jnp.sum(valid)
    if axis_name is None:
        return total / jnp.maximum(count, 1.0)
    n = jax.lax.psum(1, axis_name)
    return n * total / jnp.maximum(jax.lax.psum(count, axis_name), 1.0)


def ppo_loss(
    params: PyTree, apply_fn: ApplyFn, batch: PPOBatch, config: PPOConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total PPO loss −L^CLIP + c_v·L^V − c_e·H over the valid entries of `batch`, and its parts.

    `apply_fn(params, obs)` must return a distrax distribution over actions and values of the batch shape.
    If `config.axis_name` is set this must run inside the named axis (see the module docstring).
    """
    batch_ndim = batch.advantage.ndim
    valid = batch.valid
    obs = _masked_where(valid, batch.obs)
    dist, value = apply_fn(params, obs)
    value = value.reshape(batch.target.shape)
    old_log_prob = _sum_event(batch.log_prob, batch_ndim)
    # Ratio 1 on padding: an overflowing exp there would turn the zero cotangent of the mask into NaN.
    log_prob = jnp.where(valid, _sum_event(dist.log_prob(batch.action), batch_ndim), old_log_prob)
    entropy = _sum_event(dist.entropy(), batch_ndim)

    mean = lambda x: _masked_mean(x, valid, config.axis_name)
    policy_loss = mean(clipped_surrogate_loss(log_prob, old_log_prob, batch.advantage, config.clip_eps))
    v_loss = mean(value_loss(value, batch.value, batch.target, config.clip_value))
    entropy = mean(entropy)
    total = policy_loss + config.vf_coef * v_loss - config.ent_coef * entropy

    log_ratio = log_prob - old_log_prob
    metrics = {
        "total_loss": total,
        "policy_loss": policy_loss,
        "value_loss": v_loss,
        "entropy": entropy,
        # k3 estimator of KL(π_old || π_θ), nonnegative and low-variance.
        "approx_kl": mean(jnp.expm1(log_ratio) - log_ratio),
        "clip_frac": mean((jnp.abs(jnp.exp(log_ratio) - 1.0) > config.clip_eps).astype(value.dtype)),
    }
    return total, metrics


# ----------------------------------------------------------------------------------------------------------
# Update


def _normalize(adv: jax.Array, valid: jax.Array, axis_name: str | None, center: bool = True) -> jax.Array:
    v = valid.astype(adv.dtype)
    s1, s0 = jnp.sum(adv * v), jnp.sum(v)
    if axis_name is not None:
        s1, s0 = jax.lax.psum(s1, axis_name), jax.lax.psum(s0, axis_name)
    mu = s1 / jnp.maximum(s0, 1.0) if center else jnp.zeros((), adv.dtype)
    s2 = jnp.sum(jnp.square(adv - mu) * v)
    if axis_name is not None:
        s2 = jax.lax.psum(s2, axis_name)
    std = jnp.sqrt(s2 / jnp.maximum(s0, 1.0))
    return jnp.where(valid.astype(bool), (adv - mu) / (std + 1e-8), 0.0)


def center_within_groups(adv: jax.Array, valid: jax.Array, group_size: int) -> jax.Array:
    """Advantages minus their mean over each group of `group_size` consecutive environments, per time step.

    `adv` and `valid` are [T, N] with N divisible by `group_size`; invalid entries neither count in a group's mean
    nor change (they stay masked out downstream).
    """
    if adv.ndim != 2 or adv.shape[1] % group_size:
        raise ValueError(f"group_size {group_size} needs [T, N] advantages with N divisible by it, got {adv.shape}")
    t, n = adv.shape
    a = adv.reshape(t, n // group_size, group_size)
    v = valid.reshape(a.shape).astype(adv.dtype)
    mean = jnp.sum(a * v, axis=-1, keepdims=True) / jnp.maximum(jnp.sum(v, axis=-1, keepdims=True), 1.0)
    return jnp.where(valid, (a - mean).reshape(t, n), adv)


def make_batch(trajectory: Transition, last_value: jax.Array, config: PPOConfig) -> PPOBatch:
    """GAE, optional advantage normalization and T×N flattening of a time-major trajectory."""
    valid = trajectory.valid
    if valid is None:
        valid = jnp.ones(trajectory.reward.shape, bool)
    valid = valid.astype(bool)
    # Padding may hold garbage (even NaN): zero it and make it terminal so real steps never bootstrap into it.
    traj = _masked_where(valid, trajectory.replace(valid=None))
    last_value = jnp.nan_to_num(last_value)
    dones = jnp.logical_or(traj.done, ~valid)
    advantages, targets = compute_gae(
        traj.reward, traj.value, dones, last_value, config.gamma, config.gae_lambda
    )
    if config.group_size > 1:
        advantages = center_within_groups(advantages, valid, config.group_size)
    if config.normalize_advantages:
        advantages = _normalize(advantages, valid, config.axis_name, config.center_advantages)
    batch = PPOBatch(
        obs=traj.obs,
        action=traj.action,
        log_prob=traj.log_prob,
        value=traj.value,
        advantage=advantages,
        target=targets,
        valid=valid,
    )
    lead = trajectory.reward.shape
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[len(lead) :]), batch)


def ppo_update(
    key: jax.Array,
    state: PPOState,
    trajectory: Transition,
    last_value: jax.Array,
    apply_fn: ApplyFn,
    config: PPOConfig,
) -> tuple[PPOState, dict[str, jax.Array]]:
    """One PPO update: GAE, then `epochs` × `num_minibatches` Adam steps inside `lax.scan`.

    Args:
      key: PRNG key for the minibatch shuffles.
      state: learner state from `init_ppo_state`.
      trajectory: time-major `Transition`, leading dims [T] or [T, N] (flattened to T·N samples).
      last_value: V(s_T) for bootstrapping, shape [] or [N].
      apply_fn: `apply_fn(params, obs) -> (distrax distribution, value)`; obs is any pytree.
      config: hyperparameters (static).
    Returns:
      (new state, metrics averaged over the gradient steps taken, and `steps_taken`: their number, which is
      `epochs × num_minibatches` unless `target_kl` stopped the update early).
    """
    size = math.prod(trajectory.reward.shape)
    if size % config.num_minibatches:
        raise ValueError(f"{size} samples do not split into {config.num_minibatches} equal minibatches")
    batch = make_batch(trajectory, last_value, config)
    tx = make_optimizer(config)
    grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)

    kl_limit = None if config.target_kl is None else 1.5 * config.target_kl

    def sgd_step(carry, minibatch):
        params, opt_state, stopped, taken = carry
        (_, metrics), grads = grad_fn(params, apply_fn, minibatch, config)
        if config.axis_name is not None:
            grads = jax.lax.pmean(grads, config.axis_name)
            metrics = jax.lax.pmean(metrics, config.axis_name)
        metrics["grad_norm"] = optax.global_norm(grads)  # before clipping
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if kl_limit is not None:
            # The KL is that of the steps before this one (pmean keeps devices agreed); the first step always runs.
            stopped = stopped | ((metrics["approx_kl"] > kl_limit) & (taken > 0))
            keep = lambda old, new: jax.tree.map(lambda o, n: jnp.where(stopped, o, n), old, new)
            new_params, new_opt_state = keep(params, new_params), keep(opt_state, new_opt_state)
        ran = 1.0 - stopped.astype(jnp.float32)
        metrics["steps_taken"] = ran
        return (new_params, new_opt_state, stopped, taken + ran), metrics

    def epoch(carry, epoch_key):
        perm = jax.random.permutation(epoch_key, size)
        minibatches = jax.tree.map(
            lambda x: jnp.take(x, perm, axis=0).reshape((config.num_minibatches, -1) + x.shape[1:]), batch
        )
        return jax.lax.scan(sgd_step, carry, minibatches)

    start = (state.params, state.opt_state, jnp.zeros((), bool), jnp.zeros((), jnp.float32))
    (params, opt_state, _, steps), metrics = jax.lax.scan(epoch, start, jax.random.split(key, config.epochs))
    ran = metrics.pop("steps_taken")
    metrics = jax.tree.map(lambda m: jnp.sum(m * ran) / steps, metrics)  # over the steps that ran
    metrics["steps_taken"] = steps
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + steps.astype(jnp.int32))
    return new_state, metrics
