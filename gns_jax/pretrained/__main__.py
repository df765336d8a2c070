"""``python -m gns_jax.pretrained {list,show,export}``: the shipped schedulers, and adding one from a training run.

    python -m gns_jax.pretrained list
    python -m gns_jax.pretrained show fashion_mnist_mlp_proxy
    python -m gns_jax.pretrained export --workdir=W --name=NAME [--checkpoint=PATH] [--config=FILE]
        [--deployments='D/seed_*.json'] [--command='how it was trained'] [--description=...] [--out=DIR]

``export`` reads the run's ``config.json`` (or ``--config``: a run's config.json, or ``configs/<name>.py[:preset]``),
its newest agent checkpoint (or ``--checkpoint``), the state-dependence probe of that checkpoint's update from the
run's ``logs/episodes.csv``, and the deployments (§4.3) given by ``--deployments`` (``results.json`` of ``apply``
or the ``seed_*.json`` of ``compare``), and writes ``gns_jax/pretrained/<name>/{params.msgpack,card.json}``
(``--out`` for elsewhere). Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib.util
import json
import os
import statistics
import sys

import ml_collections

import gns_jax.pretrained as pretrained
from gns_jax import checkpoints

# The checkpoint directories a run can hold, newest layout first: train_agent, gns/quickstart, compare.
CHECKPOINT_LAYOUTS = ("checkpoints", os.path.join("agent", "checkpoints"), os.path.join("agents", "gns",
                                                                                          "checkpoints"))
PROBE_FIELDS = ("probe_mu_mean", "probe_spread", "probe_slope", "probe_late_minus_early", "probe_value_slope")


def load_config(path: str):
    """A ConfigDict from a run's ``config.json`` or from ``configs/<name>.py[:argument]`` (its ``get_config``)."""
    if path.endswith(".json"):
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    file, _, argument = path.partition(":")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(file))[0], file)
    if spec is None or not os.path.isfile(file):
        raise FileNotFoundError(f"no config file {file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(argument) if argument else module.get_config()


def find_checkpoint(workdir: str) -> str:
    """The newest agent checkpoint step under a run directory."""
    for layout in CHECKPOINT_LAYOUTS:
        directory = os.path.join(workdir, layout)
        step = checkpoints.latest_step(directory)
        if step is not None:
            return os.path.join(directory, str(step))
    raise FileNotFoundError(f"no agent checkpoint in {workdir} (looked in {', '.join(CHECKPOINT_LAYOUTS)})")


def probe_of(checkpoint: str) -> dict | None:
    """The probe numbers logged after the PPO update that produced ``checkpoint`` (``.../checkpoints/E``).

    Checkpoint E holds the agent after episode E, whose row in ``logs/episodes.csv`` has step E - 1; the row of
    the first update is kept too, to show how far the policy moved from its initialization.
    """
    directory, step = checkpoints.split_checkpoint_path(checkpoint)
    path = os.path.join(os.path.dirname(directory), "logs", "episodes.csv")
    if step is None or not os.path.isfile(path):
        return None
    with open(path, newline="") as f:
        rows = {int(float(r["step"])): r for r in csv.DictReader(f)}
    row = rows.get(step - 1)
    if row is None or not all(row.get(k) for k in PROBE_FIELDS):
        return None
    out = {"after_update": step, **{k.removeprefix("probe_"): round(float(row[k]), 6) for k in PROBE_FIELDS}}
    first = rows.get(0)
    if first is not None and step - 1 != 0 and first.get("probe_spread"):
        out["after_first_update"] = {k.removeprefix("probe_"): round(float(first[k]), 6) for k in PROBE_FIELDS}
    return out


def deployments_of(pattern: str) -> dict | None:
    """Test/validation metric, initial LR and LR per decision interval of each deployment (``apply``'s
    results.json or ``compare``'s seed_*.json)."""
    files = sorted(glob.glob(pattern))
    if not files:
        return None
    runs = []
    for path in files:
        with open(path) as f:
            r = json.load(f)
        runs.append({"file": os.path.basename(path), "seed": r.get("seed", r.get("config", {}).get("seed")),
                     "test": r["test_metric"], "val": r["val_metric"], "initial_lr": r.get("initial_lr"),
                     "deploy_selection": r.get("deploy_selection"),
                     "lr_trajectory": r.get("lr_trajectory")})
    summary = {"metric": json.load(open(files[0])).get("metric_name", "metric"), "runs": runs}
    for split in ("test", "val"):
        values = [r[split] for r in runs]
        summary[f"{split}_mean"] = statistics.fmean(values)
        summary[f"{split}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gns_jax.pretrained", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped schedulers")
    show = sub.add_parser("show", help="a scheduler's card (JSON)")
    show.add_argument("name")
    ex = sub.add_parser("export", help="a train_agent checkpoint -> gns_jax/pretrained/<name>/")
    ex.add_argument("--name", required=True)
    ex.add_argument("--workdir", help="the training run (its config.json, newest checkpoint and episodes.csv)")
    ex.add_argument("--config", help="config.json of the run, or configs/<name>.py[:preset] (default: WORKDIR's)")
    ex.add_argument("--checkpoint", help="agent checkpoint (default: the newest under WORKDIR)")
    ex.add_argument("--deployments", help="glob of deployment results (apply results.json, compare seed_*.json)")
    ex.add_argument("--command", dest="train_command", default="", help="the command that trained the agent")
    ex.add_argument("--description", default="", help="one paragraph for the card")
    ex.add_argument("--note", action="append", default=[], help="a remark for the card (repeatable)")
    ex.add_argument("--use-with", nargs=2, type=int, metavar=("T", "K"),
                    help="run length and decision interval it was deployed with, when not those of training")
    ex.add_argument("--out", help="directory to write (default: gns_jax/pretrained/NAME)")
    ex.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            for name in pretrained.available():
                print(f"{name}: {pretrained.card(name).get('description', '')}")
            return 0
        if args.command == "show":
            print(json.dumps(pretrained.card(args.name), indent=1))
            return 0
        if not (args.workdir or (args.config and args.checkpoint)):
            raise ValueError("export needs --workdir, or --config and --checkpoint")
        config = load_config(args.config or os.path.join(args.workdir, "config.json"))
        checkpoint = args.checkpoint or find_checkpoint(args.workdir)
        provenance = {"training_command": args.train_command, "probe": probe_of(checkpoint),
                      "deployments": deployments_of(args.deployments) if args.deployments else None,
                      "notes": args.note}
        out = pretrained.export(config, checkpoint, args.name, out_dir=args.out, provenance=provenance,
                                description=args.description, overwrite=args.overwrite,
                                use_with=tuple(args.use_with) if args.use_with else None)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"wrote {out} ({size / 1024:.0f} KiB); load it with gns_jax.pretrained.load({args.name!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
