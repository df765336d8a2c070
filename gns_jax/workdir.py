"""The workdir rules: one run at a time, one mode and one set of settings per workdir, atomic strict-JSON files.

* **Lock.** ``WorkdirLock`` creates ``<workdir>/gns_jax.lock`` atomically (``O_CREAT | O_EXCL``) holding the pid
  and host of the run, and removes it when the run ends (normally, by an error or by Ctrl-C). A second run on a
  locked workdir stops with ``workdir in use by pid N on HOST``. A lock left by a killed run is *stale* when its
  pid no longer lives on this host (or has been reused by a process started after the lock was taken); it is then
  taken over. A lock from another host is never taken over: remove it by hand once that run is gone.
* **Claim.** ``claim`` records the mode and the settings fingerprint (``config.settings_fingerprint``: the fields
  that mode reads and a resumed run must keep) in ``<workdir>/settings.json``. A later run in the same workdir must
  be of the same mode (a workdir never holds two modes' results) and, once the workdir holds outputs, must have the
  same fingerprint; otherwise it stops with one line naming the differing fields. Fields that only extend a run
  (``agent.episodes``, checkpoint cadence, caches) may change. ``check`` makes the same tests reading only: the
  command line runs it before taking the lock, so a refused run leaves the workdir as it found it (no lock file,
  ``settings.json``, ``config.json`` or ``log.txt`` created or touched).
* **JSON.** ``write_json`` writes through a temporary file and ``os.replace`` (a reader sees the old file or the
  new one, never a part), with ``allow_nan=False``: non-finite numbers become ``null`` and their places are listed
  under ``"non_finite"``, so strict JSON parsers read every results file.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

from gns_jax.config import ConfigError, base_config, settings_fingerprint, with_added_defaults

LOCK_NAME = "gns_jax.lock"
SETTINGS_NAME = "settings.json"
# Files that do not count as a run's outputs: a workdir holding only these may be claimed afresh.
BOOKKEEPING = (LOCK_NAME, SETTINGS_NAME, "config.json", "log.txt")  # log.txt: gns_jax.runtime's log file


class WorkdirError(ConfigError):
    """A workdir that this run must not use (locked, another mode's, another run's settings)."""


# ---- lock ------------------------------------------------------------------------------------------------------
def _process_start(pid: int) -> float | None:
    """Start time of ``pid`` in seconds since the epoch (Linux ``/proc``), or None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds ``workdir/gns_jax.lock`` for the block (see the module docstring)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self._held = False

    def holder(self) -> dict | None:
        """The lock's content (``pid``, ``host``, ``started``), or None when there is no readable lock."""
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict | None) -> bool:
        if holder is None:  # unreadable: a run died between creating and writing it, or it is being written
            try:
                return time.time() - os.path.getmtime(self.path) > 10
            except OSError:
                return True
        if holder.get("host") != socket.gethostname():
            return False
        pid = int(holder.get("pid", -1))
        if pid == os.getpid():
            return False
        if pid <= 0 or not _pid_alive(pid):
            return True
        started = _process_start(pid)  # pid reuse: the live process started after the lock was taken
        return started is not None and started > float(holder.get("taken", math.inf)) + 1.0

    def _refuse(self, holder: dict | None) -> None:
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            raise WorkdirError(f"workdir {self.workdir} is already in use by this process") from None
        if holder is None:
            raise WorkdirError(f"workdir in use: {self.path} is being written by another run") from None
        raise WorkdirError(f"workdir in use by pid {holder.get('pid')} on {holder.get('host')} since "
                           f"{holder.get('started', '?')} ({self.path}; remove it if that run is gone)") from None

    def check(self) -> None:
        """Raise ``WorkdirError`` when a live run holds the lock; reads only (a stale lock passes)."""
        if os.path.lexists(self.path):
            holder = self.holder()
            if not self._stale(holder):
                self._refuse(holder)

    def acquire(self) -> WorkdirLock:
        os.makedirs(self.workdir, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "taken": time.time(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if not self._stale(holder):
                    self._refuse(holder)
                try:
                    os.unlink(self.path)  # stale: its run is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return self
        raise WorkdirError(f"could not take the lock {self.path} (another run keeps taking it)")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        holder = self.holder()
        if holder is None or holder.get("pid") == os.getpid():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---- claim -----------------------------------------------------------------------------------------------------
def _outputs(workdir: str) -> list[str]:
    if not os.path.isdir(workdir):
        return []
    return sorted(name for name in os.listdir(workdir) if name not in BOOKKEEPING and not name.endswith(".tmp"))


def infer_mode(workdir: str) -> str | None:
    """The mode whose results a workdir without ``settings.json`` holds (older workdirs), or None."""
    names = set(_outputs(workdir))
    if "compare.json" in names or "experiment.json" in names:
        return "compare"
    if "checkpoints" in names:
        return "train_agent"
    if "graph.json" in names:
        return "describe_graph"
    results = read_json(os.path.join(workdir, "results.json"))
    if not results:
        return None
    if "deployed_test_metric" in results:
        return "quickstart"
    if "candidate_lrs" in results:
        return "apply"
    if "episodes" in results:
        return "train_agent"
    return "train_target"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check(workdir: str, mode: str, config) -> dict | None:
    """Raise ``WorkdirError`` (one line) unless ``workdir`` may hold this run: same mode, same settings.

    Reads only, so a run refused here leaves the workdir as it found it. Returns the stored record when the workdir
    already holds this run's outputs (a resume), else None (``claim`` then records the run).
    """
    settings = settings_fingerprint(config, mode)
    stored = read_json(os.path.join(workdir, SETTINGS_NAME))
    outputs = _outputs(workdir)
    held_mode = stored.get("mode") if stored else (infer_mode(workdir) if outputs else None)
    if held_mode is not None and held_mode != mode and outputs:
        raise WorkdirError(f"{workdir} holds {held_mode} results ({', '.join(outputs[:3])}); {mode} needs its "
                           "own workdir")
    if stored and outputs and stored.get("mode") == mode:
        before = stored.get("settings", {})
        before = with_added_defaults(before, settings, settings_fingerprint(base_config(), mode))
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            shown = ", ".join(f"{k} ({_short(before.get(k))} -> {_short(settings.get(k))})" for k in changed[:4])
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise WorkdirError(f"{workdir} holds a {mode} run with other settings: {shown}{more}; rerun with its "
                               "settings (see its settings.json) or use a new workdir")
        return stored
    return None


def claim(workdir: str, mode: str, config) -> dict:
    """``check``, then record the run's mode and settings in ``settings.json`` (unless it resumes).

    Returns the stored record (``mode``, ``settings``). Raises ``WorkdirError`` (one line) otherwise; call it with
    the workdir locked.
    """
    stored = check(workdir, mode, config)
    if stored is not None:
        return stored
    record = {"mode": mode, "settings": settings_fingerprint(config, mode)}
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, SETTINGS_NAME), record)
    return record


# ---- JSON ------------------------------------------------------------------------------------------------------
def finite_json(payload: Any) -> tuple[Any, list[str]]:
    """``payload`` with every non-finite float replaced by None, and the places (``a.b[3]``) that were replaced."""
    places: list[str] = []

    def walk(x, where):
        if isinstance(x, float) and not math.isfinite(x):
            places.append(where or "(root)")
            return None
        if hasattr(x, "item") and getattr(x, "shape", None) == ():  # numpy / jax scalars
            return walk(x.item(), where)
        if isinstance(x, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        return x

    return walk(payload, ""), places


def write_json(path: str, payload: dict) -> str:
    """Write ``payload`` atomically as strict JSON; non-finite numbers become null, listed under ``non_finite``."""
    clean, places = finite_json(payload)
    if places and isinstance(clean, dict):
        clean["non_finite"] = places
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(clean, f, indent=2, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
