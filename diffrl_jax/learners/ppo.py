"""The PPO learner (PPO and DiffPPO): GAE of the soft reward over a rollout's augmented
steps, clipped-ratio minibatch updates of policy and value network, and optionally a learned
entropy coefficient c (spec section 5, DiffPPO; algorithms/ppo.py has the losses).
"""

from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffrl_jax.algorithms.ppo import PPOBatch, gae, ppo_loss
from diffrl_jax.learners.base import (
    Learner,
    LearnerSetup,
    Metrics,
    clipped_adam,
    log_of_initial,
    optimizer_step,
    time_major,
    trace_decay,
)
from diffrl_jax.networks.critic import EnsembleCritic
from diffrl_jax.transforms import ChainTransition
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss
from diffrl_jax.types import Array, Params, PRNGKey


class PPOState(struct.PyTreeNode):
    """Policy and value network with their optimiser states; log c, the entropy
    coefficient's logarithm (learned when config.learn_entropy_coef) and its optimiser state;
    batch_entropy_coef: the c the prepared batch's soft reward was computed with, which its
    minibatch updates use (c is updated once per rollout, in `prepare`)."""

    policy_params: Params
    policy_opt_state: Any
    value_params: Params
    value_opt_state: Any
    log_entropy_coef: Array
    entropy_coef_opt_state: Any
    batch_entropy_coef: Array


def rollout_batch(
    transitions: ChainTransition,
    value_params: Params,
    value_apply: Callable[[Params, Array], Array],
    transform: DiffusionLoss,
    entropy_coef: Array,
    config: Any,
) -> tuple[PPOBatch, dict[str, Array]]:
    """A rollout's env-level transitions [T, N] (obs already normalised) -> PPOBatch of its
    T * N * K augmented transitions, flattened, with GAE of the soft reward (config fields
    discount, discount_mode, gae_lambda, reward_scale).

    The augmented sequence of env n is time-major (t, k): (0, 0), ..., (0, K-1), (1, 0), ...
    Within a chain, the next state of step k < K - 1 is the state of step k + 1, so the
    values are computed once per augmented state plus once for each chain's next state.
    """
    K = transform.policy.num_steps
    aug = transform.expand(transitions, config.discount)  # [T, N, K]
    values = value_apply(value_params, transform.state_input(aug.state))
    last_next = jax.tree.map(lambda x: x[:, :, K - 1], aug.next_state)
    bootstrap = value_apply(value_params, transform.state_input(last_next))
    next_values = jnp.concatenate([values[..., 1:], bootstrap[..., None]], axis=-1)
    soft_reward = config.reward_scale * aug.reward - entropy_coef * aug.log_ratio
    decay = trace_decay(aug.state.step, K, config.gae_lambda, config.discount_mode)
    advantage, value_target = gae(
        *(time_major(x) for x in (soft_reward, values, next_values, aug.discount, decay,
                                  aug.terminated, aug.truncated))
    )
    batch = PPOBatch(
        state=jax.tree.map(time_major, aug.state),
        action=time_major(aug.action),
        log_prob=time_major(aug.log_prob),
        log_ratio=time_major(aug.log_ratio),
        advantage=advantage,
        value_target=value_target,
    )
    batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
    stats = {
        "value_mean": jnp.mean(values),
        "advantage_mean": jnp.mean(advantage),
        "advantage_std": jnp.std(advantage),
        "soft_reward_mean": jnp.mean(soft_reward) * K,
    }
    return batch, stats


