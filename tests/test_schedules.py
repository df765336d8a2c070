import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gns_jax.schedules import Eq7Schedule

T = 1000


def test_cosine_with_warmup_matches_eq7_by_hand():
    s = Eq7Schedule.from_hparams("cosine", T, alpha_max=0.1, mu=0.01, eta1=0.1, eta2=1.0)
    amin = 0.001
    assert float(s(0)) == pytest.approx(0.0)
    assert float(s(50)) == pytest.approx(50 / 100 * 0.1)
    assert float(s(100)) == pytest.approx(0.1)
    t = 400
    expected = 0.5 * (0.1 - amin) * (1 + math.cos(math.pi * (t - 100) / 900)) + amin
    assert float(s(t)) == pytest.approx(expected, rel=1e-5)
    assert float(s(T)) == pytest.approx(amin, rel=1e-5)


def test_cosine_matches_optax_warmup_cosine():
    s = Eq7Schedule.from_hparams("cosine", T, alpha_max=0.1, mu=0.01, eta1=0.1, eta2=1.0)
    ref = optax.warmup_cosine_decay_schedule(0.0, 0.1, warmup_steps=100, decay_steps=1000, end_value=0.001)
    ts = jnp.arange(0, T + 1, 37)
    np.testing.assert_allclose(jax.vmap(s)(ts), jax.vmap(ref)(ts), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_polynomial_no_warmup(power):
    s = Eq7Schedule.from_hparams("polynomial", T, alpha_max=1e-2, mu=0.1, eta1=0.0, eta2=1.0, power=power)
    t = 250
    expected = (1e-2 - 1e-3) * (1 - t / T) ** power + 1e-3
    assert float(s(0)) == pytest.approx(1e-2)  # T_warm = 0: starts at alpha_max, no warmup
    assert float(s(t)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["cosine", "polynomial"])
def test_eta2_half_stays_at_alpha_min_after_decay(kind):
    s = Eq7Schedule.from_hparams(kind, T, alpha_max=1e-1, mu=1e-3, eta1=0.0, eta2=0.5)
    for t in (500, 600, 999, 5000):
        assert float(s(t)) == pytest.approx(1e-4, rel=1e-4)
    assert float(s(499)) > 1e-4


def test_constant_is_alpha_min_and_flat_constant():
    s = Eq7Schedule.from_hparams("constant", T, alpha_max=1e-2, mu=0.1)
    assert float(s(0)) == pytest.approx(1e-3) and float(s(777)) == pytest.approx(1e-3)
    flat = Eq7Schedule.constant(3e-4)
    assert float(flat(0)) == pytest.approx(3e-4) and float(flat(10**6)) == pytest.approx(3e-4)


def test_schedules_vmap_over_grid_points():
    grid = [Eq7Schedule.from_hparams("cosine", T, a, mu=0.1) for a in (1e-1, 1e-2, 1e-3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *grid)
    values = jax.vmap(lambda s: s(0))(stacked)
    np.testing.assert_allclose(values, [1e-1, 1e-2, 1e-3], rtol=1e-6)


def test_bad_hparams():
    with pytest.raises(ValueError, match="unknown schedule"):
        Eq7Schedule.from_hparams("step", T, 0.1)
    with pytest.raises(ValueError, match="eta1"):
        Eq7Schedule.from_hparams("cosine", T, 0.1, eta1=0.6, eta2=0.5)
