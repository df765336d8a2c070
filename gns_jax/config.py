"""The experiment configuration shared by every file in ``configs/``.

Each ``configs/<name>.py`` calls ``base_config()`` and overrides what its experiment needs, so every run has the same
top-level fields: ``seed``, ``steps`` (T), ``decision_interval`` (K), ``batch_size`` and the ``data``, ``model``,
``optimizer`` and ``agent`` sub-configs. The returned ``ConfigDict`` is locked: overriding a field that does not
exist (``--config.stpes=10``) is an error that names the field.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A configuration that cannot run (unknown field, bad value)."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds target init, data order, validation sampling and the agent
    c.steps = 78_200  # T: optimizer steps of one target training run (Table 7)
    c.decision_interval = 500  # K: optimizer steps per decision step of the scheduler (Table 7)
    c.batch_size = 128  # training batch size (Table 7)
    c.eval_batch_size = 1000  # chunk size of the on-device evaluation

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"  # fashion_mnist | mnist | cifar10 | cifar100 | glue/<task>
    c.data.source = "auto"  # auto | tfds | local | debian (see gns_jax.data for the order 'auto' tries)
    c.data.data_dir = ""  # a folder in the dataset's official file layout ('' = none)
    c.data.tfds_data_dir = ""  # TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets)
    c.data.cache_dir = ""  # decoded-array cache ('' = ~/.cache/gns_jax)
    c.data.val_size = 10_000  # validation examples sampled from the official train set (§5.1)
    c.data.split_seed = 0  # seed of the train/validation split
    c.data.train_limit = 0  # keep only this many training examples (0 = all); for quick runs
    c.data.tokenizer_dir = ""  # text tasks: local Hugging Face directory with the tokenizer ('' = checkpoint)
    c.data.max_length = 128  # text tasks: static token length

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"  # mlp | resnet | vgg | transformer
    c.model.depth = 18  # ResNet depth (18 or 34)
    c.model.width = 1.0  # width multiplier on every hidden/channel count (tiny widths for tests)
    c.model.hidden = (128, 128)  # MLP hidden widths (the paper's 3-layer MLP)
    c.model.checkpoint = ""  # transformer: local Hugging Face checkpoint directory
    c.model.dropout = 0.1  # transformer: dropout rate

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # adam | adamw | sgd
    c.optimizer.learning_rate = 1e-3  # alpha_max of the fixed schedule; initial LR otherwise
    c.optimizer.weight_decay = 0.0  # adamw only (0.1 for GLUE, Table 8)
    c.optimizer.momentum = 0.9  # sgd only
    c.optimizer.schedule = "constant"  # train_target's fixed schedule: constant | cosine | polynomial (Eq. 7)
    c.optimizer.mu = 0.0  # alpha_min = mu * alpha_max (Eq. 7)
    c.optimizer.eta1 = 0.0  # T_warm = eta1 * T
    c.optimizer.eta2 = 1.0  # T_decay = eta2 * T
    c.optimizer.power = 1.0  # p of the polynomial schedule
    return c


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-serializable copy of a config (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise ``ConfigError`` (one line) for values no run can use."""
    for field in ("steps", "decision_interval", "batch_size", "eval_batch_size"):
        if int(config[field]) <= 0:
            raise ConfigError(f"config.{field} must be a positive integer, got {config[field]!r}")
    if config.optimizer.learning_rate <= 0:
        raise ConfigError(f"config.optimizer.learning_rate must be > 0, got {config.optimizer.learning_rate}")
