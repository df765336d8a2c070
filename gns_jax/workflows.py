"""The agent modes of the command line: ``train_agent``, ``apply`` and ``quickstart`` (both, then a summary)."""

from __future__ import annotations

import json
import os

import ml_collections
from absl import logging

from gns_jax import train as agent_training
from gns_jax.apply import deploy
from gns_jax.config import ConfigError, config_to_dict
from gns_jax.plots import plot_lr_trajectories
from gns_jax.targets.task import Task


def _write(workdir: str, name: str, payload: dict) -> str:
    path = os.path.join(workdir, name)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)
    return path


def train_agent_mode(config: ml_collections.ConfigDict, workdir: str, task: Task | None = None) -> dict:
    out = agent_training.train_agent(config, workdir, task=task)
    results = dict(out["results"], config=config_to_dict(config))
    _write(workdir, "results.json", results)
    logging.info("agent checkpoint: %s", results["agent_checkpoint"])
    return results


def apply_mode(config: ml_collections.ConfigDict, workdir: str, task: Task | None = None) -> dict:
    from gns_jax.agent import Agent
    from gns_jax.targets.build import build_task

    if not config.agent_checkpoint:
        raise ConfigError("apply needs --config.agent_checkpoint=PATH (the agent_checkpoint of a train_agent "
                          "results.json)")
    agent = Agent(task or build_task(config), config)
    params = agent_training.load_agent_params(config.agent_checkpoint, agent.init_params(jax_key(config.seed)))
    results = deploy(agent, params, config)
    results.update(agent_checkpoint=config.agent_checkpoint, config=config_to_dict(config))
    plot_lr_trajectories({"deployed": results["lr_trajectory"]}, config.decision_interval,
                         os.path.join(workdir, "deployed_lr.png"), title="Deployed learning-rate schedule")
    results["plot"] = os.path.join(workdir, "deployed_lr.png")
    _write(workdir, "results.json", results)
    logging.info("deployed: test %s %.4f from initial lr %.2e", results["metric_name"], results["test_metric"],
                 results["initial_lr"])
    return results


def jax_key(seed: int):
    import jax

    return jax.random.key(seed)


def quickstart(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train the agent for a few episodes, deploy it, plot both, print where everything is."""
    from gns_jax.targets.build import build_task

    task = build_task(config)
    agent_dir = os.path.join(workdir, "agent")
    apply_dir = os.path.join(workdir, "apply")
    os.makedirs(agent_dir, exist_ok=True)
    os.makedirs(apply_dir, exist_ok=True)
    trained = train_agent_mode(config, agent_dir, task=task)
    with config.unlocked():
        config.agent_checkpoint = trained["agent_checkpoint"]
    deployed = apply_mode(config, apply_dir, task=task)
    summary = {"deployed_test_metric": deployed["test_metric"], "metric_name": deployed["metric_name"],
               "initial_lr": deployed["initial_lr"], "agent_checkpoint": trained["agent_checkpoint"],
               "episodes": trained["episodes"], "plots": [trained.get("plot"), deployed["plot"]]}
    _write(workdir, "results.json", summary)
    print(f"deployed test {deployed['metric_name']}: {deployed['test_metric']:.4f} "
          f"(initial lr {deployed['initial_lr']:.2e}, {len(trained['episodes'])} agent episodes)")
    print(f"plots: {trained.get('plot')} and {deployed['plot']}; results: {os.path.join(workdir, 'results.json')}")
    return summary


MODES = {"train_agent": train_agent_mode, "apply": apply_mode, "quickstart": quickstart}
