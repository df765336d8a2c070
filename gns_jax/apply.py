"""Using a trained scheduler (§4.3): pick the initial learning rate by V(s), then follow the policy's mean action.

``deploy`` samples ``candidates`` initial learning rates (log-spaced over the prior D_alpha), runs each for
T_pre = ``pre_decisions`` * K steps under the deterministic policy (all candidates in one vmapped program,
from the same initial weights), keeps the candidate whose state has the largest critic value V(s_{T_pre}) (or,
with ``DeployOptions.selection = 'metric'``, beyond the paper, the best validation metric at T_pre), and
trains it with a = mu (Eq. 4, no exploration noise) for the N = T // K decision intervals the agent was trained on.
When K does not divide T, the last T - N K steps run at the last learning rate, so a deployment takes exactly the T
steps a baseline run takes. The target starts from ``Task.init(jax.random.key(seed), lr)``, the initial state
of a baseline run with the same seed (paired seeds). Validation runs only at the end.

``LearnedScheduler`` is the same policy as a drop-in for a hand-written optax loop: given the params, the last
gradients, the mean loss since the last call and the current learning rate, it returns the next learning rate.

``AgentController`` puts a trained agent behind the controller interface of the baselines
(``gns_jax.controllers``), so ``compare`` runs GNS and its ablations like any other method: by ``deploy``, or from
a given initial learning rate through the baselines' own run loop.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gns_jax.agent import Agent
from gns_jax.checkpoints import load_agent_params
from gns_jax.controllers import Controller, Decision, Observation
from gns_jax.runtime import machine
from gns_jax.scheduled import TrainedPolicy
from gns_jax.settings import DeployOptions, agent_settings
from gns_jax.targets.build import build_task
from gns_jax.targets.task import Task

PyTree = Any


def candidate_lrs(low: float, high: float, num: int) -> np.ndarray:
    """Initial learning rates tried at deployment: log-spaced over the prior's range."""
    return np.geomspace(low, high, num).astype(np.float32) if num > 1 else np.asarray([np.sqrt(low * high)],
                                                                                       np.float32)


def select_initial_lr(values: jnp.ndarray) -> int:
    """Index of the candidate with the largest value V(s_{T_pre}) (ties: the first); NaN values never win."""
    values = np.where(np.isfinite(np.asarray(values)), np.asarray(values), -np.inf)
    return int(np.argmax(values))


def deploy(agent: Agent, agent_params: PyTree, options: DeployOptions,
           value_fn: Callable[[PyTree], jnp.ndarray] | None = None, progress=None) -> dict:
    """§4.3 deployment; ``value_fn(obs_batch) -> values`` defaults to the agent's critic (tests pass a stub)."""
    start = time.time()
    task = agent.task
    env_cfg = agent.env.config
    data = (task.device_data["train"], task.device_data["val"])
    num_decisions = env_cfg.num_decisions
    pre = int(min(max(1, options.pre_decisions), num_decisions - 1))
    lrs = candidate_lrs(env_cfg.prior_lr_min, env_cfg.prior_lr_max, options.candidates)
    key = jax.random.key(options.seed)
    # The same target initialization for every candidate (that of a baseline run with this seed): only the initial
    # learning rate differs.
    reset_keys = jnp.broadcast_to(jax.random.key_data(key), (len(lrs), 2))
    obs, env_state, reset_info = agent.reset(jax.random.wrap_key_data(reset_keys), *data, jnp.asarray(lrs))
    trajectories = [[float(x)] for x in lrs]
    no = jnp.asarray(False)
    dummy_keys = jax.random.split(key, len(lrs))
    for _ in range(pre - 1):
        obs, env_state, info, _ = agent.decision_step(agent_params, dummy_keys, env_state, obs, no, data, True)
        for traj, lr in zip(trajectories, np.asarray(info.learning_rate), strict=True):
            traj.append(float(lr))
    values = agent.values(agent_params, obs) if value_fn is None else value_fn(obs)
    selection = options.selection
    pre_metrics = None
    if selection == "metric":  # beyond the paper: the validation metric after T_pre instead of V(s)
        pre_metrics = agent.evaluate(env_state, data[1])
        best = select_initial_lr(pre_metrics if task.higher_is_better else -pre_metrics)
    else:
        best = select_initial_lr(values)
    take = lambda tree: jax.tree.map(lambda x: x[best:best + 1], tree)
    obs, env_state = take(obs), take(env_state)
    lr_trajectory = trajectories[best]
    for _ in range(pre - 1, num_decisions - 1):
        obs, env_state, info, _ = agent.decision_step(agent_params, dummy_keys[:1], env_state, obs, no, data, True)
        lr_trajectory.append(float(info.learning_rate[0]))
        if progress is not None:
            progress.update(1)
    target = jax.tree.map(lambda x: x[0], env_state.target)
    diverged = bool(np.asarray(env_state.diverged)[0])
    tail = options.steps - num_decisions * env_cfg.decision_interval
    if tail > 0 and not diverged:  # T - N K remaining steps at the last learning rate
        target, stats = task.train_steps(target, tail)
        diverged = not bool(stats.finite)
        lr_trajectory.append(lr_trajectory[-1])
    val = float(task.evaluate(target, "val")["metric"])
    test = float(task.evaluate(target, "test")["metric"])
    return {
        "test_metric": test,
        "val_metric": val,
        "metric_name": task.metric_name,
        "initial_lr": float(lrs[best]),
        "candidate_lrs": [float(x) for x in lrs],
        "candidate_values": [float(v) for v in np.asarray(values)],
        "deploy_selection": selection,
        **({"candidate_metrics": [float(v) for v in np.asarray(pre_metrics)]} if pre_metrics is not None else {}),
        "lr_trajectory": lr_trajectory,
        "diverged": diverged,
        "steps": int(target.step),
        "wall_seconds": time.time() - start,
        "machine": machine(),
        "reset_metric": [float(x) for x in np.asarray(reset_info.metric)],
    }


