"""Agent transfer (§5.4, E.2): an agent trained on one architecture is fine-tuned on another.

The GCN encoder shares its weights over nodes and the policy reads one pooled graph embedding, so an agent's
parameters do not depend on the target's depth or widths; ``config.agent.init_checkpoint`` starts agent training
from another run's checkpoint (its PPO optimizer state is not taken).
"""

import os

import jax
import numpy as np
import pytest
from test_data import make_cifar10_folder
from test_train import tiny_agent_config

from gns_jax import checkpoints
from gns_jax.agent import Agent
from gns_jax.checkpoints import CheckpointError
from gns_jax.settings import agent_settings, training_options
from gns_jax.targets.build import build_task
from gns_jax.train import initial_agent_state, load_agent_params, train_agent


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_agent_fine_tunes_on_a_deeper_target(tiny_fashion_mnist, cache_dir, tmp_path):
    source = tiny_agent_config(tiny_fashion_mnist, cache_dir, episodes=1)
    trained = train_agent(source, str(tmp_path / "source"), progress=False)
    source_ckpt = trained["results"]["agent_checkpoint"]
    source_params = trained["state"].ppo.params

    # Another target: three hidden layers of other widths, so another graph (more blocks and nodes).
    target = tiny_agent_config(tiny_fashion_mnist, cache_dir, episodes=1, init_checkpoint=source_ckpt)
    target.model.hidden = (24, 16, 8)
    task = build_task(target)
    agent = Agent(task, agent_settings(target))
    assert agent.structure.num_nodes != Agent(build_task(source), agent_settings(source)).structure.num_nodes

    start = initial_agent_state(agent, training_options(target))
    assert leaves_equal(start.ppo.params, source_params)  # starts from the source agent, not a fresh init
    assert int(start.episode) == 0  # a new run: episodes and PPO moments start afresh

    out = train_agent(target, str(tmp_path / "target"), task=task, progress=False)
    assert len(out["results"]["episodes"]) == 1 and np.isfinite(out["results"]["episodes"][0]["return"])
    assert not leaves_equal(out["state"].ppo.params, source_params)  # the episode fine-tuned it
    # A step directory works as well as the checkpoints folder (newest step).
    parent = os.path.dirname(source_ckpt)
    like = agent.init_params(jax.random.key(1))
    assert leaves_equal(load_agent_params(parent, like), load_agent_params(source_ckpt, like))


def test_resnet_agent_runs_on_vgg(cache_dir, tmp_path):
    """ResNet -> VGG (§5.4): the same parameters are valid for both graphs and give finite actions on VGG."""
    make_cifar10_folder(tmp_path / "cifar-10-batches-py", per_batch=4)

    def cifar_config(model, **model_fields):
        config = tiny_agent_config(str(tmp_path), cache_dir)
        config.data.name, config.data.val_size = "cifar10", 4
        config.model.name = model
        for k, v in model_fields.items():
            config.model[k] = v
        return config

    resnet = cifar_config("resnet", depth=18, width=0.0625)
    vgg = cifar_config("vgg", width=0.0625)
    resnet_agent = Agent(build_task(resnet), agent_settings(resnet))
    vgg_agent = Agent(build_task(vgg), agent_settings(vgg))
    assert resnet_agent.structure.num_blocks != vgg_agent.structure.num_blocks

    state = initial_agent_state(resnet_agent, training_options(resnet))
    path = checkpoints.save(str(tmp_path / "resnet_agent"), 1, state, {"episodes": []})
    params = load_agent_params(path, vgg_agent.init_params(jax.random.key(5)))
    assert leaves_equal(params, state.ppo.params)

    abstract = jax.eval_shape(vgg_agent.task.init_state, jax.random.key(0), 1e-3)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract.params)
    obs = vgg_agent.observe(zeros, zeros, np.float32(1e-3), np.float32(2.3))
    dist, value = vgg_agent.apply(params, obs)
    assert np.isfinite(float(dist.mode())) and np.isfinite(float(value))


def test_init_checkpoint_of_another_agent_shape_is_a_clear_error(tiny_fashion_mnist, cache_dir, tmp_path):
    source = tiny_agent_config(tiny_fashion_mnist, cache_dir)
    agent = Agent(build_task(source), agent_settings(source))
    path = checkpoints.save(str(tmp_path / "agent"), 1, initial_agent_state(agent, training_options(source)),
                            {"episodes": []})
    other = tiny_agent_config(tiny_fashion_mnist, cache_dir, encoder_hidden=16, init_checkpoint=path)
    other_agent = Agent(build_task(other), agent_settings(other))
    with pytest.raises(CheckpointError, match="does not match this run's agent|shape"):
        initial_agent_state(other_agent, training_options(other))
