"""The GNS scheduler agent: graph encoder + actor-critic heads, and the one-program decision step.

``Agent`` ties the pieces of §4 together for one target architecture: the static graph structure of the target
(``gns_jax.graph``), the encoder chosen by ``config.agent.encoder`` (hierarchical GCN, GAT, or the CSS/SRLS
ablations), the heads of Eq. 4 and the environment. ``Agent.decision_step`` is one XLA program per decision:
policy on the current observation, alpha <- alpha (1 + a), K optimizer steps, node features and (maybe) validation
— for a whole batch of environments at once (``vmap``).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from gns_jax.config import config_to_dict
from gns_jax.env import EnvConfig, EnvState, LREnvironment, StepInfo
from gns_jax.gcn import make_encoder
from gns_jax.graph import build_graph_structure, node_features
from gns_jax.policy import ActorCritic, select_action
from gns_jax.ppo import PPOConfig, PPOState, Transition, ppo_update
from gns_jax.targets.task import Batch, Task

PyTree = Any


@struct.dataclass
class ActOutput:
    """What the agent did at one decision point (the policy part of a PPO ``Transition``)."""

    obs: PyTree
    action: jnp.ndarray
    value: jnp.ndarray
    log_prob: jnp.ndarray


def ppo_config(agent_cfg: ml_collections.ConfigDict, axis_name: str | None = None) -> PPOConfig:
    return PPOConfig(gamma=agent_cfg.gamma, gae_lambda=agent_cfg.gae_lambda, clip_eps=agent_cfg.clip_eps,
                     vf_coef=agent_cfg.vf_coef, ent_coef=agent_cfg.ent_coef, actor_lr=agent_cfg.actor_lr,
                     critic_lr=agent_cfg.critic_lr, epochs=agent_cfg.ppo_epochs,
                     num_minibatches=agent_cfg.num_minibatches, max_grad_norm=agent_cfg.max_grad_norm,
                     axis_name=axis_name)


def env_config(config: ml_collections.ConfigDict) -> EnvConfig:
    a = config.agent
    return EnvConfig(decision_interval=int(config.decision_interval),
                     num_decisions=int(config.steps) // int(config.decision_interval), lr_min=a.lr_min,
                     lr_max=a.lr_max, prior_lr_min=a.prior_lr_min, prior_lr_max=a.prior_lr_max,
                     divergence_penalty=a.divergence_penalty, validation_prob=a.validation_prob)


class Agent:
    """Encoder + heads + environment for one target task (all static; the functions below are pure)."""

    def __init__(self, task: Task, config: ml_collections.ConfigDict):
        self.task = task
        self.config = config
        a = config.agent
        abstract = jax.eval_shape(task.init_state, jax.random.key(0), 1e-3)
        self.structure = build_graph_structure(config.model.name, abstract.params)
        self.network = ActorCritic(
            encoder=make_encoder(a.encoder, self.structure, hidden=a.encoder_hidden, layers=a.encoder_layers),
            action_scale=a.action_scale, sigma=a.sigma, hidden=a.head_hidden)
        self.env = LREnvironment(task, self.observe, env_config(config))
        self.ppo = ppo_config(a)
        # Agents of the same task and settings share compiled programs (jit keys on this hash).
        settings = config_to_dict(config)
        for field in ("episodes", "init_checkpoint", "deploy_candidates", "deploy_pre_decisions"):
            settings["agent"].pop(field, None)
        settings.pop("agent_checkpoint", None)
        self._key = (id(task), json.dumps(settings, sort_keys=True))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, Agent) and self._key == other._key and self.task is other.task

    def observe(self, params, grads, lr, loss):
        return node_features(self.structure, params, grads, lr, loss)

    def apply(self, agent_params: PyTree, obs: PyTree):
        return self.network.apply(agent_params, obs)

    def init_params(self, key: jnp.ndarray) -> PyTree:
        abstract = jax.eval_shape(self.task.init_state, jax.random.key(0), 1e-3)
        example = jax.eval_shape(self.observe, abstract.params, abstract.params, jnp.float32(1e-3), jnp.float32(1.0))
        return self.network.init(key, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), example))

    # ---- batched, jitted programs (leading axis = environments) ------------------------------------------
    @functools.partial(jax.jit, static_argnums=0)
    def reset(self, keys: jnp.ndarray, train_data: Batch, val_data: Batch,
              initial_lrs: jnp.ndarray | None = None) -> tuple[PyTree, EnvState, StepInfo]:
        if initial_lrs is None:
            return jax.vmap(self.env.reset, in_axes=(0, None, None))(keys, train_data, val_data)
        return jax.vmap(self.env.reset, in_axes=(0, None, None, 0))(keys, train_data, val_data, initial_lrs)

    @functools.partial(jax.jit, static_argnums=(0, 7))
    def decision_step(self, agent_params: PyTree, keys: jnp.ndarray, env_state: EnvState, obs: PyTree,
                      validate: jnp.ndarray, data: tuple[Batch, Batch], deterministic: bool = False):
        """Policy + Eq. 4 + K optimizer steps + features (+ validation when ``validate``) for every environment.

        ``validate`` is one coin shared by the batch, so ``lax.cond`` inside the environment stays a real branch.
        """
        train_data, val_data = data

        def one_env(key, state, o):
            dist, value = self.apply(agent_params, o)
            action, log_prob = select_action(key, dist, deterministic)
            next_obs, state, info = self.env.step(state, action, validate, train_data, val_data)
            return next_obs, state, info, ActOutput(obs=o, action=action, value=value, log_prob=log_prob)

        return jax.vmap(one_env)(keys, env_state, obs)

    @functools.partial(jax.jit, static_argnums=0)
    def ppo_update(self, key: jnp.ndarray, ppo_state: PPOState, trajectory: Transition):
        """One PPO update (Eq. 5-6) on a finished episode; episodes end at T, so nothing is bootstrapped."""
        return ppo_update(key, ppo_state, trajectory, jnp.zeros(trajectory.reward.shape[1:]), self.apply, self.ppo)

    @functools.partial(jax.jit, static_argnums=0)
    def values(self, agent_params: PyTree, obs: PyTree) -> jnp.ndarray:
        """V(s) for a batch of observations (deployment picks the initial LR by it, §4.3)."""
        return jax.vmap(lambda o: self.apply(agent_params, o)[1])(obs)

    @functools.partial(jax.jit, static_argnums=0)
    def evaluate(self, env_state: EnvState, split_data: Batch) -> jnp.ndarray:
        """The task metric of every environment's target on one split."""
        return jax.vmap(lambda s: self.task.evaluate_split(s.target, split_data)["metric"])(env_state)
