"""The REPPO learner (REPPO and DiffREPPO; spec section 5, Voelcker et al. 2025): on-policy
rollouts turned into TD(lambda) soft Q targets, an HL-Gauss categorical critic (no target
critic), the pathwise actor with the KL-clipped switch to the rollout's policy and its
Lagrange multiplier, the learned temperature (algorithms/reppo.py has the losses).

With `aux_predictions`, the critic also learns REPPO's auxiliary predictions from its last
hidden layer: the embedding of the next augmented state and action (the rollout-time
critic's, a fixed target) and the reward. The authors' deterministic evaluation (the "ODE"
chain from a prior draw) is the loops' default `diffusion.deterministic_sampler`.
"""

from typing import Any, cast

import jax
import jax.numpy as jnp
import optax
from flax import struct

from diffrl_jax.algorithms.constraints import kl_coef_loss
from diffrl_jax.algorithms.reppo import (
    critic_loss,
    critic_value,
    reppo_actor_loss,
    soft_reward,
    td_lambda_targets,
)
from diffrl_jax.learners.base import (
    Learner,
    LearnerSetup,
    Metrics,
    clipped_adam,
    gradient_step,
    log_of_initial,
    optimizer_step,
    time_major,
    trace_decay,
)
from diffrl_jax.networks.critic import CategoricalCritic, CriticPredictions
from diffrl_jax.transforms import AugmentedState, ChainTransition
from diffrl_jax.types import Array, Params, PRNGKey


class REPPOState(struct.PyTreeNode):
    """Policy and critic with their optimiser states; log alpha (temperature) and log
    lambda_KL (the KL multiplier) with theirs; old_policy_params: the policy that collected
    the current rollout (set in `prepare`), the reference of the actor's KL."""

    policy_params: Params
    policy_opt_state: Any
    critic_params: Params
    critic_opt_state: Any
    log_alpha: Array
    alpha_opt_state: Any
    log_kl_coef: Array
    kl_coef_opt_state: Any
    old_policy_params: Params


@struct.dataclass
class REPPOBatch:
    """Augmented transitions of a rollout with their TD(lambda) targets; batch dims [...].
    state: s~; action: x_{k+1} as taken; target: G (soft return); with the auxiliary
    predictions (else None): next_embedding [..., H], the rollout-time critic's embedding of
    (s~', x''), and reward [...], the scaled reward r~ of the augmented step."""

    state: AugmentedState
    action: Array
    target: Array
    next_embedding: Array | None = None
    reward: Array | None = None