def make_ppo_learner(setup: LearnerSetup) -> Learner:
    """PPO on the DA-MDP (config fields of `OnPolicyConfig`): `prepare` turns a rollout into
    a PPOBatch (GAE of r - c l_k) and takes the entropy coefficient's step on the rollout's
    H_hat; `update` is one minibatch step of policy and value network. With
    config.anneal_lr the learning rates decay linearly to 0 over the run's updates."""
    config, policy, transform = setup.config, setup.policy, setup.transform
    decay_steps = setup.total_updates if config.anneal_lr else None
    value_net = EnsembleCritic(hidden_sizes=config.value_hidden, num_critics=1,
                               layer_norm=config.value_layer_norm)
    policy_opt = clipped_adam(config.actor_lr, config.max_grad_norm, decay_steps)
    value_opt = clipped_adam(config.critic_lr, config.max_grad_norm, decay_steps)
    entropy_coef_opt = optax.adam(config.entropy_coef_lr)
    target_entropy = transform.target_entropy(config.target_entropy_multiplier)

    def value_apply(params: Params, features: Array) -> Array:
        return cast(Array, value_net.apply(params, features))[..., 0]

    def init(key: PRNGKey) -> PPOState:
        policy_key, value_key = jax.random.split(key)
        policy_params = policy.init(policy_key)
        value_params = value_net.init(value_key, transform.state_input(setup.example_state()))
        log_entropy_coef = log_of_initial(config.entropy_coef)
        return PPOState(
            policy_params=policy_params,
            policy_opt_state=policy_opt.init(policy_params),
            value_params=value_params,
            value_opt_state=value_opt.init(value_params),
            log_entropy_coef=log_entropy_coef,
            entropy_coef_opt_state=entropy_coef_opt.init(log_entropy_coef),
            batch_entropy_coef=jnp.asarray(config.entropy_coef, jnp.float32),
        )

    def entropy_coef(state: PPOState) -> Array:
        if config.learn_entropy_coef:
            return jnp.exp(state.log_entropy_coef)
        return jnp.asarray(config.entropy_coef, jnp.float32)

    def prepare(state: PPOState, transitions: ChainTransition, key: PRNGKey
                ) -> tuple[PPOState, PPOBatch, Metrics]:
        del key  # GAE is deterministic
        coef = entropy_coef(state)
        batch, stats = rollout_batch(transitions, state.value_params, value_apply, transform,
                                     coef, config)
        # H_hat of the rollout's chains: the bound holds along the acting policy's own chains
        entropy = transform.chain_entropy(transitions.log_ratios)
        log_coef, coef_opt_state = state.log_entropy_coef, state.entropy_coef_opt_state
        if config.learn_entropy_coef:
            grad = jax.grad(transform.temperature_loss)(log_coef, entropy, target_entropy)
            log_coef, coef_opt_state = optimizer_step(entropy_coef_opt, log_coef, coef_opt_state,
                                                      grad)
        state = state.replace(log_entropy_coef=log_coef, entropy_coef_opt_state=coef_opt_state,
                              batch_entropy_coef=coef)
        return state, batch, dict(stats, entropy=entropy, entropy_coef=coef)

    loss_grad = jax.value_and_grad(ppo_loss, argnums=(0, 1), has_aux=True)

    def update(state: PPOState, batch: PPOBatch, key: PRNGKey) -> tuple[PPOState, Metrics]:
        del key  # the clipped surrogate needs no sampling
        (_, metrics), (policy_grads, value_grads) = loss_grad(
            state.policy_params, state.value_params, batch, state.batch_entropy_coef,
            config.clip_eps, config.value_coef, transform, value_apply,
            config.advantage_normalization,
        )
        policy_params, policy_opt_state = optimizer_step(
            policy_opt, state.policy_params, state.policy_opt_state, policy_grads)
        value_params, value_opt_state = optimizer_step(
            value_opt, state.value_params, state.value_opt_state, value_grads)
        # the loop reports this from each rollout's first minibatch (the acting policy's
        # ratio, exactly 1 before any update)
        metrics["first_minibatch_ratio_deviation"] = metrics.pop("ratio_deviation")
        return state.replace(policy_params=policy_params, policy_opt_state=policy_opt_state,
                             value_params=value_params, value_opt_state=value_opt_state), metrics

    return Learner(init=init, prepare=prepare, update=update,
                   acting_params=lambda state: state.policy_params)


__all__ = ["PPOState", "make_ppo_learner", "rollout_batch"]
