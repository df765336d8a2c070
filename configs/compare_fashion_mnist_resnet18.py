"""GNS against the tuned baselines on Fashion-MNIST with ResNet-18 (Table 1, first row; Table 7 settings).

The paper's setting: ResNet-18, Adam, batch 128, T = 78,200, K = 500, p = 0.2, 30 agent episodes, 5 seeds; 10k
validation images drawn from the train set. Paper's Table 1: constant 93.0, polynomial 93.4, cosine 93.4, HD 93.5,
SRLS 93.6, GNS 94.6. Run with ``--mode=compare`` (resumable), then ``--mode=report``. The full setting is GPU work
(docs/results/fashion_mnist_resnet18.md has the estimated time); experiments/fashion_mnist_resnet18_gpu.sh runs a
scaled-down version (narrower net, shorter runs) that fits one short GPU session. On a CPU set
``--config.scan_unroll=K`` with a small K (docs/performance.md: convolutions in a rolled scan are slow on XLA:CPU).
"""

from gns_jax.compare import compare_config
from gns_jax.config import base_config


def get_config(agent_preset: str = ""):
    config = base_config(agent_preset)
    config.data.name = "fashion_mnist"
    config.model.name = "resnet"
    config.model.depth = 18  # Table 1: ResNet-18 on Fashion-MNIST
    config.steps = 78_200  # T (Table 7)
    config.decision_interval = 500  # K (Table 7)
    config.batch_size = 128
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3  # unused by compare (every method sets its own)
    config.agent.episodes = 30  # §5.1
    config.agent.validation_prob = 0.2  # p of Eq. 3
    config.compare = compare_config("images")  # Table 5 grid for the Eq. 7 baselines
    config.compare.methods = ("constant", "polynomial", "cosine", "adam_hd", "srls", "gns")  # Table 1's columns
    return config
