"""Shared helpers of the benchmark scripts: timing, synthetic tasks, results files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import time

import jax
import numpy as np

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def block(tree):
    return jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


def best_time(fn, repeats: int = 3) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` runs (after one warm-up call that also compiles)."""
    block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> dict:
    import flax
    import optax

    return {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
            "flax": flax.__version__, "optax": optax.__version__}


def synthetic_image_task(model, n: int = 4096, shape=(28, 28, 1), batch_size: int = 128, optimizer: str = "adam"):
    """A Task on random uint8 images (benchmarks measure speed, not accuracy)."""
    from gns_jax.targets.task import Task, as_numpy_batch, make_optimizer

    rng = np.random.default_rng(0)
    split = lambda m: as_numpy_batch(rng.integers(0, 256, (m,) + shape, dtype=np.uint8), rng.integers(0, 10, m))
    scale = lambda key, batch, train: {"x": batch["image"].astype("float32") / 255.0}
    return Task(model=model, data={"train": split(n), "val": split(512), "test": split(512)}, batch_size=batch_size,
                optimizer=make_optimizer(optimizer, 1e-3), input_fn=scale, eval_batch_size=512)


def write_results(name: str, payload: dict) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    date = datetime.date.today().isoformat()
    path = os.path.join(RESULTS_DIR, f"{name}-{date}-{socket.gethostname()}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine(), **payload}, f, indent=2)
    return path
