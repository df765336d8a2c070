"""On-device preprocessing of image batches: per-channel normalisation and the standard CIFAR augmentation.

Everything here is pure ``jax.numpy`` and runs inside jitted training steps. Augment the uint8 images
first, then normalise: the crop's zero padding is then black, as in the usual CIFAR recipe.

Normalisation constants are the per-channel mean and standard deviation of the pixel values scaled to
[0, 1], over all pixels of the official train set (60,000 images for MNIST / Fashion-MNIST, 50,000 for
CIFAR). They are population statistics of single pixels, not the standard deviation of per-image means
that some code bases quote for CIFAR-10 as (0.2023, 0.1994, 0.2010). Fashion-MNIST's were recomputed from
the official files (mean 0.28604, std 0.35302); the others are the widely used values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gns_jax.data.images import DATASET_NAMES

CHANNEL_MEAN = {
    "mnist": (0.1307,),
    "fashion_mnist": (0.2860,),
    "cifar10": (0.4914, 0.4822, 0.4465),
    "cifar100": (0.5071, 0.4865, 0.4409),
}
CHANNEL_STD = {
    "mnist": (0.3081,),
    "fashion_mnist": (0.3530,),
    "cifar10": (0.2470, 0.2435, 0.2616),
    "cifar100": (0.2673, 0.2564, 0.2762),
}
_AUGMENTED_DATASETS = frozenset({"cifar10", "cifar100"})


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def augment_for(name: str) -> bool:
    """Whether training on ``name`` uses :func:`random_crop_flip` (CIFAR: yes; MNIST / Fashion-MNIST: no)."""
    _check_name(name)
    return name in _AUGMENTED_DATASETS


def normalize(images: jax.Array, name: str) -> jax.Array:
    """uint8 images (..., H, W, C) → float32 ``(x / 255 - mean) / std``, per channel, for dataset ``name``."""
    _check_name(name)
    mean = jnp.asarray(CHANNEL_MEAN[name], dtype=jnp.float32)
    std = jnp.asarray(CHANNEL_STD[name], dtype=jnp.float32)
    if images.shape[-1] != mean.shape[0]:
        raise ValueError(f"{name} images have {mean.shape[0]} channel(s), got shape {images.shape}")
    return (jnp.asarray(images).astype(jnp.float32) / 255.0 - mean) / std


@functools.partial(jax.jit, static_argnames="pad")
def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Per image: zero-pad by ``pad`` pixels, crop a window of the original size, flip left-right with p=1/2.

    Args:
      key: a PRNG key; each image gets its own key split from it.
      images: (N, H, W, C), any dtype; the result has the same shape and dtype.
      pad: padding in pixels on each side (static); 0 gives flips only.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C), got {images.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    _, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop_flip_one(image_key: jax.Array, padded_image: jax.Array) -> jax.Array:
        key_y, key_x, key_flip = jax.random.split(image_key, 3)
        top = jax.random.randint(key_y, (), 0, 2 * pad + 1)
        left = jax.random.randint(key_x, (), 0, 2 * pad + 1)
        crop = jax.lax.dynamic_slice(padded_image, (top, left, 0), (height, width, channels))
        return jnp.where(jax.random.bernoulli(key_flip), crop[:, ::-1, :], crop)

    return jax.vmap(crop_flip_one)(jax.random.split(key, images.shape[0]), padded)
