"""Proxy of the Table 20 setting for fast iteration on agent training (docs/results/proxy_fashion_mnist_mlp.md).

The paper's Fashion-MNIST MLP (784-128-128-10, Adam, batch 128) at a tenth of its length: T = 7,800 steps (about 20
epochs) with K = 50, so an episode still has N = 156 decision points, as Table 20's T = 78,200, K = 500 has. One
environment's episode takes about 18 s on one CPU core; an agent of 10 updates x 4 environments about 15 minutes.

The agent settings are the paper's (App. D) unless overridden on the command line; the proxy's ablation turns the
options of ``config.agent`` that go beyond the paper on one by one. ``--mode=compare`` tunes the cosine on this
length (Table 5 grid, validation) and deploys agents on the same 5 evaluation seeds (paired initial weights and
data order).
"""

from gns_jax.compare import compare_config
from gns_jax.config import base_config


def get_config(agent_preset: str = ""):
    config = base_config(agent_preset)
    config.data.name = "fashion_mnist"  # Debian's dataset-fashion-mnist works offline
    config.model.name = "mlp"
    config.model.hidden = (128, 128)  # the paper's 3-layer MLP
    config.steps = 7_800  # T: a tenth of Table 20's 78,200
    config.decision_interval = 50  # K: a tenth of 500, so N = 156 decision points as in Table 20
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.agent.episodes = 10  # PPO updates
    config.agent.num_envs = 4  # environments per update
    config.compare = compare_config("images")  # --mode=compare: the proxy's own tuned cosine (Table 5 grid)
    config.compare.methods = ("cosine", "gns")
    return config
