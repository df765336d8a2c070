"""CIFAR-10 with ResNet-34, Adam, batch 128, T = 62,600, K = 500 (Table 1, Table 7)."""

from gns_jax.config import base_config


def get_config(agent_preset: str = ""):
    config = base_config(agent_preset)
    config.data.name = "cifar10"  # TFDS 'cifar10' or an official cifar-10-batches-py/ folder in data.data_dir
    config.model.name = "resnet"
    config.model.depth = 34  # 18 graph blocks: input, 16 basic blocks, output
    config.steps = 62_600  # Table 7
    config.decision_interval = 500  # K (Table 7)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    return config
