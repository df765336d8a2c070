"""Local Hugging Face model directories ⇄ parameters of ``gns_jax.targets.transformer.TransformerClassifier``.

A directory holds ``config.json``, the weights (``model.safetensors``, a sharded
``model.safetensors.index.json``, or a PyTorch ``pytorch_model.bin``) and the tokenizer files. Weights are
read with ``safetensors.numpy``; torch is needed only for ``pytorch_model.bin`` directories. Nothing is
downloaded.

Names are mapped for RoBERTa (``roberta.`` prefix, ``RobertaForSequenceClassification``) and BERT-family
encoders (``bert.`` prefix or none, e.g. a bare ``BertModel`` such as MiniLM)::

    {p}embeddings.word_embeddings.weight            -> embeddings/word_embeddings/embedding
    {p}embeddings.LayerNorm.{weight,bias}           -> embeddings/layer_norm/{scale,bias}
    {p}encoder.layer.{i}.attention.self.query       -> layer_{i}/attention/query      (weight transposed)
    {p}encoder.layer.{i}.attention.output.dense     -> layer_{i}/attention/output
    {p}encoder.layer.{i}.attention.output.LayerNorm -> layer_{i}/attention_layer_norm
    {p}encoder.layer.{i}.intermediate.dense         -> layer_{i}/intermediate
    {p}encoder.layer.{i}.output.dense               -> layer_{i}/output
    {p}encoder.layer.{i}.output.LayerNorm           -> layer_{i}/output_layer_norm
    RoBERTa head: classifier.dense, classifier.out_proj -> classifier/dense, classifier/out_proj (no pooler)
    BERT head:    {p}pooler.dense, classifier           -> classifier/dense, classifier/out_proj

A head missing from the checkpoint (a bare encoder) is initialized fresh, and a log line says so. A missing or
wrongly shaped encoder weight raises ``CheckpointError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from gns_jax.targets.transformer import ClassificationHead, EncoderConfig, TransformerClassifier

log = logging.getLogger(__name__)

_TOKENIZER_FILE_PREFIXES = (
    "tokenizer",
    "vocab",
    "merges",
    "special_tokens_map",
    "added_tokens",
    "sentencepiece",
    "spiece",
)
# Checkpoint entries that a sequence classifier never uses: buffers, LM / pretraining heads.
_IGNORED_SUFFIXES = ("position_ids",)
_IGNORED_PREFIXES = ("lm_head.", "cls.")


class CheckpointError(RuntimeError):
    """A model directory that cannot be loaded into (or written from) the Flax encoder."""


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """What ``load_hf_checkpoint`` returns: the config, the Flax ``params`` and where the head came from."""

    config: EncoderConfig
    params: dict
    num_labels: int
    head_loaded: bool  # True when the whole head (dense and out_proj) came from the checkpoint
    model_dir: str

    def model(self, dtype: Any = jnp.float32) -> TransformerClassifier:
        """The Flax module these parameters belong to."""
        return TransformerClassifier(self.config, self.num_labels, dtype)


def _encoder_key_map(config: EncoderConfig) -> list[tuple[str, tuple[str, ...], bool]]:
    """(HF name without model prefix, Flax path, is a Linear weight to transpose) for every encoder weight."""
    entries: list[tuple[str, tuple[str, ...], bool]] = []
    tables = ["word_embeddings", "position_embeddings"] + (
        ["token_type_embeddings"] if config.type_vocab_size else []
    )
    for table in tables:
        entries.append((f"embeddings.{table}.weight", ("embeddings", table, "embedding"), False))
    entries += _layer_norm("embeddings.LayerNorm", ("embeddings", "layer_norm"))
    for i in range(config.num_layers):
        hf, fx = f"encoder.layer.{i}", f"layer_{i}"
        for name in ("query", "key", "value"):
            entries += _linear(f"{hf}.attention.self.{name}", (fx, "attention", name))
        entries += _linear(f"{hf}.attention.output.dense", (fx, "attention", "output"))
        entries += _layer_norm(f"{hf}.attention.output.LayerNorm", (fx, "attention_layer_norm"))
        entries += _linear(f"{hf}.intermediate.dense", (fx, "intermediate"))
        entries += _linear(f"{hf}.output.dense", (fx, "output"))
        entries += _layer_norm(f"{hf}.output.LayerNorm", (fx, "output_layer_norm"))
    return entries


def _head_key_map(config: EncoderConfig, prefix: str) -> dict[str, list[tuple[str, tuple[str, ...], bool]]]:
    """Full HF names of the two head layers, keyed by the Flax layer name."""
    if config.head == "roberta":
        dense, out = "classifier.dense", "classifier.out_proj"
    else:
        dense, out = f"{prefix}pooler.dense", "classifier"
    return {
        "dense": _linear(dense, ("classifier", "dense")),
        "out_proj": _linear(out, ("classifier", "out_proj")),
    }


def _linear(hf: str, fx: tuple[str, ...]):
    return [(f"{hf}.weight", fx + ("kernel",), True), (f"{hf}.bias", fx + ("bias",), False)]


def _layer_norm(hf: str, fx: tuple[str, ...]):
    return [(f"{hf}.weight", fx + ("scale",), False), (f"{hf}.bias", fx + ("bias",), False)]


def _model_prefix(state_dict: dict[str, np.ndarray]) -> str:
    for prefix in ("roberta.", "bert.", ""):
        if f"{prefix}embeddings.word_embeddings.weight" in state_dict:
            return prefix
    raise CheckpointError(
        "no embeddings.word_embeddings.weight (with prefix 'roberta.', 'bert.' or none) in the checkpoint; "
        f"first keys: {sorted(state_dict)[:5]}"
    )


def _lookup(state_dict: dict[str, np.ndarray], key: str) -> str | None:
    """The name under which ``key`` is stored, or None."""
    if key in state_dict:
        return key
    # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
    for new, old in ((".LayerNorm.weight", ".LayerNorm.gamma"), (".LayerNorm.bias", ".LayerNorm.beta")):
        if key.endswith(new) and key[: -len(new)] + old in state_dict:
            return key[: -len(new)] + old
    return None


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _get(tree, path: tuple[str, ...]):
    for name in path:
        tree = tree[name]
    return tree


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        return dict(load_file(path))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def load_state_dict(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All weights of a local HF directory as numpy arrays (safetensors, sharded, or a torch pickle)."""
    model_dir = os.fspath(model_dir)
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    torch_bin = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.isfile(single):
        return _read_safetensors(single)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state_dict: dict[str, np.ndarray] = {}
        for shard in shards:
            state_dict.update(_read_safetensors(os.path.join(model_dir, shard)))
        return state_dict
    if os.path.isfile(torch_bin):
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"{model_dir} has only pytorch_model.bin: install torch (pip install -e '.[parity]') "
                "to read it, "
                "or convert it to model.safetensors"
            ) from None
        loaded = torch.load(torch_bin, map_location="cpu", weights_only=True)
        return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in loaded.items()}
    present = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else "directory missing"
    raise CheckpointError(
        f"no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {model_dir} "
        f"(found: {present})"
    )


