import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gns_jax.targets import MLP, VGG, ResNet
from gns_jax.targets.task import (
    Task,
    as_numpy_batch,
    batch_indices,
    get_learning_rate,
    make_optimizer,
    set_learning_rate,
)


def scaled_input(key, batch, train):
    return {"x": batch["image"].astype(jnp.float32) / 255.0}


def synthetic_data(n, seed=0, shape=(28, 28, 1)):
    prototypes = np.random.default_rng(1234).integers(0, 256, size=(10,) + shape)  # shared by all splits
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = np.clip(prototypes[labels] + rng.normal(0, 30, size=(n,) + shape), 0, 255).astype(np.uint8)
    return as_numpy_batch(images, labels)


def make_task(model=None, optimizer="adam", lr=1e-3, n=512, batch_size=32, shape=(28, 28, 1), input_fn=None):
    data = {"train": synthetic_data(n, 0, shape), "val": synthetic_data(100, 1, shape),
            "test": synthetic_data(100, 2, shape)}
    return Task(model=model or MLP(hidden=(32, 32)), data=data, batch_size=batch_size,
                optimizer=make_optimizer(optimizer, lr, momentum=0.0), input_fn=input_fn or scaled_input,
                eval_batch_size=64)


@pytest.fixture(scope="module")
def mlp_task():
    return make_task()


def count_params(model, shape=(1, 32, 32, 3)):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


def test_full_width_parameter_counts():
    assert count_params(ResNet(depth=18)) == pytest.approx(11.2e6, rel=0.01)
    assert count_params(ResNet(depth=34)) == pytest.approx(21.3e6, rel=0.01)
    # VGG-16 with BN, CIFAR head: 13 convs (14.71M) + BN + 512x10 head.
    assert count_params(VGG()) == pytest.approx(14.72e6, rel=0.01)
    assert count_params(MLP(), (1, 28, 28, 1)) == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


@pytest.mark.parametrize("model", [MLP(hidden=(8,)), ResNet(depth=18, width=1 / 16), VGG(width=1 / 32)],
                         ids=["mlp", "resnet18", "vgg16"])
