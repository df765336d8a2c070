"""The GNS scheduler agent: graph encoder + actor-critic heads, and the one-program decision step.

``Agent`` ties the pieces of §4 together for one target architecture: the static graph structure of the target
(``gns_jax.graph``), the encoder chosen by ``AgentSettings.encoder`` (hierarchical GCN, GAT, or the CSS/SRLS
ablations), the heads of Eq. 4 and the environment. ``Agent.decision_step`` is one XLA program per decision:
policy on the current observation, alpha <- alpha (1 + a), K optimizer steps, node features and (maybe) validation
— for a whole batch of environments at once: vmapped, or one after the other in the same program
(``AgentSettings.env_batching``, ``over_envs``).

Each program is one ``jax.jit`` over arrays whose leading axis is the environment, on one device or several:
the layout is where the arrays are, not another program. ``gns_jax.train.run_episode`` places the environment
axis split over a ``Mesh`` of devices (``gns_jax.parallel.split_envs``) and the agent parameters and data
replicated (``gns_jax.parallel.replicate``); the compiler partitions the same program over the devices, and the
PPO update's means over the environments become sums across them, so every device ends with the same agent, the
agent one device would train on all the environments.

``follow_policy`` is deployment in one program: the deterministic policy acting every K steps for a whole run.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from gns_jax.env import EnvState, LREnvironment, StepInfo
from gns_jax.gcn import make_encoder
from gns_jax.graph import FEATURE_NAMES, build_graph_structure, node_features
from gns_jax.obs_norm import update_agent_stats
from gns_jax.policy import ActorCritic, PolicyStep, decide
from gns_jax.ppo import PPOState, Transition, ppo_update
from gns_jax.settings import AgentSettings
from gns_jax.targets.task import (
    Batch,
    TargetState,
    Task,
    batch_indices,
    get_learning_rate,
    set_learning_rate,
)

PyTree = Any
MEAN_FEATURES = [FEATURE_NAMES.index("weight_mean"), FEATURE_NAMES.index("bias_mean")]


def over_envs(fn, batching: str, in_axes: tuple, *args):
    """``fn`` on every environment of the leading axis of the ``in_axes == 0`` arguments, outputs stacked.

    ``batching='vmap'`` is ``jax.vmap(fn, in_axes)``. ``'loop'`` calls ``fn`` once per environment inside the same
    program: the targets do not share a batched computation, which is faster for convolutional targets (vmapped
    per-environment convolutions become one slow grouped convolution), and a ``lax.cond`` on an environment's own
    state stays a real branch. The results are the same.
    """
    if batching == "vmap":
        return jax.vmap(fn, in_axes=in_axes)(*args)
    n = next(jax.tree.leaves(x)[0].shape[0] for x, axis in zip(args, in_axes, strict=True) if axis == 0)
    outs = [fn(*(jax.tree.map(lambda v, i=i: v[i], x) if axis == 0 else x for x, axis in zip(args, in_axes,
                                                                                              strict=True)))
            for i in range(n)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


@struct.dataclass
class ActOutput:
    """What the agent did at one decision point (the policy part of a PPO ``Transition``)."""

    obs: PyTree
    action: jnp.ndarray
    value: jnp.ndarray
    log_prob: jnp.ndarray


@struct.dataclass
class PolicyRun:
    """What ``follow_policy`` returns: the trained target and one entry per decision."""

    target: TargetState
    learning_rates: jnp.ndarray  # [num_decisions] alpha used for each block of K steps
    mean_losses: jnp.ndarray  # [num_decisions] mean training loss of each block
    finite: jnp.ndarray  # False once a loss or a parameter stopped being finite


class Agent:
    """Encoder + heads + environment for one target task (all static; the functions below are pure).

    Built from the task and its frozen ``AgentSettings``; the jitted programs below are keyed on exactly those
    two, so agents of the same task and settings share compiled programs.
    """

    def __init__(self, task: Task, settings: AgentSettings):
        self.task = task
        self.settings = settings
        abstract = jax.eval_shape(task.init_state, jax.random.key(0), 1e-3)
        self.structure = build_graph_structure(settings.architecture, abstract.params)
        self.network = ActorCritic(
            encoder=make_encoder(settings.encoder, self.structure, hidden=settings.encoder_hidden,
                                 layers=settings.encoder_layers),
            action_scale=settings.action_scale, sigma=settings.sigma, hidden=settings.head_hidden,
            obs_norm=settings.obs_norm)
        self.env = LREnvironment(task, self.observe, settings.env)
        self.ppo = settings.ppo

    def __hash__(self) -> int:
        return hash((id(self.task), self.settings))

    def __eq__(self, other) -> bool:
        return isinstance(other, Agent) and self.task is other.task and self.settings == other.settings

    def observe(self, params, grads, lr, loss, progress=0.0):
        """Node features of §4.1, with the observation options of the settings (both off in the paper).

        ``progress`` is t / (N - 1) for decision point t; it becomes a ninth global feature with
        ``progress_feature``; ``mean_features = False`` zeroes the weight/bias mean features.
        """
        obs = node_features(self.structure, params, grads, lr, loss)
        nodes = obs.nodes
        if not self.settings.mean_features:
            nodes = nodes.at[:, MEAN_FEATURES].set(0.0)
        if self.settings.progress_feature:
            column = jnp.broadcast_to(jnp.asarray(progress, nodes.dtype), (nodes.shape[0], 1))
            nodes = jnp.concatenate([nodes, column], axis=1)
        return obs.replace(nodes=nodes)

    def apply(self, agent_params: PyTree, obs: PyTree):
        return self.network.apply(agent_params, obs)

    def decide(self, agent_params: PyTree, obs: PyTree, learning_rate, key: jnp.ndarray | None = None,
               deterministic: bool | jnp.ndarray = True) -> PolicyStep:
        """Eq. 4 with this agent's network and clip range (``gns_jax.policy.decide``): the next alpha, a, log pi, V."""
        cfg = self.env.config
        return decide(self.apply, agent_params, obs, learning_rate, cfg.lr_min, cfg.lr_max, key, deterministic)

    def init_params(self, key: jnp.ndarray) -> PyTree:
        abstract = jax.eval_shape(self.task.init_state, jax.random.key(0), 1e-3)
        example = jax.eval_shape(self.observe, abstract.params, abstract.params, jnp.float32(1e-3), jnp.float32(1.0),
                                 jnp.float32(0.0))
        return self.network.init(key, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), example))

    # ---- the programs (leading axis = environments; one program on one device or several) -----------------
    def reset(self, keys: jnp.ndarray, train_data: Batch, val_data: Batch,
              initial_lrs: jnp.ndarray | None = None) -> tuple[PyTree, EnvState, StepInfo]:
        """Sample alpha_1 (or take ``initial_lrs``), initialize every target and run its first K steps."""
        return self._reset(keys, train_data, val_data, initial_lrs, self.task.pretrained)

    @functools.partial(jax.jit, static_argnums=0)
    def _reset(self, keys, train_data, val_data, initial_lrs, pretrained):
        lr_axis = None if initial_lrs is None else 0
        # Pretrained weights (fine-tuning) are an argument shared by the batch, never baked-in constants.
        return over_envs(self.env.reset, self.settings.env_batching, (0, None, None, lr_axis, None),
                         keys, train_data, val_data, initial_lrs, pretrained)

    @functools.partial(jax.jit, static_argnums=(0, 7))
    def decision_step(self, agent_params: PyTree, keys: jnp.ndarray, env_state: EnvState, obs: PyTree,
                      validate: jnp.ndarray, data: tuple[Batch, Batch], deterministic: bool = False):
        """Policy + Eq. 4 + K optimizer steps + features (+ validation when ``validate``) for every environment.

        ``validate`` is one coin shared by the batch, so ``lax.cond`` inside the environment stays a real branch.
        """
        train_data, val_data = data
        # The last point is always validated; added here, outside the vmap, so the predicate stays unbatched.
        validate = validate | (jnp.max(env_state.t) + 1 >= self.env.config.num_decisions - 1)

        def one_env(key, state, o):
            d = self.decide(agent_params, o, get_learning_rate(state.target.opt_state), key, deterministic)
            next_obs, state, info = self.env.step(state, d.learning_rate, validate, train_data, val_data)
            return next_obs, state, info, ActOutput(obs=o, action=d.action, value=d.value, log_prob=d.log_prob)

        return over_envs(one_env, self.settings.env_batching, (0, 0, 0), keys, env_state, obs)

    @functools.partial(jax.jit, static_argnums=0)
    def ppo_update(self, key: jnp.ndarray, ppo_state: PPOState, trajectory: Transition,
                   last_value: jnp.ndarray | None = None):
        """One PPO update (Eq. 5-6) on an episode's ``[T, envs]`` trajectory.

        ``last_value`` bootstraps environments whose episode was cut before it ended (truncated episodes); an
        episode that reached T (or diverged) is marked done and nothing is bootstrapped there. With the
        environments split over devices the gradient means are global (the partitioner sums over the devices).
        """
        if last_value is None:
            last_value = jnp.zeros(trajectory.reward.shape[1:])
        return ppo_update(key, ppo_state, trajectory, last_value, self.apply, self.ppo)

    @functools.partial(jax.jit, static_argnums=0)
    def update_obs_stats(self, agent_params: PyTree, trajectory: Transition) -> tuple[PyTree, Transition]:
        """``agent.obs_norm``: merge the episode's observations into the running statistics (``gns_jax.obs_norm``).

        Returns the new parameters and the trajectory with log pi(a|s) and V(s) recomputed under them, so the PPO
        update that follows starts at probability ratio 1.
        """
        agent_params = update_agent_stats(agent_params, trajectory.obs, trajectory.valid)
        lead = trajectory.reward.shape
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[len(lead):]), trajectory.obs)
        dist, value = self.apply(agent_params, flat)
        log_prob = dist.log_prob(trajectory.action.reshape((-1,) + trajectory.action.shape[len(lead):]))
        return agent_params, trajectory.replace(log_prob=log_prob.reshape(trajectory.log_prob.shape),
                                                value=value.reshape(trajectory.value.shape))

    @functools.partial(jax.jit, static_argnums=0)
    def values(self, agent_params: PyTree, obs: PyTree) -> jnp.ndarray:
        """V(s) for a batch of observations (deployment picks the initial LR by it, §4.3)."""
        return jax.vmap(lambda o: self.apply(agent_params, o)[1])(obs)

    @functools.partial(jax.jit, static_argnums=0)
    def mean_actions_and_values(self, agent_params: PyTree, obs: PyTree) -> tuple[jnp.ndarray, jnp.ndarray]:
        """mu(s) (the deterministic action of §4.3) and V(s) for a batch of observations."""
        def one(o):
            dist, value = self.apply(agent_params, o)
            return dist.mean(), value
        return jax.vmap(one)(obs)

    @functools.partial(jax.jit, static_argnums=0)
    def evaluate(self, env_state: EnvState, split_data: Batch) -> jnp.ndarray:
        """The task metric of every environment's target on one split."""
        return over_envs(lambda s: self.task.evaluate_split(s.target, split_data)["metric"],
                         self.settings.env_batching, (0,), env_state)

    # ---- deployment in one program ----------------------------------------------------------------------
    @functools.partial(jax.jit, static_argnums=(0, 5))
    def follow_policy(self, agent_params: PyTree, target: TargetState, mean_loss: jnp.ndarray, train_data: Batch,
                      num_decisions: int, first_point: int | jnp.ndarray = 0) -> PolicyRun:
        """``num_decisions`` decisions of the deterministic policy (§4.3: a = mu(s), Eq. 4) in one program.

        Each decision observes the graph state (node features, §4.1), decides alpha <- clip(alpha (1 + mu))
        (``decide``) and takes K optimizer steps (``Task.scan_steps``); no validation and no host round trips. The
        batches are those of ``Task.train_scan`` (same order, same per-step keys), but their indices are drawn
        once for the whole run: ``train_scan`` draws the epoch permutations of the training set at every call,
        which at small K costs more than the K steps themselves.
        """
        task, cfg = self.task, self.env.config
        k = cfg.decision_interval
        num_examples = jax.tree.leaves(train_data)[0].shape[0]
        indices = batch_indices(target.data_key, target.step, num_decisions * k, num_examples, task.batch_size)
        last_point = max(cfg.num_decisions - 1, 1)

        def one_decision(carry, xs):
            target, loss, finite = carry
            t, idx = xs  # t: the decision point observed (the one after reset is 0)
            lr = get_learning_rate(target.opt_state)
            progress = jnp.minimum(t, last_point) / last_point
            obs = self.observe(target.params, target.grads, lr, loss, progress)
            lr = self.decide(agent_params, obs, lr).learning_rate
            target = target.replace(opt_state=set_learning_rate(target.opt_state, lr))
            target, stats = task.scan_steps(target, train_data, idx)
            return (target, stats.mean_loss, finite & stats.finite), (lr, stats.mean_loss)

        init = (target, jnp.asarray(mean_loss, jnp.float32), jnp.asarray(True))
        points = first_point + jnp.arange(num_decisions)
        (target, _, finite), (lrs, losses) = jax.lax.scan(one_decision, init,
                                                          (points, indices.reshape((num_decisions, k, -1))))
        return PolicyRun(target=target, learning_rates=lrs, mean_losses=losses, finite=finite)
