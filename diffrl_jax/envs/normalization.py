"""Observation normalisation with running statistics that live in the training state.

`update_stats` merges a batch's exact mean and (population) variance into the running ones
with the parallel form of Welford's update (Chan et al.), so updating batch by batch gives the
mean and variance of all observations seen. Pure and jit/vmap-safe.
"""

import jax.numpy as jnp
from flax import struct

from diffrl_jax.types import Array


@struct.dataclass
class RunningStats:
    """mean [S], var [S] (population variance), count [] float32 observations seen."""

    mean: Array
    var: Array
    count: Array


def init_stats(obs_dim: int) -> RunningStats:
    """No observations seen: mean 0, var 1 (so `normalize` is the identity), count 0."""
    return RunningStats(
        mean=jnp.zeros((obs_dim,), jnp.float32),
        var=jnp.ones((obs_dim,), jnp.float32),
        count=jnp.zeros((), jnp.float32),
    )


def update_stats(stats: RunningStats, batch: Array) -> RunningStats:
    """Merges batch [..., S] (every leading entry one observation) into stats."""
    if batch.ndim < 1 or batch.shape[-1] != stats.mean.shape[-1]:
        raise ValueError(
            f"batch must have shape [..., obs_dim={stats.mean.shape[-1]}], got {batch.shape}"
        )
    flat = batch.reshape(-1, batch.shape[-1]).astype(jnp.float32)
    n = jnp.asarray(flat.shape[0], jnp.float32)
    batch_mean = jnp.mean(flat, axis=0)
    batch_var = jnp.mean(jnp.square(flat - batch_mean), axis=0)
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * (n / total)
    sum_sq = stats.var * stats.count + batch_var * n + jnp.square(delta) * (stats.count * n / total)
    return RunningStats(mean=mean, var=sum_sq / total, count=total)


def normalize(
    stats: RunningStats, obs: Array, clip: float = 10.0, eps: float = 1e-8
) -> Array:
    """obs [..., S] -> clip((obs - mean) / sqrt(var + eps), -clip, clip)."""
    return jnp.clip((obs - stats.mean) / jnp.sqrt(stats.var + eps), -clip, clip)
