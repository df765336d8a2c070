"""A trained GNS scheduler driving a hand-written optax training loop (``gns_jax.apply.LearnedScheduler``).

    python examples/custom_optax_loop.py --checkpoint=W/agent/checkpoints --config=configs/quickstart.py

The agent checkpoint comes from ``--mode=train_agent`` (or ``make run``, which writes one under
workdirs/quickstart/agent/checkpoints). The loop below is ordinary user code: its own model call, loss, optax
optimizer and batches. Every K steps it hands the scheduler the parameters, the last gradients, the mean loss and
the current learning rate, and writes the returned learning rate into the optimizer state.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_flags

from gns_jax.apply import LearnedScheduler


def load_config(path: str):
    name = os.path.splitext(os.path.basename(path))[0]
    return config_flags.config_flags._LoadConfigModule(name, path).get_config()


def run(config, checkpoint: str, steps: int, k: int, initial_lr: float = 1e-3, seed: int = 0) -> dict:
    scheduler = LearnedScheduler.from_checkpoint(config, checkpoint)
    task = scheduler.agent.task  # the model and data the config names (the agent was trained for this architecture)
    train, test = task.data["train"], task.data["test"]
    to_inputs = lambda images: jnp.asarray(images, jnp.float32).reshape(len(images), -1) / 255.0

    tx = optax.inject_hyperparams(optax.adam)(learning_rate=initial_lr)
    params = task.model.init(jax.random.key(seed), to_inputs(train["image"][:1]))["params"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, images, labels):
        def loss_fn(p):
            logits = task.model.apply({"params": p}, to_inputs(images))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    rng = np.random.default_rng(seed)
    lr, lrs = initial_lr, []
    for _ in range(steps // k):
        losses = []
        for _ in range(k):
            idx = rng.integers(0, len(train["label"]), task.batch_size)
            params, opt_state, loss, grads = train_step(params, opt_state, train["image"][idx], train["label"][idx])
            losses.append(loss)
        lrs.append(lr)
        lr = float(scheduler(params, grads, jnp.mean(jnp.stack(losses)), lr))  # the next K steps use this LR
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr)
    logits = task.model.apply({"params": params}, to_inputs(test["image"]))
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == test["label"]))
    return {"test_accuracy": accuracy, "lr_trajectory": lrs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="agent checkpoint directory (from train_agent)")
    parser.add_argument("--config", default="configs/quickstart.py", help="the config the agent was trained with")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--k", type=int, default=200, help="optimizer steps between two scheduler calls")
    args = parser.parse_args()
    out = run(load_config(args.config), args.checkpoint, args.steps, args.k)
    print(f"lr trajectory: {', '.join(f'{x:.2e}' for x in out['lr_trajectory'])}")
    print(f"test accuracy: {out['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
