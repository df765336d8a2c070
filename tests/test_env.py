"""The LR environment: Eq. 3 rewards, validation coins, divergence handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gns_jax.env import EnvConfig, StepInfo, episode_rewards, mark_collapses, spread_rewards, validation_coins


def test_eq3_spreads_improvement_between_validated_points():
    # Validation at points 0, 3, 4, 7 of 8 -> 7 actions.
    metrics = jnp.array([0.50, 9.0, 9.0, 0.62, 0.70, 9.0, 9.0, 0.61])  # 9.0: never read (not validated)
    validated = jnp.array([True, False, False, True, True, False, False, True])
    rewards = np.asarray(spread_rewards(metrics, validated))
    expected = [0.04, 0.04, 0.04, 0.08, -0.03, -0.03, -0.03]  # (0.62-0.50)/3, 0.70-0.62, (0.61-0.70)/3
    np.testing.assert_allclose(rewards, expected, atol=1e-6)
    # The spread rewards add up to the total improvement (Eq. 2 telescopes).
    assert rewards.sum() == pytest.approx(0.61 - 0.50, abs=1e-6)


def test_eq3_every_point_validated_is_plain_difference():
    metrics = jnp.array([0.1, 0.3, 0.2, 0.6])
    rewards = spread_rewards(metrics, jnp.ones(4, bool))
    np.testing.assert_allclose(rewards, [0.2, -0.1, 0.4], atol=1e-6)


def test_validation_coins_always_first_and_last():
    coins = np.asarray(validation_coins(jax.random.key(0), 50, 0.0))
    assert coins[0] and coins[-1] and coins[1:-1].sum() == 0
    coins = np.asarray(validation_coins(jax.random.key(1), 2000, 0.2))
    assert 0.15 < coins[1:-1].mean() < 0.25


def make_infos(metrics, validated, diverged, done, losses=None):
    n = len(metrics)
    f = lambda x, dt=jnp.float32: jnp.asarray(x, dt)
    return StepInfo(learning_rate=jnp.ones(n), mean_loss=jnp.ones(n) if losses is None else f(losses),
                    metric=f(metrics), validated=f(validated, bool), diverged=f(diverged, bool), done=f(done, bool))


def test_divergence_penalty_and_mask():
    reset = make_infos([0.5], [True], [False], [False])
    reset = jax.tree.map(lambda x: x[0], reset)
    # Action 0 validated at 0.6; action 2 diverges (point 3 carries the last metric 0.6); actions 3, 4 are padding.
    infos = make_infos([0.6, np.nan, 0.6, np.nan, np.nan], [True, False, True, False, False],
                       [False, False, True, False, False], [False, False, True, False, False])
    rewards, valid = episode_rewards(infos, reset, penalty=-1.0)
    np.testing.assert_array_equal(valid, [True, True, True, False, False])
    np.testing.assert_allclose(rewards, [0.1, 0.0, -1.0, 0.0, 0.0], atol=1e-6)


def test_collapse_ends_the_episode_like_a_divergence():
    reset = jax.tree.map(lambda x: x[0], make_infos([0.5], [True], [False], [False], losses=[0.8]))
    # The loss of action 2's K steps (9.0) is above 4 x 0.8 while finite: a collapse. Point 1 was validated at 0.6;
    # the later points (validated or not, a later real divergence at action 4) are dropped.
    infos = make_infos([0.6, np.nan, 0.3, 0.2, np.nan], [True, False, True, True, False],
                       [False, False, False, False, True], [False, False, False, False, True],
                       losses=[0.5, 0.6, 9.0, 50.0, np.nan])
    marked, collapsed = mark_collapses(infos, reset, loss_ratio=4.0)
    assert bool(collapsed)
    np.testing.assert_array_equal(marked.diverged, [False, False, True, False, False])
    np.testing.assert_array_equal(marked.done, [False, False, True, False, False])
    np.testing.assert_array_equal(marked.validated, [True, False, True, False, False])
    rewards, valid = episode_rewards(marked, reset, penalty=-1.0)
    np.testing.assert_array_equal(valid, [True, True, True, False, False])
    # Action 1 gets 0 (point 3 carries 0.6, not the collapsed run's 0.3); action 2 the penalty.
    np.testing.assert_allclose(rewards, [0.1, 0.0, -1.0, 0.0, 0.0], atol=1e-6)


def test_a_metric_below_the_start_is_a_collapse():
    reset = jax.tree.map(lambda x: x[0], make_infos([0.80], [True], [False], [False], losses=[0.8]))
    # Point 2 (action 1) is not validated; point 3 (action 2) is, at 0.70 < 0.80: the collapse is action 2.
    infos = make_infos([0.85, np.nan, 0.70, 0.9], [True, False, True, True], [False] * 4,
                       [False, False, False, True])
    marked, collapsed = mark_collapses(infos, reset, below_start=True)
    assert bool(collapsed)
    np.testing.assert_array_equal(marked.diverged, [False, False, True, False])
    np.testing.assert_allclose(marked.metric[:3], [0.85, np.nan, 0.85])
    rewards, valid = episode_rewards(marked, reset, penalty=-1.0)
    np.testing.assert_array_equal(valid, [True, True, True, False])
    np.testing.assert_allclose(rewards, [0.05, 0.0, -1.0, 0.0], atol=1e-6)
    assert not bool(mark_collapses(infos, reset, loss_ratio=4.0)[1])  # the loss rule alone does not see it


def test_collapse_off_or_below_the_ratio_changes_nothing():
    reset = jax.tree.map(lambda x: x[0], make_infos([0.5], [True], [False], [False], losses=[0.8]))
    infos = make_infos([0.6, np.nan, 0.7], [True, False, True], [False] * 3, [False, False, True],
                       losses=[0.5, 3.0, 0.4])
    for ratio in (0.0, 4.0):  # off; on, but 3.0 < 4 x 0.8
        marked, collapsed = mark_collapses(infos, reset, ratio)
        assert not bool(collapsed)
        jax.tree.map(np.testing.assert_array_equal, marked, infos)
    # A collapse after the episode ended (a divergence at action 0) is not one.
    ended = make_infos([0.5, np.nan, np.nan], [True, False, False], [True, False, False], [True, False, False],
                       losses=[np.nan, 9.0, 9.0])
    assert not bool(mark_collapses(ended, reset, 4.0)[1])


def test_env_config_checks():
    with pytest.raises(ValueError, match="at least 2"):
        EnvConfig(decision_interval=10, num_decisions=1)
    with pytest.raises(ValueError, match="prior"):
        EnvConfig(decision_interval=10, num_decisions=5, prior_lr_min=1e-2, prior_lr_max=1e-3)
    with pytest.raises(ValueError, match="collapse_loss_ratio"):
        EnvConfig(decision_interval=10, num_decisions=5, collapse_loss_ratio=-1.0)
