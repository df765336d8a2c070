"""Training a target network under an injected learning rate: K optimizer steps in one ``lax.scan``.

One decision step of GNS (§3.2, Algorithm 1) is K optimizer updations w <- w - alpha_t * g with a fixed alpha_t.
Here that is ``Task.train_scan``: a pure, traceable function that runs K steps of
``optax.inject_hyperparams(optimizer)`` with the whole training split on device, gathering each batch by index
inside the scan. The learning rate lives in ``opt_state.hyperparams['learning_rate']`` (``get_learning_rate`` /
``set_learning_rate``), so a scheduler changes it without recompiling anything; ``set_hyperparams`` is the one
writer of injected hyperparameters, used by the agent and the baselines alike.

Batches follow epoch-wise shuffling without replacement: epoch e visits the training set in the order
``permutation(fold_in(data_key, e))`` and drops the last partial batch. The index of every batch is a pure function
of (data_key, global step), which makes runs resumable and identical under ``vmap``; the (few) permutations a K-step
window touches are computed once per call, not per step.

The pure functions (``init_state``, ``step``, ``scan_steps``, ``train_scan``, ``evaluate_split``) take the data as an
argument so that callers can ``vmap`` over states while sharing the data: ``step`` is one optimizer step on a
batch given by its indices, ``scan_steps`` runs one per row of an index array (the environment, ``train_scan`` and
deployment's ``follow_policy`` all train through it); ``train_steps`` and ``evaluate`` are jitted conveniences bound
to the task's own device data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

Batch = Mapping[str, jnp.ndarray]
PyTree = Any


@struct.dataclass
class TargetState:
    """Everything that changes while a target network trains."""

    step: jnp.ndarray  # optimizer steps taken so far (int32)
    params: PyTree
    batch_stats: PyTree  # batch-norm running statistics ({} when the model has none)
    opt_state: optax.OptState  # an inject_hyperparams state: the learning rate is in .hyperparams
    grads: PyTree  # gradients of the most recent optimizer step (node features, §4.1)
    key: jnp.ndarray  # per-step randomness (augmentation, dropout) is fold_in(key, step)
    data_key: jnp.ndarray  # the shuffling order of every epoch is fold_in(data_key, epoch)


@struct.dataclass
class StepStats:
    """Per-call summary of a K-step scan: all the host needs to see."""

    mean_loss: jnp.ndarray  # mean training loss over the K steps (a global node feature, §4.1)
    last_loss: jnp.ndarray
    finite: jnp.ndarray  # False when a loss or a parameter became NaN/inf during the scan


def compute_dtype(config) -> jnp.dtype:
    """``config.model.dtype`` as a dtype: the targets' activation dtype (bfloat16 = mixed precision; parameters,
    optimizer state and logits stay float32)."""
    return jnp.dtype(config.model.get("dtype", "float32"))


def make_optimizer(name: str, learning_rate: float, *, weight_decay: float = 0.0, momentum: float = 0.9,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """``optax.inject_hyperparams`` around Adam, AdamW or SGD (the paper's optimizers, §5)."""
    if name == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
    if name == "adamw":
        return optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                                                     weight_decay=weight_decay)
    if name == "sgd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate, momentum=momentum or None)
    raise ValueError(f"unknown optimizer {name!r}; choose one of 'adam', 'adamw', 'sgd'")


def get_learning_rate(opt_state: optax.OptState) -> jnp.ndarray:
    """The learning rate held in an ``inject_hyperparams`` state."""
    return opt_state.hyperparams["learning_rate"]


def set_hyperparams(opt_state: optax.OptState, values: Mapping[str, Any]) -> optax.OptState:
    """A copy of an ``inject_hyperparams``-style state with some hyperparameters replaced (as arrays).

    The one writer of hyperparameters into an optimizer state: GNS's learning rate (Eq. 4), the baselines' schedules
    and the HD baselines' beta all go through it (values are cast to the stored dtype and shape: no recompilation).
    """
    if not values:
        return opt_state
    hyperparams = dict(opt_state.hyperparams)
    for name, value in values.items():
        if name not in hyperparams:
            raise KeyError(f"optimizer has no injected hyperparameter {name!r} (it has {sorted(hyperparams)})")
        old = hyperparams[name]
        hyperparams[name] = jnp.asarray(value, old.dtype).reshape(old.shape)
    return opt_state._replace(hyperparams=hyperparams)


def set_learning_rate(opt_state: optax.OptState, learning_rate) -> optax.OptState:
    """A copy of ``opt_state`` whose next updates use ``learning_rate`` (an array: no recompilation)."""
    return set_hyperparams(opt_state, {"learning_rate": learning_rate})


