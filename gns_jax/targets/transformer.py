"""Transformer encoder with a sequence-classification head for RoBERTa and BERT-family checkpoints (GLUE).

The paper fine-tunes RoBERTa-base (12 layers × 768) and RoBERTa-large (24 × 1024) on GLUE (§5.2, Table 8).
This module is that network written in Flax, numerically equal to the PyTorch implementation in
``transformers`` so that pretrained checkpoints (``gns_jax.targets.hf_checkpoint``) load into it unchanged:

* embeddings: word + position + token-type embeddings, then LayerNorm and dropout. RoBERTa numbers positions
  from ``pad_token_id + 1`` and gives padding tokens the position ``pad_token_id``; BERT numbers them from 0.
  RoBERTa has a single token type (``type_vocab_size`` 1): whatever ``token_type_ids`` say, type 0 is used.
* ``num_layers`` post-LN layers (as BERT): ``x = LN(x + Drop(Attn(x)))``, ``x = LN(x + Drop(FFN(x)))`` with
  ``FFN = Dense → GELU (exact erf) → Dense`` and dropout on the attention probabilities.
* the head on the first token (``<s>`` / ``[CLS]``): ``dense → tanh → dropout → out_proj``. RoBERTa's head
  also applies dropout before ``dense``; BERT's head is its pooler (``dense → tanh``) followed by dropout and
  a linear classifier. Both are the same two layers, so they share parameter names; ``EncoderConfig.head``
  selects where the dropout goes. ``num_labels == 1`` is regression (STS-B).

Parameter names are a contract with ``gns_jax.graph``::

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    embeddings/layer_norm/{scale,bias}
    layer_{i}/attention/{query,key,value,output}/{kernel,bias}   (kernels are (hidden, hidden))
    layer_{i}/attention_layer_norm/{scale,bias}
    layer_{i}/intermediate/{kernel,bias}, layer_{i}/output/{kernel,bias}
    layer_{i}/output_layer_norm/{scale,bias}
    classifier/dense/{kernel,bias}, classifier/out_proj/{kernel,bias}

(``token_type_embeddings`` exists only when ``type_vocab_size > 0``.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# model_type in an HF config.json -> head style; RoBERTa relatives share the RoBERTa embeddings and head.
ROBERTA_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")
BERT_MODEL_TYPES = ("bert",)
_ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Shape and regularization of the encoder; the field meanings follow an HF ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    model_type: str = "roberta"  # 'roberta' (and relatives) or 'bert': position numbering and head style
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None  # None: hidden_dropout, as in transformers
    hidden_act: str = "gelu"
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.model_type not in ROBERTA_MODEL_TYPES + BERT_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported; "
                f"use one of {ROBERTA_MODEL_TYPES + BERT_MODEL_TYPES}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}"
            )

    @property
    def head(self) -> str:
        """Head style: 'roberta' (a dropout also before ``dense``) or 'bert' (the pooler as ``dense``)."""
        return "roberta" if self.model_type in ROBERTA_MODEL_TYPES else "bert"

    @property
    def position_offset(self) -> int:
        """Position id of the first token: ``pad_token_id + 1`` for RoBERTa, 0 for BERT."""
        return self.pad_token_id + 1 if self.head == "roberta" else 0

    @property
    def max_length(self) -> int:
        """Longest sequence the position table covers."""
        return self.max_position_embeddings - self.position_offset

    # --- presets --------------------------------------------------------------------------------
    @classmethod
    def roberta_base(cls, **overrides) -> EncoderConfig:
        """RoBERTa-base: 12 layers, hidden 768, 12 heads, FFN 3072, BPE vocabulary of 50,265."""
        fields = dict(
            vocab_size=50265,
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
            type_vocab_size=1,
            model_type="roberta",
            pad_token_id=1,
        )
        return cls(**{**fields, **overrides})

    @classmethod
    def roberta_large(cls, **overrides) -> EncoderConfig:
        """RoBERTa-large: 24 layers, hidden 1024, 16 heads, FFN 4096."""
        fields = dict(
            vocab_size=50265,
            hidden_size=1024,
            num_layers=24,
            num_heads=16,
            intermediate_size=4096,
            max_position_embeddings=514,
            type_vocab_size=1,
            model_type="roberta",
            pad_token_id=1,
        )
        return cls(**{**fields, **overrides})

    @classmethod
    def tiny(cls, model_type: str = "roberta", vocab_size: int = 1000, **overrides) -> EncoderConfig:
        """A test-sized encoder: 2 layers, hidden 32, 4 heads, FFN 64, sequences up to 64 tokens."""
        roberta = model_type in ROBERTA_MODEL_TYPES
        fields = dict(
            vocab_size=vocab_size,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            max_position_embeddings=66 if roberta else 64,
            type_vocab_size=1 if roberta else 2,
            model_type=model_type,
            pad_token_id=1 if roberta else 0,
            layer_norm_eps=1e-5 if roberta else 1e-12,
        )
        return cls(**{**fields, **overrides})

    # --- HF config.json -------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> EncoderConfig:
        """Builds the config from the fields of an HF ``config.json`` (RoBERTa, XLM-R, CamemBERT or BERT)."""
        model_type = hf.get("model_type", "")
        if model_type not in ROBERTA_MODEL_TYPES + BERT_MODEL_TYPES:
            raise ValueError(
                f"config.json has model_type {model_type!r}; "
                f"supported: {ROBERTA_MODEL_TYPES + BERT_MODEL_TYPES}"
            )
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            model_type=model_type,
            pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            classifier_dropout=hf.get("classifier_dropout"),
            hidden_act=hf.get("hidden_act", "gelu"),
            initializer_range=hf.get("initializer_range", 0.02),
        )

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike) -> EncoderConfig:
        """Reads ``config.json`` from a local HF model directory."""
        config_path = os.path.join(os.fspath(path), "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"no config.json in {os.fspath(path)!r} (expected a local HF model directory)"
            )
        with open(config_path, encoding="utf-8") as f:
            return cls.from_hf_dict(json.load(f))

    def to_hf_dict(self) -> dict[str, Any]:
        """The HF ``config.json`` fields of this encoder (without the head's labels)."""
        hf = {
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "classifier_dropout": self.classifier_dropout,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "initializer_range": self.initializer_range,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
        }
        if self.head == "roberta":
            hf.update(bos_token_id=0, eos_token_id=2)
        return hf


def position_ids_for(input_ids: jnp.ndarray, config: EncoderConfig) -> jnp.ndarray:
    """Position ids as the PyTorch models number them.

    RoBERTa counts only non-padding tokens, from ``pad_token_id + 1``, and gives padding ``pad_token_id``;
    BERT uses ``0 .. seq_len - 1`` regardless of padding.
    """
    if config.head == "roberta":
        not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(not_pad, axis=-1) * not_pad + config.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[-1], dtype=jnp.int32), input_ids.shape)


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings → LayerNorm → dropout."""

    config: EncoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, train: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        embed = lambda n, name: nn.Embed(n, cfg.hidden_size, embedding_init=init, dtype=self.dtype, name=name)
        x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
        x = x + embed(cfg.max_position_embeddings, "position_embeddings")(position_ids_for(input_ids, cfg))
        if cfg.type_vocab_size > 0:
            if token_type_ids is None or cfg.type_vocab_size == 1:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="layer_norm")(x)
        return nn.Dropout(cfg.hidden_dropout)(x, deterministic=not train)


class SelfAttention(nn.Module):
    """Multi-head self-attention with full-width ``query``/``key``/``value``/``output`` projections."""

    config: EncoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, attention_mask, train: bool):
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_heads
        dense = lambda name: nn.Dense(
            cfg.hidden_size,
            dtype=self.dtype,
            name=name,
            kernel_init=nn.initializers.normal(cfg.initializer_range),
        )
        split = lambda t: t.reshape(t.shape[:-1] + (cfg.num_heads, head_dim))
        q, k, v = (split(dense(name)(x)) for name in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(head_dim)
        # jnp.where, not an added large negative number: a fully padded row stays finite (uniform weights).
        scores = jnp.where(attention_mask[:, None, None, :] > 0, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=not train)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape[:-1] + (cfg.hidden_size,))
        return dense("output")(context)


class EncoderLayer(nn.Module):
    """One post-LN Transformer layer (BERT/RoBERTa)."""

    config: EncoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, attention_mask, train: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        drop = lambda t: nn.Dropout(cfg.hidden_dropout)(t, deterministic=not train)
        layer_norm = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name=name)
        attended = SelfAttention(cfg, self.dtype, name="attention")(x, attention_mask, train)
        x = layer_norm("attention_layer_norm")(x + drop(attended))
        h = nn.Dense(cfg.intermediate_size, kernel_init=init, dtype=self.dtype, name="intermediate")(x)
        h = nn.Dense(cfg.hidden_size, kernel_init=init, dtype=self.dtype, name="output")(
            _ACTIVATIONS[cfg.hidden_act](h)
        )
        return layer_norm("output_layer_norm")(x + drop(h))


class ClassificationHead(nn.Module):
    """First-token head: ``dense → tanh → dropout → out_proj`` (RoBERTa adds a dropout before ``dense``)."""

    config: EncoderConfig
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden, train: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        rate = cfg.hidden_dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        x = hidden[:, 0]
        if cfg.head == "roberta":
            x = nn.Dropout(rate)(x, deterministic=not train)
        x = jnp.tanh(nn.Dense(cfg.hidden_size, kernel_init=init, dtype=self.dtype, name="dense")(x))
        x = nn.Dropout(rate)(x, deterministic=not train)
        return nn.Dense(self.num_labels, kernel_init=init, dtype=self.dtype, name="out_proj")(x)


class TransformerClassifier(nn.Module):
    """Encoder + sequence-classification head (``num_labels == 1``: regression).

    ``__call__`` takes either arrays or a batch dict (keys ``input_ids``, ``attention_mask``, optional
    ``token_type_ids``; other keys such as ``label`` are ignored) and returns float32 logits
    ``(batch, num_labels)``. Dropout is active when ``train=True`` and then needs a ``'dropout'`` rng.
    ``method='encode'`` returns the last hidden states ``(batch, seq, hidden)`` instead.
    """

    config: EncoderConfig
    num_labels: int = 2
    dtype: Any = jnp.float32  # computation dtype; parameters stay float32

    def setup(self):
        self.embeddings = Embeddings(self.config, self.dtype)
        for i in range(self.config.num_layers):
            # setattr keeps the contract's flat names layer_0, layer_1, ... (a list would give layers_0, ...).
            setattr(self, f"layer_{i}", EncoderLayer(self.config, self.dtype))
        self.classifier = ClassificationHead(self.config, self.num_labels, self.dtype)

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False) -> jnp.ndarray:
        input_ids, attention_mask, token_type_ids = _unpack(input_ids, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids, train)
        for i in range(self.config.num_layers):
            x = getattr(self, f"layer_{i}")(x, attention_mask, train)
        return x

    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False
    ) -> jnp.ndarray:
        hidden = self.encode(input_ids, attention_mask, token_type_ids, train)
        return self.classifier(hidden, train).astype(jnp.float32)


def _unpack(input_ids, attention_mask, token_type_ids):
    if isinstance(input_ids, Mapping):
        batch = input_ids
        input_ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask", attention_mask)
        token_type_ids = batch.get("token_type_ids", token_type_ids)
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    return input_ids, attention_mask, token_type_ids


def mean_pool(hidden: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
    """Mask-weighted mean of the hidden states over the sequence (sentence embeddings)."""
    mask = attention_mask[..., None].astype(hidden.dtype)
    return (hidden * mask).sum(axis=-2) / jnp.maximum(mask.sum(axis=-2), 1e-9)


def glue_loss(logits: jnp.ndarray, labels: jnp.ndarray, is_regression: bool, weights=None) -> jnp.ndarray:
    """Mean loss of a batch: squared error on ``logits[:, 0]`` (regression) or softmax cross-entropy.

    ``weights`` (0/1 per example) masks padding examples of a fixed-size last batch.
    """
    if is_regression:
        per_example = jnp.square(logits[..., 0] - labels.astype(logits.dtype))
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
    if weights is None:
        return per_example.mean()
    weights = weights.astype(per_example.dtype)
    return (per_example * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def init_params(model: TransformerClassifier, rng: jax.Array, seq_len: int = 8) -> dict:
    """Fresh parameters of ``model`` (the ``'params'`` collection), initialized from a dummy batch."""
    ids = jnp.zeros((1, seq_len), jnp.int32)
    return model.init(rng, ids, jnp.ones_like(ids), jnp.zeros_like(ids))["params"]
