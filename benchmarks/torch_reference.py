"""The PyTorch side of ``torch_step_ratio``: the same models, batch and optimizer as gns_jax's K-step scan.

MLP 784-128-128-10 and the CIFAR-stem ResNet-18 of ``gns_jax.targets`` (same layer shapes, batch norm momentum,
projection shortcuts), trained with Adam on batches gathered by index from in-memory uint8 data, one epoch-wise
permutation at a time — the loop a PyTorch user would write. Needs the ``bench`` extra (``torch``).
"""

from __future__ import annotations

import time

import numpy as np


def _torch():
    import torch

    return torch


def mlp(hidden=(128, 128), in_features: int = 784, num_classes: int = 10):
    nn = _torch().nn
    layers, width = [nn.Flatten()], in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def resnet18(width: float = 1.0, num_classes: int = 10, channels: int = 3):
    """``gns_jax.targets.ResNet(depth=18, width=width)`` in PyTorch (NCHW)."""
    nn = _torch().nn
    feats = [max(1, int(f * width)) for f in (64, 128, 256, 512)]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
            self.proj = None
            if cin != cout or stride != 1:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (y + (x if self.proj is None else self.proj(x))).relu()

    layers = [nn.Conv2d(channels, feats[0], 3, 1, 1, bias=False), nn.BatchNorm2d(feats[0]), nn.ReLU()]
    cin = feats[0]
    for stage, f in enumerate(feats):
        for b in range(2):
            layers.append(Block(cin, f, 2 if stage > 0 and b == 0 else 1))
            cin = f
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


class TorchLoop:
    """``steps`` Adam steps of ``model`` on batches of ``batch_size`` drawn epoch-wise from ``images``/``labels``."""

    def __init__(self, model, images: np.ndarray, labels: np.ndarray, batch_size: int = 128, lr: float = 1e-3,
                 channels_first: bool = False, threads: int | None = None):
        torch = _torch()
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        self.model = model
        x = torch.from_numpy(np.ascontiguousarray(images))
        self.images = x.permute(0, 3, 1, 2).contiguous() if channels_first else x
        self.labels = torch.from_numpy(np.asarray(labels, np.int64))
        self.batch_size = batch_size
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss = torch.nn.CrossEntropyLoss()
        self.generator = torch.Generator().manual_seed(0)
        self.perm, self.pos = None, 0

    def _batch(self):
        n = self.images.shape[0]
        if self.perm is None or self.pos + self.batch_size > n:
            self.perm, self.pos = self.torch.randperm(n, generator=self.generator), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.images[idx].float().div_(255.0), self.labels[idx]

    def run(self, steps: int) -> float:
        """Train ``steps`` steps; returns the wall time in seconds."""
        self.model.train()
        start = time.perf_counter()
        for _ in range(steps):
            x, y = self._batch()
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.model(x), y)
            loss.backward()
            self.opt.step()
        loss.item()  # wait for the last step (as block_until_ready does on the JAX side)
        return time.perf_counter() - start
