"""The pure-function replay buffer: ring overwrite, uniform sampling of valid items only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.buffers import replay_add, replay_init, replay_sample


def _items(start, n):
    values = jnp.arange(start, start + n, dtype=jnp.float32)
    return {"x": values, "pair": jnp.stack([values, -values], -1)}


def test_add_wraps_around_and_keeps_the_newest():
    buf = replay_init({"x": jnp.zeros(()), "pair": jnp.zeros(2)}, capacity=5)
    buf = replay_add(buf, _items(0, 3))
    assert int(buf.size) == 3 and int(buf.position) == 3
    buf = replay_add(buf, _items(3, 4))  # 7 items into 5 slots: 0 and 1 are overwritten
    assert int(buf.size) == 5 and int(buf.position) == 2
    assert sorted(np.asarray(buf.data["x"]).tolist()) == [2, 3, 4, 5, 6]
    np.testing.assert_array_equal(buf.data["pair"][:, 1], -buf.data["x"])


def test_sample_draws_only_valid_items_roughly_uniformly():
    buf = replay_init({"x": jnp.zeros(()), "pair": jnp.zeros(2)}, capacity=100)
    buf = replay_add(buf, _items(10, 4))
    batch = replay_sample(buf, jax.random.PRNGKey(0), 4000)
    values, counts = np.unique(np.asarray(batch["x"]), return_counts=True)
    assert values.tolist() == [10, 11, 12, 13]
    assert counts.min() > 850
    np.testing.assert_array_equal(batch["pair"][:, 0], batch["x"])


def test_buffer_works_under_jit_and_vmap():
    def fill(key):
        buf = replay_init({"x": jnp.zeros(()), "pair": jnp.zeros(2)}, capacity=8)
        buf = replay_add(buf, _items(0, 6))
        return replay_sample(buf, key, 3)["x"]

    out = jax.jit(jax.vmap(fill))(jax.random.split(jax.random.PRNGKey(0), 2))
    assert out.shape == (2, 3) and float(out.max()) < 6


def test_invalid_capacity_and_oversized_batches_are_rejected():
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        replay_init({"x": jnp.zeros(())}, capacity=0)
    buf = replay_init({"x": jnp.zeros(()), "pair": jnp.zeros(2)}, capacity=2)
    with pytest.raises(ValueError, match="cannot add 3 items"):
        replay_add(buf, _items(0, 3))
