"""The learning-rate control environment (§3.2, Algorithm 1) and its rewards (Eq. 2-3).

An episode is one training run of the target network, T optimizer steps long, cut into N = T // K decision
points. ``reset`` samples the initial learning rate alpha_1 from the prior D_alpha (log-uniform on
[prior_lr_min, prior_lr_max]), initializes the target and runs the first K steps at alpha_1, so that the first
observation already carries gradients and a training loss (decision point 0). ``step`` takes the learning rate the
agent chose at point t, alpha <- clip(alpha (1 + a_t)) (Eq. 4, ``gns_jax.policy.decide``), writes it into the
optimizer state, runs the next K steps in one ``lax.scan`` and observes decision point t+1. So an episode holds
N - 1 actions.

Validation (Eq. 2-3). The validation metric P is computed at a decision point only with probability p; the caller
passes that coin (``validate``) so that a batch of vmapped environments shares it and ``lax.cond`` stays a real
branch. Point 0 and the last point are always validated, so every action lies between two validated points.
Between validated points t1 < t2 the improvement is spread evenly (Eq. 3):

    r_t = (P_{t2} - P_{t1}) / (t2 - t1)        for every action t with t1 <= t < t2.

Divergence. When a loss or a parameter stops being finite during the K steps of action d, the episode ends:
point d+1 counts as validated with the last validated metric (so the actions since then get 0 from Eq. 3), action
d receives ``divergence_penalty`` on top, later actions are invalid (masked out of PPO), and training of the
agent goes on with the next episode. Observations of a diverged target are zeroed so no NaN reaches the agent.
A target that diverges during the first K steps (before any action) gives its first action the penalty.

Collapse (beyond the paper; off by default). A learning rate far too high need not make the loss non-finite: the
MLP of Table 20 at alpha = 0.3 trains on at a loss of 322, and the paper's agent learned to collapse every run that
way. ``mark_collapses`` treats the first action after which the run collapsed like a divergence: the episode ends
there for PPO (penalty, later actions masked). A collapse is a mean training loss of the action's K steps above
``collapse_loss_ratio`` times that of the first K steps (when > 0), or, with ``collapse_below_start``, a validated
metric below that of point 0 (the metric after the first K steps; the metric is higher-is-better, as Eq. 3's reward
reads it). The target itself is not stopped, so deployment (``gns_jax.apply``), which shares this environment,
always trains for the full T.

Everything here is a pure function of explicit state, so ``jax.vmap`` over keys gives a batch of environments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from gns_jax.targets.task import Batch, StepStats, TargetState, Task, get_learning_rate, set_learning_rate

PyTree = Any
ObserveFn = Callable[..., PyTree]  # (params, grads, lr, loss, progress) -> obs; progress = t / (N - 1)


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Static settings of the environment (hashable: the agent's jitted programs close over them, ``AgentSettings``).

    ``lr_min``/``lr_max`` are the clip range of Eq. 4, applied where the agent decides (``gns_jax.policy.decide``).
    """

    decision_interval: int  # K
    num_decisions: int  # N = T // K decision points per episode
    lr_min: float = 1e-6  # clip range of alpha after every action
    lr_max: float = 1.0
    prior_lr_min: float = 1e-4  # D_alpha: log-uniform prior of the initial learning rate
    prior_lr_max: float = 1e-2
    divergence_penalty: float = -1.0
    validation_prob: float = 0.2  # p of Eq. 3
    collapse_loss_ratio: float = 0.0  # > 0: a loss above this multiple of the first K steps' ends the episode
    collapse_below_start: bool = False  # a validated metric below that of point 0 ends the episode

    def __post_init__(self):
        if self.num_decisions < 2:
            raise ValueError(f"an episode needs at least 2 decision points (T >= 2K), got {self.num_decisions}")
        if not 0 < self.prior_lr_min <= self.prior_lr_max:
            raise ValueError(f"bad initial-LR prior [{self.prior_lr_min}, {self.prior_lr_max}]")
        if not 0.0 <= self.validation_prob <= 1.0:
            raise ValueError(f"validation_prob must be in [0, 1], got {self.validation_prob}")
        if self.collapse_loss_ratio < 0:
            raise ValueError(f"collapse_loss_ratio must be >= 0 (0 = off), got {self.collapse_loss_ratio}")

    @property
    def detects_collapse(self) -> bool:
        """Whether a collapse rule is on (``mark_collapses``)."""
        return self.collapse_loss_ratio > 0 or self.collapse_below_start


