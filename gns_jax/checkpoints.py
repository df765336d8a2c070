"""Orbax checkpoints of agent training: array state plus a JSON history, one directory per episode.

A checkpoint that cannot be read raises ``CheckpointError`` with the path and the reason; nothing is deleted, so
the user can move it away and resume from the previous one. A save that orbax skips (the step exists already,
e.g. written by another run in the same workdir) or that does not complete is an error too, never silence.

Orbax writes a checkpoint into a temporary directory and renames it when complete, so a run killed mid-save leaves
no half checkpoint behind (the temporary directory is ignored). Ctrl-C during a save is held back until the save
has finished, then raised.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not match the run that restores it."""


def _manager(directory: str, max_to_keep: int | None = 3) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def latest_step(directory: str) -> int | None:
    """The newest complete checkpoint step in ``directory`` (None when there is none)."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def all_steps(directory: str) -> list[int]:
    """Every complete checkpoint step in ``directory``, ascending (empty when there is none)."""
    if not os.path.isdir(directory):
        return []
    with _manager(directory) as manager:
        return sorted(manager.all_steps())


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back SIGINT (Ctrl-C) for the block; one that arrived meanwhile is raised at its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def save(directory: str, step: int, state: Any, history: dict, max_to_keep: int | None = 3) -> str:
    """Save ``state`` (a pytree of arrays; PRNG keys as ``jax.random.key_data``) and ``history`` (JSON).

    Raises ``CheckpointError`` when orbax skips the save (the step exists) or the step is not complete afterwards.
    """
    path = os.path.join(os.path.abspath(directory), str(step))
    with interrupts_deferred(), _manager(directory, max_to_keep) as manager:
        if step in manager.all_steps():
            raise CheckpointError(f"checkpoint {path} exists already (another run in this workdir?); not "
                                  "overwriting it")
        try:
            saved = manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               history=ocp.args.JsonSave(history)))
            manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(f"cannot save checkpoint {path}: {reason(e)}") from e
        if not saved:
            raise CheckpointError(f"orbax skipped the save of checkpoint {path}")
        manager.reload()
        if step not in manager.all_steps():
            raise CheckpointError(f"checkpoint {path} is not complete after saving it")
    return path


def reason(error: BaseException) -> str:
    """A readable one-line reason for an orbax/tensorstore failure (its chain's first plain message)."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        text = lines[0] if lines else ""
        if text and not (text.startswith("<") and " at 0x" in text) and text != type(e).__name__:
            return f"{type(e).__name__}: {text[:300]}"
        e = e.__cause__ or e.__context__
    return f"{type(error).__name__} (the files are unreadable or incomplete)"


def restore(directory: str, like: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """Restore the state (shaped like ``like``), the history and the step; ``step=None`` takes the newest."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint directory at {directory}")
    with _manager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                    history=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(f"cannot restore checkpoint {os.path.join(directory, str(step))}: "
                                  f"{reason(e)}") from e
    return restored["state"], dict(restored["history"]), step


def restore_subtree(directory: str, keys: tuple[str, ...], like: Any, step: int | None = None) -> Any:
    """Restore one subtree (e.g. ``("ppo", "params")``) of a saved state, checked against ``like``'s structure.

    Used to start an agent from another run's checkpoint (transfer, §5.4), whose optimizer states are not wanted.
    """
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint directory at {directory}")
    with _manager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {directory}")
        try:
            raw = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        except Exception as e:
            raise CheckpointError(f"cannot read checkpoint {os.path.join(directory, str(step))}: "
                                  f"{reason(e)}") from e
    for key in keys:
        if not isinstance(raw, dict) or key not in raw:
            raise CheckpointError(f"checkpoint {directory}/{step} has no entry {'/'.join(keys)}")
        raw = raw[key]
    want, got = jax.tree.structure(like), jax.tree.structure(raw)
    if want != got:
        raise CheckpointError(f"checkpoint {directory}/{step}: {'/'.join(keys)} does not match this run's agent "
                              "(different encoder or head settings?)")
    for a, b in zip(jax.tree.leaves(like), jax.tree.leaves(raw), strict=True):
        if a.shape != b.shape:
            raise CheckpointError(f"checkpoint {directory}/{step}: a parameter has shape {b.shape}, expected {a.shape}")
    return raw


def split_checkpoint_path(path: str) -> tuple[str, int | None]:
    """``.../checkpoints/7`` -> (``.../checkpoints``, 7); ``.../checkpoints`` -> (that, None = newest)."""
    path = os.path.abspath(path.rstrip("/"))
    base = os.path.basename(path)
    if base.isdigit() and os.path.isdir(path):
        return os.path.dirname(path), int(base)
    return path, None


def load_agent_params(path: str, like_params: Any) -> Any:
    """Agent parameters from a ``train_agent`` checkpoint (a directory of steps, or one step directory)."""
    directory, step = split_checkpoint_path(path)
    return restore_subtree(directory, ("ppo", "params"), like_params, step)
