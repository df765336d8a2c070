"""Command line: ``python -m gns_jax.main --config=configs/<name>.py [--workdir=DIR] [--mode=MODE]``.

Without ``--workdir`` the run goes to ``workdirs/<config file name>``; without ``--mode`` the whole method runs
(mode ``gns``: train the agent, deploy it, write the summary). Overrides use ml_collections syntax
(``--config.steps=400``); an unknown field is an error that names it. The console shows progress, one line per
agent episode, warnings and the summary; the full log is ``DIR/log.txt`` (``--verbosity=1``: on the console too).
"""

from __future__ import annotations

import os
import sys
import traceback

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from gns_jax import workdir as workdirs
from gns_jax.config import ConfigError, config_to_dict, validate_config

MODES = ("gns", "train_target", "describe_graph", "train_agent", "apply", "quickstart", "compare", "report")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results, checkpoints and logs "
                                "(default: workdirs/<config file name>).")
_MODE = flags.DEFINE_enum("mode", "gns", MODES, "What to run (default gns: train the agent, deploy it, summarize).")
flags.mark_flags_as_required(["config"])


def one_line(error: BaseException) -> str:
    """An exception's message on one line (absl and ml_collections wrap theirs in quotes and newlines)."""
    text = str(error).replace("\\n", " ").replace("\\'", "'").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # wrapped in quotes as a whole
        text = text[1:-1]
    return " ".join(text.split())


def run(mode: str, config, workdir: str) -> dict:
    """Run one mode; returns what it wrote to ``workdir/results.json`` (or ``graph.json``).

    Order: every config field is validated and the workdir is checked (not locked by a live run, same mode, same
    settings; for ``compare`` also its cached runs), reading only, so a refused run leaves the workdir exactly as it
    was; then the workdir is locked for this run, the run's settings are recorded (``gns_jax.workdir.claim``),
    ``config.json`` is written, the log file starts and the work starts.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {MODES}")
    validate_config(config, mode)
    from gns_jax import runtime

    if mode == "report":  # reads a compare workdir, writes only the report files
        held = workdirs.infer_mode(workdir) if os.path.isdir(workdir) else None
        stored = workdirs.read_json(os.path.join(workdir, workdirs.SETTINGS_NAME))
        held = stored.get("mode") if stored else held
        if held not in (None, "compare"):
            raise ConfigError(f"{workdir} holds {held} results; report reads the workdir of a compare run")
        if not os.path.isdir(os.path.join(workdir, "runs")):
            raise ConfigError(f"no runs under {os.path.join(workdir, 'runs')}: run --mode=compare first")
        with workdirs.WorkdirLock(workdir):
            runtime.start_workdir_log()
            return _run_mode(mode, config, workdir)
    workdirs.WorkdirLock(workdir).check()  # a run in progress is named first: its files may still change
    workdirs.check(workdir, mode, config)
    if mode == "compare":
        from gns_jax.compare import check_workdir

        check_workdir(config, workdir)
    with workdirs.WorkdirLock(workdir):
        workdirs.claim(workdir, mode, config)  # again, now that the workdir is ours
        workdirs.write_json(os.path.join(workdir, "config.json"), config_to_dict(config))
        runtime.start_workdir_log()
        return _run_mode(mode, config, workdir)


def _run_mode(mode: str, config, workdir: str) -> dict:
    if mode == "train_target":
        from gns_jax import workflows
        from gns_jax.targets.build import build_task

        task = build_task(config)
        results = workflows.train_target(task, config)
        results["data_source"] = getattr(task, "provenance", None)
        results["config"] = config_to_dict(config)
        workdirs.write_json(os.path.join(workdir, "results.json"), results)
        logging.info("test %s = %.4f (val %.4f) after %d steps in %.1f s", results["metric_name"],
                     results["test_metric"], results["val_metric"], results["steps"], results["wall_seconds"])
        return results
    if mode == "describe_graph":
        return describe_config_graph(config, workdir)
    if mode in ("gns", "train_agent", "apply", "quickstart"):
        from gns_jax import workflows

        return workflows.MODES[mode](config, workdir)
    if mode == "compare":
        from gns_jax.compare import compare

        return compare(config, workdir)
    if mode == "report":
        from gns_jax.report import report

        return report(config, workdir)
    raise ConfigError(f"unknown mode {mode!r}; choose one of {MODES}")


def describe_config_graph(config, workdir: str) -> dict:
    """``describe_graph``: the graph the scheduler sees for this config's target (no data needed)."""
    import jax

    from gns_jax.graph import build_graph_structure, describe_graph
    from gns_jax.targets.build import build_model, input_shape

    model = build_model(config, num_classes=10)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), **input_shape(config)))
    summary = describe_graph(build_graph_structure(config.model.name, variables["params"]), workdir)
    logging.info("%s: %d nodes, %d edges, %d blocks -> %s", config.model.name, summary["num_nodes"],
                 summary["num_edges"], summary["num_blocks"], os.path.join(workdir, "graph.json"))
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from gns_jax import runtime

    workdir = _WORKDIR.value or runtime.default_workdir(config_flags.get_config_filename(flags.FLAGS["config"]))
    if not _WORKDIR.value:
        print(f"gns_jax: workdir {workdir}")
    runtime.setup_logging(workdir, verbose=flags.FLAGS["verbosity"].present > 0)
    runtime.enable_compilation_cache()
    run_or_exit(_MODE.value, _CONFIG.value, workdir)


