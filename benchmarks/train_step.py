"""Train steps per second: K steps in one ``lax.scan`` (gns_jax's path) vs a Python loop of jitted single steps.

    python benchmarks/train_step.py [--k 500] [--resnet-width 0.25]

Both paths run the same ``Task`` (same model, batch 128, Adam under inject_hyperparams, data on device), side by
side in one process; the figure is the ratio of their step rates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
from common import best_time, synthetic_image_task, write_results  # noqa: E402

from gns_jax.targets import MLP, ResNet  # noqa: E402


def measure(task, k: int, repeats: int, unrolled: bool = False) -> dict:
    state = task.init(jax.random.key(0), 1e-3)
    scan_time = best_time(lambda: task.train_steps(state, k)[0].params, repeats)
    extra = {}
    if unrolled:  # the same scan, fully unrolled (XLA:CPU's slow convolutions in loops, jax-ml/jax#12868)
        task.scan_unroll = k
        task._train_scan_jit = jax.jit(task.train_scan, static_argnames="num_steps")
        unrolled_time = best_time(lambda: task.train_steps(state, k)[0].params, repeats)
        extra = {"unrolled_ms_per_step": 1e3 * unrolled_time / k}

    def python_loop():
        s = state
        for _ in range(k):
            s, _ = task.train_steps(s, 1)
        return s.params

    loop_time = best_time(python_loop, repeats)
    return {"k": k, "scan_steps_per_s": k / scan_time, "loop_steps_per_s": k / loop_time,
            "scan_ms_per_step": 1e3 * scan_time / k, "loop_ms_per_step": 1e3 * loop_time / k,
            "speedup": loop_time / scan_time, **extra}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=500, help="steps per scan (the decision interval K)")
    parser.add_argument("--resnet-k", type=int, default=3, help="steps per scan for the ResNet (slow on CPU)")
    parser.add_argument("--resnet-width", type=float, default=0.125, help="ResNet-18 width multiplier (1 = 64..512)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {
        "mlp_784_128_128_10": measure(synthetic_image_task(MLP()), args.k, args.repeats),
        f"resnet18_width{args.resnet_width}": measure(
            synthetic_image_task(ResNet(depth=18, width=args.resnet_width), n=1024, shape=(32, 32, 3)),
            args.resnet_k, args.repeats, unrolled=True),
    }
    for name, r in results.items():
        unrolled = f", unrolled scan {r['unrolled_ms_per_step']:.3f} ms/step" if "unrolled_ms_per_step" in r else ""
        print(f"{name}: scan {r['scan_ms_per_step']:.3f} ms/step, python loop {r['loop_ms_per_step']:.3f} ms/step"
              f"{unrolled} -> loop time / scan time = {r['speedup']:.2f} (K={r['k']})")
    path = write_results("train_step", {"results": results, "args": vars(args)})
    print(f"wrote {path}")
    print(json.dumps({name: round(r["speedup"], 3) for name, r in results.items()}))


if __name__ == "__main__":
    main()
