"""A uniform ring-buffer replay memory as pure functions over a pytree.

We store one item per *environment* step (a `ChainTransition`: the observation once, the K+1
latents of its chain) and turn items into DA-MDP transitions when sampling. A buffer of
augmented transitions (e.g. flashbax's item buffer) would hold every observation K times;
this one is K times smaller for the same horizon, and being a plain pytree it is vmapped,
checkpointed and sharded like the rest of the training state.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.types import Array, PRNGKey


@struct.dataclass
class ReplayBuffer:
    """data: pytree whose leaves have leading dim `capacity`; position: next write index [];
    size: number of valid items []."""

    data: Any
    position: Array
    size: Array

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def replay_init(example_item: Any, capacity: int) -> ReplayBuffer:
    """An empty buffer for items shaped like `example_item` (no batch dim)."""
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"replay capacity must be a positive int, got {capacity!r}")
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example_item
    )
    return ReplayBuffer(data=data, position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def replay_add(buffer: ReplayBuffer, items: Any) -> ReplayBuffer:
    """Writes a batch of items (leaves [N, ...]) at the ring position, overwriting the oldest."""
    n = jax.tree.leaves(items)[0].shape[0]
    capacity = buffer.capacity
    if n > capacity:
        raise ValueError(f"cannot add {n} items to a replay buffer of capacity {capacity}")
    idx = (buffer.position + jnp.arange(n)) % capacity
    data = jax.tree.map(lambda d, x: d.at[idx].set(x.astype(d.dtype)), buffer.data, items)
    return ReplayBuffer(
        data=data,
        position=(buffer.position + n) % capacity,
        size=jnp.minimum(buffer.size + n, capacity),
    )


def replay_sample(buffer: ReplayBuffer, key: PRNGKey, batch_size: int) -> Any:
    """batch_size items drawn uniformly with replacement from the valid part [B, ...]."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda d: d[idx], buffer.data)
