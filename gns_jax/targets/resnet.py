"""ResNet-18/34 for 32x32 images (He et al. 2016) with the CIFAR stem used by the paper (Table 1).

CIFAR stem: one 3x3 convolution, no max-pool. Basic blocks with batch norm; a block that changes the resolution or
the width has a projection shortcut (1x1 convolution + batch norm). ``width`` scales every channel count so that
tests and CPU runs can use narrow networks (``width=1`` is the standard 64-128-256-512).

Parameter names are part of the contract with ``gns_jax.graph``: ``stem_conv``, ``stem_bn``,
``block_{i}/{conv1,bn1,conv2,bn2,proj_conv,proj_bn}`` (i counts blocks over all stages) and ``head``.

``dtype`` is the compute dtype (``jnp.bfloat16`` for mixed precision on accelerators): parameters, batch statistics
and the returned logits stay float32, so the optimizer state and the node features (``gns_jax.graph``) do not change.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(nn.Conv, use_bias=False, kernel_size=(3, 3), dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        y = conv(self.features, strides=self.strides, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, name="conv2")(y)
        y = norm(name="bn2")(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False, dtype=self.dtype,
                        name="proj_conv")(x)
            x = norm(name="proj_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    depth: int = 18
    num_classes: int = 10
    width: float = 1.0
    base_features: Sequence[int] = (64, 128, 256, 512)
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.depth not in STAGE_SIZES:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_SIZES)}, got {self.depth}")
        feats = [max(1, int(f * self.width)) for f in self.base_features]
        x = nn.Conv(feats[0], (3, 3), use_bias=False, dtype=self.dtype, name="stem_conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                         name="stem_bn")(x)
        x = nn.relu(x)
        i = 0
        for stage, n_blocks in enumerate(STAGE_SIZES[self.depth]):
            for b in range(n_blocks):
                strides = 2 if stage > 0 and b == 0 else 1
                x = BasicBlock(feats[stage], strides, self.dtype, name=f"block_{i}")(x, train)
                i += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
