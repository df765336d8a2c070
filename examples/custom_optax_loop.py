"""A trained GNS scheduler inside a hand-written optax training loop (``gns_jax.scheduled``).

    python examples/custom_optax_loop.py                     # the scheduler shipped with the package
    python examples/custom_optax_loop.py --checkpoint=W/agent/checkpoints --config=configs/quickstart.py

Without ``--checkpoint`` the policy is ``gns_jax.pretrained.load("fashion_mnist_mlp_proxy")``, trained on this MLP
(docs/pretrained.md); with it, an agent checkpoint from ``--mode=train_agent`` (or ``make run``, which writes one
under workdirs/quickstart/agent/checkpoints) trained under ``--config``. The config also names the model and data
of the loop. The loop below is ordinary user code: its own model call, loss, batches and
jitted step. The only GNS-specific lines build the optimizer: ``gns_jax.scheduled(optax.adam, policy, ...)`` is an
optax transformation that every K steps observes the parameters, the gradients and the mean loss it was handed and
sets the learning rate of the next K steps by the policy's mean action (Eq. 4), inside the jitted step. The loss goes
in as ``value=`` (optax's ``extra_args`` convention); clipping can come first in an ``optax.chain``.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_flags

import gns_jax
from gns_jax.targets.build import build_task


def load_config(path: str):
    name = os.path.splitext(os.path.basename(path))[0]
    return config_flags.config_flags._LoadConfigModule(name, path).get_config()


def run(config, checkpoint: str | None, steps: int, initial_lr: float = 1e-3, clip: float | None = None,
        seed: int = 0, pretrained: str = "fashion_mnist_mlp_proxy") -> dict:
    task = build_task(config)  # the model and data the config names (the agent was trained for this architecture)
    if checkpoint is None:  # a scheduler shipped with the package; it checks that it can read this model's graph
        abstract = jax.eval_shape(task.init_state, jax.random.key(0), initial_lr).params
        policy = gns_jax.pretrained.load(pretrained, target=abstract)
    else:
        policy = gns_jax.TrainedPolicy.from_checkpoint(config, checkpoint, task)
    train, test = task.data["train"], task.data["test"]
    to_inputs = lambda images: jnp.asarray(images, jnp.float32).reshape(len(images), -1) / 255.0

    # The learned schedule: Adam whose learning rate the policy sets every K steps over a run of `steps` steps.
    tx = gns_jax.scheduled(optax.adam, policy, learning_rate=initial_lr, total_steps=steps)
    if clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    params = task.model.init(jax.random.key(seed), to_inputs(train["image"][:1]))["params"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, images, labels):
        def loss_fn(p):
            logits = task.model.apply({"params": p}, to_inputs(images))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    lrs = []
    for step in range(steps):
        if step % policy.decision_interval == 0:
            lrs.append(float(gns_jax.current_learning_rate(opt_state)))  # alpha of this block of K steps
        idx = rng.integers(0, len(train["label"]), task.batch_size)
        params, opt_state, _ = train_step(params, opt_state, train["image"][idx], train["label"][idx])
    logits = task.model.apply({"params": params}, to_inputs(test["image"]))
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == test["label"]))
    return {"test_accuracy": accuracy, "lr_trajectory": lrs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None,
                        help="agent checkpoint directory (from train_agent); default: a shipped scheduler")
    parser.add_argument("--pretrained", default="fashion_mnist_mlp_proxy",
                        help="the shipped scheduler used without --checkpoint (gns_jax.pretrained.available())")
    parser.add_argument("--config", default="configs/quickstart.py",
                        help="model and data of the loop; with --checkpoint, the config the agent was trained with")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the first K steps")
    parser.add_argument("--clip", type=float, default=None, help="clip gradients by this global norm first")
    args = parser.parse_args()
    out = run(load_config(args.config), args.checkpoint, args.steps, args.lr, args.clip, pretrained=args.pretrained)
    print(f"lr trajectory: {', '.join(f'{x:.2e}' for x in out['lr_trajectory'])}")
    print(f"test accuracy: {out['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
