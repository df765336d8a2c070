"""Build a ``Task`` (target network + data + optimizer) from an experiment config."""

from __future__ import annotations

import ml_collections

from gns_jax.config import ConfigError
from gns_jax.data import load_image_dataset
from gns_jax.data.augment import augment_for, normalize, random_crop_flip
from gns_jax.targets.glue_task import load_glue_task
from gns_jax.targets.mlp import MLP
from gns_jax.targets.resnet import ResNet
from gns_jax.targets.task import Task, as_numpy_batch, compute_dtype, make_optimizer
from gns_jax.targets.vgg import VGG

IMAGE_DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    m, dtype = config.model, compute_dtype(config)
    if m.name == "mlp":
        return MLP(hidden=tuple(m.hidden), num_classes=num_classes, width=m.width, dtype=dtype)
    if m.name == "resnet":
        return ResNet(depth=m.depth, num_classes=num_classes, width=m.width, dtype=dtype)
    if m.name == "vgg":
        return VGG(num_classes=num_classes, width=m.width, dtype=dtype)
    raise ConfigError(f"unknown config.model.name {m.name!r} for image data; choose mlp, resnet or vgg")


def input_shape(config: ml_collections.ConfigDict) -> dict:
    """Example model inputs (shapes only) for tracing a config's model without loading its data."""
    import jax.numpy as jnp

    if config.data.name.startswith("glue/"):
        ids = jnp.zeros((1, config.data.max_length), jnp.int32)
        return {"input_ids": ids, "attention_mask": ids + 1, "token_type_ids": ids}
    side, channels = (28, 1) if config.data.name in ("fashion_mnist", "mnist") else (32, 3)
    return {"x": jnp.zeros((1, side, side, channels), jnp.float32)}


def build_optimizer(config: ml_collections.ConfigDict):
    o = config.optimizer
    return make_optimizer(o.name, o.learning_rate, weight_decay=o.weight_decay, momentum=o.momentum)


def image_input_fn(name: str):
    """Normalization (and CIFAR augmentation when training) on device, inside the jitted step."""
    def input_fn(key, batch, train):
        images = batch["image"]
        if train and augment_for(name):
            images = random_crop_flip(key, images)
        return {"x": normalize(images, name)}

    return input_fn


def load_image_task(config: ml_collections.ConfigDict) -> Task:
    d = config.data
    side = input_shape(config)["x"].shape[1]
    if config.model.name == "vgg" and side < 32:
        raise ConfigError(f"VGG-16's five 2x2 max-pools need images of at least 32x32; {d.name} has {side}x{side} "
                          "(use model.name='mlp' or 'resnet', or data.name='cifar10' / 'cifar100')")
    # An explicit data_dir is the data: when it is unusable that is an error, not a fall-back to another copy.
    source = "local" if d.data_dir and d.source == "auto" else d.source
    splits = load_image_dataset(d.name, source=source, data_dir=d.data_dir or None,
                                tfds_data_dir=d.tfds_data_dir or None, cache_dir=d.cache_dir or None,
                                val_size=d.val_size, split_seed=d.split_seed, train_limit=d.train_limit or None)
    data = {"train": as_numpy_batch(splits.train_images, splits.train_labels),
            "val": as_numpy_batch(splits.val_images, splits.val_labels),
            "test": as_numpy_batch(splits.test_images, splits.test_labels)}
    return Task(model=build_model(config, splits.num_classes), data=data, batch_size=config.batch_size,
                optimizer=build_optimizer(config), input_fn=image_input_fn(d.name),
                eval_batch_size=config.eval_batch_size, scan_unroll=config.scan_unroll,
                provenance=splits.provenance)


def build_task(config: ml_collections.ConfigDict) -> Task:
    """The target task a config describes (image classification or a GLUE task)."""
    name = config.data.name
    if name in IMAGE_DATASETS:
        return load_image_task(config)
    if name.startswith("glue/"):
        return load_glue_task(config)
    raise ConfigError(f"unknown config.data.name {name!r}; choose one of {IMAGE_DATASETS} or glue/<task>")


