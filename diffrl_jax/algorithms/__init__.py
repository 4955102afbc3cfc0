"""Algorithm losses written against `PolicyTerms`: policy-agnostic by construction."""

from diffrl_jax.algorithms.constraints import kernel_kl, kl_coef_loss
from diffrl_jax.algorithms.ppo import PPOBatch, gae, normalize_advantages, ppo_loss
from diffrl_jax.algorithms.sac import sac_actor_objective, sac_critic_loss
from diffrl_jax.algorithms.wpo import (
    wpo_actor_loss,
    wpo_gradients,
    wpo_surrogate,
)

__all__ = [
    "PPOBatch",
    "gae",
    "kernel_kl",
    "kl_coef_loss",
    "normalize_advantages",
    "ppo_loss",
    "sac_actor_objective",
    "sac_critic_loss",
    "wpo_actor_loss",
    "wpo_gradients",
    "wpo_surrogate",
]
