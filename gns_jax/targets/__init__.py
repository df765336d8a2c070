"""Target networks (the networks whose learning rate is scheduled), their losses and the K-step training scan."""

from gns_jax.targets.mlp import MLP
from gns_jax.targets.resnet import ResNet
from gns_jax.targets.vgg import VGG

__all__ = ["MLP", "ResNet", "VGG"]
