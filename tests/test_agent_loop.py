"""The agent loop between the units: Eq. 4 inside the environment, episode assembly, deployment by the real critic,
resume mid-schedule, and the App. D settings reaching the agent.

Expected values come from a second route: a hand formula (Eq. 4, the Gaussian log-density, Eq. 3), a numpy loop, or
the public ``Task``/``LearnedScheduler``/controller API replaying the same run step by step.
"""

import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_mlp_config

from gns_jax import checkpoints
from gns_jax.agent import Agent
from gns_jax.apply import AgentController, LearnedScheduler, deploy
from gns_jax.config import base_config
from gns_jax.settings import agent_settings, deploy_options
from gns_jax.targets.build import build_task
from gns_jax.targets.task import get_learning_rate, set_learning_rate
from gns_jax.train import run_episode, train_agent

T, K = 40, 10  # N = 4 decision points, 3 actions
LR_MIN, LR_MAX = 1e-5, 1e-2
TOL = dict(rtol=1e-4, atol=1e-6)


def loop_config(data_dir, cache_dir, **agent):
    return tiny_mlp_config(data_dir, cache_dir, steps=T, decision_interval=K, lr_min=LR_MIN, lr_max=LR_MAX,
                           deploy_candidates=3, deploy_pre_decisions=2, **agent)


@pytest.fixture(scope="module")
def loop(tiny_fashion_mnist, cache_dir):
    config = loop_config(tiny_fashion_mnist, cache_dir)
    task = build_task(config)
    agent = Agent(task, agent_settings(config))
    return config, task, agent, agent.init_params(jax.random.key(3))


_POLICY = {}


def policy(agent, params, obs):
    """(mu, sigma, V) of a batch of observations, each through the network on its own."""
    if agent not in _POLICY:
        def one(p, o):
            dist, value = agent.apply(p, o)
            return dist.loc, dist.scale, value
        _POLICY[agent] = jax.jit(jax.vmap(one, in_axes=(None, 0)))
    return [np.asarray(x, np.float64) for x in _POLICY[agent](params, obs)]


