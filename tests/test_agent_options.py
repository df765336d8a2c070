"""The agent-training options beyond the paper (group_size, reward_scale, progress_feature, mean_features) and the
state-dependence probe: each checked against a hand computation or a second route through the public API."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, tiny_mlp_config

from gns_jax.agent import Agent
from gns_jax.graph import FEATURE_NAMES
from gns_jax.ppo import PPOConfig, Transition, center_within_groups, make_batch
from gns_jax.probe import ProbeSet, build_probe_set, probe_metrics
from gns_jax.settings import agent_settings
from gns_jax.targets.build import build_task
from gns_jax.train import run_episode, train_agent


def test_center_within_groups_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    adv = rng.normal(size=(5, 6)).astype(np.float32)
    valid = rng.random((5, 6)) > 0.2
    out = np.asarray(center_within_groups(jnp.asarray(adv), jnp.asarray(valid), 3))
    expected = adv.copy()
    for t in range(5):
        for g in range(2):
            cols = [c for c in range(3 * g, 3 * g + 3) if valid[t, c]]
            for c in cols:
                expected[t, c] = adv[t, c] - np.mean(adv[t, cols])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        center_within_groups(jnp.asarray(adv), jnp.asarray(valid), 4)


def test_group_advantages_cancel_what_the_group_shares():
    """Rewards equal within each pair of environments: group-centred advantages are 0 (no signal but the noise)."""
    t, n = 6, 4
    rewards = jnp.repeat(jnp.arange(t * 2, dtype=jnp.float32).reshape(t, 2), 2, axis=1)
    traj = Transition(obs=jnp.zeros((t, n, 1)), action=jnp.zeros((t, n)), reward=rewards,
                      done=jnp.zeros((t, n), bool).at[-1].set(True), value=jnp.zeros((t, n)),
                      log_prob=jnp.zeros((t, n)))
    grouped = make_batch(traj, jnp.zeros(n), PPOConfig(group_size=2, normalize_advantages=False))
    np.testing.assert_allclose(np.asarray(grouped.advantage), 0.0, atol=1e-6)
    plain = make_batch(traj, jnp.zeros(n), PPOConfig(normalize_advantages=False))
    assert np.abs(np.asarray(plain.advantage)).max() > 1.0
    # The value targets are untouched by the grouping: the critic still learns the returns.
    np.testing.assert_allclose(np.asarray(grouped.target), np.asarray(plain.target))


@pytest.fixture(scope="module")
def task_and_config(tiny_fashion_mnist, cache_dir):
    config = tiny_mlp_config(tiny_fashion_mnist, cache_dir, steps=40, decision_interval=10, num_envs=4)
    return build_task(config), config


def _agent(task, config, **agent):
    config = config.copy_and_resolve_references()
    for k, v in agent.items():
        config.agent[k] = v
    return Agent(task, agent_settings(config)), config


def test_groups_share_initial_state_and_lr_but_not_actions(task_and_config):
    task, config = task_and_config
    agent, _ = _agent(task, config, group_size=2)
    params = agent.init_params(jax.random.key(0))
    out = run_episode(agent, params, jax.random.key(3), 4, group_size=2)
    lrs = np.asarray(out["reset_info"].learning_rate)
    assert lrs[0] == lrs[1] and lrs[2] == lrs[3] and lrs[0] != lrs[2]
    # Same target initialization and data order: identical first observation within a group.
    first = np.asarray(out["trajectory"].obs.nodes[0])
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])
    actions = np.asarray(out["trajectory"].action)
    assert not np.allclose(actions[:, 0], actions[:, 1])
    # group_size 1 is the paper's layout: every environment its own reset key (the pre-existing key derivation).
    single = run_episode(agent, params, jax.random.key(3), 4)
    expected_keys = jax.random.split(jax.random.split(jax.random.key(3), 3)[0], 4)
    expected_lrs = [float(agent.env.reset(k, *[task.device_data[s] for s in ("train", "val")])[2].learning_rate)
                    for k in expected_keys[:2]]
    np.testing.assert_allclose(np.asarray(single["reset_info"].learning_rate)[:2], expected_lrs, rtol=1e-6)
    with pytest.raises(ValueError, match="group_size"):
        run_episode(agent, params, jax.random.key(3), 4, group_size=3)


def test_reward_scale_scales_the_trajectory_only(task_and_config):
    task, config = task_and_config
    agent, _ = _agent(task, config)
    params = agent.init_params(jax.random.key(0))
    plain = run_episode(agent, params, jax.random.key(5), 2)
    scaled = run_episode(agent, params, jax.random.key(5), 2, reward_scale=100.0)
    np.testing.assert_allclose(np.asarray(scaled["trajectory"].reward), 100 * np.asarray(plain["trajectory"].reward),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(scaled["rewards"]), np.asarray(plain["rewards"]))


def test_progress_and_mean_feature_options(task_and_config):
    task, config = task_and_config
    paper, _ = _agent(task, config)
    agent, _ = _agent(task, config, progress_feature=True, mean_features=False)
    state = task.init(jax.random.key(0), 1e-3)
    base = np.asarray(paper.observe(state.params, state.params, 1e-3, 2.0, 0.5).nodes)
    obs = np.asarray(agent.observe(state.params, state.params, 1e-3, 2.0, 0.5).nodes)
    assert base.shape[1] == len(FEATURE_NAMES) and obs.shape[1] == len(FEATURE_NAMES) + 1
    np.testing.assert_allclose(obs[:, -1], 0.5)
    for i, name in enumerate(FEATURE_NAMES):
        if name in ("weight_mean", "bias_mean"):
            np.testing.assert_array_equal(obs[:, i], 0.0)
            assert name == "bias_mean" or np.abs(base[:, i]).max() > 0  # biases start at 0
        else:
            np.testing.assert_array_equal(obs[:, i], base[:, i])
    # Inside an episode the progress feature is t / (N - 1) of the observed decision point.
    params = agent.init_params(jax.random.key(1))
    out = run_episode(agent, params, jax.random.key(2), 4)
    n = agent.env.config.num_decisions
    seen = np.asarray(out["trajectory"].obs.nodes[:, 0, 0, -1])
    np.testing.assert_allclose(seen, np.arange(n - 1) / (n - 1), rtol=1e-6)


def test_probe_metrics_by_hand():
    # Two states (early, late), three LRs; mu = -0.01 * log10(lr) + (0.02 if late) ; V = 2 * log10(lr) early.
    log_lr = np.array([-4, -3, -2, -4, -3, -2], np.float32)
    late = np.array([0, 0, 0, 1, 1, 1], bool)
    probe = ProbeSet(obs=None, log_lr=jnp.asarray(log_lr), state=jnp.asarray([0, 0, 0, 1, 1, 1]),
                     late=jnp.asarray(late))
    mu = -0.01 * log_lr + 0.02 * late
    values = 2.0 * log_lr
    m = probe_metrics(mu, values, probe)
    assert m["probe_slope"] == pytest.approx(-0.01)
    assert m["probe_late_minus_early"] == pytest.approx(0.02)
    assert m["probe_spread"] == pytest.approx(0.06 - 0.02)  # max: late at 1e-4, min: early at 1e-2
    assert m["probe_value_slope"] == pytest.approx(2.0)
    assert m["probe_mu_mean"] == pytest.approx(float(mu.mean()))
    constant = probe_metrics(np.full(6, 0.03), np.zeros(6), probe)
    assert constant["probe_spread"] == 0 and constant["probe_slope"] == 0


def test_probe_set_design_and_logging(task_and_config, tmp_path):
    task, config = task_and_config
    agent, cfg = _agent(task, config, progress_feature=True, num_envs=1, episodes=1)
    probe = build_probe_set(agent, 0)
    assert probe.obs.nodes.shape[0] == 2 * 2 * 3
    nodes = np.asarray(probe.obs.nodes)
    n = agent.env.config.num_decisions
    np.testing.assert_allclose(nodes[np.asarray(probe.late), 0, -1], round(0.5 * (n - 1)) / (n - 1))
    np.testing.assert_allclose(nodes[~np.asarray(probe.late), 0, -1], 0.0)
    # The LR feature is the only feature that differs between the observations of one state.
    lr_col = FEATURE_NAMES.index("prev_lr")
    same_state = nodes[:3]
    assert len({float(x) for x in same_state[:, 0, lr_col]}) == 3
    np.testing.assert_array_equal(np.delete(same_state[0], lr_col, axis=1), np.delete(same_state[2], lr_col, axis=1))
    out = train_agent(cfg, str(tmp_path), task=task, progress=False)
    with open(os.path.join(tmp_path, "logs", "episodes.csv")) as f:
        row = next(csv.DictReader(f))
    for field in ("probe_spread", "probe_slope", "probe_late_minus_early", "probe_value_slope", "probe_mu_mean"):
        assert np.isfinite(float(row[field]))
        assert field in out["results"]["episodes"][0]


def test_report_shows_each_agents_probe(tmp_path):
    from gns_jax.report import write_report

    for method, spread in (("gns", 0.0123), ("cosine", None)):
        run_dir = tmp_path / "runs" / method
        run_dir.mkdir(parents=True)
        (run_dir / "seed_0.json").write_text(
            '{"seed": 0, "test_metric": 0.9, "val_metric": 0.9, "wall_seconds": 1.0, "metric_name": "accuracy", '
            '"steps": 10, "hparams": {}, "lr_trajectory": [0.001, 0.001], "decision_interval": 5}')
        if spread is not None:
            logs = tmp_path / "agents" / method / "logs"
            logs.mkdir(parents=True)
            (logs / "episodes.csv").write_text(
                "step,return,probe_spread,probe_slope,probe_late_minus_early,probe_mu_mean\n"
                "0,0.1,0.5,0.5,0.5,0.5\n"
                f"1,0.1,{spread},-0.0042,0.003,-0.01\n")
    out = write_report(str(tmp_path), name="r")
    text = open(out["md"]).read()
    assert "| GNS | 0.0123 | -0.0042 | +0.0030 | -0.0100 |" in text  # the last update's probe, not the first
    assert "| Cosine (Eq. 7) | 0.0" not in text
    rows = {r["method"]: r for r in csv.DictReader(open(out["csv"]))}
    assert float(rows["gns"]["probe_spread"]) == 0.0123 and rows["cosine"]["probe_spread"] == ""


def test_ablation_table_pools_deployments_over_agent_seeds(tmp_path):
    from gns_jax.report import ablation_table

    workdirs = []
    for agent_seed, tests in enumerate(([0.90, 0.92], [0.86, 0.88])):
        w = tmp_path / f"seed{agent_seed}"
        (w / "runs" / "gns").mkdir(parents=True)
        for seed, test in enumerate(tests):
            (w / "runs" / "gns" / f"seed_{seed}.json").write_text(
                f'{{"seed": {seed}, "test_metric": {test}, "val_metric": 0.9, "wall_seconds": 1.0, '
                f'"diverged": {str(seed == 1 and agent_seed == 1).lower()}}}')
        (w / "agents" / "gns" / "logs").mkdir(parents=True)
        (w / "agents" / "gns" / "logs" / "episodes.csv").write_text(
            f"step,probe_spread,probe_slope,probe_late_minus_early\n0,{0.01 * (agent_seed + 1)},-0.002,0.004\n")
        (w / "tune" / "gns").mkdir(parents=True)
        (w / "tune" / "gns" / "selected.json").write_text('{"tuning_wall_seconds": 600}')
        workdirs.append(str(w))
    row = ablation_table({"v": workdirs})[2]
    # mean of 0.90, 0.92, 0.86, 0.88 = 89.00; sample std = 2.58; per seed 91.00 and 87.00; spread (0.01 + 0.02) / 2
    assert row == ("| v | 2 | 0.0150 | -0.0020 | +0.0040 | 89.00 ± 2.58 (4 runs) | 91.00, 87.00 | 1 | 10 |")


def test_agent_presets_and_config_strings():
    from ml_collections import config_flags

    from gns_jax.config import AGENT_PRESETS, DEFAULT_AGENT_PRESET, ConfigError, base_config, glue_config

    assert AGENT_PRESETS["paper"] == {"num_envs": 1, "group_size": 1, "reward_scale": 1.0, "progress_feature": False,
                                      "mean_features": True, "lr_max": 1.0, "deploy_selection": "value",
                                      "deploy_candidates": 5}
    assert base_config().agent.deploy_candidates == 1  # the default preset starts deployment at the prior's centre
    for name in ("", "paper", "grouped"):
        agent = base_config(name).agent
        for field, value in AGENT_PRESETS[name or DEFAULT_AGENT_PRESET].items():
            assert agent[field] == value, (name, field)
    assert glue_config("rte", "paper").agent.num_envs == 1 and glue_config("rte", "paper").agent.lr_max == 1e-3
    with pytest.raises(ConfigError, match="unknown agent preset 'papr'"):
        base_config("papr")
    # --config=configs/fashion_mnist_mlp.py:paper reaches base_config through ml_collections' config string.
    module = config_flags.config_flags._LoadConfigModule("c", os.path.join(REPO, "configs", "fashion_mnist_mlp.py"))
    assert module.get_config("paper").agent.group_size == 1
    assert module.get_config().agent.group_size == AGENT_PRESETS[DEFAULT_AGENT_PRESET]["group_size"]


def test_env_batching_auto_loops_over_conv_targets_and_checks_its_value():
    from gns_jax.config import ConfigError, base_config, validate_config
    from gns_jax.settings import env_batching

    for model, expected in (("mlp", "vmap"), ("transformer", "vmap"), ("resnet", "loop"), ("vgg", "loop")):
        assert env_batching(model, "auto", "gpu") == expected, model
        assert env_batching(model, "auto", "cpu") == "loop", model
    config = base_config()
    assert config.agent.env_batching == "auto"
    assert agent_settings(config).env_batching == "loop"  # these tests run on a CPU
    config.agent.env_batching = "vmap"
    assert agent_settings(config).env_batching == "vmap"  # an explicit choice wins
    config.agent.env_batching = "pmap"
    with pytest.raises(ConfigError, match=r"env_batching must be one of 'auto', 'vmap', 'loop', got 'pmap'"):
        validate_config(config, "train_agent")


def test_critic_warmup_updates_reach_ppo_as_gradient_steps():
    from gns_jax.config import ConfigError, base_config, validate_config

    config = base_config()
    assert config.agent.critic_warmup_updates == 0 and agent_settings(config).ppo.actor_warmup_steps == 0
    config.agent.critic_warmup_updates, config.agent.ppo_epochs, config.agent.num_minibatches = 3, 4, 2
    assert agent_settings(config).ppo.actor_warmup_steps == 24  # updates x epochs x minibatches
    config.agent.critic_warmup_updates = -1
    with pytest.raises(ConfigError, match="critic_warmup_updates"):
        validate_config(config, "train_agent")


def test_target_kl_reaches_ppo_and_zero_is_the_paper():
    from gns_jax.config import ConfigError, base_config, validate_config

    config = base_config()
    assert config.agent.target_kl == 0 and agent_settings(config).ppo.target_kl is None
    config.agent.target_kl = 0.01
    assert agent_settings(config).ppo.target_kl == 0.01
    config.agent.target_kl = -0.01
    with pytest.raises(ConfigError, match="target_kl"):
        validate_config(config, "train_agent")