def test_model_output_shapes(model):
    x = jnp.zeros((3, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (3, 10)


@pytest.mark.parametrize("model", [MLP(hidden=(8,), dtype=jnp.bfloat16), ResNet(depth=18, width=1 / 16,
                                                                              dtype=jnp.bfloat16),
                                   VGG(width=1 / 32, dtype=jnp.bfloat16)], ids=["mlp", "resnet18", "vgg16"])
def test_bfloat16_compute_keeps_parameters_and_logits_float32(model):
    """Mixed precision (config.model.dtype='bfloat16'): the matmuls/convolutions run in bfloat16, while parameters,
    batch statistics and logits (hence the optimizer state and the node features) stay float32."""
    x = jnp.ones((3, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = model.apply(variables, x, train=False)
    assert logits.dtype == jnp.float32
    reference = model.clone(dtype=jnp.float32).apply(variables, x, train=False)
    np.testing.assert_allclose(logits, reference, rtol=0.1, atol=0.1)
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables))
    assert "conv_general_dilated" in jaxpr or "dot_general" in jaxpr
    assert all("bf16" in line for line in jaxpr.splitlines()
               if ("conv_general_dilated" in line or "dot_general" in line) and "=" in line)


def test_bfloat16_training_lowers_the_loss():
    task = make_task(MLP(hidden=(32, 32), dtype=jnp.bfloat16))
    state = task.init(jax.random.key(0), 1e-3)
    before = task.evaluate(state, "val")
    state, stats = task.train_steps(state, 300)
    after = task.evaluate(state, "val")
    assert bool(stats.finite) and state.params["head"]["kernel"].dtype == jnp.float32
    assert float(after["loss"]) < 0.5 * float(before["loss"]) and float(after["metric"]) > 0.9


def test_config_model_dtype_reaches_the_model():
    from gns_jax.config import base_config
    from gns_jax.targets.build import build_model

    config = base_config()
    for name in ("mlp", "resnet", "vgg"):
        config.model.name, config.model.dtype = name, "bfloat16"
        assert build_model(config, 10).dtype == jnp.bfloat16
    config.model.dtype = "float32"
    assert build_model(config, 10).dtype == jnp.float32


def test_training_lowers_the_loss(mlp_task):
    state = mlp_task.init(jax.random.key(0), 1e-3)
    before = mlp_task.evaluate(state, "val")
    state, stats = mlp_task.train_steps(state, 300)
    after = mlp_task.evaluate(state, "val")
    assert bool(stats.finite) and int(state.step) == 300
    assert float(after["loss"]) < 0.5 * float(before["loss"])
    assert float(after["metric"]) > 0.9


def test_scan_of_k_steps_equals_k_single_steps(mlp_task):
    state = mlp_task.init(jax.random.key(1), 1e-3)
    scanned, stats = mlp_task.train_steps(state, 7)
    single = state
    losses = []
    for _ in range(7):
        single, s = mlp_task.train_steps(single, 1)
        losses.append(float(s.mean_loss))
    for a, b in zip(jax.tree.leaves(scanned.params), jax.tree.leaves(single.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(stats.mean_loss) == pytest.approx(np.mean(losses), rel=1e-5)


def test_sgd_injected_lr_scales_the_step_exactly():
    task = make_task(optimizer="sgd", lr=0.1)
    state = task.init(jax.random.key(2), 0.1)
    moved = {}
    for lr in (0.05, 0.1):
        s = state.replace(opt_state=set_learning_rate(state.opt_state, lr))
        new, _ = task.train_steps(s, 1)
        moved[lr] = jax.tree.map(lambda a, b: a - b, new.params, state.params)
    for a, b in zip(jax.tree.leaves(moved[0.1]), jax.tree.leaves(moved[0.05]), strict=True):
        np.testing.assert_allclose(a, 2.0 * b, rtol=1e-4, atol=1e-7)  # float32 rounding of w - w0
    assert float(get_learning_rate(new.opt_state)) == pytest.approx(0.1)


def test_changing_the_learning_rate_never_retraces():
    traces = []

    def counting_input(key, batch, train):
        traces.append(train)
        return scaled_input(key, batch, train)

    task = make_task(input_fn=counting_input)
    state = task.init(jax.random.key(3), 1e-3)
    state, _ = task.train_steps(state, 5)
    traced_once = len(traces)
    for lr in (1e-2, 3e-4, 1e-5, 0.5):
        state = state.replace(opt_state=set_learning_rate(state.opt_state, lr))
        state, _ = task.train_steps(state, 5)
    assert len(traces) == traced_once
    assert float(get_learning_rate(state.opt_state)) == pytest.approx(0.5)


def test_batches_are_epochwise_without_replacement():
    key = jax.random.key(4)
    idx = np.asarray(batch_indices(key, 0, 10, num_examples=40, batch_size=8))  # 5 steps per epoch
    assert idx.shape == (10, 8)
    for epoch in range(2):
        seen = idx[5 * epoch:5 * epoch + 5].ravel()
        assert sorted(seen) == list(range(40))
    assert not np.array_equal(idx[:5], idx[5:])  # reshuffled each epoch
    # Resuming at step 3 gives the same batches as a run from 0.
    np.testing.assert_array_equal(batch_indices(key, 3, 7, 40, 8), idx[3:])


def test_nan_is_reported_not_raised():
    task = make_task(optimizer="sgd", lr=1e6)
    state = task.init(jax.random.key(5), 1e12)
    state, stats = task.train_steps(state, 20)
    assert not bool(stats.finite)


def test_chunked_evaluation_matches_one_pass(mlp_task):
    state = mlp_task.init(jax.random.key(6), 1e-3)
    logits = mlp_task.predict_split(state, mlp_task.device_data["val"])  # 100 examples in chunks of 64
    full = mlp_task.model.apply({"params": state.params}, **scaled_input(None, mlp_task.device_data["val"], False))
    np.testing.assert_allclose(logits, full, rtol=1e-5, atol=1e-5)


def test_batch_norm_statistics_update():
    task = make_task(model=ResNet(depth=18, width=1 / 16), n=64, batch_size=16, shape=(8, 8, 3))
    state = task.init(jax.random.key(7), 1e-3)
    new, stats = task.train_steps(state, 2)
    assert bool(stats.finite)
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.batch_stats),
                                                       jax.tree.leaves(new.batch_stats), strict=True)]
    assert all(changed)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lion", 1e-3)
    assert isinstance(make_optimizer("adamw", 1e-3, weight_decay=0.1), optax.GradientTransformation)