def run_or_exit(mode: str, config, workdir: str) -> dict:
    """``run`` with the command line's exits: a bad input is one line on stderr and exit code 2; Ctrl-C says
    where agent training stopped and exits with 130."""
    try:
        return run(mode, config, workdir)
    except KeyboardInterrupt:
        close_progress_bars()  # the message goes on a line of its own, not after a half-drawn bar
        print(f"gns_jax: {interrupted_message(mode, workdir)}", file=sys.stderr)
        sys.exit(130)
    except (ConfigError, OSError, RuntimeError, ValueError) as e:
        # Bad input: one line, no traceback (the traceback goes to DIR/log.txt; --verbosity=1 shows it too).
        logging.info("error: %s", one_line(e), exc_info=True)
        print(f"gns_jax: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def close_progress_bars() -> None:
    """Close every tqdm bar still open (an interrupted run's): each ends its line instead of being redrawn later."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def interrupted_message(mode: str, workdir: str) -> str:
    """What Ctrl-C left behind: agent training resumes after its last checkpointed episode."""
    agent_dir = {"train_agent": workdir, "quickstart": os.path.join(workdir, "agent"),
                 "gns": os.path.join(workdir, "agent")}.get(mode)
    if agent_dir is None:
        return "interrupted; rerun the same command to run it again (finished parts are kept where the mode caches)"
    from gns_jax import checkpoints
    from gns_jax.train import CHECKPOINT_DIR

    try:
        step = checkpoints.latest_step(os.path.join(agent_dir, CHECKPOINT_DIR))
    except Exception:  # the message must not fail
        step = None
    return f"interrupted after episode {step or 0}; rerun the same command to resume"


def config_file_error(argv, error: BaseException) -> str | None:
    """``file:line: message`` for an error raised while importing the ``--config`` file, or None."""
    path = None
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
    if not path:
        return None
    path = os.path.abspath(path.split(":", 1)[0])
    if isinstance(error, SyntaxError) and error.filename and os.path.abspath(error.filename) == path:
        return f"{path}:{error.lineno}: SyntaxError: {error.msg}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == path]
    if frames:
        return f"{path}:{frames[-1].lineno}: {type(error).__name__}: {one_line(error)}"
    if isinstance(error, (FileNotFoundError, ImportError)) and not os.path.isfile(path):
        return f"{path}: no such config file"
    return None


def _get_config_line(path: str) -> int:
    try:
        with open(path) as f:
            return next((i for i, line in enumerate(f, 1) if line.lstrip().startswith("def get_config")), 1)
    except OSError:
        return 1


def parse_flags(argv):
    """absl flag parsing, but a bad ``--config.<field>`` override is one line, not a traceback."""
    try:
        rest = flags.FLAGS(argv)
        config = _CONFIG.value
    except Exception as e:  # noqa: BLE001 -- anything raised while importing the config file is reported as one line
        where = config_file_error(argv, e)
        if where is not None:
            print(f"gns_jax: error: {where}", file=sys.stderr)
        elif isinstance(e, (AttributeError, KeyError, TypeError, ValueError, flags.Error)):
            print(f"gns_jax: error: bad command line: {one_line(e)}", file=sys.stderr)
        else:
            raise
        sys.exit(2)
    if config is not None and not isinstance(config, ml_collections.ConfigDict):
        path = os.path.abspath(config_flags.get_config_filename(flags.FLAGS["config"]))
        print(f"gns_jax: error: {path}:{_get_config_line(path)}: get_config() returned {type(config).__name__}, "
              "not an ml_collections.ConfigDict", file=sys.stderr)
        sys.exit(2)
    return rest


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
