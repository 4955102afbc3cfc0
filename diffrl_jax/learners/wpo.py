"""The WPO learner (WPO and DiffWPO): SAC's critic and temperature, the Wasserstein policy
update for the actor with a KL bound to a slowly moving target policy and the bound's
Lagrange multiplier (spec section 5, DiffWPO; algorithms/wpo.py has the losses).
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from diffrl_jax.algorithms.constraints import kl_coef_loss
from diffrl_jax.algorithms.wpo import wpo_actor_loss
from diffrl_jax.learners.base import Learner, LearnerSetup, Metrics, gradient_step, optimizer_step
from diffrl_jax.learners.sac import SACState, soft_actor_critic
from diffrl_jax.transforms.damdp import AugmentedTransition
from diffrl_jax.types import Array, Params, PRNGKey


class WPOState(SACState):
    """SAC's state plus the KL target policy (Polyak average of the policy with rate
    policy_tau), the KL multiplier log c and its optimiser state."""

    target_policy_params: Params
    log_kl_coef: Array
    kl_coef_opt_state: Any


def make_wpo_learner(setup: LearnerSetup) -> Learner:
    """WPO on the DA-MDP: per update, SAC's critic step, the WPO actor step (config fields
    num_action_samples, natural_gradient; kl_bound, init_kl_coef, kl_coef_lr of the
    multiplier; policy_tau of the target policy), SAC's temperature step (on fresh chains),
    the Polyak targets."""
    sac = soft_actor_critic(setup)
    config, transform = setup.config, setup.transform
    kl_coef_opt = optax.adam(config.kl_coef_lr)

    def init(key: PRNGKey) -> WPOState:
        state = sac.init(key)
        log_kl_coef = jnp.log(jnp.asarray(config.init_kl_coef, jnp.float32))
        return WPOState(**vars(state), target_policy_params=state.policy_params,
                        log_kl_coef=log_kl_coef, kl_coef_opt_state=kl_coef_opt.init(log_kl_coef))

    def update(state: WPOState, batch: AugmentedTransition, key: PRNGKey
               ) -> tuple[WPOState, Metrics]:
        critic_key, actor_key, entropy_key = jax.random.split(key, 3)
        alpha = sac.alpha(state)
        critic_params, critic_opt_state, critic_metrics = sac.critic_step(
            state, batch, alpha, critic_key)
        kl_coef = jnp.exp(state.log_kl_coef)
        policy_params, policy_opt_state, _, actor_metrics = gradient_step(
            wpo_actor_loss, sac.policy_optimizer, state.policy_params, state.policy_opt_state,
            state.target_policy_params, batch.state, actor_key, alpha, kl_coef, critic_params,
            sac.critic.apply, transform, config.num_action_samples, config.natural_gradient,
        )
        kl_grad = jax.grad(kl_coef_loss)(state.log_kl_coef, actor_metrics["kl"], config.kl_bound)
        log_kl_coef, kl_coef_opt_state = optimizer_step(
            kl_coef_opt, state.log_kl_coef, state.kl_coef_opt_state, kl_grad)
        log_alpha, alpha_opt_state, temperature_metrics = sac.temperature_step(
            state, policy_params, batch.state, None, entropy_key)
        metrics = dict(critic_metrics, **actor_metrics, kl_coef=kl_coef, alpha=alpha,
                       **temperature_metrics)
        state = sac.advance(state, policy_params, policy_opt_state, critic_params,
                            critic_opt_state, log_alpha, alpha_opt_state)
        return state.replace(
            target_policy_params=optax.incremental_update(
                policy_params, state.target_policy_params, config.policy_tau),
            log_kl_coef=log_kl_coef,
            kl_coef_opt_state=kl_coef_opt_state,
        ), metrics

    return Learner(init=init, prepare=sac.prepare, update=update,
                   acting_params=lambda state: state.policy_params)


__all__ = ["WPOState", "make_wpo_learner"]