def make_reppo_learner(setup: LearnerSetup) -> Learner:
    """REPPO on the DA-MDP (config fields of `OnPolicyConfig`: discount, discount_mode,
    gae_lambda (lambda), reward_scale, value_hidden (the critic's hidden layers), critic_loss,
    num_bins, vmin, vmax, hl_gauss_sigma_ratio, learn_alpha, init_alpha, alpha_lr,
    target_entropy_multiplier, kl_bound, init_kl_coef, kl_coef_lr, actor_lr, critic_lr,
    max_grad_norm, anneal_lr, aux_predictions, aux_loss_mult).

    prepare: rollout [T, N] -> REPPOBatch [T * N * K]: soft reward
      r~ - gamma~ alpha sg(l(x''|s~')), x'' ~ p_theta(. | s~') at every next augmented state,
      bootstrap Q(s~', x'') from the rollout-time critic, TD(lambda) targets over each env's
      time-major (t, k) sequence; the rollout's policy becomes old_policy_params.
    update (per minibatch): the critic's step (cross-entropy to the HL-Gauss histogram of G,
      or MSE; plus aux_loss_mult * (MSE of the predicted next embedding, averaged over its H
      dimensions, + MSE of the predicted reward) with the auxiliary predictions), then the
      actor's with the updated critic, then the temperature's (H_hat of the actor's sampled
      steps) and the KL multiplier's.
    """
    config, policy, transform = setup.config, setup.policy, setup.transform
    K = policy.num_steps
    decay_steps = setup.total_updates if config.anneal_lr else None
    mode = config.critic_loss
    aux = config.aux_predictions
    critic = CategoricalCritic(hidden_sizes=config.value_hidden,
                               num_bins=config.num_bins if mode == "hl_gauss" else 1,
                               aux_predictions=aux)
    policy_opt = clipped_adam(config.actor_lr, config.max_grad_norm, decay_steps)
    critic_opt = clipped_adam(config.critic_lr, config.max_grad_norm, decay_steps)
    alpha_opt = optax.adam(config.alpha_lr)
    kl_coef_opt = optax.adam(config.kl_coef_lr)
    target_entropy = transform.target_entropy(config.target_entropy_multiplier)

    def q_value(critic_params: Params, features: Array) -> Array:
        output = cast(Array, critic.apply(critic_params, features))
        return critic_value(output, mode, config.vmin, config.vmax)

    def init(key: PRNGKey) -> REPPOState:
        policy_key, critic_key = jax.random.split(key)
        policy_params = policy.init(policy_key)
        critic_params = critic.init(critic_key, setup.example_critic_input(), with_aux=aux)
        log_alpha = log_of_initial(config.init_alpha)
        log_kl_coef = jnp.log(jnp.asarray(config.init_kl_coef, jnp.float32))
        return REPPOState(
            policy_params=policy_params,
            policy_opt_state=policy_opt.init(policy_params),
            critic_params=critic_params,
            critic_opt_state=critic_opt.init(critic_params),
            log_alpha=log_alpha,
            alpha_opt_state=alpha_opt.init(log_alpha),
            log_kl_coef=log_kl_coef,
            kl_coef_opt_state=kl_coef_opt.init(log_kl_coef),
            old_policy_params=policy_params,
        )

    def alpha_of(state: REPPOState) -> Array:
        if config.learn_alpha:
            return jnp.exp(state.log_alpha)
        return jnp.asarray(config.init_alpha, jnp.float32)

    def prepare(state: REPPOState, transitions: ChainTransition, key: PRNGKey
                ) -> tuple[REPPOState, REPPOBatch, Metrics]:
        alpha = alpha_of(state)
        aug = transform.expand(transitions, config.discount)  # [T, N, K]
        # x'' at every next augmented state, from the acting (= current) policy
        next_terms = jax.lax.stop_gradient(
            transform.sample(state.policy_params, aug.next_state, key))
        if aux:
            next_out = cast(CriticPredictions, critic.apply(
                state.critic_params, next_terms.critic_input, with_aux=True))
            next_q = critic_value(next_out.logits, mode, config.vmin, config.vmax)
            next_embedding = jax.lax.stop_gradient(time_major(next_out.embedding))
            reward_target = time_major(config.reward_scale * aug.reward)
        else:
            next_q = q_value(state.critic_params, next_terms.critic_input)
            next_embedding = reward_target = None
        next_q = jax.lax.stop_gradient(next_q)
        reward = soft_reward(config.reward_scale * aug.reward, aug.discount, alpha,
                             next_terms.log_ratio)
        decay = trace_decay(aug.state.step, K, config.gae_lambda, config.discount_mode)
        target = td_lambda_targets(*(time_major(x) for x in (
            reward, next_q, aug.discount, decay, aug.terminated, aug.truncated)))
        batch = REPPOBatch(state=jax.tree.map(time_major, aug.state),
                           action=time_major(aug.action), target=target,
                           next_embedding=next_embedding, reward=reward_target)
        batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
        stats = {
            "next_q_mean": jnp.mean(next_q),
            "target_mean": jnp.mean(target),
            "target_std": jnp.std(target),
            "soft_reward_mean": jnp.mean(reward) * K,
            "rollout_entropy": transform.chain_entropy(transitions.log_ratios),
        }
        return state.replace(old_policy_params=state.policy_params), batch, stats

    def critic_objective(critic_params: Params, batch: REPPOBatch
                         ) -> tuple[Array, dict[str, Array]]:
        features = transform.critic_input(batch.state, batch.action)
        aux_metrics: dict[str, Array] = {}
        if aux:
            predictions = cast(CriticPredictions,
                               critic.apply(critic_params, features, with_aux=True))
            output = predictions.logits
            assert batch.next_embedding is not None and batch.reward is not None  # (prepare's)
            aux_metrics["aux_embedding_loss"] = jnp.mean(
                jnp.square(predictions.next_embedding - batch.next_embedding))
            aux_metrics["aux_reward_loss"] = jnp.mean(
                jnp.square(predictions.reward - batch.reward))
        else:
            output = cast(Array, critic.apply(critic_params, features))
        value_loss = jnp.mean(critic_loss(output, batch.target, mode, config.vmin, config.vmax,
                                          config.hl_gauss_sigma_ratio))
        loss = value_loss + config.aux_loss_mult * sum(aux_metrics.values(), jnp.zeros(()))
        value = critic_value(output, mode, config.vmin, config.vmax)
        return loss, {"critic_loss": value_loss, **aux_metrics,
                      "value_error": jnp.mean(jnp.square(value - batch.target))}

    def update(state: REPPOState, batch: REPPOBatch, key: PRNGKey
               ) -> tuple[REPPOState, Metrics]:
        critic_params, critic_opt_state, _, critic_metrics = gradient_step(
            critic_objective, critic_opt, state.critic_params, state.critic_opt_state, batch)
        alpha = alpha_of(state)
        kl_coef = jnp.exp(state.log_kl_coef)
        policy_params, policy_opt_state, actor_loss, (terms, actor_metrics) = gradient_step(
            reppo_actor_loss, policy_opt, state.policy_params, state.policy_opt_state,
            state.old_policy_params, batch.state, key, alpha, kl_coef, config.kl_bound,
            lambda features: q_value(critic_params, features), transform,
        )
        # H_hat of the actor's sampled steps (drawn before its update, as in textbook SAC):
        # the states are the rollout's, whose policy is within the KL bound of this one
        entropy = transform.entropy(jax.lax.stop_gradient(terms))
        log_alpha, alpha_opt_state = state.log_alpha, state.alpha_opt_state
        if config.learn_alpha:
            alpha_grad = jax.grad(transform.temperature_loss)(log_alpha, entropy, target_entropy)
            log_alpha, alpha_opt_state = optimizer_step(alpha_opt, log_alpha, alpha_opt_state,
                                                        alpha_grad)
        kl_grad = jax.grad(kl_coef_loss)(state.log_kl_coef, actor_metrics["kl"], config.kl_bound)
        log_kl_coef, kl_coef_opt_state = optimizer_step(
            kl_coef_opt, state.log_kl_coef, state.kl_coef_opt_state, kl_grad)
        metrics = dict(critic_metrics, **actor_metrics, actor_loss=actor_loss, entropy=entropy,
                       alpha=alpha, kl_coef=kl_coef)
        # the loop reports this from each rollout's first minibatch: the actor's KL to the
        # rollout's policy before any update of it, exactly 0
        metrics["first_minibatch_kl"] = actor_metrics["kl"]
        return state.replace(
            policy_params=policy_params, policy_opt_state=policy_opt_state,
            critic_params=critic_params, critic_opt_state=critic_opt_state,
            log_alpha=log_alpha, alpha_opt_state=alpha_opt_state,
            log_kl_coef=log_kl_coef, kl_coef_opt_state=kl_coef_opt_state,
        ), metrics

    return Learner(init=init, prepare=prepare, update=update,
                   acting_params=lambda state: state.policy_params)


__all__ = ["REPPOBatch", "REPPOState", "make_reppo_learner"]
