"""The command-line contract: configs, overrides, train_target results, one-line errors."""

import json
import os
import subprocess
import sys

import pytest
from conftest import DEBIAN_FASHION_MNIST, REPO, tiny_mlp_config

from gns_jax import main as cli
from gns_jax.config import ConfigError, base_config

EXPERIMENT_CONFIGS = ["fashion_mnist_mlp", "fashion_mnist", "cifar10", "cifar100"]


def load_config(name):
    from ml_collections import config_flags

    return config_flags.config_flags._LoadConfigModule(name, os.path.join(REPO, "configs", f"{name}.py")).get_config()


@pytest.mark.parametrize("name", EXPERIMENT_CONFIGS)
def test_experiment_configs_have_the_contract_fields(name):
    config = load_config(name)
    for field in ("seed", "steps", "decision_interval", "batch_size", "data", "model", "optimizer"):
        assert field in config, field
    assert config.batch_size == 128  # Table 7
    assert config.decision_interval == 500


def test_paper_settings():
    assert load_config("fashion_mnist").steps == 78_200 and load_config("fashion_mnist").model.depth == 18
    assert load_config("cifar10").steps == 62_600 and load_config("cifar10").model.depth == 34


def tiny_config(data_dir, cache_dir):
    return tiny_mlp_config(data_dir, cache_dir, steps=60, decision_interval=25, hidden=(32, 32), eval_batch_size=64)


def test_train_target_writes_results(tiny_fashion_mnist, cache_dir, tmp_path):
    config = tiny_config(tiny_fashion_mnist, cache_dir)
    config.optimizer.schedule = "cosine"
    config.optimizer.eta1 = 0.1
    results = cli.run("train_target", config, str(tmp_path))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in ("val_metric", "test_metric", "steps", "wall_seconds", "lr_trajectory", "config"):
        assert key in on_disk
    assert on_disk["steps"] == 60
    assert len(on_disk["lr_trajectory"]) == 3  # decisions at steps 0, 25, 50
    assert on_disk["lr_trajectory"][0] == 0.0  # cosine with warmup starts at 0
    assert on_disk["config"]["optimizer"]["schedule"] == "cosine"
    assert results["test_metric"] == on_disk["test_metric"]
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 60


def test_bad_values_are_config_errors(tmp_path):
    config = base_config()
    config.steps = 0
    with pytest.raises(ConfigError, match="config.steps"):
        cli.run("train_target", config, str(tmp_path))


def test_vgg_on_28x28_images_is_a_config_error(tiny_fashion_mnist, cache_dir, tmp_path):
    config = tiny_config(tiny_fashion_mnist, cache_dir)
    config.model.name = "vgg"
    with pytest.raises(ConfigError, match="at least 32x32"):
        cli.run("train_target", config, str(tmp_path))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "gns_jax.main", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def test_unknown_override_is_one_line(tmp_path):
    proc = run_cli("--config=configs/fashion_mnist_mlp.py", f"--workdir={tmp_path}", "--config.stpes=3")
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("gns_jax: error")]
    assert len(error_lines) == 1 and "stpes" in error_lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_data_is_one_line(tmp_path):
    proc = run_cli("--config=configs/cifar10.py", f"--workdir={tmp_path}", "--config.data.source=local",
                   f"--config.data.data_dir={tmp_path / 'nothing'}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert any(line.startswith("gns_jax: error:") and "cifar" in line for line in proc.stderr.splitlines())


@pytest.mark.real_data
@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST), reason="needs Debian's dataset-fashion-mnist")
def test_real_fashion_mnist_one_epoch_reaches_82_percent(tmp_path):
    proc = run_cli("--config=configs/fashion_mnist_mlp.py", f"--workdir={tmp_path}", "--mode=train_target",
                   "--config.steps=390", "--config.data.source=debian")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_metric"] >= 0.82
    assert results["steps"] == 390


def test_describe_graph_mode_on_cifar10_resnet34(tmp_path):
    summary = cli.run("describe_graph", load_config("cifar10"), str(tmp_path))
    on_disk = json.loads((tmp_path / "graph.json").read_text())
    assert summary["num_blocks"] == on_disk["num_blocks"] == 18  # input, 16 basic blocks, output
    assert (tmp_path / "graph.png").stat().st_size > 1000
