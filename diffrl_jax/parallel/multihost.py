"""Several processes (hosts) in one training run, through JAX's own distributed runtime.

Every process runs the same command. `initialize` connects them (`jax.distributed.initialize`:
an explicit coordinator address, process count and process id, or, with none given, the
cluster's own description on SLURM, Open MPI, Kubernetes or TPU pods); `jax.devices()` then
lists every process's devices and `make_mesh()` spans them, so `mesh_train` runs one program
over all hosts. Seeding is process-aware: every process derives the same global key array
from the run's seed and supplies only the shards its own devices hold
(`global_seed_keys`), so seed i is the same run whatever the number of processes. Results
are sharded across processes: `gather_to_host` brings them to every process as NumPy arrays,
and only the main process (`is_main_process`) prints and writes files.
"""

from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Sharding

__all__ = ["ProcessInfo", "gather_to_host", "global_seed_keys", "initialize", "is_main_process",
           "process_info", "wait_for_all_processes"]

# How long `wait_for_all_processes` waits for the slowest process (compiling on a loaded host
# can take minutes).
BARRIER_TIMEOUT_SECONDS = 900


class ProcessInfo(NamedTuple):
    index: int  # this process, 0 .. count - 1
    count: int
    local_devices: int  # devices this process drives
    devices: int  # devices of all processes


def process_info() -> ProcessInfo:
    return ProcessInfo(jax.process_index(), jax.process_count(), jax.local_device_count(),
                       jax.device_count())


def is_main_process() -> bool:
    """True on the process that prints progress and writes summaries and checkpoints."""
    return jax.process_index() == 0


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Any = None) -> ProcessInfo:
    """Connects this process to the others (once; later calls only report).

    Call before anything else touches a device. With all arguments None the cluster
    environment is auto-detected by JAX. On CPU, cross-process collectives use gloo.
    """
    given = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in given) and any(v is None for v in given):
        raise ValueError("give all of coordinator_address, num_processes and process_id, or none "
                         f"(auto-detection); got {given}")
    if num_processes is not None and process_id is not None and (
            num_processes < 1 or not 0 <= process_id < num_processes):
        raise ValueError(f"process_id must be in [0, num_processes); got {process_id} of {num_processes}")
    if not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids)
    return process_info()


def wait_for_all_processes(name: str, timeout_seconds: int = BARRIER_TIMEOUT_SECONDS) -> None:
    """Blocks until every process reached the barrier `name` (a no-op with one process).

    Call it between compiling a program and running it the first time: on CPU, the first
    cross-process collective of a program sets up a gloo context that waits only 30 s for
    the other processes (fixed in XLA), so a process that finished compiling early would time
    out while another is still compiling. This barrier runs on the coordination service
    instead, with `timeout_seconds`. `name` must be new for each barrier of a run.
    """
    if jax.process_count() == 1:
        return
    # jax.distributed exposes no barrier with a timeout; its client (the coordination service
    # that jax.distributed.initialize started) has one.
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError("wait_for_all_processes: jax.distributed is not initialized")
    client.wait_at_barrier(f"diffrl_jax_{name}", timeout_seconds * 1000)


def global_seed_keys(seed: int, num_seeds: int, sharding: Sharding) -> jax.Array:
    """jax.random.split(PRNGKey(seed), num_seeds) as one global array laid out by `sharding`;
    each process computes the same keys and provides the shards of its own devices."""
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), num_seeds))
    return jax.make_array_from_callback(keys.shape, sharding, lambda index: keys[index])


def gather_to_host(tree: Any) -> Any:
    """Every array leaf as a NumPy array holding the global value, on every process
    (a collective: all processes must call it)."""
    def one(x: Any) -> np.ndarray:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)
