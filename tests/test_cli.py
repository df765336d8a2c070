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


# App. D / §4.1 / Eq. 4 values of the agent fields; every experiment config keeps them.
PAPER_AGENT = {"gamma": 0.99, "gae_lambda": 0.95, "clip_eps": 0.2, "ent_coef": 0.01, "actor_lr": 1e-3,
               "critic_lr": 5e-3, "encoder": "gcn", "encoder_hidden": 64, "encoder_layers": 2, "head_hidden": 32,
               "action_scale": 0.1, "validation_prob": 0.2}


@pytest.mark.parametrize("name", ["fashion_mnist_mlp", "quickstart"])
def test_mlp_configs_pin_the_paper_settings(name):
    """Table 20's MLP setting (784-128-128-10, Adam, batch 128) and the paper's agent in both MLP configs."""
    config = load_config(name)
    assert (config.data.name, config.model.name, tuple(config.model.hidden)) == ("fashion_mnist", "mlp", (128, 128))
    assert config.optimizer.name == "adam" and config.batch_size == 128
    assert {k: config.agent[k] for k in PAPER_AGENT} == PAPER_AGENT
    assert (config.agent.prior_lr_min, config.agent.prior_lr_max) == (1e-4, 1e-2)  # D_alpha
    if name == "fashion_mnist_mlp":
        assert (config.steps, config.decision_interval) == (78_200, 500)  # Table 7
        assert config.agent.episodes == 30 and config.optimizer.learning_rate == 1e-3
    else:  # short episodes: T = 2000, K = 100 (20 decision points), 6 episodes, 3 candidates after 2 K
        assert (config.steps, config.decision_interval, config.agent.episodes) == (2_000, 100, 6)
        assert (config.agent.deploy_candidates, config.agent.deploy_pre_decisions) == (3, 2)


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


# ---- the command as written: default workdir and mode, quiet console, the quickstart comparison ----------------
def overrides(data_dir, cache_dir, steps=40, decision_interval=20):
    """Command-line overrides that make a config's run tiny (the local files of the ``tiny_fashion_mnist`` fixture)."""
    return ["--config.data.source=local", f"--config.data.data_dir={data_dir}", f"--config.data.cache_dir={cache_dir}",
            "--config.data.val_size=100", "--config.model.hidden=(16,16)", f"--config.steps={steps}",
            f"--config.decision_interval={decision_interval}", "--config.batch_size=32", "--config.eval_batch_size=100",
            "--config.agent.episodes=1", "--config.agent.num_envs=1", "--config.agent.group_size=1",
            "--config.agent.encoder_hidden=8",
            "--config.agent.head_hidden=8", "--config.agent.deploy_candidates=2", "--config.agent.probe=False"]


def run_in(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "gns_jax.main", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=dict(os.environ, **(env or {})))


