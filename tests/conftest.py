"""Shared fixtures: tiny datasets written in their official file layouts."""

import gzip
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gns_jax import runtime
from gns_jax.scheduled import current_learning_rate
from gns_jax.targets.task import batch_indices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_GLUE = os.path.join(os.path.dirname(REPO), "shared", "data", "glue")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

# tests/run_files.py gives the files of one suite run a fresh persistent compilation cache ($GNS_JAX_COMPILATION_CACHE,
# which the CLI subprocesses of the tests read too): a program that another file (or another test, through a new
# jitted closure) has compiled is loaded instead of compiled again.
if os.environ.get(runtime.CACHE_ENV):
    runtime.enable_compilation_cache()


def write_idx(path: str, array: np.ndarray) -> None:
    """An IDX file (the MNIST/Fashion-MNIST format): magic 0x0000080<ndim>, big-endian dims, uint8 data."""
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist_dir(root: str, num_train: int = 600, num_test: int = 200, seed: int = 0) -> str:
    """Learnable tiny Fashion-MNIST: each class is a fixed random pattern plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))

    def sample(n):
        labels = rng.integers(0, 10, size=n)
        noise = rng.normal(0, 40, size=(n, 28, 28))
        return np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.uint8)

    os.makedirs(root, exist_ok=True)
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        images, labels = sample(n)
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    return root


def tiny_mlp_config(data_dir: str, cache_dir: str, *, steps: int = 50, decision_interval: int = 10,
                    hidden: tuple = (16, 16), eval_batch_size: int = 100, **agent):
    """A tiny Fashion-MNIST MLP experiment on local files (batch 32, 100 validation images) with a small agent;
    ``agent`` overrides fields of ``config.agent``."""
    from gns_jax.config import base_config

    config = base_config("paper")  # the tests pin the paper's agent loop; presets are tested on their own
    config.data.source = "local"
    config.data.data_dir = data_dir
    config.data.cache_dir = cache_dir
    config.data.val_size = 100
    config.model.hidden = tuple(hidden)
    config.steps = steps
    config.decision_interval = decision_interval
    config.batch_size = 32
    config.eval_batch_size = eval_batch_size
    config.agent.episodes = 2
    config.agent.encoder_hidden = 8
    config.agent.head_hidden = 8
    for k, v in agent.items():
        config.agent[k] = v
    return config


@pytest.fixture(scope="session")
def tiny_fashion_mnist(tmp_path_factory) -> str:
    return make_fashion_mnist_dir(str(tmp_path_factory.mktemp("fashion_mnist")))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


# ---- shared by the tests of gns_jax.scheduled and gns_jax.pretrained ----------------------------------------


def decisive(agent_params):
    """The freshly initialized actor barely acts (mu ~ 0): scale its last layer so that Eq. 4 moves alpha, with
    tanh unsaturated so that mu still depends on the observation."""
    dense = agent_params["params"]["actor"]["m_f"]["Dense_1"]
    scaled = dict(dense, kernel=dense["kernel"] * 30.0, bias=dense["bias"] + 0.3)
    actor = dict(agent_params["params"]["actor"], m_f=dict(agent_params["params"]["actor"]["m_f"], Dense_1=scaled))
    return {**agent_params, "params": dict(agent_params["params"], actor=actor)}


def user_loop(task, tx, num_steps: int, clip: float | None = None):
    """An ordinary training loop on the task's batches (``Task.train_scan``'s order and per-step keys).

    Returns ``run(params, opt_state, key, data_key) -> (params, opt_state, lrs)`` with ``lrs[i]`` the learning rate
    step i used; ``clip`` clips the gradients by hand before ``tx`` (the reference of the chain test).
    """
    train = task.device_data["train"]
    num_examples = train["label"].shape[0]

    def run(params, opt_state, key, data_key):
        indices = batch_indices(data_key, 0, num_steps, num_examples, task.batch_size)

        def step(carry, xs):
            params, opt_state = carry
            i, idx = xs
            batch = jax.tree.map(lambda a: a[idx], train)
            loss_fn = lambda p: task.loss_and_updates(p, {}, jax.random.fold_in(key, i), batch)[0]
            loss, grads = jax.value_and_grad(loss_fn)(params)
            if clip is not None:
                grads, _ = optax.clip_by_global_norm(clip).update(grads, optax.EmptyState())
            lr = current_learning_rate(opt_state)
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            return (optax.apply_updates(params, updates), opt_state), lr

        (params, opt_state), lrs = jax.lax.scan(step, (params, opt_state), (jnp.arange(num_steps), indices))
        return params, opt_state, lrs

    return run
