"""The modes of the command line that run targets and agents: ``train_target`` (the config's fixed schedule),
``train_agent``, ``apply``, ``gns`` (the default: both, then a summary) and ``quickstart`` (``gns``, then the
config's fixed schedule from the same start, side by side). Each reads the config once and passes frozen settings
(``gns_jax.settings``) and one ``Task`` down."""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from absl import logging

from gns_jax import train as agent_training
from gns_jax.agent import Agent
from gns_jax.apply import deploy
from gns_jax.checkpoints import load_agent_params
from gns_jax.config import ConfigError, config_to_dict
from gns_jax.controllers import Controller, ScheduleController, TrajectoryController
from gns_jax.plots import plot_lr_trajectories, plot_schedule_comparison
from gns_jax.settings import agent_settings, deploy_options, fixed_schedule
from gns_jax.targets.build import build_task
from gns_jax.targets.task import Task
from gns_jax.workdir import read_json, write_json


def _write(workdir: str, name: str, payload: dict) -> str:
    """Atomic strict JSON (non-finite numbers become null, listed under ``non_finite``)."""
    return write_json(os.path.join(workdir, name), payload)


def train_target(task: Task, config: ml_collections.ConfigDict, progress: bool = True) -> dict:
    """``train_target``: the config's fixed schedule (``optimizer``, Eq. 7) for T steps from seed ``config.seed``,
    through the run loop every method shares (``Controller.run``): the reference every scheduler is held to."""
    controller = ScheduleController(fixed_schedule(config), str(config.optimizer.schedule))
    return controller.run(task, int(config.steps), int(config.decision_interval), int(config.seed), progress=progress)


def train_agent_mode(config: ml_collections.ConfigDict, workdir: str, task: Task | None = None) -> dict:
    out = agent_training.train_agent(config, workdir, task=task)
    results = dict(out["results"], data_source=getattr(out["agent"].task, "provenance", None),
                   config=config_to_dict(config))
    _write(workdir, "results.json", results)
    logging.info("agent checkpoint: %s", results["agent_checkpoint"])
    return results


def apply_mode(config: ml_collections.ConfigDict, workdir: str, task: Task | None = None) -> dict:
    if not config.agent_checkpoint:
        raise ConfigError("apply needs --config.agent_checkpoint=PATH (the agent_checkpoint of a train_agent "
                          "results.json)")
    agent = Agent(task or build_task(config), agent_settings(config))
    params = load_agent_params(config.agent_checkpoint, agent.init_params(jax.random.key(config.seed)))
    if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params)):
        raise ConfigError(f"agent checkpoint {config.agent_checkpoint} holds non-finite parameters; deploy an "
                          "earlier checkpoint of that run")
    results = deploy(agent, params, deploy_options(config))
    results.update(seed=int(config.seed), agent_checkpoint=config.agent_checkpoint,
                   data_source=getattr(agent.task, "provenance", None), config=config_to_dict(config))
    plot_lr_trajectories({"deployed": results["lr_trajectory"]}, config.decision_interval,
                         os.path.join(workdir, "deployed_lr.png"), title="Deployed learning-rate schedule")
    results["plot"] = os.path.join(workdir, "deployed_lr.png")
    _write(workdir, "results.json", results)
    logging.info("deployed: test %s %.4f from initial lr %.2e", results["metric_name"], results["test_metric"],
                 results["initial_lr"])
    return results


