"""Fashion-MNIST with the paper's 3-layer MLP (hidden 128), Adam, batch 128, T = 78,200, K = 500 (Table 20)."""

from gns_jax.config import base_config


def get_config(agent_preset: str = ""):
    config = base_config(agent_preset)
    config.data.name = "fashion_mnist"  # Debian's dataset-fashion-mnist works offline
    config.model.name = "mlp"
    config.model.hidden = (128, 128)  # 784-128-128-10
    config.steps = 78_200  # T (Table 7): about 200 epochs of the 50k training images
    config.decision_interval = 500  # K (Table 7)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3  # a sane default for the fixed schedule of train_target
    return config