class LearnedScheduler:
    """A trained GNS policy as a learning-rate function for your own optax loop.

    Example (``params``/``grads`` of the same architecture the agent was built for)::

        scheduler = LearnedScheduler.from_checkpoint(config, checkpoint_path)
        lr = 1e-3
        for k_steps in range(num_decisions):
            ...  # K optimizer steps with opt_state.hyperparams["learning_rate"] = lr; keep the last grads, mean loss
            lr = scheduler(params, grads, mean_loss, lr)

    The call is one jitted program: node features (§4.1), the encoder, mu = 0.1 tanh(m_f(h)) and
    alpha (1 + mu) clipped to the agent's [lr_min, lr_max] (Eq. 4).
    """

    def __init__(self, agent: Agent, agent_params: PyTree):
        self.agent = agent
        self.params = agent_params
        policy = TrainedPolicy.from_agent(agent, agent_params)
        # The agent's parameters are an argument of the program, not constants baked into it.
        self._decide = jax.jit(lambda p, params, grads, loss, lr, progress: dataclasses.replace(
            policy, params=p).decide(params, grads, lr, loss, progress))

    @classmethod
    def from_checkpoint(cls, config: ml_collections.ConfigDict, path: str, task: Task | None = None):
        """The policy ``train_agent`` saved under ``config`` (``task`` defaults to ``build_task(config)``)."""
        agent = Agent(task or build_task(config), agent_settings(config))
        return cls(agent, load_agent_params(path, agent.init_params(jax.random.key(0))))

    def __call__(self, params: PyTree, grads: PyTree, mean_loss, learning_rate, progress=0.0) -> jnp.ndarray:
        """The next learning rate; ``progress`` = t / (N - 1) matters only to agents trained with it."""
        return self._decide(self.params, params, grads, jnp.float32(mean_loss), jnp.float32(learning_rate),
                            jnp.float32(progress)).learning_rate

    def value(self, params: PyTree, grads: PyTree, mean_loss, learning_rate, progress=0.0) -> jnp.ndarray:
        """The critic's V(s): how promising the current training state looks to the agent."""
        return self._decide(self.params, params, grads, jnp.float32(mean_loss), jnp.float32(learning_rate),
                            jnp.float32(progress)).value


class AgentController(Controller):
    """A trained GNS-style agent (GNS, FRS, CSS, SRLS): deployment by V(s) (§4.3), or the policy from a given LR.

    Args:
      agent: an ``Agent`` built for the task the runs use.
      agent_params: its trained parameters.
      options: the deployment settings (candidates, T_pre, selection rule); each run sets its own seed.
      initial_lr: None deploys with ``deploy``; a number starts there and follows the policy (``Controller.run``).
    """

    def __init__(self, agent: Agent, agent_params: PyTree, options: DeployOptions, initial_lr: float | None = None,
                 name: str = "gns"):
        self.agent = agent
        self.agent_params = agent_params
        self.options = options
        self.initial_lr = initial_lr
        self.name = name
        self._scheduler = None

    def initial_learning_rate(self) -> float:
        return float(self.initial_lr)

    def learning_rate(self, step: int, obs: Observation) -> Decision:
        if obs.decision == 0:
            return self.initial_learning_rate()
        if self._scheduler is None:
            self._scheduler = LearnedScheduler(self.agent, self.agent_params)
        t = obs.target
        return float(self._scheduler(t.params, t.grads, obs.mean_loss, obs.learning_rate))

    def run(self, task: Task, steps: int, decision_interval: int, seed: int, progress: bool = False) -> dict:
        if self.initial_lr is not None:
            return super().run(task, steps, decision_interval, seed, progress)
        if task is not self.agent.task:
            raise ValueError("deployment runs on the agent's own task")
        env_cfg = self.agent.env.config
        if (int(steps) // int(decision_interval), int(decision_interval)) != (env_cfg.num_decisions,
                                                                               env_cfg.decision_interval):
            raise ValueError("deployment runs the agent's own T and K")
        options = dataclasses.replace(self.options, seed=int(seed), steps=int(steps))
        out = deploy(self.agent, self.agent_params, options)
        lrs = list(out["lr_trajectory"])
        return {
            "val_metric": out["val_metric"],
            "test_metric": out["test_metric"],
            "metric_name": out["metric_name"],
            "higher_is_better": task.higher_is_better,
            "steps": out["steps"],
            "diverged": out["diverged"],
            "wall_seconds": out["wall_seconds"],
            "machine": out["machine"],
            "decision_interval": int(decision_interval),
            "lr_trajectory": lrs + [math.nan] * (len(range(0, int(steps), int(decision_interval))) - len(lrs)),
            "initial_lr": out["initial_lr"],
            "candidate_lrs": out["candidate_lrs"],
            "candidate_values": out["candidate_values"],
        }

