"""Quick start: learn a schedule for the Fashion-MNIST MLP in a few short episodes, then deploy it (~2 min on CPU).

`make run` runs this config in mode `quickstart` (train_agent, then apply). The episodes are much shorter than the
paper's (T = 78,200) so that the whole loop — agent training, checkpoints, deployment, plots — finishes quickly.
"""

from gns_jax.config import base_config


def get_config():
    config = base_config()
    config.data.name = "fashion_mnist"  # Debian's dataset-fashion-mnist works offline
    config.model.name = "mlp"
    config.model.hidden = (128, 128)  # the paper's 3-layer MLP
    config.steps = 4_000  # T per episode (about 10 epochs)
    config.decision_interval = 200  # K: 20 decision points per episode
    config.optimizer.name = "adam"
    config.agent.episodes = 8  # short agent training
    config.agent.num_envs = 2  # two vmapped environments per episode
    config.agent.validation_prob = 0.2  # p of Eq. 3
    config.agent.prior_lr_min = 1e-4  # D_alpha
    config.agent.prior_lr_max = 1e-2
    config.agent.deploy_candidates = 4
    config.agent.deploy_pre_decisions = 2
    return config