def run_method(config: ml_collections.ConfigDict, workdir: str, compare_schedule: bool = False) -> dict:
    """The whole method: train the agent (resuming), deploy it (§4.3), write the summary, print where things are.

    ``DIR/agent`` holds the agent training (``train_agent``), ``DIR/apply`` the deployment (``apply``; a rerun
    whose agent checkpoint is unchanged keeps it), ``DIR/results.json`` the summary. With ``compare_schedule``
    (mode ``quickstart``) the config's fixed schedule (``config.optimizer``, Eq. 7) also runs T steps from the same
    initial weights and data order (same seed), and both runs' learning rates and validation curves go into one
    plot, ``DIR/comparison.png``.
    """
    task = build_task(config)
    agent_dir = os.path.join(workdir, "agent")
    apply_dir = os.path.join(workdir, "apply")
    os.makedirs(agent_dir, exist_ok=True)
    os.makedirs(apply_dir, exist_ok=True)
    trained = train_agent_mode(config, agent_dir, task=task)
    with config.unlocked():
        config.agent_checkpoint = trained["agent_checkpoint"]
    deployed = _finished(apply_dir, trained["agent_checkpoint"])
    if deployed is None:
        deployed = apply_mode(config, apply_dir, task=task)
    else:
        logging.info("deployment of %s already in %s", trained["agent_checkpoint"], apply_dir)
    metric = deployed["metric_name"]
    summary = {"deployed_test_metric": deployed["test_metric"], "deployed_val_metric": deployed["val_metric"],
               "metric_name": metric, "initial_lr": deployed["initial_lr"],
               "agent_checkpoint": trained["agent_checkpoint"], "episodes": trained["episodes"],
               "plots": [trained.get("plot"), deployed["plot"]]}
    lines = [f"GNS deployed: test {metric} {deployed['test_metric']:.4f}, val {metric} {deployed['val_metric']:.4f} "
             f"(initial lr {deployed['initial_lr']:.2e}, agent after {trained.get('episodes_finished', '?')} "
             "episodes)"]
    if compare_schedule:
        comparison = compare_with_schedule(config, workdir, task, deployed, trained["agent_checkpoint"])
        summary.update(comparison=comparison, plots=summary["plots"] + [comparison["plot"]])
        lines = comparison_table(config, comparison)
    path = _write(workdir, "results.json", summary)
    for line in lines:
        print(line)
    print(f"results: {path}")
    print(f"plots: {', '.join(p for p in summary['plots'] if p)}")
    return summary


def _finished(apply_dir: str, agent_checkpoint: str) -> dict | None:
    """The deployment results already in ``apply_dir`` for this agent checkpoint, or None."""
    previous = read_json(os.path.join(apply_dir, "results.json"))
    if previous and previous.get("agent_checkpoint") == agent_checkpoint and "lr_trajectory" in previous:
        return previous
    return None