def batch_indices(data_key: jnp.ndarray, start_step, num_steps: int, num_examples: int,
                  batch_size: int) -> jnp.ndarray:
    """Indices [num_steps, batch_size] of the batches of steps start_step .. start_step + num_steps - 1."""
    steps_per_epoch = num_examples // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {batch_size} exceeds the {num_examples} training examples")
    num_epochs = num_steps // steps_per_epoch + 2  # epochs a window of num_steps can touch
    first_epoch = start_step // steps_per_epoch
    epochs = first_epoch + jnp.arange(num_epochs)
    perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(data_key, e), num_examples))(epochs)
    steps = start_step + jnp.arange(num_steps)
    epoch_slot = steps // steps_per_epoch - first_epoch
    offsets = (steps % steps_per_epoch) * batch_size
    return perms[epoch_slot[:, None], offsets[:, None] + jnp.arange(batch_size)[None, :]]


def cross_entropy_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


@dataclasses.dataclass(eq=False)
class Task:
    """A target network, its optimizer, its data and its metric.

    Args:
      model: a flax module called as ``model.apply(variables, **inputs, train=...)``.
      data: split name -> batch dict of numpy arrays; every split has a ``label`` entry.
      input_fn: ``(key, batch, train) -> dict of model inputs`` (normalization, augmentation: runs on device).
      loss_fn: ``(logits, labels) -> scalar``; metric_fn: ``(logits, labels) -> scalar`` over a whole split.
      optimizer: an ``inject_hyperparams`` transformation (see ``make_optimizer``).
    """

    model: nn.Module
    data: Mapping[str, Batch]
    batch_size: int
    optimizer: optax.GradientTransformation
    input_fn: Callable[[jnp.ndarray, Batch, bool], dict]
    loss_fn: Callable = cross_entropy_loss
    metric_fn: Callable = accuracy
    eval_batch_size: int = 1000
    metric_name: str = "accuracy"
    higher_is_better: bool = True
    scan_unroll: int = 1  # lax.scan unroll; >= K unrolls fully (see train_scan)
    pretrained: PyTree | None = None  # parameters that replace the random init where present (fine-tuning)
    provenance: dict | None = None  # the data actually read, per split: kind, path, files and their sha256

    def __post_init__(self):
        self.device_data = {split: jax.tree.map(jnp.asarray, dict(batch)) for split, batch in self.data.items()}
        if self.pretrained is not None:
            self.pretrained = jax.tree.map(jnp.asarray, self.pretrained)
        # Data are passed as arguments (never closed over) so they are not baked into programs as constants.
        self._train_scan_jit = jax.jit(self.train_scan, static_argnames="num_steps")
        self._evaluate_jit = jax.jit(self.evaluate_split)
        self._init_jit = jax.jit(self.init_state)

    @property
    def num_train(self) -> int:
        return int(self.data["train"]["label"].shape[0])

    # ---- pure functions -------------------------------------------------------------------------------------
    def init_state(self, key: jnp.ndarray, learning_rate, pretrained: PyTree | None = None) -> TargetState:
        """A fresh target: random init (``key``), overwritten by ``pretrained`` where it has parameters.

        ``pretrained`` is an argument (not closed over) so that large checkpoints are not baked into programs.
        """
        init_key, step_key, data_key = jax.random.split(key, 3)
        example = jax.tree.map(lambda a: np.asarray(a[:1]), dict(self.data["train"]))  # shapes only
        inputs = self.input_fn(step_key, example, False)
        variables = self.model.init({"params": init_key, "dropout": init_key}, **inputs, train=False)
        params = variables["params"] if pretrained is None else overlay(variables["params"], pretrained)
        opt_state = set_learning_rate(self.optimizer.init(params), learning_rate)
        return TargetState(step=jnp.zeros((), jnp.int32), params=params,
                           batch_stats=variables.get("batch_stats", {}), opt_state=opt_state,
                           grads=jax.tree.map(jnp.zeros_like, params), key=step_key, data_key=data_key)

    def loss_and_updates(self, params, batch_stats, key, batch):
        """Training loss of one batch and the new batch-norm statistics."""
        inputs = self.input_fn(key, batch, True)
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        logits, new_vars = self.model.apply(variables, **inputs, train=True, rngs={"dropout": key},
                                            mutable=["batch_stats"] if batch_stats else [])
        return self.loss_fn(logits, batch["label"]), new_vars.get("batch_stats", batch_stats)

    def train_scan(self, state: TargetState, train_data: Batch, num_steps: int,
                   schedule: Callable | None = None) -> tuple[TargetState, StepStats]:
        """``num_steps`` optimizer steps in one ``lax.scan`` (one GNS decision step when num_steps = K).

        With ``schedule`` (a traced ``step -> lr``, e.g. ``Eq7Schedule``) the learning rate is written into the
        optimizer state before every step; without it the injected learning rate stays fixed.
        """
        num_examples = jax.tree.leaves(train_data)[0].shape[0]
        indices = batch_indices(state.data_key, state.step, num_steps, num_examples, self.batch_size)
        return self.scan_steps(state, train_data, indices, schedule)

    def step(self, state: TargetState, train_data: Batch, idx: jnp.ndarray,
             schedule: Callable | None = None) -> tuple[TargetState, jnp.ndarray]:
        """One optimizer step on the batch ``train_data[idx]``; returns the new state and the batch's loss.

        The step's randomness (augmentation, dropout) is ``fold_in(state.key, state.step)``. With ``schedule`` the
        learning rate ``schedule(step)`` is written into the optimizer state first.
        """
        batch = jax.tree.map(lambda a: a[idx], train_data)
        opt_state = state.opt_state if schedule is None else set_learning_rate(state.opt_state, schedule(state.step))
        grad_fn = jax.value_and_grad(self.loss_and_updates, has_aux=True)
        (loss, batch_stats), grads = grad_fn(state.params, state.batch_stats,
                                             jax.random.fold_in(state.key, state.step), batch)
        updates, opt_state = self.optimizer.update(grads, opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                             grads=grads), loss

    def scan_steps(self, state: TargetState, train_data: Batch, indices: jnp.ndarray,
                   schedule: Callable | None = None) -> tuple[TargetState, StepStats]:
        """One ``step`` per row of ``indices`` ([num_steps, batch_size]), in one ``lax.scan`` (or unrolled)."""
        num_steps = indices.shape[0]
        one_step = lambda s, idx: self.step(s, train_data, idx, schedule)
        if self.scan_unroll >= num_steps:
            # Unrolled at trace time into one program with no loop: XLA:CPU runs convolutions inside a while loop
            # far slower than outside one (jax-ml/jax#12868: ~20x for a narrow ResNet here), so conv nets on CPU
            # unroll small K. (lax.scan's own unroll keeps a loop when num_steps == 1.)
            losses = []
            for idx in indices:
                state, loss = one_step(state, idx)
                losses.append(loss)
            losses = jnp.stack(losses)
        else:
            state, losses = jax.lax.scan(one_step, state, indices, unroll=max(1, self.scan_unroll))
        finite = jnp.all(jnp.isfinite(losses)) & tree_all_finite(state.params)
        return state, StepStats(mean_loss=losses.mean(), last_loss=losses[-1], finite=finite)

    def predict_split(self, state: TargetState, split_data: Batch) -> jnp.ndarray:
        """Logits of a whole split, computed in chunks of ``eval_batch_size`` with ``lax.map``."""
        n = jax.tree.leaves(split_data)[0].shape[0]
        chunk = min(self.eval_batch_size, n)
        num_chunks = -(-n // chunk)
        # Pad by repeating the first examples; padded logits are dropped below.
        idx = jnp.arange(num_chunks * chunk) % n
        chunks = jax.tree.map(lambda a: a[idx].reshape((num_chunks, chunk) + a.shape[1:]), split_data)
        variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}

        def forward(batch):
            return self.model.apply(variables, **self.input_fn(state.key, batch, False), train=False)

        logits = jax.lax.map(forward, chunks)
        return logits.reshape((num_chunks * chunk,) + logits.shape[2:])[:n]

    def evaluate_split(self, state: TargetState, split_data: Batch) -> dict[str, jnp.ndarray]:
        logits = self.predict_split(state, split_data)
        return {"metric": self.metric_fn(logits, split_data["label"]),
                "loss": self.loss_fn(logits, split_data["label"])}

    # ---- jitted conveniences on the task's own data ---------------------------------------------------------
    def init(self, key: jnp.ndarray, learning_rate) -> TargetState:
        return self._init_jit(key, learning_rate, self.pretrained)

    def train_steps(self, state: TargetState, num_steps: int, schedule=None) -> tuple[TargetState, StepStats]:
        return self._train_scan_jit(state, self.device_data["train"], num_steps, schedule)

    def evaluate(self, state: TargetState, split: str = "val") -> dict[str, jnp.ndarray]:
        return self._evaluate_jit(state, self.device_data[split])


def overlay(params: PyTree, pretrained: PyTree) -> PyTree:
    """``params`` with every entry that ``pretrained`` has replaced by it (nested dicts; shapes must agree)."""
    if not isinstance(pretrained, Mapping):
        if jnp.shape(pretrained) != jnp.shape(params):
            raise ValueError(f"pretrained parameter of shape {jnp.shape(pretrained)} replaces one of shape "
                             f"{jnp.shape(params)}")
        return jnp.asarray(pretrained, jnp.asarray(params).dtype)
    out = dict(params)
    for name, value in pretrained.items():
        if name not in params:
            raise ValueError(f"pretrained parameter {name!r} does not exist in the model")
        out[name] = overlay(params[name], value)
    return out


def tree_all_finite(tree: PyTree) -> jnp.ndarray:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def as_numpy_batch(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": np.asarray(images), "label": np.asarray(labels, np.int32)}
