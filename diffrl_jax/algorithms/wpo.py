"""Wasserstein policy optimisation (Pfau et al. 2025) on DA-MDP batches, with entropy
(spec section 5, DiffWPO).

For augmented states s~ and actions x' = sg(x'), x' ~ p_theta(. | s~) (no
reparameterisation), with g_l = grad_x' l(x' | s~) (differentiable in theta) and
g_Q = grad_x' min_i Q_i(s~, x'):

    surrogate = sum_d sg(alpha * g_l - g_Q)_d * (g_l)_d

whose parameter gradient moves the policy along the Wasserstein gradient flow of the free
energy E[alpha * l - Q], projected on the policy class. With the Gaussian policy (l = log pi)
and alpha = 0 it is WPO's -sum_d sg(grad_a Q)_d * grad_a log pi(a|s)_d. A KL term to a
slowly moving target policy, sg(kl_coef) * KL(p_target(.|s~) || p_theta(.|s~)) (analytic:
both step kernels are Gaussians), keeps steps small; kl_coef is a Lagrange multiplier of the
bound KL <= kl_bound. Nothing here knows which policy it trains.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffrl_jax.policies.kernels import diag_gaussian_kl
from diffrl_jax.transforms.damdp import AugmentedState
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss
from diffrl_jax.types import Array, Params, PRNGKey

CriticApply = Callable[[Params, Array], Array]


def wpo_gradients(
    policy_params: Params,
    state: AugmentedState,
    action: Array,
    critic_params: Params,
    critic_apply: CriticApply,
    transform: DiffusionLoss,
    natural_gradient: bool = False,
) -> tuple[Array, Array]:
    """(g_l, g_Q), each [..., A]: the action gradients of l(x' | s~) and of min_i Q_i(s~, x')
    at the given actions x' (treated as constants). g_l stays differentiable in
    policy_params; g_Q is stopped."""
    action = jax.lax.stop_gradient(action)

    def total_log_ratio(x: Array) -> Array:
        return jnp.sum(transform.evaluate(policy_params, state, x, natural_gradient).log_ratio)

    def total_q(x: Array) -> Array:
        return jnp.sum(jnp.min(critic_apply(critic_params, transform.critic_input(state, x)), -1))

    g_l = jax.grad(total_log_ratio)(action)
    g_q = jax.lax.stop_gradient(jax.grad(total_q)(action))
    return g_l, g_q


def wpo_surrogate(g_l: Array, g_q: Array, alpha: Array | float) -> Array:
    """sum_d sg(alpha * g_l - g_Q)_d * (g_l)_d per sample: [..., A] -> [...]."""
    return jnp.sum(jax.lax.stop_gradient(alpha * g_l - g_q) * g_l, axis=-1)


def kernel_kl(
    target_params: Params, policy_params: Params, state: AugmentedState, transform: DiffusionLoss
) -> Array:
    """KL(p_target(. | s~) || p_theta(. | s~)) of the Gaussian step kernels, [...]."""
    mean0, std0 = jax.lax.stop_gradient(transform.kernel(target_params, state))
    mean1, std1 = transform.kernel(policy_params, state)
    return diag_gaussian_kl(mean0, std0, mean1, std1)


def wpo_actor_loss(
    policy_params: Params,
    target_policy_params: Params,
    state: AugmentedState,
    key: PRNGKey,
    alpha: Array,
    kl_coef: Array,
    critic_params: Params,
    critic_apply: CriticApply,
    transform: DiffusionLoss,
    num_action_samples: int = 1,
    natural_gradient: bool = False,
) -> tuple[Array, dict[str, Array]]:
    """mean over states and num_action_samples actions of the WPO surrogate, plus
    sg(kl_coef) * mean KL to the target policy. state: augmented states [B].
    Returns (loss, metrics with "kl" for the multiplier's update)."""
    repeated = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (num_action_samples,) + x.shape), state
    )
    sampled = transform.sample(jax.lax.stop_gradient(policy_params), repeated, key)
    g_l, g_q = wpo_gradients(policy_params, repeated, sampled.action, critic_params,
                             critic_apply, transform, natural_gradient)
    surrogate = jnp.mean(wpo_surrogate(g_l, g_q, jax.lax.stop_gradient(alpha)))
    kl = jnp.mean(kernel_kl(target_policy_params, policy_params, state, transform))
    loss = surrogate + jax.lax.stop_gradient(kl_coef) * kl
    metrics = {
        "actor_loss": surrogate,
        "kl": kl,
        "action_grad_q_norm": jnp.mean(jnp.linalg.norm(g_q, axis=-1)),
        "step_log_ratio": jnp.mean(sampled.log_ratio),
    }
    return loss, metrics


def kl_coef_loss(log_kl_coef: Array, kl: Array, kl_bound: Array | float) -> Array:
    """Dual loss of the bound KL <= kl_bound: exp(log c) * sg(kl_bound - kl); descending it
    raises the multiplier while the KL exceeds the bound and lowers it otherwise."""
    return jnp.exp(log_kl_coef) * jax.lax.stop_gradient(kl_bound - kl)
