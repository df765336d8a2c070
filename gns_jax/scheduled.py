"""A trained GNS scheduler as an optax transformation: ``tx = scheduled(optax.adam, policy, learning_rate=1e-3)``.

Deployment (§4.3, ``Agent.follow_policy``) trains the target in blocks of K optimizer steps at a fixed learning rate
alpha. At the end of block t (decision point t = 0, 1, ...) the scheduler observes the state s_t of §4.1 — the node
features of the parameters w after the block's last step, of the gradients g of that step, the learning rate alpha
of the block and the block's mean training loss L̄_t — and sets the learning rate of block t + 1 by the mean action
of the policy (Eq. 4):

    mu_t = 0.1 tanh(m_f(h(s_t))),        alpha <- clip(alpha (1 + mu_t), alpha_min, alpha_max).

So no decision precedes the first block (it runs at the initial alpha), and a run of T steps holds N - 1 decisions,
N = T // K; the T - N K steps after the last block keep the last alpha.

As an optax transformation that rule needs only what ``update(grads, state, params, value=loss)`` is given. The
call that takes the last step of a block (``count % K == K - 1``) computes the inner optimizer's updates u with the
block's alpha, so the parameters after the step are w + u and the gradients are the ``grads`` it was handed; it
then forms s_t from (w + u, g, alpha, L̄_t), runs the encoder and actor, applies Eq. 4 and stores the new alpha for
the next block. Everything happens inside the caller's ``jit``: the decision is a ``lax.cond`` on the step count
(under ``vmap`` the count is batched and both branches run, as ``lax.cond`` does there), and there is no host
round trip. The inner optimizer is ``optax.inject_hyperparams(optimizer)``, whose ``learning_rate`` hyperparameter is
overwritten with the state's alpha before each step.

The state (``ScheduledState``, a NamedTuple of arrays) holds alpha, the step count, the decision counter t and the
running mean training loss of the current block, next to the inner optimizer's state, so it saves and restores with
orbax like any optax state. The decision counter gives the run progress t / (N - 1) that agents trained with
``agent.progress_feature`` observe; after the N - 1 decisions of a T-step run (``total_steps``, by default the T
the agent was trained on) alpha stays fixed, exactly as in deployment.

Two conventions follow from "the parameters after the step are w + u": put ``scheduled`` last in an
``optax.chain`` (transformations before it, such as gradient clipping, are fine, and the scheduler then observes
the clipped gradients), and pass the training loss of the batch the gradients came from as ``value=`` (the
``optax.contrib.reduce_on_plateau`` convention).

The policy comes as a ``TrainedPolicy`` (network, agent parameters, observation function, the settings of the
environment it was trained in), built from an ``Agent`` and its parameters or from a ``train_agent`` checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gns_jax.agent import Agent
from gns_jax.checkpoints import load_agent_params
from gns_jax.policy import PolicyStep, decide
from gns_jax.settings import agent_settings
from gns_jax.targets.build import build_task
from gns_jax.targets.task import set_learning_rate

PyTree = Any
ObserveFn = Callable[..., PyTree]  # (params, grads, lr, mean_loss, progress) -> observation


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedPolicy:
    """Everything the scheduler needs from a trained agent; no task, data or environment.

    Attributes:
      network: the actor-critic module (``obs -> (N(mu, sigma^2), V)``).
      params: its parameters.
      observe: ``(params, grads, lr, mean_loss, progress) -> obs``, the observation of §4.1 for the target
        architecture the agent reads (``Agent.observe``).
      decision_interval: K the agent was trained with.
      num_decisions: N = T // K of its training runs (the default horizon of ``scheduled``).
      lr_min, lr_max: the clip range of Eq. 4.
    """

    network: Any
    params: PyTree
    observe: ObserveFn
    decision_interval: int
    num_decisions: int
    lr_min: float
    lr_max: float

    @classmethod
    def from_agent(cls, agent, agent_params: PyTree) -> TrainedPolicy:
        """The policy of an ``Agent`` (``gns_jax.agent``) with the given parameters."""
        cfg = agent.env.config
        return cls(network=agent.network, params=agent_params, observe=agent.observe,
                   decision_interval=cfg.decision_interval, num_decisions=cfg.num_decisions, lr_min=cfg.lr_min,
                   lr_max=cfg.lr_max)

    @classmethod
    def from_checkpoint(cls, config: ml_collections.ConfigDict, path: str, task=None) -> TrainedPolicy:
        """The policy saved by ``train_agent`` under ``config`` (a checkpoint directory or one step of it).

        ``task`` defaults to ``build_task(config)``; only its architecture is read.
        """
        agent = Agent(task or build_task(config), agent_settings(config))
        return cls.from_agent(agent, load_agent_params(path, agent.init_params(jax.random.key(0))))

    def decide(self, params: PyTree, grads: PyTree, learning_rate, mean_loss, progress) -> PolicyStep:
        """Eq. 4 with the mean action (``gns_jax.policy.decide``) for the state observed from the arguments."""
        obs = self.observe(params, grads, learning_rate, mean_loss, progress)
        return decide(self.network.apply, self.params, obs, learning_rate, self.lr_min, self.lr_max)

    def next_learning_rate(self, params: PyTree, grads: PyTree, learning_rate, mean_loss, progress) -> jnp.ndarray:
        """clip(alpha (1 + mu(s))) for the state s observed from the arguments (Eq. 4)."""
        return self.decide(params, grads, learning_rate, mean_loss, progress).learning_rate


class ScheduledState(NamedTuple):
    """State of ``scheduled``: the learned schedule's own counters next to the inner optimizer's state."""

    count: jnp.ndarray  # optimizer steps taken (int32)
    decisions: jnp.ndarray  # decisions taken so far = the decision point t of the next one (int32)
    learning_rate: jnp.ndarray  # alpha of the current block of K steps (float32)
    mean_loss: jnp.ndarray  # mean training loss of the current block so far (of the last block once it ends)
    inner_state: optax.OptState  # inject_hyperparams(optimizer) state; its learning_rate mirrors ``learning_rate``


def scheduled(optimizer: Callable[..., optax.GradientTransformation], policy, agent_params: PyTree | None = None,
              *, learning_rate: float, decision_interval: int | None = None, total_steps: int | None = None,
              static_args: Iterable[str] = (), **optimizer_kwargs) -> optax.GradientTransformationExtraArgs:
    """``optimizer`` whose learning rate a trained GNS policy sets every K steps (Eq. 4, §4.3).

    Args:
      optimizer: an optax optimizer factory taking ``learning_rate`` (``optax.adam``, ``optax.adamw``, ...).
      policy: a ``TrainedPolicy``, or an ``Agent`` together with ``agent_params``.
      agent_params: the agent's parameters when ``policy`` is an ``Agent``.
      learning_rate: alpha of the first block (deployment picks it by V(s), §4.3; here the caller does).
      decision_interval: K (default: the K the agent was trained with).
      total_steps: T of the run, so that it holds N - 1 decisions, N = T // K, and progress is t / (N - 1)
        (default: the agent's training T). Alpha stays fixed after the last decision.
      static_args: names of ``optimizer_kwargs`` that ``inject_hyperparams`` must not turn into arrays.
      **optimizer_kwargs: the other arguments of ``optimizer`` (``b1``, ``weight_decay``, ...).

    Returns:
      A ``GradientTransformationExtraArgs``; ``update(grads, state, params, value=loss)`` needs ``params`` and the
      training loss ``value`` of the batch the gradients came from. Put it last in a chain.
    """
    if not isinstance(policy, TrainedPolicy):
        if agent_params is None:
            raise TypeError("scheduled(optimizer, agent, agent_params, ...): an Agent needs its parameters")
        policy = TrainedPolicy.from_agent(policy, agent_params)
    elif agent_params is not None:
        raise TypeError("agent_params goes with an Agent; a TrainedPolicy carries its own parameters")
    k = int(decision_interval or policy.decision_interval)
    n = policy.num_decisions if total_steps is None else int(total_steps) // k
    if k < 1 or n < 2:
        raise ValueError(f"a learned schedule needs K >= 1 and T >= 2 K (K = {k}, N = T // K = {n})")
    last_point = n - 1  # decisions happen at points 0 .. N - 2; progress of point t is t / (N - 1)
    inner = optax.inject_hyperparams(optimizer, static_args=tuple(static_args))(learning_rate=learning_rate,
                                                                               **optimizer_kwargs)

    def init_fn(params: PyTree) -> ScheduledState:
        return ScheduledState(count=jnp.zeros((), jnp.int32), decisions=jnp.zeros((), jnp.int32),
                              learning_rate=jnp.asarray(learning_rate, jnp.float32),
                              mean_loss=jnp.zeros((), jnp.float32), inner_state=inner.init(params))

    def update_fn(updates, state: ScheduledState, params=None, **extra_args):
        if params is None:
            raise ValueError("scheduled: update(grads, state, params, value=loss) needs params (the policy observes "
                             "the parameters, §4.1)")
        value = extra_args.get("value")
        if value is None:
            raise ValueError("scheduled: update(grads, state, params, value=loss) needs the training loss as value=")
        grads = updates
        lr = state.learning_rate
        inner_state = set_learning_rate(state.inner_state, lr)
        updates, inner_state = inner.update(grads, inner_state, params, **extra_args)

        # Running mean of the block's losses; the first step of a block starts it afresh.
        position = state.count % k
        value = jnp.asarray(value, jnp.float32).reshape(())
        mean_loss = jnp.where(position == 0, value, state.mean_loss + (value - state.mean_loss) / (position + 1))

        def decide(_):
            # Decision point t = state.decisions: the block just ended; observe the state after this step.
            progress = jnp.minimum(state.decisions, last_point) / last_point
            new_params = optax.apply_updates(params, updates)
            new_lr = policy.next_learning_rate(new_params, grads, lr, mean_loss, progress)
            return new_lr.astype(jnp.float32), state.decisions + 1

        decide_now = (position == k - 1) & (state.decisions < last_point)
        lr, decisions = jax.lax.cond(decide_now, decide, lambda _: (lr, state.decisions), None)
        return updates, ScheduledState(count=state.count + 1, decisions=decisions, learning_rate=lr,
                                       mean_loss=mean_loss, inner_state=set_learning_rate(inner_state, lr))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def current_learning_rate(opt_state: optax.OptState) -> jnp.ndarray:
    """Alpha of the ``ScheduledState`` inside ``opt_state`` (which may be the state of a chain)."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ScheduledState))
             if isinstance(s, ScheduledState)]
    if len(found) != 1:
        raise ValueError(f"expected one ScheduledState in the optimizer state, found {len(found)}")
    return found[0].learning_rate
