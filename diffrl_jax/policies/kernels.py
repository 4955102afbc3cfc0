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


def langevin_mean(x: jax.Array, eta: jax.Array, drift: jax.Array, prior_var: float) -> jax.Array:
    """Mean of one Langevin step from x: x + eta * (-x / prior_var + drift). [..., A]."""
    return x + eta * (-x / prior_var + drift)


def gaussian_entropy(var: jax.Array) -> jax.Array:
    """Entropy of N(., diag(var)), summed over the last axis. [..., A] -> [...]."""
    return 0.5 * jnp.sum(jnp.log(2.0 * math.pi * math.e * var), axis=-1)


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y, for y > 0."""
    return float(y + math.log(-math.expm1(-y)))
