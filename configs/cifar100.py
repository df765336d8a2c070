"""CIFAR-100 with ResNet-34, Adam, batch 128 (the transfer study of Table 3 uses the CIFAR-10 settings)."""

from gns_jax.config import base_config


def get_config(agent_preset: str = ""):
    config = base_config(agent_preset)
    config.data.name = "cifar100"  # TFDS 'cifar100' or an official cifar-100-python/ folder in data.data_dir
    config.model.name = "resnet"
    config.model.depth = 34
    config.steps = 62_600  # as CIFAR-10 (Table 7)
    config.decision_interval = 500  # K
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    return config
