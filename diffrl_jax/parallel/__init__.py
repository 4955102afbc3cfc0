"""Beyond one device: a ("seed", "data") device mesh for the seed and environment batches
(`mesh`: shardings; the mesh training programs are `diffrl_jax.training.mesh_train` and
`mesh_program`), and several processes in one run (`multihost`)."""

from diffrl_jax.parallel.mesh import (
    DATA_AXIS,
    SEED_AXIS,
    BatchSharding,
    constrain_batch,
    make_mesh,
    mesh_shape,
    parse_mesh_shape,
    seed_sharding,
)
from diffrl_jax.parallel.multihost import (
    ProcessInfo,
    gather_to_host,
    global_seed_keys,
    initialize,
    is_main_process,
    process_info,
    wait_for_all_processes,
)

__all__ = [
    "DATA_AXIS",
    "SEED_AXIS",
    "BatchSharding",
    "ProcessInfo",
    "constrain_batch",
    "gather_to_host",
    "global_seed_keys",
    "initialize",
    "is_main_process",
    "make_mesh",
    "mesh_shape",
    "parse_mesh_shape",
    "process_info",
    "seed_sharding",
    "wait_for_all_processes",
]
