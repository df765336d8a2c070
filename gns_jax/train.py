"""Agent training (Algorithm 1): episodes of target training driven by the policy, one PPO update per episode.

Each episode: sample alpha_1 ~ D_alpha and initialize ``agent.num_envs`` targets per device (vmapped) on
``agent.num_devices`` devices (the environment axis split over them); at every decision point the policy acts, K
optimizer steps run, the new graph state is observed and, with probability p, the validation metric is measured
(one program per decision step for all environments, one validation coin for all of them); at the end the Eq. 3
rewards are assembled and PPO (Eq. 5-6, App. D) updates the agent on all environments' transitions (one program
whatever the number of devices: with several, its means over the environments span them all, so the devices hold
one agent).

``train_agent(config, workdir)`` is the entry: it reads the config once into ``AgentSettings`` (the agent) and
``TrainingOptions`` (how the loop runs, ``gns_jax.settings``); everything below it takes those.

Cheaper episodes (§6): ``agent.truncated_episodes`` early episodes stop at ``agent.truncated_fraction`` of T (PPO
bootstraps the cut with V(s) of the last state), and ``agent.val_subsample`` validates the Eq. 3 rewards on a random
subset of the validation split, drawn anew each episode.

With ``agent.obs_norm`` each episode's observations are merged into the policy's running feature statistics
before its PPO update (``gns_jax.obs_norm``).

Every episode's randomness is ``fold_in(key(seed), episode)``; environment e of an episode draws its keys as
``split(key, total environments)[e]``, so the same total number of environments gives the same episodes on one
device or several. After every ``agent.checkpoint_every`` episodes the agent (parameters, both Adam states), the RNG
key, the episode counter and the logged history are checkpointed with orbax. Rerunning with the same workdir resumes
after the last saved episode, and the resumed run ends with exactly the agent an uninterrupted run would have (on
CPU). Logs: TensorBoard and ``episodes.csv`` under ``workdir/logs``, LR trajectories in
``workdir/lr_trajectories.png``.
"""

from __future__ import annotations

import csv
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

from gns_jax import checkpoints, parallel
from gns_jax.agent import Agent
from gns_jax.checkpoints import load_agent_params
from gns_jax.env import episode_rewards, mark_collapses, validation_coins
from gns_jax.metric_writers import MetricWriter
from gns_jax.plots import plot_lr_trajectories
from gns_jax.ppo import PPOState, Transition, init_ppo_state
from gns_jax.probe import build_probe_set, evaluate_probe
from gns_jax.runtime import machine
from gns_jax.settings import TrainingOptions, agent_settings, training_options
from gns_jax.targets.build import build_task
from gns_jax.targets.task import Batch, Task
from gns_jax.workdir import claim

PyTree = Any
CHECKPOINT_DIR = "checkpoints"
PROBE_FIELDS = ("probe_mu_mean", "probe_spread", "probe_slope", "probe_late_minus_early", "probe_value_slope")


@struct.dataclass
class AgentTrainState:
    """What a checkpoint holds (besides the JSON history)."""

    ppo: PPOState  # agent parameters and both Adam states
    key: jnp.ndarray  # raw key data of the run's base key
    episode: jnp.ndarray  # episodes finished


def episode_decisions(options: TrainingOptions, episode: int, num_decisions: int) -> int:
    """Decision points of ``episode``: truncated early episodes (§6's cheaper episodes) or all N.

    The first ``truncated_episodes`` episodes stop after ``truncated_fraction`` of T (at least two decision points,
    one action); later episodes run to T.
    """
    if episode < options.truncated_episodes:
        return int(min(num_decisions, max(2, round(options.truncated_fraction * num_decisions))))
    return num_decisions


def validation_subset(val_data: Batch, key: jnp.ndarray, size: int) -> Batch:
    """``size`` validation examples drawn without replacement (all of them when ``size`` is 0 or too large)."""
    n = int(jax.tree.leaves(val_data)[0].shape[0])
    if size <= 0 or size >= n:
        return val_data
    idx = jax.random.choice(key, n, (size,), replace=False)
    return jax.tree.map(lambda a: a[idx], val_data)


