"""``train_target``: one target training run under a fixed schedule (the reference every scheduler is held to)."""

from __future__ import annotations

import math
import time

import jax
import ml_collections
from tqdm.auto import tqdm

from gns_jax.schedules import Eq7Schedule
from gns_jax.targets.task import Task, get_learning_rate


def fixed_schedule(config: ml_collections.ConfigDict) -> Eq7Schedule:
    """The config's schedule: ``constant`` is flat at ``optimizer.learning_rate``; the others follow Eq. 7."""
    o = config.optimizer
    if o.schedule == "constant":
        return Eq7Schedule.constant(o.learning_rate)
    return Eq7Schedule.from_hparams(o.schedule, config.steps, alpha_max=o.learning_rate, mu=o.mu, eta1=o.eta1,
                                    eta2=o.eta2, power=o.power)


def train_with_schedule(task: Task, config: ml_collections.ConfigDict, schedule: Eq7Schedule | None = None,
                        progress: bool = True) -> dict:
    """Train for ``config.steps`` steps, K at a time, and return the results of ``train_target``.

    The learning rate is written into the optimizer state before every step (the same ``inject_hyperparams`` path
    that GNS uses); the trajectory records it at the start of every decision step.
    """
    schedule = fixed_schedule(config) if schedule is None else schedule
    total, k = int(config.steps), int(config.decision_interval)
    start_time = time.time()
    state = task.init(jax.random.key(config.seed), schedule(0))
    lr_trajectory, losses = [], []
    for start in tqdm(range(0, total, k), desc="train_target", unit="decision", disable=not progress):
        state, stats = task.train_steps(state, min(k, total - start), schedule)
        lr_trajectory.append(float(schedule(start)))
        losses.append(float(stats.mean_loss))
    val, test = task.evaluate(state, "val"), task.evaluate(state, "test")
    return {
        "val_metric": float(val["metric"]),
        "test_metric": float(test["metric"]),
        "val_loss": float(val["loss"]),
        "test_loss": float(test["loss"]),
        "metric_name": task.metric_name,
        "steps": int(state.step),
        "wall_seconds": time.time() - start_time,
        "lr_trajectory": lr_trajectory,
        "train_loss_trajectory": losses,
        "final_learning_rate": float(get_learning_rate(state.opt_state)),
        "diverged": not all(math.isfinite(x) for x in [*losses, float(val["loss"]), float(test["loss"])]),
    }
