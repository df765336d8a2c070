"""What one agent decision step costs next to the optimizer steps it contains.

A decision step of agent training (``Agent.decision_step``) is, for each of N environments: the policy (Eq. 4),
K optimizer steps of the target, the node features of the next state (§4.1) and, when the shared validation coin
says so (Eq. 3), a pass over the validation split. This script times, side by side in one process (alternating,
minimum over repeats, compilation excluded):

* ``decision_vmap``, ``decision_loop``: ``Agent.decision_step`` with the coin down (no validation due), with the N
  environments vmapped and one after the other in the same program (``agent.env_batching``);
* ``steps_vmapped``: the same N x K optimizer steps alone, ``jax.vmap`` of ``Task.train_scan`` over the N targets;
* ``steps_one_by_one``: N separate single-target ``Task.train_scan`` calls;
* the parts: the batch indices of K steps (epoch permutations of the training set) and the node features; with
  ``--validation`` also decision steps that validate (one in 1/p at p = ``agent.validation_prob``) and the
  validation pass alone.

It reports ``ratio_<mode> = decision_<mode> / min(steps_vmapped, steps_one_by_one)``: the decision step against the
cheapest way to run its optimizer steps alone (goal <= 1.1), ``ratio_auto`` for the mode ``auto`` picks, and
``vmap_cost = steps_vmapped / steps_one_by_one``.

    python benchmarks/decision_step.py                 # MLP (K = 250; N = 1, 2, 8), ResNet-18 at width 1/8
    python benchmarks/decision_step.py --models mlp --ns 1 2 8 --validation

On a CPU the ResNet's K steps are unrolled (``scan_unroll = K``: XLA:CPU runs convolutions in a loop slowly), so its
default is K = 4 and N = 1, 2, 4 (the program of N x K unrolled steps compiles slowly). Uses the Fashion-MNIST files
of the Debian package when present (the training split's size sets the permutation cost), else random data of the
same shapes. Writes ``benchmarks/results/decision_step-<date>-<host>.json``; the last line printed is the
``ratio_auto`` of every model and N.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import write_results  # noqa: E402
from run import fashion_mnist_task, interleaved, log  # noqa: E402

from gns_jax.agent import Agent  # noqa: E402
from gns_jax.config import base_config  # noqa: E402
from gns_jax.settings import agent_settings  # noqa: E402
from gns_jax.targets.task import batch_indices, get_learning_rate  # noqa: E402


def model_config(model: str, k: int, width: float):
    config = base_config()
    config.data.name, config.data.source = "fashion_mnist", "debian"
    config.decision_interval, config.steps = k, 8 * k
    if model == "resnet18":
        config.model.name, config.model.depth, config.model.width = "resnet", 18, width
        on_cpu = jax.devices()[0].platform == "cpu"
        config.scan_unroll = k if on_cpu else 1
    return config


def bench_model(model: str, ns: list[int], k: int, width: float, repeats: int, validation: bool) -> dict:
    config = model_config(model, k, width)
    task, data_name = fashion_mnist_task(config, train_limit=0)
    settings = agent_settings(config)
    agents = {b: Agent(task, dataclasses.replace(settings, env_batching=b)) for b in ("vmap", "loop")}
    params = agents["vmap"].init_params(jax.random.key(1))
    data = (task.device_data["train"], task.device_data["val"])
    num_train = jax.tree.leaves(data[0])[0].shape[0]
    obs1, state1, _ = agents["vmap"].reset(jax.random.split(jax.random.key(0), 1), *data)
    no, yes = jnp.asarray(False), jnp.asarray(True)

    train_one = jax.jit(lambda target: task.train_scan(target, data[0], k))
    train_vmapped = jax.jit(jax.vmap(lambda target: task.train_scan(target, data[0], k)))
    indices = jax.jit(jax.vmap(lambda target: batch_indices(target.data_key, target.step, k, num_train,
                                                            task.batch_size)))
    features = jax.jit(jax.vmap(lambda target: agents["vmap"].observe(target.params, target.grads,
                                                                      get_learning_rate(target.opt_state), 0.5)))
    evaluate = jax.jit(lambda target: task.evaluate_split(target, data[1])["metric"])
    out = {"model": model, "k": k, "data": data_name, "train_examples": int(num_train),
           "platform": jax.devices()[0].platform, "width": width if model != "mlp" else None,
           "auto_env_batching": settings.env_batching}
    for n in ns:
        tile = lambda x, n=n: jnp.repeat(x, n, axis=0)
        state, obs = jax.tree.map(tile, state1), jax.tree.map(tile, obs1)
        targets = state.target
        singles = [jax.tree.map(lambda x, i=i: x[i], targets) for i in range(n)]
        keys = jax.random.split(jax.random.key(2), n)
        fns = {f"decision_{b}": functools.partial(agent.decision_step, params, keys, state, obs, no, data)
               for b, agent in agents.items()}
        fns.update({
            "steps_vmapped": functools.partial(train_vmapped, targets),
            "steps_one_by_one": lambda singles=singles: [train_one(s) for s in singles],
            "batch_indices": functools.partial(indices, targets),
            "node_features": functools.partial(features, targets),
        })
        if validation:
            fns.update({f"decision_{b}_validate": functools.partial(agent.decision_step, params, keys, state, obs,
                                                                    yes, data) for b, agent in agents.items()})
            fns["validation_one_by_one"] = lambda singles=singles: [evaluate(s) for s in singles]
        log(f"{model}: N = {n}")
        times = {name: round(t, 5) for name, t in interleaved(fns, repeats).items()}
        alone = min(times["steps_vmapped"], times["steps_one_by_one"])
        row = {"seconds": times,
               # the decision step / the cheapest way to run its N x K optimizer steps alone
               "ratio_vmap": round(times["decision_vmap"] / alone, 3),
               "ratio_loop": round(times["decision_loop"] / alone, 3),
               "ratio_auto": round(times[f"decision_{settings.env_batching}"] / alone, 3),
               "vmap_cost": round(times["steps_vmapped"] / times["steps_one_by_one"], 3)}
        log(f"  {row}")
        out[f"n{n}"] = row
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "resnet18"], choices=["mlp", "resnet18"])
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 2, 8], help="environments per decision step")
    parser.add_argument("--k", type=int, default=None, help="K (default: 250; 4 for the ResNet on a CPU)")
    parser.add_argument("--width", type=float, default=0.125, help="ResNet width multiplier")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resnet-ns", type=int, nargs="+", default=[1, 2, 4],
                        help="environments for the ResNet (an unrolled CPU program of N x K steps compiles slowly)")
    parser.add_argument("--validation", action="store_true",
                        help="also time decision steps that validate, and the validation pass alone")
    parser.add_argument("--name", default="decision_step", help="results file name prefix")
    args = parser.parse_args()
    results = {"args": vars(args)}
    for model in args.models:
        cpu = jax.devices()[0].platform == "cpu"
        k = args.k or (250 if model == "mlp" or not cpu else 4)
        ns = args.resnet_ns if model == "resnet18" and cpu else args.ns
        results[model] = bench_model(model, ns, k, args.width, args.repeats, args.validation)
    path = write_results(args.name, results)
    log(f"wrote {path}")
    summary = {f"{m}_{key}": row["ratio_auto"] for m in args.models for key, row in results[m].items()
               if key.startswith("n") and isinstance(row, dict)}
    print(summary)


if __name__ == "__main__":
    main()
