"""What the command line sets up around a run: the default workdir, the console and log file, the compilation cache.

* **Workdir.** Without ``--workdir`` a run goes to ``workdirs/<config file name>`` (relative to the current
  directory), so ``python -m gns_jax.main --config=configs/cifar10.py`` works as typed and a rerun resumes it.
* **Console and log file.** By default the console shows what a user reads: progress bars, one line per finished
  agent episode, warnings, the final summary and errors (one line each). Every log record at INFO and above
  (gns_jax's own, orbax checkpointing, absl, JAX backend probing) goes to ``<workdir>/log.txt``. Records are kept in
  memory until the run has passed every check and holds the workdir (``start_workdir_log``, called by
  ``gns_jax.main.run``), then written; so a run refused for a bad value, a locked workdir or other settings leaves no
  ``log.txt`` behind and appends nothing to an existing one. ``--verbosity=1`` (or any explicit ``--verbosity``)
  shows the log on the console too, as absl does.
* **Machine.** ``machine()`` describes where a run ran (JAX backend, device kind and count, the CPU model and the
  cores the process may use); every run's results record it. On a CPU both are part of the result: XLA:CPU splits
  its work by the cores it sees and compiles for the host's instruction set, so one core and two, or an Intel and an
  AMD host, give runs that differ as two seeds do (each is deterministic; docs/results/proxy_fashion_mnist_mlp.md,
  items 20 and 22), and ``--mode=report`` says which machines a table's runs used.
* **Compilation cache.** JAX's persistent compilation cache is turned on under a user cache directory, so a
  resumed run, a second episode length or the next ``make run`` loads its XLA programs instead of compiling them
  again. ``$GNS_JAX_COMPILATION_CACHE`` names another directory (an empty value turns the cache off); a
  ``$JAX_COMPILATION_CACHE_DIR`` set by the user is left as JAX reads it.
"""

from __future__ import annotations

import logging
import os
import platform

LOG_NAME = "log.txt"
CACHE_ENV = "GNS_JAX_COMPILATION_CACHE"
# Libraries whose warnings are about their own state, not the run (TFDS probing folders while the 'auto' data
# source looks for a usable copy; gns_jax reports a missing dataset itself): console only with --verbosity.
QUIET_LIBRARIES = (f"{os.sep}tensorflow_datasets{os.sep}",)


def default_workdir(config_path: str) -> str:
    """``workdirs/<config file stem>`` (``configs/cifar10.py`` -> ``workdirs/cifar10``)."""
    stem = os.path.splitext(os.path.basename(config_path.split(":", 1)[0]))[0] or "run"
    return os.path.join("workdirs", stem)


def default_compilation_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gns_jax", "jax_cache")


def cpu_model() -> str:
    """The host CPU's model name ('AMD EPYC', 'Intel(R) Xeon(R) ...'; Linux's /proc/cpuinfo, else ``platform``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where this process runs: JAX's backend, its devices, the CPU model and the cores the process may use
    (``taskset`` narrows them)."""
    import jax

    devices = jax.devices()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind, "devices": len(devices),
            "cpu_model": cpu_model(), "cpu_cores": int(cores or 0), "jax": jax.__version__}


def describe_machine(m: dict) -> str:
    """``machine()`` in words: 'cpu (AMD EPYC), 1 core' or 'gpu (NVIDIA H200) x 1, 16 cores' (records older than
    the CPU model: 'cpu, 1 core')."""
    cores = f"{m.get('cpu_cores')} core" + ("s" if m.get("cpu_cores") != 1 else "")
    if m.get("backend") == "cpu":
        return f"cpu ({m['cpu_model']}), {cores}" if m.get("cpu_model") else f"cpu, {cores}"
    return f"{m.get('backend')} ({m.get('device_kind')}) x {m.get('devices')}, {cores}"


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache; returns its directory (None when turned off)."""
    import jax

    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # the user's own JAX setting wins
        return os.environ["JAX_COMPILATION_CACHE_DIR"] or None
    path = os.environ.get(CACHE_ENV, default_compilation_cache_dir())
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        logging.getLogger(__name__).warning("compilation cache %s is not writable; compiling every run", path)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    # The programs of a small target compile in well under JAX's default threshold of one second; cache them too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


class WorkdirLogHandler(logging.Handler):
    """Writes records to ``<workdir>/log.txt`` once ``start()`` is called; keeps them in memory until then (at most
    ``limit``), so a run that is refused before it starts writes no log file."""

    def __init__(self, workdir: str, level: int = logging.INFO, limit: int = 10_000):
        super().__init__(level)
        self.path = os.path.join(workdir, LOG_NAME)
        self.workdir = workdir
        self._pending: list[str] = []
        self._file = None
        self._started = False
        self._limit = limit

    def start(self) -> None:
        """Write the kept records and every later one to the log file (the workdir exists by now)."""
        self._started = True
        self._open()

    def _open(self) -> None:
        if self._file is None and os.path.isdir(self.workdir):
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- closed in close()
            for pending in self._pending:
                self._file.write(pending + "\n")
            self._file.flush()
            self._pending = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self._started:
                self._open()
            if self._file is None:
                if len(self._pending) < self._limit:
                    self._pending.append(line)
                return
            self._file.write(line + "\n")
            self._file.flush()
        except Exception:  # noqa: BLE001 -- a log file must never stop a run
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def start_workdir_log() -> None:
    """Start writing ``log.txt`` for the run that now holds its workdir (no-op without ``setup_logging``)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, WorkdirLogHandler):
            handler.start()


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return not any(part in (record.pathname or "") for part in QUIET_LIBRARIES)


def setup_logging(workdir: str, verbose: bool) -> WorkdirLogHandler:
    """Log file in ``workdir``; a quiet console (warnings and errors only) unless ``verbose``."""
    from absl import logging as absl_logging

    root = logging.getLogger()
    handler = WorkdirLogHandler(workdir)
    handler.setFormatter(absl_logging.PythonFormatter())
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not verbose:
        console = absl_logging.get_absl_handler()
        console.setLevel(logging.WARNING)
        console.addFilter(_ConsoleFilter())
    return handler