@struct.dataclass
class EnvState:
    target: TargetState
    t: jnp.ndarray  # index of the current decision point (0 after reset)
    done: jnp.ndarray  # the episode has ended (last point reached, or diverged)
    diverged: jnp.ndarray
    last_metric: jnp.ndarray  # the most recent validation metric (carried forward on divergence)


@struct.dataclass
class StepInfo:
    """What one decision step reports (per-decision scalars for logs and for Eq. 3)."""

    learning_rate: jnp.ndarray  # alpha used for the K steps just taken
    mean_loss: jnp.ndarray  # mean training loss of those K steps
    metric: jnp.ndarray  # validation metric at the new point, NaN when not validated
    validated: jnp.ndarray  # whether the new point counts as validated for Eq. 3
    diverged: jnp.ndarray  # this step diverged
    done: jnp.ndarray  # the episode ended at this step


def sample_initial_lr(key: jnp.ndarray, low: float, high: float) -> jnp.ndarray:
    """alpha_1 ~ D_alpha, log-uniform on [low, high]."""
    return jnp.exp(jax.random.uniform(key, (), minval=jnp.log(low), maxval=jnp.log(high)))


def validation_coins(key: jnp.ndarray, num_decisions: int, prob: float) -> jnp.ndarray:
    """Which decision points are validated: Bernoulli(p), with the first and the last always on."""
    coins = jax.random.bernoulli(key, prob, (num_decisions,))
    return coins.at[0].set(True).at[-1].set(True)


