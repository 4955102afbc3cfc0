"""Algorithm losses written against `PolicyTerms`: policy-agnostic by construction."""

from diffrl_jax.algorithms.constraints import kernel_kl, kl_coef_loss
from diffrl_jax.algorithms.ppo import PPOBatch, gae, normalize_advantages, ppo_loss
from diffrl_jax.algorithms.reppo import (
    CRITIC_LOSSES,
    categorical_value,
    critic_loss,
    critic_value,
    hl_gauss_probs,
    kl_switch,
    reppo_actor_loss,
    td_lambda_targets,
)
from diffrl_jax.algorithms.sac import sac_actor_objective, sac_critic_loss
from diffrl_jax.algorithms.wpo import (
    wpo_actor_loss,
    wpo_gradients,
    wpo_surrogate,
)

__all__ = [
    "CRITIC_LOSSES",
    "PPOBatch",
    "categorical_value",
    "critic_loss",
    "critic_value",
    "gae",
    "hl_gauss_probs",
    "kernel_kl",
    "kl_coef_loss",
    "kl_switch",
    "normalize_advantages",
    "ppo_loss",
    "reppo_actor_loss",
    "sac_actor_objective",
    "sac_critic_loss",
    "td_lambda_targets",
    "wpo_actor_loss",
    "wpo_gradients",
    "wpo_surrogate",
]
