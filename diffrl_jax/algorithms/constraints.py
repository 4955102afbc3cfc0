"""Constraint pieces shared by the algorithms: the KL between two step kernels of the same
augmented state, and the dual (Lagrange multiplier) loss of a bound on such a KL.

WPO and DiffWPO bound the KL to a slowly moving target policy; REPPO's KL-clipped actor
switch (spec section 5) uses the same kernel KL and multiplier.
"""

import jax
import jax.numpy as jnp

from diffrl_jax.policies.kernels import diag_gaussian_kl
from diffrl_jax.transforms.damdp import AugmentedState
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss
from diffrl_jax.types import Array, Params


def kernel_kl(
    target_params: Params, policy_params: Params, state: AugmentedState, transform: DiffusionLoss
) -> Array:
    """KL(p_target(. | s~) || p_theta(. | s~)) of the Gaussian step kernels, [...]; no
    gradient flows into target_params."""
    mean0, std0 = jax.lax.stop_gradient(transform.kernel(target_params, state))
    mean1, std1 = transform.kernel(policy_params, state)
    return diag_gaussian_kl(mean0, std0, mean1, std1)


def kl_coef_loss(log_kl_coef: Array, kl: Array, kl_bound: Array | float) -> Array:
    """Dual loss of the bound KL <= kl_bound: exp(log c) * sg(kl_bound - kl); descending it
    raises the multiplier while the KL exceeds the bound and lowers it otherwise."""
    return jnp.exp(log_kl_coef) * jax.lax.stop_gradient(kl_bound - kl)
