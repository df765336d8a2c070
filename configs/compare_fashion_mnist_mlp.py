"""GNS against every baseline on Fashion-MNIST with the paper's 3-layer MLP (Table 20; Tables 4-5, App. B.4, E.7).

The paper's setting: MLP 784-128-128-10, Adam, batch 128, T = 78,200, K = 500, p = 0.2, 30 agent episodes, 5 seeds;
10k validation images drawn from the train set. Run with ``--mode=compare`` (resumable), then ``--mode=report``.
Tiny settings for a smoke run, e.g.: ``--config.steps=4000 --config.decision_interval=200
--config.agent.episodes=4 --config.compare.num_seeds=2 --config.compare.cma.evaluations=8``.
"""

from gns_jax.compare import compare_config
from gns_jax.config import base_config


def get_config(agent_preset: str = ""):
    config = base_config(agent_preset)
    config.data.name = "fashion_mnist"  # Debian's dataset-fashion-mnist works offline
    config.model.name = "mlp"
    config.model.hidden = (128, 128)  # 784-128-128-10 (Table 20)
    config.steps = 78_200  # T (Table 7); agents decide N = T // K = 156 times, the last 200 steps at the last LR
    config.decision_interval = 500  # K (Table 7)
    config.batch_size = 128  # Table 7
    config.optimizer.name = "adam"  # the optimizer every schedule and GNS drives (through inject_hyperparams)
    config.optimizer.learning_rate = 1e-3  # unused by compare (every method sets its own); kept for train_target
    config.agent.episodes = 30  # agent-training episodes (§5.1)
    config.agent.validation_prob = 0.2  # p of Eq. 3 (GNS, CSS; FRS and SRLS use 1.0)
    config.compare = compare_config("images")  # methods, seeds, Table 5 / App. B.4 / E.7 search spaces
    config.compare.reference = "table20"  # print the paper's Table 20 beside the results
    return config
