"""Algorithm losses written against `PolicyTerms`: policy-agnostic by construction."""

from diffrl_jax.algorithms.sac import sac_actor_objective, sac_critic_loss

__all__ = ["sac_actor_objective", "sac_critic_loss"]
