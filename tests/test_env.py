"""The LR environment: Eq. 3 rewards, validation coins, divergence handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gns_jax.env import EnvConfig, StepInfo, episode_rewards, spread_rewards, validation_coins


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


def make_infos(metrics, validated, diverged, done):
    n = len(metrics)
    f = lambda x, dt=jnp.float32: jnp.asarray(x, dt)
    return StepInfo(learning_rate=jnp.ones(n), mean_loss=jnp.ones(n), metric=f(metrics), validated=f(validated, bool),
                    diverged=f(diverged, bool), done=f(done, bool))


def test_divergence_penalty_and_mask():
    reset = make_infos([0.5], [True], [False], [False])
    reset = jax.tree.map(lambda x: x[0], reset)
    # Action 0 validated at 0.6; action 2 diverges (point 3 carries the last metric 0.6); actions 3, 4 are padding.
    infos = make_infos([0.6, np.nan, 0.6, np.nan, np.nan], [True, False, True, False, False],
                       [False, False, True, False, False], [False, False, True, False, False])
    rewards, valid = episode_rewards(infos, reset, penalty=-1.0)
    np.testing.assert_array_equal(valid, [True, True, True, False, False])
    np.testing.assert_allclose(rewards, [0.1, 0.0, -1.0, 0.0, 0.0], atol=1e-6)


def test_env_config_checks():
    with pytest.raises(ValueError, match="at least 2"):
        EnvConfig(decision_interval=10, num_decisions=1)
    with pytest.raises(ValueError, match="prior"):
        EnvConfig(decision_interval=10, num_decisions=5, prior_lr_min=1e-2, prior_lr_max=1e-3)
