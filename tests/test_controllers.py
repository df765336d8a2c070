"""The controller interface: every method trains through the same Task machinery and inject_hyperparams state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_mlp_config

from gns_jax.controllers import (
    LR_FREE,
    ScheduleController,
    hypergradient_controller,
    lr_free_controller,
    task_for,
)
from gns_jax.schedules import Eq7Schedule
from gns_jax.targets.build import build_task
from gns_jax.targets.task import get_learning_rate, set_hyperparams, set_learning_rate

T, K = 40, 10


def tiny_config(data_dir, cache_dir):
    return tiny_mlp_config(data_dir, cache_dir, steps=T, decision_interval=K)


@pytest.fixture(scope="module")
def setup(tiny_fashion_mnist, cache_dir):
    config = tiny_config(tiny_fashion_mnist, cache_dir)
    return config, build_task(config)


def test_schedule_controller_is_the_plain_task_loop(setup):
    """The run loop every method shares = Task.init + K-step train_steps under the schedule, by hand."""
    config, task = setup
    schedule = Eq7Schedule.from_hparams("cosine", T, alpha_max=1e-2, mu=0.1, eta1=0.1)
    ours = ScheduleController(schedule, "cosine").run(task, T, K, seed=config.seed)
    state = task.init(jax.random.key(config.seed), schedule(0))
    for start in range(0, T, K):
        state, _ = task.train_steps(state, min(K, T - start), schedule)
    assert ours["val_metric"] == float(task.evaluate(state, "val")["metric"])
    assert ours["test_metric"] == float(task.evaluate(state, "test")["metric"])
    np.testing.assert_allclose(ours["lr_trajectory"], [float(schedule(s)) for s in range(0, T, K)])
    assert ours["lr_trajectory"][0] == 0.0 and not ours["diverged"] and ours["steps"] == T


def test_hypergradient_controller_adapts_and_shares_one_program(setup):
    _, task = setup
    a = hypergradient_controller("adam", 1e-2, 1e-4)
    b = hypergradient_controller("adam", 1e-3, 1e-9)
    assert task_for(task, a) is task_for(task, b)  # alpha_0 and beta are state, not structure
    assert task_for(task, hypergradient_controller("sgd", 1e-2, 1e-8)) is not task_for(task, a)
    result = a.run(task, T, K, seed=0)
    lrs = result["lr_trajectory"]
    assert len(lrs) == T // K and lrs[0] == pytest.approx(1e-2)
    assert np.all(np.isfinite(lrs)) and np.ptp(lrs) > 0  # alpha moved with its hypergradient
    still = b.run(task, T, K, seed=0)["lr_trajectory"]
    np.testing.assert_allclose(still, 1e-3, rtol=2e-2)  # beta = 1e-9: alpha barely moves


def test_hyperparams_are_set_at_init(setup):
    _, task = setup
    hd = task_for(task, hypergradient_controller("adam", 1e-2, 1e-8))
    state = hd.init(jax.random.key(0), 3e-3)
    assert float(get_learning_rate(state.opt_state)) == pytest.approx(3e-3)
    state = set_hyperparams(state.opt_state, {"hypergrad_lr": 5e-7})
    assert float(state.hyperparams["hypergrad_lr"]) == pytest.approx(5e-7)
    with pytest.raises(KeyError, match="hypergrad"):
        set_hyperparams(task.init(jax.random.key(0), 1e-3).opt_state, {"hypergrad_lr": 1.0})


@pytest.mark.parametrize("name", sorted(LR_FREE))
def test_lr_free_optimizers_under_inject_hyperparams(name):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    controller = lr_free_controller(name)
    opt = controller.make_optimizer()
    state = set_learning_rate(opt.init(params), controller.initial_learning_rate())
    assert float(get_learning_rate(state)) == pytest.approx(LR_FREE[name].default_lr)
    grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
    for _ in range(3):
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    effective = controller.recorded_learning_rate(state)
    # Second route: the same optimizer without inject_hyperparams, its step size read off its own state.
    raw_opt = {"schedule_free_adamw": optax.contrib.schedule_free_adamw, "prodigy": optax.contrib.prodigy,
               "dadapt_adamw": optax.contrib.dadapt_adamw,
               "mechanize": lambda: optax.contrib.mechanize(optax.adam(1.0))}[name]()
    raw_params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    raw = raw_opt.init(raw_params)
    for _ in range(3):
        updates, raw = raw_opt.update(grads, raw, raw_params)
        raw_params = optax.apply_updates(raw_params, updates)
    expected = {"schedule_free_adamw": lambda: 0.0025,  # its documented default; no adaptive scale
                "prodigy": lambda: raw.estim_lr, "dadapt_adamw": lambda: raw.estim_lr,  # default multiplier 1.0
                "mechanize": lambda: jnp.sum(raw.s)}[name]()  # Adam at 1.0, scaled by sum(s)
    assert effective == pytest.approx(float(expected), rel=1e-5)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(raw_params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)  # and the same steps were taken
    if name != "schedule_free_adamw":
        assert effective != pytest.approx(LR_FREE[name].default_lr, rel=1e-3)  # the adaptive part moved


def test_schedule_free_is_evaluated_at_its_averaged_params(setup):
    _, task = setup
    controller = lr_free_controller("schedule_free_adamw", 1e-2)
    sf_task = task_for(task, controller)
    state, _ = sf_task.train_steps(sf_task.init(jax.random.key(0), 1e-2), 5)
    evaluated = controller.eval_target(state)
    expected = optax.contrib.schedule_free_eval_params(state.opt_state.inner_state, state.params)
    for x, y, p in zip(jax.tree.leaves(evaluated.params), jax.tree.leaves(expected), jax.tree.leaves(state.params),
                       strict=True):
        np.testing.assert_allclose(x, y)
        assert not np.allclose(x, p)


def test_divergence_is_reported_and_the_trajectory_padded(setup):
    _, task = setup
    result = ScheduleController(Eq7Schedule.constant(1e30), "constant").run(task, T, K, seed=0)
    assert result["diverged"]
    assert len(result["lr_trajectory"]) == T // K and np.isnan(result["lr_trajectory"][-1])

