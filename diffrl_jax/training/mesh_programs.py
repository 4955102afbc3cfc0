"""Training runs on a device mesh (`diffrl_jax.parallel.mesh`): the vmapped seed batch with
its seeds split over the mesh's "seed" axis and each run's environment batch over "data", as
one jitted program (`mesh_train`) or as separately compiled init and interval chunks for
drivers that checkpoint (`mesh_program`).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from diffrl_jax.parallel.mesh import SEED_AXIS, BatchSharding, check_divisible, seed_sharding
from diffrl_jax.training.program import run_intervals
from diffrl_jax.training.runs import make_program, train
from diffrl_jax.types import Array, PRNGKey


def mesh_train(config: Any, mesh: Mesh,
               on_interval: Callable[[dict[str, Array]], None] | None = None,
               seed_indexed: Callable[[Array], Callable[[dict[str, Array]], None]] | None = None
               ) -> Callable[[PRNGKey], tuple[Any, dict[str, Array]]]:
    """keys [S] -> (state, metrics), each leaf with a leading seed axis of size S, as one
    jitted program on `mesh`: seeds split over "seed", environments over "data".

    on_interval: as for `train`; seed_indexed(seed_index) -> on_interval instead, when the
    callback needs to know which seed reports. S must be a multiple of the seed shards and
    config.num_envs of the data shards. The result equals `jax.vmap(train)(keys)` up to
    floating-point reduction order.
    """
    batch = BatchSharding(mesh)
    seeds = seed_sharding(mesh)

    def run(keys: PRNGKey):
        check_divisible(config, keys.shape[0], mesh)  # at trace time: shapes are static

        def one(key, seed_index):
            callback = seed_indexed(seed_index) if seed_indexed is not None else on_interval
            return train(key, config, callback, batch_sharding=batch)

        return jax.vmap(one, spmd_axis_name=SEED_AXIS)(keys, jnp.arange(keys.shape[0]))

    return jax.jit(run, in_shardings=seeds, out_shardings=seeds)


class MeshProgram(NamedTuple):
    """A vmapped seed batch on a mesh, as separately compiled pieces (for drivers that
    checkpoint between chunks of intervals): init(keys [S]) -> state; chunk(n) -> a jitted
    state -> (state, metrics [S, n, ...]) running n intervals, which donates its input state
    (its arrays are deleted by the call, unless something outside JAX, e.g. a NumPy view,
    still references them: then XLA copies as without donation); abstract_state(keys) -> the
    state's `jax.ShapeDtypeStruct`s with their shardings; num_intervals of the whole run.
    Chunks run in sequence give the same state and metrics as `mesh_train`."""

    init: Callable[[PRNGKey], Any]
    chunk: Callable[[int], Callable[[Any], tuple[Any, dict[str, Array]]]]
    abstract_state: Callable[[PRNGKey], Any]
    num_intervals: int


def mesh_program(config: Any, mesh: Mesh,
                 seed_indexed: Callable[[Array], Callable[[dict[str, Array]], None]] | None = None
                 ) -> MeshProgram:
    """`mesh_train`'s run split into init and chunks of intervals (see `MeshProgram`);
    seed_indexed(seed_index) -> on_interval as for `mesh_train`."""
    batch = BatchSharding(mesh)
    seeds = seed_sharding(mesh)

    def program(seed_index: Array | None):
        callback = seed_indexed(seed_index) if seed_indexed is not None and seed_index is not None else None
        return make_program(config, callback, batch)

    def init(keys: PRNGKey) -> Any:
        check_divisible(config, keys.shape[0], mesh)
        return jax.vmap(program(None).init, spmd_axis_name=SEED_AXIS)(keys)

    jitted_init = jax.jit(init, in_shardings=seeds, out_shardings=seeds)
    chunks: dict[int, Callable[[Any], tuple[Any, dict[str, Array]]]] = {}

    def chunk(num_intervals: int) -> Callable[[Any], tuple[Any, dict[str, Array]]]:
        if num_intervals not in chunks:
            def run(state: Any) -> tuple[Any, dict[str, Array]]:
                num_seeds = jax.tree.leaves(state)[0].shape[0]

                def one(ts, seed_index):
                    return run_intervals(program(seed_index), ts, num_intervals)

                return jax.vmap(one, spmd_axis_name=SEED_AXIS)(state, jnp.arange(num_seeds))

            # the state is donated: XLA updates it (the replay buffer above all) in place
            # instead of holding an input and an output copy; the caller must not reuse it
            chunks[num_intervals] = jax.jit(run, in_shardings=seeds, out_shardings=seeds,
                                            donate_argnums=0)
        return chunks[num_intervals]

    def abstract_state(keys: PRNGKey) -> Any:
        shapes = jax.eval_shape(init, keys)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=seeds), shapes)

    return MeshProgram(init=jitted_init, chunk=chunk, abstract_state=abstract_state,
                       num_intervals=program(None).num_intervals)
