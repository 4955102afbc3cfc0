"""Soft actor-critic losses on DA-MDP batches (spec section 5, DiffSAC).

Nothing here knows whether the policy is a diffusion chain or a Gaussian: the transform
supplies l (log pi for the Gaussian), the reparameterised actions and the critic inputs.
With the Gaussian transform these are textbook SAC's losses.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffrl_jax.transforms.damdp import AugmentedTransition
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss, PolicyTerms
from diffrl_jax.types import Array, Params, PRNGKey

CriticApply = Callable[[Params, Array], Array]
"""critic_apply(params, features [..., F]) -> Q values [..., num_critics]."""


def sac_critic_loss(
    critic_params: Params,
    target_critic_params: Params,
    policy_params: Params,
    batch: AugmentedTransition,
    alpha: Array,
    key: PRNGKey,
    transform: DiffusionLoss,
    critic_apply: CriticApply,
) -> tuple[Array, dict[str, Array]]:
    """0.5 * sum_i mean (Q_i(s~, x_{k+1}) - y)^2 with the soft target

    y = r~ + discount * (1 - terminated) * (min_i Qbar_i(s~', x') - alpha * l(x' | s~')),
    x' ~ p_theta(. | s~'). batch leaves have batch dims [B]. Returns (loss, metrics).
    """
    next_terms = transform.sample(policy_params, batch.next_state, key)
    next_q = jnp.min(critic_apply(target_critic_params, next_terms.critic_input), axis=-1)
    next_v = next_q - alpha * next_terms.log_ratio
    target = batch.reward + batch.discount * (1.0 - batch.terminated) * next_v
    target = jax.lax.stop_gradient(target)
    q = critic_apply(critic_params, transform.critic_input(batch.state, batch.action))
    loss = 0.5 * jnp.sum(jnp.mean(jnp.square(q - target[..., None]), axis=tuple(range(q.ndim - 1))))
    return loss, {"critic_loss": loss, "q_mean": jnp.mean(q), "target_mean": jnp.mean(target)}


def sac_actor_objective(
    terms: PolicyTerms, alpha: Array, critic_params: Params, critic_apply: CriticApply
) -> Array:
    """alpha * l - min_i Q_i(s~, x_{k+1}) per sample [...]; lift with `sampled_loss`."""
    q = jnp.min(critic_apply(critic_params, terms.critic_input), axis=-1)
    return jax.lax.stop_gradient(alpha) * terms.log_ratio - q
