"""Beyond one device: a ("seed", "data") device mesh for the seed and environment batches
(`mesh`), and several processes in one run (`multihost`)."""

from diffrl_jax.parallel.mesh import (
    DATA_AXIS,
    SEED_AXIS,
    BatchSharding,
    MeshProgram,
    constrain_batch,
    make_mesh,
    mesh_program,
    mesh_shape,
    mesh_train,
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
    "MeshProgram",
    "ProcessInfo",
    "constrain_batch",
    "gather_to_host",
    "global_seed_keys",
    "initialize",
    "is_main_process",
    "make_mesh",
    "mesh_program",
    "mesh_shape",
    "mesh_train",
    "parse_mesh_shape",
    "process_info",
    "seed_sharding",
    "wait_for_all_processes",
]
