"""The device mesh: the seed batch and the environment batch split over devices.

A mesh has two axes, "seed" and "data". `diffrl_jax.training.mesh_train(config, mesh)`
compiles the vmapped seed batch with its seed axis split over "seed"
(`jax.vmap(..., spmd_axis_name="seed")`), and each training loop keeps its environment
batch (environment states, rollouts, sampled minibatches) split over "data" through
`BatchSharding.constrain`. Parameters and optimiser states are replicated
over "data"; XLA's partitioner turns the mean over a split minibatch into a cross-device
reduction of the gradients. Everything stays one `jax.jit` program (GSPMD, no per-device
code), so a 1 x 1 mesh is exactly the single-device run and the same code spans several hosts
once `diffrl_jax.parallel.multihost.initialize` has run (the mesh then holds every process's
devices).
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from diffrl_jax.types import Array

SEED_AXIS = "seed"
DATA_AXIS = "data"

__all__ = [
    "DATA_AXIS",
    "SEED_AXIS",
    "BatchSharding",
    "constrain_batch",
    "make_mesh",
    "mesh_shape",
    "parse_mesh_shape",
    "seed_sharding",
]


class BatchSharding(NamedTuple):
    """Where a trainer's environment batch lives: split over `axis` of `mesh`."""

    mesh: Mesh
    axis: str = DATA_AXIS

    def constrain(self, tree: Any, dim: int = 0) -> Any:
        """tree with every array leaf of rank > dim split along its dimension `dim` over
        the data axis (all other dimensions replicated). Inside `mesh_train`'s vmap the seed
        dimension is added by the vmap itself."""
        def one(x: Array) -> Array:
            if getattr(x, "ndim", 0) <= dim:
                return x
            spec = P(*([None] * dim), self.axis)
            return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

        return jax.tree.map(one, tree)


def constrain_batch(tree: Any, sharding: BatchSharding | None, dim: int = 0) -> Any:
    """`sharding.constrain(tree, dim)`, or tree unchanged without a mesh."""
    return tree if sharding is None else sharding.constrain(tree, dim)


def parse_mesh_shape(text: str) -> tuple[int, int]:
    """"SEEDSxDATA" (e.g. "4x2") -> (4, 2); ValueError naming the expected form otherwise."""
    parts = text.lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"a mesh shape is SEEDSxDATA with positive integers (e.g. 4x2), got {text!r}")
    return shape  # type: ignore[return-value]


def make_mesh(seed_shards: int | None = None, data_shards: int = 1,
              devices: Sequence[Any] | None = None) -> Mesh:
    """A ("seed", "data") mesh of seed_shards x data_shards devices.

    devices: default all devices of all processes (`jax.devices()`); seed_shards default
    len(devices) // data_shards. The product must equal the number of devices used: pass a
    device list to use fewer.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(data_shards, int) or data_shards < 1:
        raise ValueError(f"data_shards must be a positive integer, got {data_shards!r}")
    if seed_shards is None:
        if len(devices) % data_shards:
            raise ValueError(f"data_shards={data_shards} does not divide the {len(devices)} devices")
        seed_shards = len(devices) // data_shards
    if not isinstance(seed_shards, int) or seed_shards < 1:
        raise ValueError(f"seed_shards must be a positive integer, got {seed_shards!r}")
    if seed_shards * data_shards != len(devices):
        raise ValueError(
            f"a {seed_shards} x {data_shards} mesh needs {seed_shards * data_shards} devices, "
            f"{len(devices)} given (pass devices=jax.devices()[:n] to use fewer)")
    return Mesh(np.asarray(devices, dtype=object).reshape(seed_shards, data_shards),
                (SEED_AXIS, DATA_AXIS))


def mesh_shape(mesh: Mesh) -> tuple[int, int]:
    """(seed shards, data shards) of a mesh made by `make_mesh`."""
    return mesh.shape[SEED_AXIS], mesh.shape[DATA_AXIS]


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (seed) axis split over "seed", everything else replicated."""
    return NamedSharding(mesh, P(SEED_AXIS))


def check_divisible(config: Any, num_seeds: int, mesh: Mesh) -> None:
    """ValueError naming the field when the seed or environment batch cannot be split evenly."""
    seeds, data = mesh_shape(mesh)
    if num_seeds % seeds:
        raise ValueError(f"num_seeds ({num_seeds}) must be a multiple of the mesh's {seeds} seed shards")
    if config.num_envs % data:
        raise ValueError(f"num_envs ({config.num_envs}) must be a multiple of the mesh's {data} data shards")
