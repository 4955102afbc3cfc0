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

The surrogate's gradient is the free energy's only for parameters of p_theta alone (the
control network). The leaves the noising kernel q shares or owns (the chain's step sizes and
friction, the noising drift; `policy.noising_leaves`) get the reparameterised gradient of
F = E[alpha * l(x' | s~) - min_i Q_i(s~, x')] instead, DiffSAC's actor objective restricted
to them (spec section 5): through them the surrogate's g_l also moves log q's action
gradient, which is not how F depends on q, and its p and q parts nearly cancel.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffrl_jax.algorithms.constraints import kernel_kl
from diffrl_jax.algorithms.sac import sac_actor_objective
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
    """mean over states and num_action_samples actions of the WPO surrogate (gradient to the
    leaves of p_theta alone), plus the mean free energy alpha * l - min_i Q_i at the same,
    reparameterised actions (gradient to `policy.noising_leaves` only; left out for a policy
    without such leaves, e.g. the Gaussian), plus sg(kl_coef) * mean KL to the target policy.
    state: augmented states [B]. Returns (loss, metrics: "actor_loss" is the surrogate, "kl"
    feeds the multiplier's update, "free_energy" where the policy has noising leaves)."""
    repeated = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (num_action_samples,) + x.shape), state
    )
    alpha = jax.lax.stop_gradient(alpha)
    shared = transform.policy.noising_leaves(policy_params)
    pathwise_params = _only(policy_params, shared)
    # The same key and values as a sample with every leaf stopped; differentiable only in
    # the noising leaves, through both the sample and l.
    sampled = transform.sample(pathwise_params, repeated, key)
    g_l, g_q = wpo_gradients(_only(policy_params, _negate(shared)), repeated, sampled.action,
                             critic_params, critic_apply, transform, natural_gradient)
    surrogate = jnp.mean(wpo_surrogate(g_l, g_q, alpha))
    kl = jnp.mean(kernel_kl(target_policy_params, policy_params, state, transform))
    loss = surrogate + jax.lax.stop_gradient(kl_coef) * kl
    metrics = {
        "actor_loss": surrogate,
        "kl": kl,
        "action_grad_q_norm": jnp.mean(jnp.linalg.norm(g_q, axis=-1)),
        "step_log_ratio": jnp.mean(sampled.log_ratio),
    }
    if any(jax.tree.leaves(shared)):
        free_energy = jnp.mean(sac_actor_objective(sampled, alpha, critic_params, critic_apply))
        loss = loss + free_energy
        metrics["free_energy"] = free_energy
    return loss, metrics


def _only(params: Params, mask) -> Params:
    """params with the gradient stopped at every leaf whose mask entry is False."""
    return jax.tree.map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)


def _negate(mask):
    return jax.tree.map(lambda m: not m, mask)