def run_episode(agent: Agent, agent_params: PyTree, key: jnp.ndarray, num_envs: int, progress=None, *,
                num_devices: int = 1, num_decisions: int | None = None,
                data: tuple[Batch, Batch] | None = None, group_size: int = 1, reward_scale: float = 1.0) -> dict:
    """Roll out one episode on ``num_envs`` vmapped environments per device, on ``num_devices`` devices.

    Args:
      agent, agent_params: the agent and its parameters.
      key: the episode's key; environment e of the D * N uses ``split(.., D * N)[e]`` whatever D is.
      num_envs: environments per device (N).
      num_devices: devices (D) the environments are split over (the same programs whatever D is).
      num_decisions: decision points of this episode (< N for a truncated episode; default all).
      data: (train, val) data, replicated over the devices (default: the task's own).
      group_size: consecutive environments sharing the reset key (target init, data order, initial LR), so that
        they differ only by the policy's noise (common random numbers); 1 gives every environment its own.
      reward_scale: the trajectory's rewards are the Eq. 3 rewards times this (``rewards`` stays unscaled).
    Returns:
      a dict with the time-major trajectory ``[actions, D * N]``, the bootstrap values ``last_value`` (None for
      full episodes) and the observation they are of (``last_obs``), the final ``env_state``, ``reset_info`` and
      ``infos``, and per-environment ``last_metric``, ``diverged`` (a collapse included, ``env.mark_collapses``),
      ``ended`` (diverged, collapsed or at the last point) and ``test_metric`` ``[D * N]``; with
      a collapse rule (``EnvConfig.collapse_loss_ratio``, ``collapse_below_start``) also ``collapsed``.
    """
    env_cfg = agent.env.config
    task = agent.task
    n = num_decisions or env_cfg.num_decisions
    total = num_envs * num_devices
    # One program on any number of devices: the environment axis is split over them, the rest replicated.
    place = lambda x: parallel.split_envs(x, num_devices)
    data = parallel.replicate((task.device_data["train"], task.device_data["val"]) if data is None else data,
                              num_devices)
    agent_params = parallel.replicate(agent_params, num_devices)
    test_data = parallel.replicate(task.device_data["test"], num_devices)

    reset_key, coin_key, act_key = jax.random.split(key, 3)
    # One coin per decision point for all environments (and devices): lax.cond stays a real branch.
    coins = np.asarray(validation_coins(coin_key, n, env_cfg.validation_prob))
    env_keys = lambda k: place(jax.random.split(k, total))
    if total % group_size:
        raise ValueError(f"agent.group_size={group_size} must divide the {total} environments of an episode")
    group_keys = jnp.repeat(jax.random.key_data(jax.random.split(reset_key, total // group_size)), group_size, axis=0)
    obs, env_state, reset_info = agent.reset(place(jax.random.wrap_key_data(group_keys)), *data)
    acts, infos = [], []
    for t in range(n - 1):
        keys = env_keys(jax.random.fold_in(act_key, t))
        obs, env_state, info, act = agent.decision_step(agent_params, keys, env_state, obs,
                                                        jnp.asarray(coins[t + 1]), data)
        acts.append(act)
        infos.append(info)
        if progress is not None:
            progress.update(1)
    acts, infos = parallel.stack(acts), parallel.stack(infos)  # leading axes [n - 1, D * N]
    infos, collapsed = jax.vmap(mark_collapses, in_axes=(1, 0, None, None), out_axes=(1, 0))(
        infos, reset_info, env_cfg.collapse_loss_ratio, env_cfg.collapse_below_start)
    ended = env_state.done | collapsed
    rewards, valid = jax.vmap(episode_rewards, in_axes=(1, 0, None), out_axes=1)(
        infos, reset_info, env_cfg.divergence_penalty)
    trajectory = Transition(obs=acts.obs, action=acts.action, reward=rewards * reward_scale, done=infos.done,
                            value=acts.value, log_prob=acts.log_prob, valid=valid)
    # A truncated episode did not end: PPO bootstraps it with V(s) of its last state.
    last_value = (jnp.where(ended, 0.0, agent.values(agent_params, obs)) if n < env_cfg.num_decisions
                  else None)
    return {"trajectory": trajectory, "rewards": rewards, "last_value": last_value, "last_obs": obs,
            "env_state": env_state, "ended": ended,
            "reset_info": reset_info,
            "infos": infos, "last_metric": env_state.last_metric, "diverged": env_state.diverged | collapsed,
            **({"collapsed": collapsed} if env_cfg.detects_collapse else {}),
            "test_metric": agent.evaluate(env_state, test_data)}


def episode_summary(episode: int, rollout: dict, wall_seconds: float, k: int) -> dict:
    """JSON-ready summary of one episode (averaged over environments; LR trajectory of environment 0)."""
    infos, reset_info = rollout["infos"], rollout["reset_info"]
    returns = np.asarray(jnp.sum(rollout["rewards"], axis=0))
    lrs = np.concatenate([np.asarray(reset_info.learning_rate)[None], np.asarray(infos.learning_rate)], axis=0)
    final_val = np.asarray(rollout["last_metric"])
    return {
        "episode": episode,
        "return": float(returns.mean()),
        "val_metric": float(final_val.mean()),
        "test_metric": float(np.mean(rollout["test_metric"])),
        "initial_lr": float(lrs[0, 0]),
        "diverged": int(np.asarray(rollout["diverged"]).sum()),
        "wall_seconds": wall_seconds,
        "lr_trajectory": [float(x) for x in lrs[:, 0]],
        "decision_interval": k,
        "decisions": int(lrs.shape[0]),
        "environments": int(lrs.shape[1]),
        # with a collapse rule (agent.collapse_*): how many of the diverged had collapsed instead
        **({"collapsed": int(np.asarray(rollout["collapsed"]).sum())} if "collapsed" in rollout else {}),
    }


def initial_agent_state(agent: Agent, options: TrainingOptions) -> AgentTrainState:
    key = jax.random.key(options.seed)
    params = agent.init_params(jax.random.fold_in(key, 10**6))
    if options.init_checkpoint:
        params = load_agent_params(options.init_checkpoint, params)
        logging.info("agent initialized from %s", options.init_checkpoint)
    return AgentTrainState(ppo=init_ppo_state(params, agent.ppo), key=jax.random.key_data(key),
                           episode=jnp.zeros((), jnp.int32))


class NonFiniteAgentError(RuntimeError):
    """A PPO update produced non-finite losses or parameters; agent training stops before checkpointing them."""


def check_finite_update(episode: int, metrics: dict, ppo_state: PPOState, ckpt_dir: str) -> None:
    """Raise ``NonFiniteAgentError`` when the update of ``episode`` left a loss or a parameter non-finite."""
    bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v))))
    params_ok = all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(ppo_state.params))
    if not bad and params_ok:
        return
    what = ", ".join(f"{k}={float(np.mean(np.asarray(metrics[k])))}" for k in bad[:3]) or "the agent's parameters"
    latest = checkpoints.latest_step(ckpt_dir)
    raise NonFiniteAgentError(f"the PPO update of episode {episode + 1} is not finite ({what}); agent training "
                              f"stopped, the last good agent is {os.path.join(ckpt_dir, str(latest))}")