def test_config_alone_runs_the_method_in_workdirs_config_name_and_resumes(tiny_fashion_mnist, cache_dir, tmp_path):
    """``--config`` alone: workdir workdirs/<config stem>, mode gns (agent, deployment, summary); a rerun resumes."""
    args = [f"--config={os.path.join(REPO, 'configs', 'quickstart.py')}", *overrides(tiny_fashion_mnist, cache_dir)]
    env = {"GNS_JAX_COMPILATION_CACHE": str(tmp_path / "jax_cache")}
    first = run_in(tmp_path, *args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    workdir = tmp_path / "workdirs" / "quickstart"
    assert first.stdout.splitlines()[0] == f"gns_jax: workdir {os.path.join('workdirs', 'quickstart')}"
    assert json.loads((workdir / "settings.json").read_text())["mode"] == "gns"
    summary = json.loads((workdir / "results.json").read_text())
    assert summary["agent_checkpoint"].endswith(os.path.join("agent", "checkpoints", "1"))
    assert 0.0 <= summary["deployed_test_metric"] <= 1.0
    assert "comparison" not in summary  # the plain method: no baseline run
    assert "GNS deployed: test accuracy" in first.stdout and "episode 1:" in first.stdout
    assert f"results: {os.path.join('workdirs', 'quickstart', 'results.json')}" in first.stdout
    # Quiet console: no INFO records on it; they are in the workdir's log file.
    assert not [line for line in first.stderr.splitlines() if line.startswith("I1") or line.startswith("I0")]
    log = (workdir / "log.txt").read_text()
    assert "checkpoint" in log.lower() and log.count("\n") > 5
    assert os.listdir(tmp_path / "jax_cache")  # compiled programs were cached for the next run
    deployed_at = os.path.getmtime(workdir / "apply" / "results.json")

    second = run_in(tmp_path, *args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "episode 1:" not in second.stdout  # nothing retrained
    assert os.path.getmtime(workdir / "apply" / "results.json") == deployed_at  # the deployment was kept
    assert json.loads((workdir / "results.json").read_text())["deployed_test_metric"] == summary[
        "deployed_test_metric"]


def test_console_is_quiet_unless_verbosity_is_given(tmp_path):
    quiet = run_cli("--config=configs/fashion_mnist_mlp.py", f"--workdir={tmp_path / 'q'}", "--mode=describe_graph")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not [line for line in quiet.stderr.splitlines() if line[:1] == "I" and line[1:5].isdigit()]
    assert "mlp: " in (tmp_path / "q" / "log.txt").read_text()  # the INFO summary line went to the log file
    loud = run_cli("--config=configs/fashion_mnist_mlp.py", f"--workdir={tmp_path / 'v'}", "--mode=describe_graph",
                   "--verbosity=1")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "mlp: " in loud.stderr


def test_error_is_one_line_and_its_traceback_is_in_the_log(tmp_path):
    proc = run_cli("--config=configs/cifar10.py", f"--workdir={tmp_path}", "--mode=train_target",
                   "--config.data.source=local", f"--config.data.data_dir={tmp_path}")
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        line for line in proc.stderr.splitlines() if line.startswith("gns_jax: error:")]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" in (tmp_path / "log.txt").read_text()


def test_quickstart_config_compares_with_the_tuned_cosine_of_table_20():
    config = load_config("quickstart")
    selected = json.loads(open(os.path.join(REPO, "docs", "results", "workdirs", "fashion_mnist_mlp", "tune",
                                            "cosine", "selected.json")).read())["hparams"]
    o = config.optimizer
    assert o.schedule == "cosine"
    assert (o.learning_rate, o.mu, o.eta1, o.eta2) == (selected["alpha_max"], selected["mu"], selected["eta1"],
                                                     selected["eta2"])


def test_quickstart_runs_gns_and_the_schedule_from_the_same_start(tiny_fashion_mnist, cache_dir, tmp_path, capsys):
    from gns_jax.targets.build import build_task
    from gns_jax.workflows import train_target

    config = tiny_mlp_config(tiny_fashion_mnist, cache_dir, steps=60, decision_interval=20, episodes=1,
                             deploy_candidates=2, probe=False)
    config.optimizer.schedule = "cosine"
    config.optimizer.mu = 0.01
    summary = cli.run("quickstart", config, str(tmp_path))
    out = capsys.readouterr().out
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    gns, cosine = comparison["gns"], comparison["baseline"]
    assert cosine["label"] == "cosine (Eq. 7)"
    assert summary["comparison"]["plot"] == str(tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    # Both test accuracies side by side, GNS first.
    table = [line for line in out.splitlines() if line.strip().startswith(("GNS (deployed)", "cosine (Eq. 7)"))]
    assert len(table) == 2 and f"{gns['test_metric']:.4f}" in table[0] and f"{cosine['test_metric']:.4f}" in table[1]
    # Validation curves at the decision points, ending at T; learning-rate curves of both runs.
    for run in (gns, cosine):
        assert run["val_steps"] == [20, 40, 60] and len(run["val_curve"]) == 3
        assert run["lr_steps"][0] == 0 and run["lr_steps"][-1] == 60
    # The deployment's curve retraces the deployment (same start, its learning rates) ...
    assert gns["replay_val_metric"] == pytest.approx(gns["val_metric"], abs=0.02)
    assert gns["replay_test_metric"] == pytest.approx(gns["test_metric"], abs=0.02)
    # ... and the cosine run is train_target's run with this seed: the same initial weights and data order.
    reference = train_target(build_task(config), config, progress=False)
    assert cosine["test_metric"] == pytest.approx(reference["test_metric"], abs=1e-6)
    assert cosine["val_metric"] == pytest.approx(reference["val_metric"], abs=1e-6)
