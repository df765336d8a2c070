"""Command line: ``python -m gns_jax.main --config=configs/<name>.py --workdir=DIR --mode=MODE``.

Overrides use ml_collections syntax (``--config.steps=400``); an unknown field is an error that names it.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gns_jax.config import ConfigError, config_to_dict, validate_config

MODES = ("train_target", "describe_graph", "train_agent", "apply", "quickstart", "compare", "report")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results, checkpoints and logs.")
_MODE = flags.DEFINE_enum("mode", "train_target", MODES, "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def one_line(error: BaseException) -> str:
    """An exception's message on one line (absl and ml_collections wrap theirs in quotes and newlines)."""
    text = str(error).replace("\\n", " ").replace("\\'", "'").strip("'\"")
    return " ".join(text.split())


def write_json(path: str, payload: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)


def run(mode: str, config, workdir: str) -> dict:
    """Run one mode; returns what it wrote to ``workdir/results.json`` (or ``graph.json``)."""
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config_to_dict(config))
    if mode == "train_target":
        from gns_jax.targets.build import build_task
        from gns_jax.targets.run import train_with_schedule

        results = train_with_schedule(build_task(config), config)
        results["config"] = config_to_dict(config)
        write_json(os.path.join(workdir, "results.json"), results)
        logging.info("test %s = %.4f (val %.4f) after %d steps in %.1f s", results["metric_name"],
                     results["test_metric"], results["val_metric"], results["steps"], results["wall_seconds"])
        return results
    if mode == "describe_graph":
        return describe_config_graph(config, workdir)
    if mode in ("train_agent", "apply", "quickstart"):
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
    try:
        run(_MODE.value, _CONFIG.value, _WORKDIR.value)
    except (ConfigError, OSError, RuntimeError, ValueError) as e:
        # Bad input: one line, no traceback (set --verbosity=1 for the traceback in the log).
        logging.debug("error", exc_info=True)
        print(f"gns_jax: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def parse_flags(argv):
    """absl flag parsing, but a bad ``--config.<field>`` override is one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
        print(f"gns_jax: error: bad command line: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
