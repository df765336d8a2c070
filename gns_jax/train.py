"""Agent training (Algorithm 1): episodes of target training driven by the policy, one PPO update per episode.

Each episode: sample alpha_1 ~ D_alpha and initialize ``agent.num_envs`` targets (vmapped); at every decision point
the policy acts, K optimizer steps run, the new graph state is observed and, with probability p, the validation
metric is measured (one jitted program per decision step); at the end the Eq. 3 rewards are assembled and PPO
(Eq. 5-6, App. D) updates the agent on all environments' transitions.

Every episode's randomness is ``fold_in(key(seed), episode)``, and after every episode the agent (parameters, both
Adam states), the RNG key, the episode counter and the logged history are checkpointed with orbax. Rerunning with
the same workdir resumes after the last finished episode, and the resumed run ends with exactly the agent an
uninterrupted run would have (on CPU). Logs: TensorBoard and ``episodes.csv`` under ``workdir/logs``, LR
trajectories in ``workdir/lr_trajectories.png``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import struct
from tqdm.auto import tqdm

from gns_jax import checkpoints
from gns_jax.agent import Agent
from gns_jax.env import episode_rewards, validation_coins
from gns_jax.metric_writers import MetricWriter
from gns_jax.plots import plot_lr_trajectories
from gns_jax.ppo import PPOState, Transition, init_ppo_state
from gns_jax.targets.task import Task

PyTree = Any
CHECKPOINT_DIR = "checkpoints"


@struct.dataclass
class AgentTrainState:
    """What a checkpoint holds (besides the JSON history)."""

    ppo: PPOState  # agent parameters and both Adam states
    key: jnp.ndarray  # raw key data of the run's base key
    episode: jnp.ndarray  # episodes finished


def stack(items: list) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *items)


def run_episode(agent: Agent, agent_params: PyTree, key: jnp.ndarray, num_envs: int, progress=None) -> dict:
    """Roll out one episode on ``num_envs`` vmapped environments; returns the trajectory and per-env summaries."""
    env_cfg = agent.env.config
    task = agent.task
    data = (task.device_data["train"], task.device_data["val"])
    reset_key, coin_key, act_key = jax.random.split(key, 3)
    coins = np.asarray(validation_coins(coin_key, env_cfg.num_decisions, env_cfg.validation_prob))
    obs, env_state, reset_info = agent.reset(jax.random.split(reset_key, num_envs), *data)
    acts, infos = [], []
    for t in range(env_cfg.num_decisions - 1):
        keys = jax.random.split(jax.random.fold_in(act_key, t), num_envs)
        obs, env_state, info, act = agent.decision_step(agent_params, keys, env_state, obs, jnp.asarray(coins[t + 1]),
                                                        data)
        acts.append(act)
        infos.append(info)
        if progress is not None:
            progress.update(1)
    acts, infos = stack(acts), stack(infos)  # leading axes [N - 1, num_envs]
    rewards, valid = jax.vmap(episode_rewards, in_axes=(1, 0, None), out_axes=1)(
        infos, reset_info, env_cfg.divergence_penalty)
    trajectory = Transition(obs=acts.obs, action=acts.action, reward=rewards, done=infos.done, value=acts.value,
                            log_prob=acts.log_prob, valid=valid)
    test_metric = agent.evaluate(env_state, task.device_data["test"])
    return {"trajectory": trajectory, "env_state": env_state, "reset_info": reset_info, "infos": infos,
            "test_metric": test_metric}


def episode_summary(episode: int, rollout: dict, wall_seconds: float, k: int) -> dict:
    """JSON-ready summary of one episode (averaged over environments; LR trajectory of environment 0)."""
    traj, infos, reset_info = rollout["trajectory"], rollout["infos"], rollout["reset_info"]
    returns = np.asarray(jnp.sum(traj.reward, axis=0))
    lrs = np.concatenate([np.asarray(reset_info.learning_rate)[None], np.asarray(infos.learning_rate)], axis=0)
    final_val = np.asarray(rollout["env_state"].last_metric)
    return {
        "episode": episode,
        "return": float(returns.mean()),
        "val_metric": float(final_val.mean()),
        "test_metric": float(np.mean(rollout["test_metric"])),
        "initial_lr": float(lrs[0, 0]),
        "diverged": int(np.asarray(rollout["env_state"].diverged).sum()),
        "wall_seconds": wall_seconds,
        "lr_trajectory": [float(x) for x in lrs[:, 0]],
        "decision_interval": k,
    }


def initial_agent_state(agent: Agent, config: ml_collections.ConfigDict) -> AgentTrainState:
    key = jax.random.key(config.seed)
    params = agent.init_params(jax.random.fold_in(key, 10**6))
    if config.agent.init_checkpoint:
        params = load_agent_params(config.agent.init_checkpoint, params)
        logging.info("agent initialized from %s", config.agent.init_checkpoint)
    return AgentTrainState(ppo=init_ppo_state(params, agent.ppo), key=jax.random.key_data(key),
                           episode=jnp.zeros((), jnp.int32))


def load_agent_params(path: str, like_params: PyTree) -> PyTree:
    """Agent parameters from a ``train_agent`` checkpoint (a directory of steps, or one step directory)."""
    directory, step = checkpoints.split_checkpoint_path(path)
    return checkpoints.restore_subtree(directory, ("ppo", "params"), like_params, step)


def train_agent(config: ml_collections.ConfigDict, workdir: str, task: Task | None = None,
                stop_after: int | None = None, progress: bool = True) -> dict:
    """Algorithm 1 for ``config.agent.episodes`` episodes (resuming from ``workdir`` when it has a checkpoint).

    ``stop_after`` ends the call after that many new episodes (it simulates an interruption in tests).
    """
    from gns_jax.targets.build import build_task

    task = task or build_task(config)
    agent = Agent(task, config)
    ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    state = initial_agent_state(agent, config)
    history: dict = {"episodes": []}
    if checkpoints.latest_step(ckpt_dir) is not None:
        state, history, step = checkpoints.restore(ckpt_dir, state)
        logging.info("resuming after episode %d from %s", step, ckpt_dir)
    base_key = jax.random.wrap_key_data(state.key)
    total = int(config.agent.episodes)
    first = int(state.episode)
    num_decisions = agent.env.config.num_decisions
    bar = tqdm(total=(total - first) * (num_decisions - 1), desc="decision steps", unit="step",
               disable=not progress)
    with MetricWriter(os.path.join(workdir, "logs"), csv_name="episodes.csv") as writer:
        for episode in range(first, total):
            if stop_after is not None and episode - first >= stop_after:
                break
            start = time.time()
            bar.set_description(f"episode {episode + 1}/{total}")
            ep_key = jax.random.fold_in(base_key, episode)
            rollout = run_episode(agent, state.ppo.params, ep_key, config.agent.num_envs, bar)
            ppo_state, metrics = agent.ppo_update(jax.random.fold_in(ep_key, 1), state.ppo, rollout["trajectory"])
            state = state.replace(ppo=ppo_state, episode=jnp.asarray(episode + 1, jnp.int32))
            summary = episode_summary(episode, rollout, time.time() - start, agent.env.config.decision_interval)
            summary.update({f"ppo_{k}": float(v) for k, v in metrics.items()})
            history["episodes"].append(summary)
            writer.write(episode, {k: v for k, v in summary.items() if isinstance(v, int | float)})
            writer.flush()
            path = checkpoints.save(ckpt_dir, episode + 1, state, history)
            history["agent_checkpoint"] = path
            bar.write(f"episode {episode + 1}: return {summary['return']:+.4f}  val {summary['val_metric']:.4f}  "
                      f"test {summary['test_metric']:.4f}  initial lr {summary['initial_lr']:.2e}")
    bar.close()
    latest = checkpoints.latest_step(ckpt_dir)
    results = {
        "episodes": [{k: e[k] for k in ("episode", "return", "val_metric", "test_metric", "initial_lr", "diverged",
                                         "wall_seconds")} for e in history["episodes"]],
        "agent_checkpoint": os.path.join(os.path.abspath(ckpt_dir), str(latest)) if latest is not None else None,
        "episodes_finished": int(state.episode),
    }
    if history["episodes"]:
        plot_lr_trajectories(
            {f"episode {e['episode'] + 1}": e["lr_trajectory"] for e in history["episodes"]},
            config.decision_interval, os.path.join(workdir, "lr_trajectories.png"),
            title=f"Learning rate per episode ({config.model.name} on {config.data.name})")
        results["plot"] = os.path.join(workdir, "lr_trajectories.png")
    return {"results": results, "agent": agent, "state": state}