class LREnvironment:
    """Pure reset/step functions over one target task; ``jax.vmap`` them for a batch of environments."""

    def __init__(self, task: Task, observe: ObserveFn, config: EnvConfig):
        self.task = task
        self.observe = observe
        self.config = config

    def _observe(self, target: TargetState, mean_loss, ok, t) -> PyTree:
        progress = jnp.minimum(t, self.config.num_decisions - 1) / (self.config.num_decisions - 1)
        obs = self.observe(target.params, target.grads, get_learning_rate(target.opt_state), mean_loss, progress)
        return jax.tree.map(lambda x: jnp.where(ok, jnp.nan_to_num(x), jnp.zeros_like(x)), obs)

    def _validate(self, target: TargetState, data: Batch, validate) -> jnp.ndarray:
        return jax.lax.cond(validate, lambda: self.task.evaluate_split(target, data)["metric"].astype(jnp.float32),
                            lambda: jnp.asarray(jnp.nan, jnp.float32))

    def reset(self, key: jnp.ndarray, train_data: Batch, val_data: Batch, initial_lr: jnp.ndarray | None = None,
              pretrained: PyTree | None = None) -> tuple[PyTree, EnvState, StepInfo]:
        """Sample alpha_1 (unless given), initialize the target and run the first K steps at alpha_1.

        With ``initial_lr`` given, ``key`` itself initializes the target, exactly as ``Task.init(key, lr)`` does, so
        a deployment with seed s starts from the state a baseline run with seed s starts from (paired seeds).
        ``pretrained`` (e.g. a language model checkpoint) replaces the random initialization where it has weights.
        """
        cfg = self.config
        if initial_lr is None:
            lr_key, init_key = jax.random.split(key)
            lr = sample_initial_lr(lr_key, cfg.prior_lr_min, cfg.prior_lr_max)
        else:
            lr, init_key = initial_lr, key
        target = self.task.init_state(init_key, lr, pretrained)
        target, stats = self.task.train_scan(target, train_data, cfg.decision_interval)
        ok = stats.finite
        metric = self._validate(target, val_data, ok)
        state = EnvState(target=target, t=jnp.zeros((), jnp.int32), done=~ok, diverged=~ok,
                         last_metric=jnp.where(ok, metric, 0.0))
        info = StepInfo(learning_rate=jnp.asarray(lr, jnp.float32), mean_loss=stats.mean_loss, metric=metric,
                        validated=jnp.asarray(True), diverged=~ok, done=~ok)
        return self._observe(target, stats.mean_loss, ok, state.t), state, info

    def step(self, state: EnvState, learning_rate: jnp.ndarray, validate: jnp.ndarray, train_data: Batch,
             val_data: Batch) -> tuple[PyTree, EnvState, StepInfo]:
        """Train K steps at ``learning_rate`` (the action's alpha (1 + a), Eq. 4), observe, and validate when
        ``validate``.

        ``validate`` must be true at the last decision point (``validation_coins`` sets it there, and
        ``Agent.decision_step`` adds it). It is the only predicate of the validation ``lax.cond``: under ``vmap`` an
        unbatched predicate keeps the branch real, while one that depends on an environment's own state (done,
        diverged, t) would turn it into a ``select`` that validates every environment at every decision.
        """
        cfg = self.config
        lr = jnp.asarray(learning_rate, jnp.float32)
        target = state.target.replace(opt_state=set_learning_rate(state.target.opt_state, lr))

        # An environment whose episode already ended keeps its state and reports nothing. Its K steps still run
        # (a select, not a lax.cond: XLA:CPU runs convolutions inside a conditional ~10x slower, and under vmap a
        # cond on a per-environment flag is a select anyway).
        trained, stats = self.task.train_scan(target, train_data, cfg.decision_interval)
        target = jax.tree.map(lambda old, new: jnp.where(state.done, old, new), target, trained)
        nan = jnp.asarray(jnp.nan, jnp.float32)
        stats = StepStats(mean_loss=jnp.where(state.done, nan, stats.mean_loss),
                          last_loss=jnp.where(state.done, nan, stats.last_loss), finite=~state.done & stats.finite)
        t = state.t + 1
        diverged = ~state.done & ~stats.finite
        last_point = t >= cfg.num_decisions - 1
        validated = ~state.done & (diverged | validate)
        metric = self._validate(target, val_data, validate)
        metric = jnp.where(diverged, state.last_metric, metric)
        new_state = EnvState(target=target, t=t, done=state.done | diverged | last_point,
                             diverged=state.diverged | diverged,
                             last_metric=jnp.where(validated, metric, state.last_metric))
        info = StepInfo(learning_rate=lr, mean_loss=stats.mean_loss, metric=jnp.where(validated, metric, jnp.nan),
                        validated=validated, diverged=diverged, done=new_state.done & ~state.done)
        return self._observe(target, stats.mean_loss, ~new_state.diverged, t), new_state, info


def spread_rewards(metrics: jnp.ndarray, validated: jnp.ndarray) -> jnp.ndarray:
    """Eq. 3: per-action rewards from the metrics of validated decision points.

    Args:
      metrics: [N] validation metric at each decision point (ignored where not validated).
      validated: [N] bool; point 0 must be validated.
    Returns:
      [N - 1] rewards; action t (from point t to t+1) gets (P_{t2} - P_{t1}) / (t2 - t1) with t1 the last validated
      point <= t and t2 the first validated point > t (0 when there is none).
    """
    n = metrics.shape[0]
    idx = jnp.arange(n)
    prev_valid = jax.lax.cummax(jnp.where(validated, idx, 0), axis=0)[:-1]
    next_valid = jax.lax.cummin(jnp.where(validated, idx, n), axis=0, reverse=True)[1:]
    has_next = next_valid < n
    t2 = jnp.minimum(next_valid, n - 1)
    p = jnp.where(validated, metrics, 0.0)
    return jnp.where(has_next, (p[t2] - p[prev_valid]) / jnp.maximum(t2 - prev_valid, 1), 0.0)


