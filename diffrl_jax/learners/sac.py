"""The SAC learner (SAC and DiffSAC): twin soft Q critic, reparameterised actor, learned
temperature, one update per call (spec section 5, DiffSAC; algorithms/sac.py has the losses).

`soft_actor_critic` builds the pieces WPO shares with SAC (state, batch preparation, critic
step, temperature step), so the WPO learner replaces only the actor's step.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffrl_jax.algorithms.sac import sac_actor_objective, sac_critic_loss
from diffrl_jax.learners.base import (
    Learner,
    LearnerSetup,
    Metrics,
    clipped_adam,
    gradient_step,
    log_of_initial,
)
from diffrl_jax.networks.critic import EnsembleCritic
from diffrl_jax.transforms import AugmentedState, ChainTransition, PolicyTerms, sampled_loss
from diffrl_jax.transforms.damdp import AugmentedTransition
from diffrl_jax.types import Array, Params, PRNGKey


class SACState(struct.PyTreeNode):
    """The policy, the twin critic with its Polyak target, the temperature log alpha, and
    their optimiser states."""

    policy_params: Params
    policy_opt_state: Any
    critic_params: Params
    target_critic_params: Params
    critic_opt_state: Any
    log_alpha: Array
    alpha_opt_state: Any


def entropy_chain_count(config: Any, num_steps: int, data_shards: int = 1) -> int:
    """How many fresh chains the temperature's H_hat takes when the actor's terms are not
    whole chains: config.entropy_chains or ceil(batch_size / K), rounded up to a multiple of the
    mesh's data shards (so the chains split over the devices like the batch; an uneven
    count would be replicated on every device), at most batch_size."""
    wanted = config.entropy_chains or -(-config.batch_size // num_steps)
    return min(config.batch_size, -(-wanted // data_shards) * data_shards)


class SoftActorCritic(NamedTuple):
    """The pieces of SAC that WPO reuses (see `soft_actor_critic`)."""

    init: Callable[[PRNGKey], SACState]
    prepare: Callable[[Any, ChainTransition, PRNGKey], tuple[Any, AugmentedTransition, Metrics]]
    alpha: Callable[[Any], Array]
    critic_step: Callable[[Any, AugmentedTransition, Array, PRNGKey], tuple[Params, Any, Metrics]]
    temperature_step: Callable[[Any, Params, AugmentedState, PolicyTerms | None, PRNGKey],
                               tuple[Any, Any, Metrics]]
    advance: Callable[..., Any]
    policy_optimizer: optax.GradientTransformation
    critic: EnsembleCritic


def soft_actor_critic(setup: LearnerSetup) -> SoftActorCritic:
    """SAC's state, batch preparation, critic and temperature steps for setup's config
    (fields actor_lr, critic_lr, alpha_lr, max_grad_norm, tau, discount, reward_scale,
    learn_alpha, init_alpha, target_entropy_multiplier, critic_hidden, critic_layer_norm,
    batch_size, entropy_chains)."""
    config, policy, transform = setup.config, setup.policy, setup.transform
    K = policy.num_steps
    entropy_chains = entropy_chain_count(config, K, setup.data_shards)
    critic = EnsembleCritic(hidden_sizes=config.critic_hidden, num_critics=2,
                            layer_norm=config.critic_layer_norm)
    policy_opt = clipped_adam(config.actor_lr, config.max_grad_norm)
    critic_opt = clipped_adam(config.critic_lr, config.max_grad_norm)
    alpha_opt = optax.adam(config.alpha_lr)
    target_entropy = transform.target_entropy(config.target_entropy_multiplier)

    def init(key: PRNGKey) -> SACState:
        policy_key, critic_key = jax.random.split(key)
        policy_params = policy.init(policy_key)
        critic_params = critic.init(critic_key, setup.example_critic_input())
        log_alpha = log_of_initial(config.init_alpha)
        return SACState(
            policy_params=policy_params,
            policy_opt_state=policy_opt.init(policy_params),
            critic_params=critic_params,
            target_critic_params=critic_params,
            critic_opt_state=critic_opt.init(critic_params),
            log_alpha=log_alpha,
            alpha_opt_state=alpha_opt.init(log_alpha),
        )

    def prepare(state: Any, items: ChainTransition, key: PRNGKey
                ) -> tuple[Any, AugmentedTransition, Metrics]:
        """Replayed chains [B] -> DA-MDP transitions at one uniform step k per sample, the
        reward scaled."""
        step = jax.random.randint(key, (items.reward.shape[0],), 0, K, dtype=jnp.int32)
        batch = transform.augment(items, step, config.discount)
        return state, batch.replace(reward=batch.reward * config.reward_scale), {}

    def alpha(state: Any) -> Array:
        if config.learn_alpha:
            return jnp.exp(state.log_alpha)
        return jnp.asarray(config.init_alpha, jnp.float32)

    def critic_step(state: Any, batch: AugmentedTransition, alpha: Array, key: PRNGKey
                    ) -> tuple[Params, Any, Metrics]:
        critic_params, opt_state, _, metrics = gradient_step(
            sac_critic_loss, critic_opt, state.critic_params, state.critic_opt_state,
            state.target_critic_params, state.policy_params, batch, alpha, key, transform,
            critic.apply,
        )
        return critic_params, opt_state, metrics

    def temperature_step(state: Any, policy_params: Params, batch_state: AugmentedState,
                         actor_terms: PolicyTerms | None, key: PRNGKey
                         ) -> tuple[Any, Any, Metrics]:
        # H_hat bounds the entropy of the *current* policy only along its own chains, so the
        # temperature sees whole fresh chains at the batch's observations, not the replayed
        # (older) latents the actor trained on. Where the actor's terms already are such
        # chains (K = 1, i.e. the Gaussian, where H_hat = -mean log pi; or the full-chain
        # estimator) they are reused, drawn before this update as in textbook SAC, which
        # saves the chain's K policy evaluations; otherwise fresh chains of the updated
        # policy at the first entropy_chains observations of the (uniformly drawn) batch.
        if actor_terms is not None and actor_terms.num_steps == K:
            chains = jax.lax.stop_gradient(actor_terms)
        else:
            chains = jax.lax.stop_gradient(transform.sample_chains(
                policy_params, setup.shard(batch_state.obs[:entropy_chains]), key))
        entropy = transform.entropy(chains)
        alpha_loss, alpha_grad = jax.value_and_grad(transform.temperature_loss)(
            state.log_alpha, entropy, target_entropy)
        if not config.learn_alpha:
            return state.log_alpha, state.alpha_opt_state, {"entropy": entropy,
                                                            "alpha_loss": alpha_loss}
        updates, alpha_opt_state = alpha_opt.update(alpha_grad, state.alpha_opt_state)
        log_alpha = optax.apply_updates(state.log_alpha, updates)
        return log_alpha, alpha_opt_state, {"entropy": entropy, "alpha_loss": alpha_loss}

    def advance(state: Any, policy_params: Params, policy_opt_state: Any, critic_params: Params,
                critic_opt_state: Any, log_alpha: Array, alpha_opt_state: Any) -> Any:
        """state with SAC's fields replaced by an update's results and the critic's Polyak
        target moved towards the new critic at rate tau."""
        return state.replace(
            policy_params=policy_params,
            policy_opt_state=policy_opt_state,
            critic_params=critic_params,
            target_critic_params=optax.incremental_update(
                critic_params, state.target_critic_params, config.tau),
            critic_opt_state=critic_opt_state,
            log_alpha=log_alpha,
            alpha_opt_state=alpha_opt_state,
        )

    return SoftActorCritic(init=init, prepare=prepare, alpha=alpha, critic_step=critic_step,
                           temperature_step=temperature_step, advance=advance,
                           policy_optimizer=policy_opt, critic=critic)


def make_sac_learner(setup: LearnerSetup) -> Learner:
    """SAC on the DA-MDP: per update, the critic's step, then the actor's (reparameterised
    alpha * l - min Q at the updated critic), then the temperature's, then the Polyak target."""
    sac = soft_actor_critic(setup)
    actor_loss = sampled_loss(setup.transform, sac_actor_objective)

    def update(state: SACState, batch: AugmentedTransition, key: PRNGKey
               ) -> tuple[SACState, Metrics]:
        critic_key, actor_key, entropy_key = jax.random.split(key, 3)
        alpha = sac.alpha(state)
        critic_params, critic_opt_state, critic_metrics = sac.critic_step(
            state, batch, alpha, critic_key)
        policy_params, policy_opt_state, loss, actor_terms = gradient_step(
            actor_loss, sac.policy_optimizer, state.policy_params, state.policy_opt_state,
            batch.state, actor_key, alpha, critic_params, sac.critic.apply,
        )
        log_alpha, alpha_opt_state, temperature_metrics = sac.temperature_step(
            state, policy_params, batch.state, actor_terms, entropy_key)
        metrics = dict(critic_metrics, actor_loss=loss,
                       step_log_ratio=jnp.mean(actor_terms.log_ratio), alpha=alpha,
                       **temperature_metrics)
        return sac.advance(state, policy_params, policy_opt_state, critic_params,
                           critic_opt_state, log_alpha, alpha_opt_state), metrics

    return Learner(init=sac.init, prepare=sac.prepare, update=update,
                   acting_params=lambda state: state.policy_params)


__all__ = ["SACState", "SoftActorCritic", "entropy_chain_count", "make_sac_learner",
           "soft_actor_critic"]
