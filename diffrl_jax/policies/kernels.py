"""Gaussian kernel math of the diffusion chain (spec section 2).

Denoising kernel: p(x_{k+1} | x_k) = N(x_k + eta * (-x_k / sigma_p^2 + f), 2 eta I)
Noising kernel:   q(x_k | x_{k+1}) = N(x_{k+1} + eta * (-x_{k+1} / sigma_p^2 + b), 2 eta I)
Both are the same Langevin step (an Euler step of the overdamped Langevin dynamics whose
stationary law is the prior, plus a control drift) evaluated at the point each conditions on.
"""

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def diag_gaussian_log_density(x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """log N(x; mean, diag(var)) summed over the last axis. [..., A] -> [...]."""
    return -0.5 * jnp.sum(jnp.square(x - mean) / var + jnp.log(var) + LOG_2PI, axis=-1)


def langevin_mean(x: jax.Array, eta: jax.Array, drift: jax.Array | float, prior_var: float) -> jax.Array:
    """Mean of one Langevin step from x: x + eta * (-x / prior_var + drift). [..., A]."""
    return x + eta * (-x / prior_var + drift)


def diag_gaussian_kl(mean0: jax.Array, std0: jax.Array, mean1: jax.Array, std1: jax.Array) -> jax.Array:
    """KL(N(mean0, diag(std0^2)) || N(mean1, diag(std1^2))), summed over the last axis.
    [..., A] -> [...]."""
    var0, var1 = jnp.square(std0), jnp.square(std1)
    return jnp.sum(jnp.log(std1 / std0) + (var0 + jnp.square(mean0 - mean1)) / (2.0 * var1) - 0.5,
                   axis=-1)


def scale_gradient(x: jax.Array, scale: jax.Array) -> jax.Array:
    """Identity in value; multiplies the gradient flowing back into x by stop_gradient(scale)."""
    scale = jax.lax.stop_gradient(scale)
    return jax.lax.stop_gradient(x) + scale * (x - jax.lax.stop_gradient(x))


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0."""
    return float(y + math.log(-math.expm1(-y)))
