"""The 3-layer MLP of the paper's Fashion-MNIST study (App. E, Table 20): 784-128-128-10, ReLU."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """Fully connected classifier on flattened images.

    Parameter names (``dense_0``, ``dense_1``, ..., ``head``) are part of the contract with ``gns_jax.graph``.
    """

    hidden: Sequence[int] = (128, 128)
    num_classes: int = 10
    width: float = 1.0  # multiplier on every hidden width
    dtype: Any = jnp.float32  # compute dtype; parameters and logits stay float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # no batch norm or dropout
        x = x.reshape((x.shape[0], -1))
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(max(1, int(h * self.width)), dtype=self.dtype, name=f"dense_{i}")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
