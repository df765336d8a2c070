"""Fashion-MNIST with ResNet-18, Adam, batch 128, T = 78,200, K = 500 (Table 1, Table 7)."""

from gns_jax.config import base_config


def get_config(agent_preset: str = ""):
    config = base_config(agent_preset)
    config.data.name = "fashion_mnist"
    config.model.name = "resnet"
    config.model.depth = 18  # 10 graph blocks: input, 8 basic blocks, output
    config.steps = 78_200  # Table 7
    config.decision_interval = 500  # K (Table 7)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    return config
