"""M target trainings side by side: seeds x grid points of the baselines (Eq. 7, Tables 5-6) in one program.

``train_side_by_side`` vmaps ``Task.train_scan`` over M target states and M stacked learning-rate schedules, so
every optimizer step of all M runs is one program (one compiled program for a whole grid); with ``num_devices`` > 1
the M runs are split over local devices (``gns_jax.parallel``), the same program partitioned over them. It equals M
separate ``Task.train_steps`` runs (tested) and is what the benchmarks use to run a grid at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from gns_jax.parallel import replicate, split_envs
from gns_jax.targets.task import Batch, TargetState, Task

PyTree = Any


@struct.dataclass
class SideBySideResult:
    """M target trainings run side by side (every leaf has a leading axis M)."""

    state: TargetState  # the M trained targets
    mean_losses: jnp.ndarray  # [M, num_chunks] mean training loss of each chunk of steps
    finite: jnp.ndarray  # [M] False when a run's loss or weights stopped being finite
    metrics: dict  # split -> [M] task metric at the end (NaN for runs that diverged)


def _train_chunk(task: Task, states: TargetState, train_data: Batch, schedules, num_steps: int):
    axes = None if schedules is None else 0
    return jax.vmap(lambda s, sched: task.train_scan(s, train_data, num_steps, sched), in_axes=(0, axes))(
        states, schedules)


def _evaluate(task: Task, states: TargetState, data: Batch, group: int) -> jnp.ndarray:
    # lax.map in groups: M full-split evaluations at once could need M times the activation memory.
    return jax.lax.map(lambda s: task.evaluate_split(s, data)["metric"], states, batch_size=group)


_train_chunk_jit = jax.jit(_train_chunk, static_argnums=(0, 4))
_init_jit = jax.jit(lambda task, keys, lrs, pretrained: jax.vmap(task.init_state, in_axes=(0, 0, None))(
    keys, lrs, pretrained), static_argnums=0)
_evaluate_jit = jax.jit(_evaluate, static_argnums=(0, 3))


def train_side_by_side(task: Task, keys: jnp.ndarray, num_steps: int, schedules: PyTree | None = None,
                       learning_rates=None, *, chunk: int | None = None, eval_splits: Sequence[str] = ("val", "test"),
                       eval_group: int = 4, group_size: int | None = None, num_devices: int = 1) -> SideBySideResult:
    """Train M targets side by side: run m starts from ``keys[m]`` and follows ``schedules[m]``.

    Args:
      task: the target task (model, data, optimizer); all runs share its data on device.
      keys: ``[M]`` PRNG keys (initialization, data order, augmentation of each run): seeds.
      num_steps: optimizer steps T of every run.
      schedules: a schedule pytree whose leaves have a leading axis M, e.g. ``stack([Eq7Schedule, ...])`` for
        the grid points of Tables 5-6; evaluated at every step inside the scan. None keeps each run's injected
        learning rate fixed at ``learning_rates``.
      learning_rates: ``[M]`` initial learning rates (default: each schedule at step 0).
      chunk: steps per compiled call (default all T in one call); chunks give ``mean_losses`` its resolution.
      eval_splits: splits whose metric is reported at the end.
      eval_group: runs evaluated at once (evaluation memory grows with it).
      group_size: train at most this many runs at once (groups run one after another, the last one padded, all
        with one compiled program); None = all M. A GPU gains from large groups; on a CPU, whose cores one run
        already keeps busy, vmap brings no speedup and groups of one or a few are fastest.
      num_devices: split each group over this many local devices (the same program, its runs axis split over
        a device mesh; padded to a multiple).
    Returns:
      a ``SideBySideResult``; equal, up to float rounding, to M separate ``task.train_steps`` runs.
    """
    num_runs = int(keys.shape[0])
    if learning_rates is None:
        if schedules is None:
            raise ValueError("give schedules, learning_rates or both")
        learning_rates = jax.vmap(lambda s: s(0))(schedules)
    learning_rates = jnp.broadcast_to(jnp.asarray(learning_rates, jnp.float32), (num_runs,))
    if group_size and group_size < num_runs:
        parts = []
        for lo in range(0, num_runs, group_size):
            idx = jnp.minimum(jnp.arange(lo, lo + group_size), num_runs - 1)  # the last group repeats its last run
            take = lambda tree, idx=idx: jax.tree.map(lambda x: x[idx], tree)
            parts.append(train_side_by_side(task, take(keys), num_steps, take(schedules), take(learning_rates),
                                            chunk=chunk, eval_splits=eval_splits, eval_group=eval_group,
                                            num_devices=num_devices))
        return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:num_runs], *parts)
    chunk = int(chunk or num_steps)
    bounds = list(range(0, num_steps, chunk)) + [num_steps]
    # One program on one device or several: runs split over the devices (the last one repeated to fill them).
    padded = -(-num_runs // num_devices) * num_devices
    pad = lambda x: x if padded == num_runs else jnp.concatenate([x, jnp.repeat(x[-1:], padded - num_runs, 0)])
    place = lambda tree: split_envs(jax.tree.map(pad, tree), num_devices)
    keys, learning_rates = place(keys), place(learning_rates)
    schedules = None if schedules is None else place(schedules)
    data = replicate(task.device_data, num_devices)
    states = _init_jit(task, keys, learning_rates, replicate(task.pretrained, num_devices))
    losses, finite = [], jnp.ones((padded,), bool)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        states, stats = _train_chunk_jit(task, states, data["train"], schedules, hi - lo)
        losses.append(stats.mean_loss)
        finite = finite & stats.finite
    metrics = {split: jnp.where(finite, _evaluate_jit(task, states, data[split], eval_group), jnp.nan)[:num_runs]
               for split in eval_splits}
    trim = lambda tree: jax.tree.map(lambda x: x[:num_runs], tree)
    return SideBySideResult(state=trim(states), mean_losses=jnp.stack(losses, axis=1)[:num_runs],
                            finite=finite[:num_runs], metrics=metrics)