def state_dict_to_params(
    state_dict: dict[str, np.ndarray],
    config: EncoderConfig,
    num_labels: int | None = None,
    *,
    rng: jax.Array | None = None,
    fresh_head: bool = False,
) -> tuple[dict, int, bool]:
    """Maps HF weights to the Flax tree; returns ``(params, num_labels, head_loaded)``.

    ``num_labels=None`` takes the label count from the checkpoint's head, or 2 when it has none.
    ``fresh_head=True`` ignores any head in the checkpoint (e.g. fine-tuning an MNLI model on a binary task).
    """
    prefix = _model_prefix(state_dict)
    template = jax.eval_shape(
        lambda: TransformerClassifier(config, 2).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))[
            "params"
        ]
    )
    params: dict = {}
    used: set[str] = set()

    def take(
        hf_key: str, path: tuple[str, ...], transpose: bool, expected_shape: tuple[int, ...]
    ) -> np.ndarray:
        stored_key = _lookup(state_dict, hf_key)
        if stored_key is None:
            raise CheckpointError(
                f"weight {hf_key!r} is missing from the checkpoint (needed for {'/'.join(path)})"
            )
        value = np.asarray(state_dict[stored_key], np.float32)
        if transpose:
            value = value.T
        if value.shape != tuple(expected_shape):
            shown = value.T.shape if transpose else value.shape
            wanted = tuple(reversed(expected_shape)) if transpose else tuple(expected_shape)
            raise CheckpointError(
                f"weight {hf_key!r} has shape {shown}, expected {wanted} from config.json and num_labels "
                f"(for {'/'.join(path)})"
            )
        used.add(stored_key)
        return value

    for hf_name, path, transpose in _encoder_key_map(config):
        _set(params, path, take(prefix + hf_name, path, transpose, _get(template, path).shape))

    head = _head_key_map(config, prefix)
    out_weight_key = head["out_proj"][0][0]
    checkpoint_labels = state_dict[out_weight_key].shape[0] if out_weight_key in state_dict else None
    if num_labels is None:
        num_labels = checkpoint_labels if checkpoint_labels and not fresh_head else 2
    fresh = ClassificationHead(config, num_labels).init(
        jax.random.key(0) if rng is None else rng, jnp.zeros((1, 1, config.hidden_size)), False
    )["params"]
    loaded_layers = []
    for layer, entries in head.items():
        present = all(_lookup(state_dict, key) is not None for key, _, _ in entries)
        if present and not fresh_head:
            for key, path, transpose in entries:
                _set(params, path, take(key, path, transpose, fresh[path[1]][path[2]].shape))
            loaded_layers.append(layer)
        else:
            _set(params, ("classifier", layer), jax.tree.map(np.asarray, fresh[layer]))
    if len(loaded_layers) < 2:
        kept = f"; {loaded_layers[0]} loaded from the checkpoint" if loaded_layers else ""
        reason = "fresh_head=True" if fresh_head else "not in the checkpoint"
        log.info(
            "classifier head (num_labels=%d): %s initialized fresh (%s)%s",
            num_labels,
            " and ".join(n for n in head if n not in loaded_layers),
            reason,
            kept,
        )

    unused = [
        k
        for k in state_dict
        if k not in used
        and not k.endswith(_IGNORED_SUFFIXES)
        and not k.startswith(_IGNORED_PREFIXES)
        and not (config.head == "roberta" and "pooler." in k)
    ]
    if unused:
        log.info(
            "%d checkpoint weights are not used by the classifier, e.g. %s", len(unused), sorted(unused)[:3]
        )
    return jax.tree.map(jnp.asarray, params), num_labels, len(loaded_layers) == 2