def drop_rows_from(csv_path: str, step: int) -> None:
    """Remove the rows of ``step`` and later from a metrics CSV (episodes a resumed run plays again)."""
    if not os.path.isfile(csv_path):
        return
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and float(r[0]) < step]
    if len(kept) == len(rows):
        return
    with open(csv_path + ".tmp", "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(csv_path + ".tmp", csv_path)


def train_agent(config: ml_collections.ConfigDict, workdir: str, task: Task | None = None,
                stop_after: int | None = None, progress: bool = True) -> dict:
    """Algorithm 1 for ``config.agent.episodes`` episodes (resuming from ``workdir`` when it has a checkpoint).

    Each episode runs ``agent.num_envs`` environments on each of ``agent.num_devices`` devices (0 = all local
    devices; one PPO update on all their transitions); the first ``agent.truncated_episodes`` episodes stop at
    ``agent.truncated_fraction`` of T, and ``agent.val_subsample`` > 0 validates on that many examples (a fresh
    draw each episode). A checkpoint is written every ``agent.checkpoint_every`` episodes and after the last one.
    ``stop_after`` ends the call after that many new episodes (it simulates an interruption in tests).
    """
    claim(workdir, "train_agent", config)  # same mode, same settings as the checkpoints already there
    task = task or build_task(config)
    options = training_options(config)
    agent = Agent(task, agent_settings(config))
    num_devices = parallel.resolve_num_devices(options.num_devices)
    ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    state = initial_agent_state(agent, options)
    history: dict = {"episodes": []}
    keep = options.keep_checkpoints or None  # None: orbax keeps every checkpoint
    if checkpoints.latest_step(ckpt_dir) is not None:
        state, history, step = checkpoints.restore(ckpt_dir, state)
        logging.info("resuming after episode %d from %s", step, ckpt_dir)
        drop_rows_from(os.path.join(workdir, "logs", "episodes.csv"), step)  # rows of episodes run after it
    else:  # step 0 is the initial agent: the policy of episode 0 (checkpoint e holds the policy of episode e)
        checkpoints.save(ckpt_dir, 0, state, history, max_to_keep=keep)
    base_key = jax.random.wrap_key_data(state.key)
    total = options.episodes
    first = int(state.episode)
    last = total if stop_after is None else min(total, first + stop_after)
    num_decisions = agent.env.config.num_decisions
    lengths = {e: episode_decisions(options, e, num_decisions) for e in range(first, last)}
    train_data = parallel.replicate(task.device_data["train"], num_devices)
    full_val = parallel.replicate(task.device_data["val"], num_devices)
    probe = build_probe_set(agent, options.seed) if options.probe and first < last else None
    if probe is not None and not history["episodes"]:
        history["probe_initial"] = evaluate_probe(agent, state.ppo.params, probe)
    bar = tqdm(total=sum(n - 1 for n in lengths.values()), desc="decision steps", unit="step", disable=not progress)
    # The bar closes also on Ctrl-C or an error, so what is printed next starts on a line of its own.
    with MetricWriter(os.path.join(workdir, "logs"), csv_name="episodes.csv") as writer, bar:
        for episode in range(first, last):
            start = time.time()
            bar.set_description(f"episode {episode + 1}/{total}")
            ep_key = jax.random.fold_in(base_key, episode)
            val_data = validation_subset(task.device_data["val"], jax.random.fold_in(ep_key, 2),
                                         options.val_subsample)
            val_data = full_val if val_data is task.device_data["val"] else parallel.replicate(val_data, num_devices)
            rollout = run_episode(agent, state.ppo.params, ep_key, options.num_envs, bar, num_devices=num_devices,
                                  num_decisions=lengths[episode], data=(train_data, val_data),
                                  group_size=options.group_size, reward_scale=options.reward_scale)
            ppo_state, trajectory, last_value = state.ppo, rollout["trajectory"], rollout["last_value"]
            if agent.settings.obs_norm:  # statistics first, so the update optimizes the policy it saves
                params, trajectory = agent.update_obs_stats(ppo_state.params, trajectory)
                ppo_state = ppo_state.replace(params=params)
                if last_value is not None:
                    last_value = jnp.where(rollout["ended"], 0.0,
                                           agent.values(params, rollout["last_obs"]))
            ppo_state, metrics = agent.ppo_update(jax.random.fold_in(ep_key, 1),
                                                  parallel.replicate(ppo_state, num_devices), trajectory, last_value)
            check_finite_update(episode, metrics, ppo_state, ckpt_dir)  # a NaN agent is never saved
            state = state.replace(ppo=ppo_state, episode=jnp.asarray(episode + 1, jnp.int32))
            summary = episode_summary(episode, rollout, time.time() - start, agent.env.config.decision_interval)
            summary.update({f"ppo_{k}": float(v) for k, v in metrics.items()})
            if probe is not None:  # the policy after this update
                summary.update(evaluate_probe(agent, state.ppo.params, probe))
            history["episodes"].append(summary)
            writer.write(episode, {k: v for k, v in summary.items() if isinstance(v, int | float)})
            writer.flush()
            if (episode + 1) % options.checkpoint_every == 0 or episode + 1 == last:
                history["agent_checkpoint"] = checkpoints.save(ckpt_dir, episode + 1, state, history,
                                                                   max_to_keep=keep)
            probe_note = (f"  probe spread {summary['probe_spread']:.3f} slope {summary['probe_slope']:+.4f}"
                          if probe is not None else "")
            bar.write(f"episode {episode + 1}: return {summary['return']:+.4f}  val {summary['val_metric']:.4f}  "
                      f"test {summary['test_metric']:.4f}  initial lr {summary['initial_lr']:.2e}{probe_note}"
                      + (f"  diverged {summary['diverged']}/{summary['environments']}" if summary["diverged"] else ""))
    latest = checkpoints.latest_step(ckpt_dir)
    results = {
        "episodes": [{k: e[k] for k in ("episode", "return", "val_metric", "test_metric", "initial_lr", "diverged",
                                         "wall_seconds", "decisions", *PROBE_FIELDS) if k in e}
                     for e in history["episodes"]],
        "agent_checkpoint": os.path.join(os.path.abspath(ckpt_dir), str(latest)) if latest is not None else None,
        "episodes_finished": int(state.episode),
        "machine": machine(),  # of this call; a resumed agent's earlier episodes may have run elsewhere
    }
    if history["episodes"]:
        plot_lr_trajectories(
            {f"episode {e['episode'] + 1}": e["lr_trajectory"] for e in history["episodes"]},
            config.decision_interval, os.path.join(workdir, "lr_trajectories.png"),
            title=f"Learning rate per episode ({config.model.name} on {config.data.name})")
        results["plot"] = os.path.join(workdir, "lr_trajectories.png")
    return {"results": results, "agent": agent, "state": state}