def gns(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The default mode: the whole method (train the agent, deploy it, summarize)."""
    return run_method(config, workdir)


_SELECTED_BY = {"value": "V(s)", "metric": "validation"}


def quickstart(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The whole method, then the config's fixed schedule from the same start; both side by side and in one plot."""
    return run_method(config, workdir, compare_schedule=True)


def curve_points(num_decisions: int, points: int = 20) -> int:
    """Evaluate the validation split every this many decision intervals (about ``points`` evaluations per run)."""
    return max(1, -(-num_decisions // points))


def run_with_curve(task: Task, config: ml_collections.ConfigDict, controller: Controller, points: int = 20) -> dict:
    """One target run of T = ``config.steps`` steps with its validation curve, through ``Controller.run``.

    The run starts from ``Task.init(jax.random.key(config.seed), lr)`` (the initial weights and data order of every
    run with this seed, GNS deployments included) and is driven by ``controller``: a ``ScheduleController`` (Eq. 7,
    evaluated inside the K-step scan) or a ``TrajectoryController`` holding a deployment's learning rate of every
    decision interval (replaying it retraces that deployment). The validation split is evaluated every few decision
    intervals (``curve_points``) and at the end.
    """
    total, k = int(config.steps), int(config.decision_interval)
    starts = list(range(0, total, k))
    run = controller.run(task, total, k, int(config.seed), curve_every=curve_points(len(starts), points))
    per_step = isinstance(controller, ScheduleController)
    if per_step:  # the schedule itself, finely sampled for the plot
        lr_steps = np.linspace(0, total, min(total, 200) + 1).round().astype(np.int32)
        lr_curve = [float(x) for x in jax.vmap(controller.schedule)(lr_steps)]
    else:
        lr_steps, lr_curve = starts + [total], run["lr_trajectory"] + run["lr_trajectory"][-1:]
    return {"val_metric": run["val_curve"][-1], "test_metric": run["test_metric"], "metric_name": task.metric_name,
            "steps": run["steps"], "val_steps": run["val_steps"], "val_curve": run["val_curve"],
            "lr_steps": [int(s) for s in lr_steps], "lr_curve": lr_curve, "lr_per_step": per_step}


def compare_with_schedule(config: ml_collections.ConfigDict, workdir: str, task: Task, deployed: dict,
                          agent_checkpoint: str) -> dict:
    """The config's fixed schedule and the deployed agent from the same start, with validation curves (cached)."""
    path = os.path.join(workdir, "comparison.json")
    previous = read_json(path)
    if previous and previous.get("agent_checkpoint") == agent_checkpoint:
        return previous
    o = config.optimizer
    label = f"{o.schedule} (Eq. 7)" if o.schedule != "constant" else "constant"
    baseline = run_with_curve(task, config, ScheduleController(fixed_schedule(config), o.schedule))
    baseline.update(label=label, hparams={"alpha_max": float(o.learning_rate), "mu": float(o.mu),
                                          "eta1": float(o.eta1), "eta2": float(o.eta2)})
    # The deployment's validation curve: its learning rates replayed from the same start (deploy validates only
    # at the end); its final validation value matches the deployment's up to floating-point summation order.
    replay = run_with_curve(task, config, TrajectoryController(deployed["lr_trajectory"], "replay"))
    gns_run = dict(replay, label="GNS (deployed)", test_metric=deployed["test_metric"],
                   val_metric=deployed["val_metric"], replay_test_metric=replay["test_metric"],
                   replay_val_metric=replay["val_metric"], initial_lr=deployed["initial_lr"],
                   deploy_selection=deployed.get("deploy_selection", "value"))
    plot = plot_schedule_comparison({"GNS (deployed)": gns_run, label: baseline}, os.path.join(workdir,
                                    "comparison.png"), metric_name=task.metric_name,
                                    title=f"{config.model.name} on {config.data.name}, T = {int(config.steps):,}, "
                                          f"seed {int(config.seed)}")
    comparison = {"agent_checkpoint": agent_checkpoint, "gns": gns_run, "baseline": baseline, "plot": plot,
                  "seed": int(config.seed), "steps": int(config.steps)}
    _write(workdir, "comparison.json", comparison)
    return comparison


def comparison_table(config: ml_collections.ConfigDict, comparison: dict) -> list[str]:
    """The two runs side by side (test and validation metric), as printed at the end of ``quickstart``."""
    g, b = comparison["gns"], comparison["baseline"]
    metric = g["metric_name"]
    o = config.optimizer
    picked_by = _SELECTED_BY.get(g.get("deploy_selection", "value"), "V(s)")
    rows = [("GNS (deployed)", g, f"initial lr {g['initial_lr']:.2e} by {picked_by}, then the policy's mean action"),
            (b["label"], b, f"alpha_max {o.learning_rate:g}, mu {o.mu:g}, eta1 {o.eta1:g}, eta2 {o.eta2:g}")]
    width = max(len(r[0]) for r in rows)
    lines = [f"same initial weights and data order (seed {comparison['seed']}), T = {comparison['steps']:,} steps:",
             f"  {'':<{width}}  test {metric}  val {metric}"]
    pad = len(f"test {metric}")
    for name, run, note in rows:
        lines.append(f"  {name:<{width}}  {run['test_metric']:>{pad}.4f}  {run['val_metric']:>{pad - 1}.4f}   {note}")
    return lines


MODES = {"train_agent": train_agent_mode, "apply": apply_mode, "quickstart": quickstart, "gns": gns}
