"""``gns_jax.pretrained``: an exported agent loads back into the checkpoint's policy (same mean actions, same
learning-rate trajectory under ``gns_jax.scheduled``); the shipped scheduler runs on the MLP it was trained on and
reproduces its recorded deployment; unknown names and targets it cannot read are refused with one line."""

import functools
import json
import os
import shutil
import tomllib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DEBIAN_FASHION_MNIST, REPO, decisive, tiny_mlp_config, user_loop

import gns_jax
from gns_jax import checkpoints, pretrained
from gns_jax.agent import Agent
from gns_jax.scheduled import TrainedPolicy, current_learning_rate
from gns_jax.settings import agent_settings
from gns_jax.targets.build import build_task
from gns_jax.targets.mlp import MLP
from gns_jax.targets.resnet import ResNet

K, T, TAIL = 10, 50, 5
LR0 = 3e-3
SHIPPED = "fashion_mnist_mlp_proxy"
# The tiny agent observes with the grouped preset's options, so the export must carry them to be read back.
OPTIONS = dict(progress_feature=True, mean_features=False, lr_max=0.1)


@pytest.fixture(scope="module")
def exported(tiny_fashion_mnist, cache_dir, tmp_path_factory):
    """A tiny agent saved as ``train_agent`` saves it, then exported: (config, task, agent params, checkpoint, dir)."""
    root = tmp_path_factory.mktemp("pretrained")
    config = tiny_mlp_config(tiny_fashion_mnist, cache_dir, steps=T, decision_interval=K, **OPTIONS)
    task = build_task(config)
    agent_params = decisive(jax.jit(Agent(task, agent_settings(config)).init_params)(jax.random.key(1)))
    checkpoint = str(root / "checkpoints")
    checkpoints.save(checkpoint, 3, {"ppo": {"params": agent_params}}, {"episodes": []})
    out = pretrained.export(config, checkpoint, "tiny", out_dir=str(root / "tiny"), task=task,
                            provenance={"training_command": "a test"})
    return config, task, agent_params, checkpoint, out


@functools.cache
def runner(task, tx, num_steps: int):
    """``user_loop``, jitted."""
    return jax.jit(user_loop(task, tx, num_steps))


