"""Datasets as in-memory arrays with the paper's train / validation / test splits; on-device preprocessing.

``load_image_dataset`` reads Fashion-MNIST, MNIST, CIFAR-10 or CIFAR-100 from TFDS, the official file
layout or the Debian package (see :mod:`gns_jax.data.images`); :mod:`gns_jax.data.augment` normalises and
augments batches inside jitted code.
"""

from gns_jax.data.augment import CHANNEL_MEAN, CHANNEL_STD, augment_for, normalize, random_crop_flip
from gns_jax.data.images import (
    DATASET_NAMES,
    SOURCES,
    DataError,
    DataNotFoundError,
    ImageSplits,
    default_cache_dir,
    load_image_dataset,
)

__all__ = [
    "CHANNEL_MEAN",
    "CHANNEL_STD",
    "DATASET_NAMES",
    "SOURCES",
    "DataError",
    "DataNotFoundError",
    "ImageSplits",
    "augment_for",
    "default_cache_dir",
    "load_image_dataset",
    "normalize",
    "random_crop_flip",
]
