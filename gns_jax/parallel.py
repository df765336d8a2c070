"""Where a batch of environments lives: one device, or split over local devices (one program either way).

Agent training (``gns_jax.train``) runs ``agent.num_envs`` environments per device as one vmapped program, and
``agent.num_devices`` devices share it: the environment axis is split over a ``Mesh`` of the devices
(``split_envs``), the agent and the data are replicated (``replicate``), and the same jitted program runs
partitioned over them, one agent for all (``gns_jax.agent``). ``gns_jax.side_by_side`` places its M target runs
the same way; ``stack`` turns a list of pytrees into one with a leading batch axis.

Environments are numbered globally: environment ``e`` of a run with ``D`` devices and ``N`` environments per device
lives on device ``e // N`` and draws its keys from ``split(key, D * N)[e]`` whatever ``D`` is, so the same total
number of environments gives the same episodes on one device or several.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
DEVICE_AXIS = "devices"  # the mesh axis the environments (or side-by-side runs) are split over


def resolve_num_devices(requested: int) -> int:
    """``requested`` local devices (0 = all of them); an error when there are fewer."""
    available = jax.local_device_count()
    n = available if int(requested) == 0 else int(requested)
    if not 1 <= n <= available:
        raise ValueError(f"asked for {requested} devices, but this process sees {available} "
                         f"({jax.local_devices()[0].platform}); use 0 for all of them")
    return n


def device_mesh(num_devices: int) -> Mesh:
    """The first ``num_devices`` local devices as a one-axis mesh (``DEVICE_AXIS``)."""
    return Mesh(np.asarray(jax.local_devices()[:num_devices]), (DEVICE_AXIS,))


def replicate(tree: PyTree, num_devices: int) -> PyTree:
    """``tree`` placed whole on each of the first ``num_devices`` local devices (agent parameters, data: inputs
    every environment reads, placed once so that large data are not copied again at every call)."""
    return jax.device_put(tree, NamedSharding(device_mesh(num_devices), PartitionSpec()))


def split_envs(tree: PyTree, num_devices: int, axis: int = 0) -> PyTree:
    """``tree`` with its ``axis`` (environments) split over ``num_devices`` devices: environment e of D * N lives
    on device e // N. A jitted program given such inputs runs partitioned over the devices."""
    spec = PartitionSpec(*([None] * axis), DEVICE_AXIS)
    sharding = NamedSharding(device_mesh(num_devices), spec)

    def place(x):
        n = x.shape[axis]
        if n % num_devices:
            raise ValueError(f"{n} environments do not split over {num_devices} devices")
        return jax.device_put(x, sharding)

    return jax.tree.map(place, tree)


def stack(items: Sequence[PyTree]) -> PyTree:
    """One pytree whose leaves have a new leading axis (e.g. M ``Eq7Schedule``s -> one vmappable schedule)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *items)