def random_like(tree, seed: int, scale: float):
    """Gaussian values shaped like ``tree`` (numpy: no per-shape XLA compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (scale * rng.standard_normal(x.shape)).astype(np.float32), tree)


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text
    return text


def test_export_then_load_is_the_checkpoints_policy(exported):
    config, task, agent_params, checkpoint, out = exported
    loaded = pretrained.load(out)
    reference = TrainedPolicy.from_checkpoint(config, checkpoint, task)
    info = pretrained.card(out)
    assert info["agent"]["progress_feature"] is True and info["agent"]["mean_features"] is False
    assert info["agent"]["node_features"] == 9 and info["agent"]["lr_max"] == 0.1
    assert (info["trained_on"]["steps"], info["trained_on"]["decision_interval"]) == (T, K)
    assert info["trained_on"]["node_names"] == ["dense_0", "dense_1", "head"]
    assert info["provenance"]["training_command"] == "a test"
    assert info["provenance"]["checkpoint"] == os.path.abspath(checkpoint)  # outside the working directory
    assert (loaded.decision_interval, loaded.num_decisions, loaded.lr_min, loaded.lr_max) == (
        reference.decision_interval, reference.num_decisions, reference.lr_min, reference.lr_max)
    for x, y in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(agent_params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # The same mean actions and values on states along a run, at several learning rates and progress values.
    def act(policy):
        def mean_action_and_value(params, grads, lr, loss, progress):
            dist, value = policy.network.apply(policy.params, policy.observe(params, grads, lr, loss, progress))
            return dist.mode(), value
        return jax.jit(jax.vmap(mean_action_and_value, in_axes=(None, None, 0, None, 0)))

    lrs, progress = jnp.array([1e-4, 3e-3, 1e-2]), jnp.array([0.0, 0.5, 1.0])
    start = task.init(jax.random.key(0), LR0)
    act_loaded, act_reference = act(loaded), act(reference)
    for seed in range(3):  # gradients of several sizes
        grads = random_like(start.params, seed, 10.0 ** -seed)
        args = (start.params, grads, lrs, jnp.float32(2.0 - seed / 2), progress)
        (mu_a, v_a), (mu_b, v_b) = act_loaded(*args), act_reference(*args)
        np.testing.assert_array_equal(np.asarray(mu_a), np.asarray(mu_b))
        np.testing.assert_array_equal(np.asarray(v_a), np.asarray(v_b))
        assert np.ptp(np.asarray(mu_a)) > 0  # the actions depend on the state

    # The same learning-rate trajectory under gns_jax.scheduled, and it is a real schedule (alpha moves).
    lrs = []
    for policy in (loaded, reference):
        tx = gns_jax.scheduled(optax.adam, policy, learning_rate=LR0)
        _, opt_state, lr = runner(task, tx, T + TAIL)(start.params, tx.init(start.params), start.key, start.data_key)
        assert int(opt_state.decisions) == T // K - 1
        lrs.append(np.asarray(lr))
    np.testing.assert_array_equal(lrs[0], lrs[1])
    assert len(np.unique(lrs[0])) == T // K


def test_card_records_a_checkpoint_below_the_working_directory_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pretrained._recorded_path("runs/a/checkpoints/7") == os.path.join("runs", "a", "checkpoints", "7")
    assert pretrained._recorded_path(str(tmp_path / "b")) == "b"
    outside = os.path.abspath(os.path.join(str(tmp_path), os.pardir, "elsewhere"))
    assert pretrained._recorded_path(outside) == outside


def test_export_refuses_overwrite_and_the_cli_exports(exported, tmp_path, capsys):
    from gns_jax.config import config_to_dict
    from gns_jax.pretrained.__main__ import main

    config, _, agent_params, checkpoint, out = exported
    with pytest.raises(FileExistsError, match="overwrite"):
        pretrained.export(config, checkpoint, "tiny", out_dir=out)
    with pytest.raises(ValueError, match="lower-case"):
        pretrained.export(config, checkpoint, "Tiny Agent", out_dir=str(tmp_path / "x"))
    # The command line: the run's config.json and a checkpoint step -> a directory that loads to the same agent.
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config_to_dict(config), f)
    cli_out = str(tmp_path / "tiny_cli")
    assert main(["export", "--config", str(tmp_path / "config.json"), "--checkpoint", f"{checkpoint}/3",
                 "--name", "tiny_cli", "--out", cli_out, "--command", "train it"]) == 0
    assert "tiny_cli" in capsys.readouterr().out
    assert pretrained.card(cli_out)["provenance"]["training_command"] == "train it"
    for x, y in zip(jax.tree.leaves(pretrained.load(cli_out).params), jax.tree.leaves(agent_params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Deployed at another length (--use-with T K): load defaults to that K and T; trained_on keeps training's.
    long_out = str(tmp_path / "tiny_long")
    assert main(["export", "--config", str(tmp_path / "config.json"), "--checkpoint", f"{checkpoint}/3",
                 "--name", "tiny_long", "--out", long_out, "--use-with", str(10 * T), str(10 * K)]) == 0
    info = pretrained.card(long_out)
    assert (info["trained_on"]["steps"], info["trained_on"]["decision_interval"]) == (T, K)
    assert info["use_with"] == {"steps": 10 * T, "decision_interval": 10 * K, "num_decisions": T // K}
    policy = pretrained.load(long_out)
    assert (policy.decision_interval, policy.num_decisions) == (10 * K, T // K)
    assert main(["export", "--name", "x"]) == 2
    assert "needs --workdir" in capsys.readouterr().err
    assert main(["list"]) == 0 and SHIPPED in capsys.readouterr().out


def test_shipped_scheduler_runs_under_scheduled():
    """``load`` by name, then a few hundred steps of ``scheduled(optax.adam, ...)`` on the MLP it was trained on."""
    assert SHIPPED in pretrained.available()
    policy = pretrained.load(SHIPPED)
    info = pretrained.card(SHIPPED)
    assert (policy.decision_interval, policy.num_decisions) == (50, 156)
    assert (policy.lr_min, policy.lr_max) == (1e-6, 0.1)
    deployed = info["provenance"]["deployments"]
    assert round(100 * deployed["test_mean"], 2) == 88.91 and round(100 * deployed["val_mean"], 2) == 89.95
    assert info["provenance"]["probe"]["after_update"] == 10 and info["provenance"]["training_command"]

    model = MLP(hidden=(128, 128))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((512, 28, 28, 1)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 512))
    params = model.init(jax.random.key(0), images[:1])["params"]
    tx = gns_jax.scheduled(optax.adam, policy, learning_rate=1e-3)

    @jax.jit
    def train(params, opt_state):
        def step(carry, i):
            params, opt_state = carry
            idx = jax.random.randint(jax.random.fold_in(jax.random.key(1), i), (64,), 0, 512)
            loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": p}, images[idx]), labels[idx]).mean()
            loss, grads = jax.value_and_grad(loss_fn)(params)
            lr = current_learning_rate(opt_state)
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            return (optax.apply_updates(params, updates), opt_state), lr

        return jax.lax.scan(step, (params, opt_state), jnp.arange(160))

    (params, state), lrs = train(params, tx.init(params))
    lrs = np.asarray(lrs)
    assert int(state.decisions) == 3 and np.all(np.isfinite(lrs))
    blocks = [lrs[b * 50:(b + 1) * 50] for b in range(3)]
    assert all(np.all(block == block[0]) for block in blocks)
    # The shipped agent decays the learning rate (its probe: mean action -0.021, every probe state negative).
    factors = np.array([blocks[1][0] / blocks[0][0], blocks[2][0] / blocks[1][0], lrs[-1] / blocks[2][0]]) - 1
    assert np.all(factors < 0) and np.all(factors > -0.1), factors


@pytest.mark.real_data
@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST), reason="needs Debian's dataset-fashion-mnist")
@pytest.mark.parametrize("name,decisions,rtol", [(SHIPPED, 30, 1e-3), ("fashion_mnist_mlp", 6, 2e-2)])
def test_shipped_scheduler_reproduces_its_recorded_deployment(name, decisions, rtol):
    """From the initial state of evaluation seed 1 (the initial LR that deployment picked by validation at T_pre) on
    the real Fashion-MNIST split, the shipped parameters under ``gns_jax.scheduled`` (with the K and T the card says
    to use) take the learning rates that deployment (§4.3) recorded in the card, decision for decision: the proxy
    agent at its training length to 0.1 % (the rounding of an Intel and an AMD CPU differs by up to 0.05 % over its 30
    decisions), the Table 20 agent at T = 78,200 with K = 2,500 (``use_with``). Over 2,500 steps
    per decision the two programs' float rounding drifts apart and this agent reacts to it: the rates agree to
    1 %, where the same agent told the wrong T (its training's) is 13 % off by decision 6."""
    import ml_collections

    info = pretrained.card(name)
    run = next(r for r in info["provenance"]["deployments"]["runs"] if r["seed"] == 1)
    config = ml_collections.ConfigDict(info["provenance"]["config"])  # the training data split; the default cache
    task = build_task(config)
    policy = pretrained.load(name)
    k = policy.decision_interval
    start = task.init(jax.random.key(run["seed"]), run["initial_lr"])
    tx = gns_jax.scheduled(optax.adam, policy, learning_rate=run["initial_lr"])
    _, _, lrs = runner(task, tx, (decisions + 1) * k)(start.params, tx.init(start.params), start.key,
                                                      start.data_key)
    per_block = np.asarray(lrs)[::k]
    np.testing.assert_allclose(per_block, run["lr_trajectory"][:decisions + 1], rtol=rtol)
    assert len(np.unique(per_block)) == decisions + 1  # the schedule moves at every decision


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(pretrained.UnknownSchedulerError) as error:
        pretrained.load("fashion_mnist_resnet")
    text = one_line(error)
    assert "'fashion_mnist_resnet'" in text and SHIPPED in text and isinstance(error.value, KeyError)


def shapes(module: nn.Module, x) -> dict:
    return jax.eval_shape(module.init, jax.random.key(0), x)["params"]


class DefaultNamedMLP(nn.Module):
    """An MLP as flax names it by default (Dense_0, Dense_1, ...): no graph of §4.1 can be built from it."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


def test_targets_it_cannot_read_are_refused_in_one_line():
    image = jnp.zeros((1, 28, 28, 1))
    with pytest.raises(pretrained.IncompatibleTargetError) as error:
        pretrained.load(SHIPPED, target=shapes(DefaultNamedMLP(), image))
    assert "cannot read" in one_line(error) and "dense_0, dense_1, ..., head" in one_line(error)

    resnet = shapes(ResNet(depth=18, width=0.0625), image)
    with pytest.raises(pretrained.IncompatibleTargetError) as error:
        pretrained.load(SHIPPED, target=resnet)
    text = one_line(error)
    assert "trained on mlp graphs" in text and "resnet graph" in text and "allow_other_architectures" in text
    # Readable all the same: asked to, the policy is built for the ResNet's graph (41 nodes, 10 blocks) with the
    # stored parameters, and node features + GCN + Eq. 4 trace through it (tracing is the check; no compile needed).
    policy = pretrained.load(SHIPPED, target=resnet, allow_other_architectures=True)
    lr = jax.eval_shape(policy.next_learning_rate, resnet, resnet, 1e-3, 2.0, 0.0)
    assert lr.shape == () and lr.dtype == jnp.float32

    # A CSS encoder reads a fixed number of nodes (its input is all node features concatenated).
    css_card = dict(pretrained.card(SHIPPED), agent=dict(pretrained.card(SHIPPED)["agent"], encoder="css"))
    deeper = shapes(MLP(hidden=(32, 32, 32)), image)
    with pytest.raises(pretrained.IncompatibleTargetError) as error:
        pretrained.check_target(css_card, deeper)
    assert "CSS" in one_line(error) and "3 nodes" in one_line(error) and "4 nodes" in one_line(error)
    assert pretrained.check_target(SHIPPED, deeper).num_nodes == 4  # the GCN reads any depth


def test_policy_refuses_parameters_of_another_graph_inside_scheduled():
    """Built for the trained 3-layer graph, the policy refuses a 4-layer MLP at trace time (instead of reading three
    of its layers); ``load(name, target=params)`` builds it for that graph. Another width is the same graph."""
    image = jnp.zeros((4, 28, 28, 1))
    deeper = MLP(hidden=(32, 32, 32)).init(jax.random.key(0), image)["params"]
    grads = jax.tree.map(jnp.ones_like, deeper)
    tx = gns_jax.scheduled(optax.adam, pretrained.load(SHIPPED), learning_rate=1e-3, total_steps=2,
                           decision_interval=1)
    with pytest.raises(pretrained.IncompatibleTargetError) as error:  # raised while tracing
        jax.eval_shape(functools.partial(tx.update, value=1.0), grads, tx.init(deeper), deeper)
    assert "target=params" in one_line(error) and "4 nodes" in one_line(error)
    tx = gns_jax.scheduled(optax.adam, pretrained.load(SHIPPED, target=deeper), learning_rate=1e-3, total_steps=2,
                           decision_interval=1)
    _, state = jax.jit(tx.update)(grads, tx.init(deeper), deeper, value=1.0)
    assert int(state.decisions) == 1 and float(state.learning_rate) != 1e-3
    trained = pretrained.check_target(SHIPPED, shapes(MLP(hidden=(128, 128)), image))
    assert pretrained.check_target(SHIPPED, shapes(MLP(hidden=(256, 64)), image)) == trained


def test_card_and_parameters_that_do_not_belong_together_are_refused(exported, tmp_path):
    *_, out = exported
    broken = shutil.copytree(out, tmp_path / "broken")
    info = pretrained.card(str(broken))
    info["agent"]["progress_feature"] = False  # 8 node features, but the stored encoder reads 9
    (broken / "card.json").write_text(json.dumps(info))
    with pytest.raises(pretrained.IncompatibleTargetError) as error:
        pretrained.load(str(broken))
    assert "8 node features" in one_line(error)
    info["agent"]["progress_feature"] = True
    (broken / "card.json").write_text(json.dumps(info))
    (broken / "params.msgpack").write_bytes((broken / "params.msgpack").read_bytes()[:-1] + b"\x00")
    with pytest.raises(pretrained.IncompatibleTargetError, match="does not match its card"):
        pretrained.load(str(broken))


def test_shipped_data_is_small_and_packaged():
    """Every shipped file is matched by pyproject's package-data (so wheels carry it) and found through
    importlib.resources; all of it stays under 1 MB."""
    import fnmatch
    import importlib.resources

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["gns_jax.pretrained"]
    root = importlib.resources.files("gns_jax.pretrained")
    total = 0
    for name in pretrained.available():
        for entry in root.joinpath(name).iterdir():
            assert any(fnmatch.fnmatch(f"{name}/{entry.name}", p) for p in patterns), entry.name
            total += len(entry.read_bytes())
        assert {e.name for e in root.joinpath(name).iterdir()} == {"card.json", "params.msgpack"}
    assert 0 < total < 1_000_000
