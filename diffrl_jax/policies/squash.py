"""The tanh squash from latent x to action a, and its log-Jacobian."""

import math

import jax
import jax.numpy as jnp


def tanh_squash(x: jax.Array, clip: float) -> jax.Array:
    """a = clip(tanh(x), -(1 - clip), 1 - clip). [..., A] -> [..., A]."""
    bound = 1.0 - clip
    return jnp.clip(jnp.tanh(x), -bound, bound)


def tanh_log_det(x: jax.Array) -> jax.Array:
    """sum_d log(1 - tanh(x_d)^2), computed stably. [..., A] -> [...]."""
    return jnp.sum(2.0 * (math.log(2.0) - x - jax.nn.softplus(-2.0 * x)), axis=-1)
