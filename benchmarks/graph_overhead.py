"""Cost of the scheduler's observation per decision, relative to one training step of the target.

For each model: one decision = ``node_features`` (params, grads, LR, loss -> X) + the hierarchical GCN
encoder (X -> h); one training step = forward + backward + Adam update on a batch of 128 32x32 images. Both
are jitted and timed after compilation (median of repeats). Goal: decision <= 5% of a step.

On a GPU, time both inside compiled loops, as the environment runs them (``--inner-steps 10
--inner-decisions 20``: a ``lax.scan`` of steps, and a loop-carried ``lax.scan`` of decisions so that nothing
is hoisted; per-iteration time): a standalone call there also pays the host dispatch of every parameter
buffer (``decision_call_s`` reports it). On a CPU keep the defaults (standalone calls): XLA:CPU ran a
``lax.scan`` of conv training steps ~20x slower per step than a standalone step (ResNet-18 at width 0.125:
12.1 s for 2 scanned steps, 0.54 s for one), and compiles loops of decisions slowly.

    python benchmarks/graph_overhead.py                 # full width (slow on a small CPU)
    python benchmarks/graph_overhead.py --width 0.125   # narrower networks, same graph

Writes ``benchmarks/results/graph_overhead.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from gns_jax.gcn import make_encoder
from gns_jax.graph import build_graph_structure, node_features
from gns_jax.targets import VGG, ResNet

MODELS = {
    "resnet34": ("resnet", lambda width: ResNet(depth=34, width=width)),
    "resnet18": ("resnet", lambda width: ResNet(depth=18, width=width)),
    "vgg16": ("vgg", lambda width: VGG(width=width)),
}


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call seconds, median seconds of ``repeats`` further calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def _scaled(tree, c):
    """``tree * (1 + 1e-6 c)``: a loop-carried dependency so that nothing is hoisted out of a timing loop."""
    return jax.tree.map(lambda x: x * (1.0 + 1e-6 * c), tree)


def bench_model(name: str, width: float, batch: int, repeats: int, inner_steps: int, inner_decisions: int,
                encoder: str, unroll: int | None = None) -> dict:
    """Times a decision and a training step of one target (seconds per decision / per step)."""
    arch, make = MODELS[name]
    model = make(width)
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (batch, 32, 32, 3))
    y = jax.random.randint(key, (batch,), 0, 10)
    variables = jax.jit(model.init)(key, x[:1])
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(1e-3)

    def loss_fn(p, bs):
        logits, new = model.apply({"params": p, "batch_stats": bs}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

    def one_step(carry, _=None):
        p, bs, o = carry
        (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, bs)
        updates, o = tx.update(grads, o, p)
        return (optax.apply_updates(p, updates), bs, o), (loss, grads)

    @jax.jit
    def train_steps(p, bs, o):
        if inner_steps == 1:
            (p, _, _), (loss, grads) = one_step((p, bs, o))
            return p, loss, grads
        (p, _, _), (losses, grads) = jax.lax.scan(one_step, (p, bs, o), None, length=inner_steps)
        return p, losses[-1], jax.tree.map(lambda g: g[-1], grads)

    step_first, steps_time = _time(train_steps, params, batch_stats, tx.init(params), repeats=repeats)
    params, loss, grads = train_steps(params, batch_stats, tx.init(params))

    structure = build_graph_structure(arch, params)
    kwargs = {"unroll": unroll} if encoder in ("gcn", "gat") else {}
    enc = make_encoder(encoder, structure, **kwargs)
    enc_params = jax.jit(enc.init)(key, node_features(structure, params, grads, 1e-3, loss))

    def decision(ep, p, g, lr, loss):
        return enc.apply(ep, node_features(structure, p, g, lr, loss))

    def features(ep, p, g, lr, loss):
        return node_features(structure, p, g, lr, loss).nodes

    def looped(fn):
        if inner_decisions == 1:
            return jax.jit(fn)

        @jax.jit
        def run(ep, p, g, lr, loss):
            def body(c, _):
                return c + 1e-9 * jnp.sum(fn(ep, _scaled(p, c), _scaled(g, c), lr, loss)), None

            return jax.lax.scan(body, jnp.float32(0.0), None, length=inner_decisions)[0]

        return run

    args = (enc_params, params, grads, 1e-3, loss)
    dec_first, dec_time = _time(looped(decision), *args, repeats=max(repeats, 10))
    _, feat_time = _time(looped(features), *args, repeats=max(repeats, 10))
    _, dec_call = _time(jax.jit(decision), *args, repeats=max(repeats, 20))
    step_s, dec_s, feat_s = steps_time / inner_steps, dec_time / inner_decisions, feat_time / inner_decisions
    return {
        "model": name, "width": width, "batch": batch, "encoder": encoder, "unroll": unroll,
        "num_params": int(sum(v.size for v in jax.tree.leaves(params))),
        "num_nodes": structure.num_nodes, "num_edges": structure.num_edges, "num_blocks": structure.num_blocks,
        "train_step_s": step_s, "decision_s": dec_s, "features_s": feat_s, "encoder_s": max(dec_s - feat_s, 0.0),
        "overhead_pct": 100.0 * dec_s / step_s,
        "decision_call_s": dec_call,  # one standalone jitted call, host dispatch of every parameter included
        "train_compile_s": step_first, "decision_compile_s": dec_first,
        "inner_steps": inner_steps, "inner_decisions": inner_decisions,
    }


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet34,vgg16", help=f"comma-separated, from {sorted(MODELS)}")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the targets")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--encoder", default="gcn", help="gcn, gat, css or srls")
    parser.add_argument("--unroll", type=int, default=None, help="encoder scan unroll (default: auto)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each compiled loop (median)")
    parser.add_argument("--inner-steps", type=int, default=1, help="training steps per compiled loop (1: none)")
    parser.add_argument("--inner-decisions", type=int, default=1, help="decisions per compiled loop (1: none)")
    parser.add_argument("--out", default=os.path.join(here, "results", "graph_overhead.json"))
    args = parser.parse_args()

    results = []
    for name in args.models.split(","):
        r = bench_model(name, args.width, args.batch, args.repeats, args.inner_steps, args.inner_decisions,
                        args.encoder, args.unroll)
        results.append(r)
        print(f"{name:9s} width {r['width']:<5g} params {r['num_params'] / 1e6:7.2f}M  "
              f"step {1e3 * r['train_step_s']:9.2f} ms  decision {1e3 * r['decision_s']:7.3f} ms "
              f"(features {1e3 * r['features_s']:.3f} ms; one standalone call {1e3 * r['decision_call_s']:.3f} ms)"
              f"  overhead {r['overhead_pct']:.2f}% of a step  "
              f"[goal <= 5%: {'ok' if r['overhead_pct'] <= 5 else 'MISSED'}]", flush=True)
    report = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "jax": jax.__version__,
              "machine": platform.machine(), "cpu_count": os.cpu_count(), "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