def gauss_log_prob(a, mu, sigma):
    return -0.5 * ((a - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def eq4(lr, a):
    return np.clip(np.asarray(lr, np.float64) * (1.0 + np.asarray(a, np.float64)), LR_MIN, LR_MAX)


def take(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_eq4_applies_the_sampled_action_stored_with_its_log_prob(loop, batching):
    """Per decision: LR of the next K steps = clip(alpha (1 + a)) with a the *stored sampled* action (Eq. 4),
    log_prob = log N(a; mu(obs), sigma^2) by hand, and the K steps equal ``Task.train_steps`` run at that LR —
    with the environments vmapped and one after the other (``agent.env_batching``)."""
    config, task, agent, params = loop
    agent = Agent(task, dataclasses.replace(agent.settings, env_batching=batching))
    data = (task.device_data["train"], task.device_data["val"])
    # Inside, and at both clip bounds where the first sampled action of these keys pushes past them.
    start = np.asarray([1e-3, LR_MAX, LR_MIN], np.float32)
    obs, state, reset_info = agent.reset(jax.random.split(jax.random.key(0), 3), *data, jnp.asarray(start))
    np.testing.assert_allclose(reset_info.learning_rate, start, rtol=1e-6)
    lr, hit_min, hit_max = start.astype(np.float64), 0, 0
    for t in range(3):
        mu, sigma, value = policy(agent, params, obs)
        keys = jax.random.split(jax.random.fold_in(jax.random.key(1), t), 3)
        before = state.target
        obs_next, state, info, act = agent.decision_step(params, keys, state, obs, jnp.asarray(False), data)
        a = np.asarray(act.action, np.float64)
        np.testing.assert_allclose(sigma, config.agent.sigma, rtol=1e-6)
        assert np.all(np.abs(a - mu) > 1e-7)  # sampled, not the mean
        np.testing.assert_allclose(act.log_prob, gauss_log_prob(a, mu, sigma), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(act.value, value, rtol=1e-5, atol=1e-6)
        for x, y in zip(jax.tree.leaves(act.obs), jax.tree.leaves(obs), strict=True):
            np.testing.assert_array_equal(x, y)  # stored with the observation it was taken on
        expected = eq4(lr, a)
        hit_min += int(np.sum(lr * (1 + a) < LR_MIN))
        hit_max += int(np.sum(lr * (1 + a) > LR_MAX))
        np.testing.assert_allclose(info.learning_rate, expected, rtol=1e-6)
        np.testing.assert_allclose(get_learning_rate(state.target.opt_state), expected, rtol=1e-6)
        for e in range(3):  # the K steps ran at that LR: replay them through the Task API
            target = take(before, e)
            target = target.replace(opt_state=set_learning_rate(target.opt_state, float(expected[e])))
            replay, stats = task.train_steps(target, K)
            np.testing.assert_allclose(float(info.mean_loss[e]), float(stats.mean_loss), **TOL)
            for x, y in zip(jax.tree.leaves(replay.params), jax.tree.leaves(take(state.target.params, e)),
                            strict=True):
                np.testing.assert_allclose(x, y, **TOL)
        lr, obs = np.asarray(info.learning_rate, np.float64), obs_next
    assert hit_min > 0 and hit_max > 0  # the clip of Eq. 4 was exercised at both bounds


def test_vmapped_environments_validate_only_when_the_shared_coin_or_the_last_point_says(tiny_fashion_mnist,
                                                                                       cache_dir):
    """A pass over the validation split costs as much as many optimizer steps: with several environments it must
    stay a real branch (not a vmapped ``select`` that runs it at every decision), and still run at the last point."""
    config = loop_config(tiny_fashion_mnist, cache_dir)
    task = build_task(config)  # a task of its own: the counting wrapper below must be traced
    calls = []
    evaluate = task.evaluate_split

    def counted(state, split):
        jax.debug.callback(lambda: calls.append(1))
        return evaluate(state, split)

    task.evaluate_split = counted
    agent = Agent(task, agent_settings(config))
    params = agent.init_params(jax.random.key(0))
    data = (task.device_data["train"], task.device_data["val"])
    obs, state, _ = agent.reset(jax.random.split(jax.random.key(1), 2), *data)
    keys = jax.random.split(jax.random.key(2), 2)
    seen = []
    for validate in (False, True, False):  # points 1, 2 and the last point, 3
        calls.clear()
        obs, state, info, _ = agent.decision_step(params, keys, state, obs, jnp.asarray(validate), data)
        jax.block_until_ready(info)
        seen.append((len(calls) > 0, bool(np.all(np.isfinite(info.metric)))))
    assert seen == [(False, False), (True, True), (True, True)]


def eq3_numpy(metrics, validated):
    """Eq. 3 by a plain loop: action t gets (P_t2 - P_t1) / (t2 - t1) between the validated points around it."""
    n = len(metrics)
    out = np.zeros(n - 1)
    for t in range(n - 1):
        t1 = max(i for i in range(t + 1) if validated[i])
        later = [i for i in range(t + 1, n) if validated[i]]
        if later:
            out[t] = (metrics[later[0]] - metrics[t1]) / (later[0] - t1)
    return out


@pytest.fixture(scope="module")
def full_episode(loop):
    config, task, agent, params = loop
    return run_episode(agent, params, jax.random.key(11), 2)


def test_full_episode_assembly(loop, full_episode):
    """Time-major [3 actions, 2 envs]: Eq. 3 rewards by a numpy loop, done only at the last action, LR/action and
    obs/value/log-prob aligned, and the returns telescope to P_final - P_0 (P_final re-evaluated on the final
    targets)."""
    config, task, agent, params = loop
    r = full_episode
    traj, infos, reset_info = r["trajectory"], r["infos"], r["reset_info"]
    assert traj.reward.shape == (3, 2) and r["last_value"] is None
    np.testing.assert_array_equal(traj.done, [[False, False], [False, False], [True, True]])
    assert np.all(np.asarray(traj.valid)) and not np.any(np.asarray(r["diverged"]))

    metrics = np.concatenate([np.asarray(reset_info.metric)[None], np.asarray(infos.metric)], 0)
    validated = np.concatenate([np.ones((1, 2), bool), np.asarray(infos.validated)], 0)
    assert validated[-1].all()  # the last point is always validated
    for e in range(2):
        np.testing.assert_allclose(traj.reward[:, e], eq3_numpy(metrics[:, e], validated[:, e]), atol=1e-6)

    p_final = np.asarray(agent.evaluate(r["env_state"], task.device_data["val"]))
    np.testing.assert_allclose(r["last_metric"], p_final, atol=1e-6)
    np.testing.assert_allclose(np.sum(traj.reward, 0), p_final - np.asarray(reset_info.metric), atol=1e-5)

    lrs = np.concatenate([np.asarray(reset_info.learning_rate)[None], np.asarray(infos.learning_rate)], 0)
    np.testing.assert_allclose(lrs[1:], eq4(lrs[:-1], traj.action), rtol=1e-6)
    mu, sigma, value = policy(agent, params, jax.tree.map(lambda x: x.reshape((6,) + x.shape[2:]), traj.obs))
    np.testing.assert_allclose(traj.value, value.reshape(3, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traj.log_prob, gauss_log_prob(np.asarray(traj.action), mu.reshape(3, 2),
                                                             sigma.reshape(3, 2)), rtol=1e-5, atol=1e-5)


def test_truncated_episode_bootstraps_with_the_value_of_its_last_state(loop, full_episode):
    """A truncated episode (3 of 4 points, same key) is the prefix of the full one (validation does not change
    training): same obs/actions; not done; last_value = V(s_2), the value the full episode stored at point 2; its
    returns telescope too; and PPO uses the bootstrap."""
    config, task, agent, params = loop
    cut = run_episode(agent, params, jax.random.key(11), 2, num_decisions=3)
    traj, full = cut["trajectory"], full_episode["trajectory"]
    assert traj.reward.shape == (2, 2)
    for field in ("action", "value", "log_prob"):
        np.testing.assert_allclose(getattr(traj, field), getattr(full, field)[:2], rtol=1e-5, atol=1e-6)
    assert not np.any(np.asarray(traj.done)) and np.all(np.asarray(traj.valid))
    np.testing.assert_allclose(cut["last_value"], full.value[2], rtol=1e-5, atol=1e-6)
    p_final = np.asarray(agent.evaluate(cut["env_state"], task.device_data["val"]))
    np.testing.assert_allclose(np.sum(traj.reward, 0), p_final - np.asarray(cut["reset_info"].metric), atol=1e-5)

    from gns_jax.ppo import init_ppo_state

    state = init_ppo_state(params, agent.ppo)
    boot, _ = agent.ppo_update(jax.random.key(0), state, traj, cut["last_value"])
    zero, _ = agent.ppo_update(jax.random.key(0), state, traj, jnp.zeros_like(cut["last_value"]))
    critic = lambda s: jax.tree.leaves(s.params["params"]["critic"])
    assert any(not np.allclose(x, y) for x, y in zip(critic(boot), critic(zero), strict=True))


def negate_critic(params):
    """V -> -V exactly: the critic's output layer (kernel and bias) times -1."""
    params = jax.tree.map(lambda x: x, params)
    head = params["params"]["critic"]["m_s"]
    last = sorted(head)[-1]
    head[last] = jax.tree.map(lambda x: -x, head[last])
    return params


def test_deploy_picks_the_initial_lr_by_the_real_critic(loop):
    """§4.3 with the agent's own critic: candidate_values = V(s_{T_pre}) replayed per candidate through
    ``Task.init`` + ``train_steps`` + ``LearnedScheduler``; the argmax is deployed (its LR trajectory = the policy
    followed from that LR by the generic controller loop); negating V moves the choice to the argmin."""
    config, task, agent, params = loop
    lrs = np.geomspace(config.agent.prior_lr_min, config.agent.prior_lr_max, 3)
    scheduler = LearnedScheduler(agent, params)
    values = []
    for lr in lrs:  # T_pre = 2 K: the reset's K steps, the decision at point 0, K more steps, V at point 1
        s, stats = task.train_steps(task.init(jax.random.key(config.seed), float(lr)), K)
        new_lr = scheduler(s.params, s.grads, stats.mean_loss, float(lr), progress=0.0)
        s, stats = task.train_steps(s.replace(opt_state=set_learning_rate(s.opt_state, new_lr)), K)
        values.append(float(scheduler.value(s.params, s.grads, stats.mean_loss, new_lr, progress=1 / (T // K - 1))))
    values = np.asarray(values)
    assert np.ptp(values) > 1e-4  # the candidates are told apart
    for p, v in ((params, values), (negate_critic(params), -values)):
        out = deploy(agent, p, deploy_options(config))
        np.testing.assert_allclose(out["candidate_lrs"], lrs, rtol=1e-6)
        np.testing.assert_allclose(out["candidate_values"], v, rtol=1e-4, atol=1e-5)
        best = int(np.argmax(v))
        assert out["initial_lr"] == pytest.approx(lrs[best], rel=1e-6)
        replay = AgentController(agent, p, deploy_options(config), initial_lr=float(lrs[best])).run(
            task, T, K, config.seed)
        np.testing.assert_allclose(out["lr_trajectory"], replay["lr_trajectory"], rtol=1e-5)
        assert out["val_metric"] == pytest.approx(replay["val_metric"], abs=1e-6)
    assert int(np.argmax(values)) != int(np.argmax(-values))


def test_deploy_selection_by_metric_picks_the_best_validation_at_t_pre(loop):
    """``agent.deploy_selection = 'metric'`` (beyond §4.3): candidate_metrics are the validation metric of each
    candidate's target after T_pre, replayed through ``Task.init`` + ``train_steps`` + ``LearnedScheduler``; the
    argmax is deployed."""
    config, task, agent, params = loop
    config = config.copy_and_resolve_references()
    config.agent.deploy_selection = "metric"
    lrs = np.geomspace(config.agent.prior_lr_min, config.agent.prior_lr_max, 3)
    scheduler = LearnedScheduler(agent, params)
    metrics = []
    for lr in lrs:
        s, stats = task.train_steps(task.init(jax.random.key(config.seed), float(lr)), K)
        new_lr = scheduler(s.params, s.grads, stats.mean_loss, float(lr), progress=0.0)
        s, _ = task.train_steps(s.replace(opt_state=set_learning_rate(s.opt_state, new_lr)), K)
        metrics.append(float(task.evaluate(s, "val")["metric"]))
    out = deploy(agent, params, deploy_options(config))
    np.testing.assert_allclose(out["candidate_metrics"], metrics, atol=1e-6)
    assert out["deploy_selection"] == "metric"
    assert out["initial_lr"] == pytest.approx(lrs[int(np.argmax(metrics))], rel=1e-6)


def test_resume_between_sparse_checkpoints_with_truncated_episodes_and_val_subsample(loop, tmp_path):
    """checkpoint_every = 2, two truncated episodes (3 of 4 points), val_subsample = 60: a run interrupted after
    episode 1 (inside the truncated phase), resumed, then crashed after its last episode before that checkpoint
    (step 3 removed) and resumed from step 2 ends with the agent and history of an uninterrupted run."""
    config, task, _, _ = loop
    config = loop_config(config.data.data_dir, config.data.cache_dir, episodes=3, checkpoint_every=2,
                         num_envs=2, truncated_episodes=2, truncated_fraction=0.75, val_subsample=60)
    straight = train_agent(config, str(tmp_path / "straight"), task=task, progress=False)
    assert checkpoints.all_steps(str(tmp_path / "straight" / "checkpoints")) == [0, 2, 3]
    assert [e["decisions"] for e in straight["results"]["episodes"]] == [3, 3, 4]

    workdir = str(tmp_path / "resumed")
    ckpt = os.path.join(workdir, "checkpoints")
    train_agent(config, workdir, task=task, stop_after=1, progress=False)
    assert checkpoints.all_steps(ckpt) == [0, 1]  # an interrupted call saves its last episode
    train_agent(config, workdir, task=task, progress=False)
    shutil.rmtree(os.path.join(ckpt, "3"))  # lost: the run died before its last checkpoint
    assert checkpoints.latest_step(ckpt) == 2
    resumed = train_agent(config, workdir, task=task, progress=False)

    for x, y in zip(jax.tree.leaves(resumed["state"].ppo), jax.tree.leaves(straight["state"].ppo), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    strip = lambda out: [{k: v for k, v in e.items() if k != "wall_seconds"} for e in out["results"]["episodes"]]
    assert strip(resumed) == strip(straight)
    # Not vacuous: training moved the agent, and the episodes differ.
    init = Agent(task, agent_settings(config)).init_params(jax.random.fold_in(jax.random.key(config.seed), 10**6))
    assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(straight["state"].ppo.params),
                                                     jax.tree.leaves(init), strict=True))
    assert len({e["return"] for e in strip(straight)}) == 3


def test_app_d_settings_reach_the_agent(loop):
    """The paper's defaults (§4.1, Eq. 4, App. D) in ``base_config`` and in the agent built from them."""
    config, task, _, _ = loop
    a = base_config().agent
    assert (a.gamma, a.gae_lambda, a.clip_eps, a.ent_coef) == (0.99, 0.95, 0.2, 0.01)  # App. D
    assert (a.actor_lr, a.critic_lr) == (1e-3, 5e-3)  # App. D: Adam 0.001 actor, 0.005 critic
    assert (a.encoder, a.encoder_hidden, a.encoder_layers, a.head_hidden) == ("gcn", 64, 2, 32)  # §4.1, Eq. 4
    assert (a.action_scale, a.validation_prob, a.episodes) == (0.1, 0.2, 30)  # Eq. 4, Eq. 3, §5.1

    cfg = config.copy_and_resolve_references()
    for field in ("encoder_hidden", "encoder_layers", "head_hidden", "gamma", "gae_lambda", "clip_eps", "ent_coef",
                  "actor_lr", "critic_lr", "action_scale", "validation_prob"):
        cfg.agent[field] = a[field]
    agent = Agent(task, agent_settings(cfg))
    ppo = agent.ppo
    assert (ppo.gamma, ppo.gae_lambda, ppo.clip_eps, ppo.ent_coef, ppo.actor_lr, ppo.critic_lr) == (
        0.99, 0.95, 0.2, 0.01, 1e-3, 5e-3)
    assert agent.env.config.validation_prob == 0.2 and agent.network.action_scale == 0.1
    shapes = jax.tree.map(lambda x: x.shape, agent.init_params(jax.random.key(0)))["params"]
    gcn = shapes["encoder"]["hierarchy"]["block"]["gcn"]
    assert sorted(k for k in gcn if k.startswith("conv")) == ["conv_0", "conv_1"]  # 2 layers
    assert all(gcn[f"conv_{i}"]["linear"]["kernel"][1] == 64 for i in range(2))  # 64-dim embeddings
    assert all(gcn[f"norm_{i}"]["scale"] == (64,) for i in range(2))  # batch norm after each layer
    for head in (shapes["actor"]["m_f"], shapes["critic"]["m_s"]):  # one hidden layer of 32, scalar output
        assert head["Dense_0"]["kernel"][1] == 32 and head["Dense_1"]["kernel"] == (32, 1)
