"""Agent training end to end on tiny data: checkpoints, logs, plots, resume, NaN episodes, deployment."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_mlp_config

from gns_jax import checkpoints, workflows
from gns_jax.agent import Agent
from gns_jax.apply import LearnedScheduler, candidate_lrs, deploy, select_initial_lr
from gns_jax.settings import agent_settings, deploy_options
from gns_jax.targets.build import build_task
from gns_jax.train import train_agent


def tiny_agent_config(data_dir, cache_dir, **agent):
    """T = 50, K = 10: 5 decision points, 4 actions per episode; 2 episodes."""
    return tiny_mlp_config(data_dir, cache_dir, **{"deploy_candidates": 3, **agent})


@pytest.fixture(scope="module")
def setup(tiny_fashion_mnist, cache_dir):
    config = tiny_agent_config(tiny_fashion_mnist, cache_dir)
    return config, build_task(config)


def test_two_episodes_write_checkpoint_logs_plot_results(setup, tmp_path):
    config, task = setup
    results = workflows.train_agent_mode(config, str(tmp_path), task=task)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert len(on_disk["episodes"]) == 2
    for entry in on_disk["episodes"]:
        assert {"return", "val_metric", "test_metric"} <= set(entry)
        assert np.isfinite(entry["test_metric"])
    assert on_disk["agent_checkpoint"].endswith(os.path.join("checkpoints", "2"))
    assert checkpoints.latest_step(str(tmp_path / "checkpoints")) == 2
    assert (tmp_path / "lr_trajectories.png").stat().st_size > 1000
    csv_lines = (tmp_path / "logs" / "episodes.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "return" in csv_lines[0]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "logs"))
    assert results["episodes"] == on_disk["episodes"]

    # A rerun with more episodes continues from the checkpoint.
    with config.unlocked():
        config.agent.episodes = 3
    try:
        more = workflows.train_agent_mode(config, str(tmp_path), task=task)
    finally:
        with config.unlocked():
            config.agent.episodes = 2
    assert [e["episode"] for e in more["episodes"]] == [0, 1, 2]
    assert more["episodes"][:2] == on_disk["episodes"]


def test_too_high_lr_diverges_with_penalty_and_training_goes_on(tiny_fashion_mnist, cache_dir, tmp_path):
    # A safe initial LR for the first K steps, then every action is clipped up to 1e30: the first action diverges.
    config = tiny_agent_config(tiny_fashion_mnist, cache_dir, prior_lr_min=1e-3, prior_lr_max=1e-3, lr_min=1e30,
                               lr_max=1e31, divergence_penalty=-2.0)
    config.optimizer.name = "sgd"
    out = train_agent(config, str(tmp_path), progress=False)
    episodes = out["results"]["episodes"]
    assert len(episodes) == 2  # both episodes ran: the NaNs did not stop agent training
    assert all(e["diverged"] == 1 for e in episodes)
    # The penalty, plus Eq. 3's zero for the diverging action (its point carries the last metric forward).
    assert all(e["return"] == pytest.approx(-2.0) for e in episodes)
    params = jax.tree.leaves(out["state"].ppo.params)
    assert all(np.all(np.isfinite(np.asarray(p))) for p in params)  # NaNs never reached the agent


def test_collapse_ends_training_episodes_but_not_deployment(tiny_fashion_mnist, cache_dir, tmp_path):
    # A ratio far below 1: the first action's finite loss is already "a collapse" in every episode.
    config = tiny_agent_config(tiny_fashion_mnist, cache_dir, collapse_loss_ratio=0.01, divergence_penalty=-2.0)
    out = train_agent(config, str(tmp_path), progress=False)
    for e in out["results"]["episodes"]:
        assert e["diverged"] == 1 and e["return"] == pytest.approx(-2.0)
    csv = (tmp_path / "logs" / "episodes.csv").read_text().splitlines()
    column = csv[0].split(",").index("collapsed")
    assert all(float(row.split(",")[column]) == 1 for row in csv[1:])
    # Deployment shares the environment and still trains for the full T.
    agent = Agent(build_task(config), agent_settings(config))
    result = deploy(agent, out["state"].ppo.params, deploy_options(config))
    assert result["steps"] == 50 and not result["diverged"] and len(result["lr_trajectory"]) == 5


def test_select_initial_lr_takes_largest_value():
    assert select_initial_lr(jnp.array([0.1, 0.7, 0.3])) == 1
    assert select_initial_lr(jnp.array([jnp.nan, -1.0, -2.0])) == 1


def test_deploy_keeps_the_candidate_of_largest_value(setup):
    config, task = setup
    agent = Agent(task, agent_settings(config))
    params = agent.init_params(jax.random.key(0))
    # A stub critic that prefers the candidate whose observation has the largest global LR feature (index 6).
    stub = lambda obs: obs.nodes[:, 0, 6]
    result = deploy(agent, params, deploy_options(config), value_fn=stub)
    assert result["initial_lr"] == pytest.approx(max(result["candidate_lrs"]), rel=1e-5)
    stub_min = lambda obs: -obs.nodes[:, 0, 6]
    result = deploy(agent, params, deploy_options(config), value_fn=stub_min)
    assert result["initial_lr"] == pytest.approx(min(result["candidate_lrs"]), rel=1e-5)
    assert len(result["lr_trajectory"]) == 5 and result["steps"] == 50
    assert np.isfinite(result["test_metric"])


def test_one_deploy_candidate_starts_at_the_prior_centre(setup):
    """``deploy_candidates = 1`` skips §4.3's search: the run starts at the prior's geometric centre."""
    np.testing.assert_allclose(candidate_lrs(1e-4, 1e-2, 3), [1e-4, 1e-3, 1e-2], rtol=1e-6)
    base, task = setup
    config = base.copy_and_resolve_references()
    config.agent.deploy_candidates = 1
    centre = np.sqrt(config.agent.prior_lr_min * config.agent.prior_lr_max)
    assert candidate_lrs(config.agent.prior_lr_min, config.agent.prior_lr_max, 1) == pytest.approx([centre])
    agent = Agent(task, agent_settings(config))
    result = deploy(agent, agent.init_params(jax.random.key(0)), deploy_options(config))
    assert result["candidate_lrs"] == pytest.approx([centre], rel=1e-6)
    assert result["initial_lr"] == pytest.approx(centre, rel=1e-6)
    assert result["lr_trajectory"][0] == pytest.approx(centre, rel=1e-6)
    assert len(result["lr_trajectory"]) == 5 and np.isfinite(result["test_metric"])


def test_apply_mode_and_learned_scheduler(setup, tmp_path):
    config, task = setup
    trained = workflows.train_agent_mode(config, str(tmp_path / "agent"), task=task)
    with config.unlocked():
        config.agent_checkpoint = trained["agent_checkpoint"]
    try:
        os.makedirs(tmp_path / "apply")
        applied = workflows.apply_mode(config, str(tmp_path / "apply"), task=task)
        on_disk = json.loads((tmp_path / "apply" / "results.json").read_text())
        for key in ("test_metric", "val_metric", "lr_trajectory", "initial_lr"):
            assert key in on_disk
        assert on_disk["seed"] == config.seed  # filed like a compare run's seed_N.json (report.load_runs sorts by it)
        # §4.3: the deployed initial LR is the candidate of the largest critic value.
        best = int(np.argmax(applied["candidate_values"]))
        assert applied["initial_lr"] == pytest.approx(applied["candidate_lrs"][best], rel=1e-6)
        assert len(set(np.round(applied["candidate_values"], 6))) == len(applied["candidate_lrs"])
        assert (tmp_path / "apply" / "deployed_lr.png").exists()

        scheduler = LearnedScheduler.from_checkpoint(config, trained["agent_checkpoint"], task=task)
        state = task.init(jax.random.key(0), 1e-3)
        state, stats = task.train_steps(state, 10)
        new_lr = float(scheduler(state.params, state.grads, stats.mean_loss, 1e-3))
        assert 1e-3 * 0.9 - 1e-9 <= new_lr <= 1e-3 * 1.1 + 1e-9  # |mu| <= 0.1 (Eq. 4)
    finally:
        with config.unlocked():
            config.agent_checkpoint = ""


def test_apply_without_checkpoint_is_a_clear_error(setup, tmp_path):
    from gns_jax.config import ConfigError

    config, task = setup
    with pytest.raises(ConfigError, match="agent_checkpoint"):
        workflows.apply_mode(config, str(tmp_path), task=task)


def test_deploy_runs_all_T_steps_paired_with_a_baseline_of_the_same_seed(setup):
    """A policy that keeps the LR (mu = 0) deploys exactly like a constant baseline run of the same seed, over all
    T steps even when K does not divide T (the last T - N K steps at the last LR)."""
    from gns_jax.controllers import ScheduleController
    from gns_jax.schedules import Eq7Schedule

    config, task = setup
    config = config.copy_and_resolve_references()
    config.steps = 55  # N = 5 decision intervals of K = 10, then 5 more steps
    config.seed = 3
    agent = Agent(task, agent_settings(config))
    params = agent.init_params(jax.random.key(0))
    head = params["params"]["actor"]["m_f"]
    last = sorted(head)[-1]  # the output Dense of m_f: zero it, so mu = 0.1 tanh(0) = 0
    head[last] = jax.tree.map(jnp.zeros_like, head[last])
    result = deploy(agent, params, deploy_options(config), value_fn=lambda obs: -obs.nodes[:, 0, 6])
    assert result["steps"] == 55
    assert result["lr_trajectory"] == pytest.approx([result["initial_lr"]] * 6, rel=1e-6)  # the tail's LR too
    baseline = ScheduleController(Eq7Schedule.constant(result["initial_lr"])).run(task, 55, 10, seed=3)
    assert baseline["steps"] == 55
    assert result["val_metric"] == pytest.approx(baseline["val_metric"], abs=1e-6)
    assert result["test_metric"] == pytest.approx(baseline["test_metric"], abs=1e-6)
    # Another seed is another run: told apart by its losses, not by accuracies on 100 images.
    other_seed = ScheduleController(Eq7Schedule.constant(result["initial_lr"])).run(task, 55, 10, seed=4)
    assert not np.allclose(other_seed["train_loss_trajectory"], baseline["train_loss_trajectory"], rtol=1e-4)
    assert other_seed["val_loss"] != pytest.approx(baseline["val_loss"], rel=1e-4)