def load_hf_checkpoint(
    model_dir: str | os.PathLike,
    *,
    num_labels: int | None = None,
    fresh_head: bool = False,
    rng: jax.Array | None = None,
) -> LoadedCheckpoint:
    """Loads a local HF directory (``config.json`` + weights) into ``TransformerClassifier`` parameters."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"model directory {model_dir!r} does not exist")
    try:
        config = EncoderConfig.from_hf_dir(model_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read config.json in {model_dir}: {e}") from e
    params, num_labels, head_loaded = state_dict_to_params(
        load_state_dict(model_dir), config, num_labels, rng=rng, fresh_head=fresh_head
    )
    return LoadedCheckpoint(config, params, num_labels, head_loaded, model_dir)


def params_to_state_dict(params, config: EncoderConfig) -> dict[str, np.ndarray]:
    """The inverse mapping: Flax params → HF ``*ForSequenceClassification`` names (float32 numpy)."""
    params = _unwrap(params)
    prefix = "roberta." if config.head == "roberta" else "bert."
    state_dict = {}
    for hf_name, path, transpose in _encoder_key_map(config) + [
        e for es in _head_key_map(config, prefix).values() for e in es
    ]:
        key = hf_name if hf_name.startswith(("classifier", prefix)) else prefix + hf_name
        try:
            value = np.asarray(jax.device_get(_get(params, path)), np.float32)
        except KeyError:
            raise CheckpointError(f"parameter {'/'.join(path)} is missing (needed for {key!r})") from None
        state_dict[key] = np.ascontiguousarray(value.T if transpose else value)
    return state_dict


def save_hf_checkpoint(
    params,
    config: EncoderConfig,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    label_names: list[str] | None = None,
) -> str:
    """Writes ``config.json`` + ``model.safetensors`` in HF naming (transformers reads them); returns out_dir.

    ``tokenizer_dir``: a directory whose tokenizer files are copied too, so ``out_dir`` is self-contained.
    """
    out_dir = os.fspath(out_dir)
    state_dict = params_to_state_dict(params, config)
    num_labels = state_dict[
        "classifier.out_proj.weight" if config.head == "roberta" else "classifier.weight"
    ].shape[0]
    label_names = list(label_names) if label_names else [f"LABEL_{i}" for i in range(num_labels)]
    if len(label_names) != num_labels:
        raise CheckpointError(f"{len(label_names)} label names for a head with {num_labels} outputs")
    architecture = "RobertaForSequenceClassification" if config.model_type == "roberta" else None
    architecture = (
        architecture
        or {
            "bert": "BertForSequenceClassification",
            "xlm-roberta": "XLMRobertaForSequenceClassification",
            "camembert": "CamembertForSequenceClassification",
        }[config.model_type]
    )
    hf_config = {
        "architectures": [architecture],
        **config.to_hf_dict(),
        "id2label": {str(i): name for i, name in enumerate(label_names)},
        "label2id": {name: i for i, name in enumerate(label_names)},
        "problem_type": "regression" if num_labels == 1 else "single_label_classification",
        "torch_dtype": "float32",
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    save_file(state_dict, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_dir is not None:
        for name in os.listdir(tokenizer_dir):
            if name.startswith(_TOKENIZER_FILE_PREFIXES):
                shutil.copy2(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    return out_dir


def _unwrap(params):
    if "params" in params and "embeddings" not in params:
        return params["params"]
    return params