def before_the_end(infos: StepInfo, reset_info: StepInfo) -> jnp.ndarray:
    """[N - 1] bool: the episode had not ended before the action (the action that ends it is included)."""
    ended = jnp.concatenate([reset_info.done[None], infos.done[:-1]])
    return ~jax.lax.cummax(ended.astype(jnp.int32), axis=0).astype(bool)


def mark_collapses(infos: StepInfo, reset_info: StepInfo, loss_ratio: float = 0.0,
                   below_start: bool = False) -> tuple[StepInfo, jnp.ndarray]:
    """End one episode at its first collapse, as at a divergence (``EnvConfig.collapse_loss_ratio`` and
    ``collapse_below_start``; beyond the paper).

    ``infos`` holds the stacked StepInfo of the episode's N - 1 actions, ``reset_info`` that of point 0. Action d
    collapses when, before the episode ended, the mean training loss of its K steps is finite and above
    ``loss_ratio`` times that of the first K steps (``loss_ratio`` > 0), or (``below_start``) point d+1 is
    validated with a metric below point 0's. The first such action is rewritten as a divergence: point d+1
    counts as validated with the last validated metric before it, and the action is marked diverged and done;
    what the later actions report is dropped (as for the actions after a divergence). Returns the rewritten infos
    and whether the episode collapsed. With both rules off ``infos`` is returned unchanged.
    """
    if loss_ratio <= 0 and not below_start:
        return infos, jnp.zeros((), bool)
    live = before_the_end(infos, reset_info) & ~infos.diverged
    collapsed = jnp.zeros_like(live)
    if loss_ratio > 0:
        collapsed |= jnp.isfinite(infos.mean_loss) & (infos.mean_loss > loss_ratio * reset_info.mean_loss)
    if below_start:
        collapsed |= infos.validated & jnp.isfinite(infos.metric) & (infos.metric < reset_info.metric)
    collapsed &= live
    first = collapsed & (jnp.cumsum(collapsed) == 1)
    after = jax.lax.cummax(first.astype(jnp.int32), axis=0).astype(bool) & ~first
    # The last validated metric at or before point d, for point d+1 of each action d.
    metrics = jnp.concatenate([reset_info.metric[None], infos.metric])
    validated = jnp.concatenate([jnp.ones((1,), bool), infos.validated])
    idx = jnp.arange(metrics.shape[0])
    carried = metrics[jax.lax.cummax(jnp.where(validated, idx, 0), axis=0)][:-1]
    nan = jnp.asarray(jnp.nan, infos.metric.dtype)
    infos = infos.replace(metric=jnp.where(first, carried, jnp.where(after, nan, infos.metric)),
                          validated=first | (infos.validated & ~after),
                          diverged=first | (infos.diverged & ~after),
                          done=first | (infos.done & ~after))
    return infos, jnp.any(first)


def episode_rewards(infos: StepInfo, reset_info: StepInfo, penalty: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Rewards and validity masks of the N - 1 actions of one episode (Eq. 3 plus the divergence penalty).

    ``infos`` holds the stacked StepInfo of the actions (leading axis N - 1); ``reset_info`` that of point 0.
    """
    metrics = jnp.concatenate([reset_info.metric[None], infos.metric])
    validated = jnp.concatenate([jnp.ones((1,), bool), infos.validated])
    rewards = spread_rewards(metrics, validated) + jnp.where(infos.diverged, penalty, 0.0)
    valid = before_the_end(infos, reset_info)  # the diverging action itself is valid
    # A target that diverged in its first K steps (before any action) still costs the penalty: the first action
    # (its observation zeroed) carries it, so such an episode is not worth as much as a harmless one.
    first = (jnp.arange(valid.shape[0]) == 0) & reset_info.diverged
    rewards, valid = jnp.where(first, penalty, rewards), valid | first
    return jnp.where(valid, rewards, 0.0), valid
