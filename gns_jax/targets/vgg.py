"""VGG-16 with batch norm for 32x32 images (Simonyan & Zisserman 2015; the paper's transfer target, Table 3).

Thirteen 3x3 convolutions, each followed by batch norm and ReLU, five max-pools, then a linear classifier on the
512-dim feature (the usual CIFAR variant). ``width`` scales every channel count.

Parameter names are part of the contract with ``gns_jax.graph``: ``conv_{i}``, ``bn_{i}`` (i = 0..12) and ``head``.
``dtype`` is the compute dtype (parameters, batch statistics and logits stay float32), as in ``ResNet``.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Channels per convolution; "M" is a 2x2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    num_classes: int = 10
    width: float = 1.0
    layout: tuple = VGG16_LAYOUT
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        i = 0
        for item in self.layout:
            if item == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = nn.Conv(max(1, int(item * self.width)), (3, 3), use_bias=False, dtype=self.dtype, name=f"conv_{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                             name=f"bn_{i}")(x)
            x = nn.relu(x)
            i += 1
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
