"""gns_jax: learning-rate schedules learned by a graph-network PPO agent (Xiong et al., ICLR 2022, "GNS")."""

__version__ = "0.1.0"

# ``gns_jax.pretrained``: trained schedulers shipped as package data (``pretrained.load("fashion_mnist_mlp_proxy")``).
# ``gns_jax.scheduled``: the trained scheduler as an optax transformation. This binds ``gns_jax.scheduled`` to the
# function (the module is ``gns_jax.scheduled`` in ``sys.modules``: ``from gns_jax.scheduled import TrainedPolicy``
# works as usual).
from gns_jax import pretrained  # noqa: E402
from gns_jax.scheduled import ScheduledState, TrainedPolicy, current_learning_rate, scheduled  # noqa: E402

__all__ = ["ScheduledState", "TrainedPolicy", "current_learning_rate", "pretrained", "scheduled"]
