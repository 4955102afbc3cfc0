"""PPO on DA-MDP batches (spec section 5, DiffPPO): generalised advantage estimation over
augmented steps and the clipped surrogate with a per-denoising-step likelihood ratio.

Nothing here knows whether the policy is a diffusion chain or a Gaussian: the transform
evaluates log p_theta(x_{k+1} | s~) (log pi(a|s) for the Gaussian), l_k and the value
critic's input. With the Gaussian transform and entropy_coef = 0 this is textbook PPO.
"""

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.transforms.damdp import AugmentedState
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss
from diffrl_jax.types import Array, Params

ADVANTAGE_NORMALIZATIONS = ("center", "standardize", "none")

ValueApply = Callable[[Params, Array], Array]
"""value_apply(params, state features [..., F_s]) -> V [...]."""


def gae(
    reward: Array,
    value: Array,
    next_value: Array,
    discount: Array,
    trace_decay: Array,
    terminated: Array,
    truncated: Array,
) -> tuple[Array, Array]:
    """Generalised advantage estimation over a time-major sequence, all inputs [L, ...].

    delta_i = r_i + discount_i * (1 - terminated_i) * next_value_i - value_i
    A_i     = delta_i + discount_i * trace_decay_i * (1 - ended_i) * A_{i+1},  A_L = 0,
    ended = terminated or truncated. next_value_i is V of step i's own next state (the final
    observation where an episode ended), so truncation bootstraps and the trace never
    crosses an episode boundary; the last element bootstraps with its next_value.
    trace_decay is lambda per step. Returns (advantages, value targets A + V), both [L, ...].
    """
    chex.assert_equal_shape([reward, value, next_value, discount, trace_decay, terminated, truncated])
    terminated = terminated.astype(jnp.float32)
    ended = jnp.maximum(terminated, truncated.astype(jnp.float32))
    delta = reward + discount * (1.0 - terminated) * next_value - value
    carry_factor = discount * trace_decay * (1.0 - ended)

    def body(next_advantage, inputs):
        delta_i, factor_i = inputs
        advantage = delta_i + factor_i * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        body, jnp.zeros_like(delta[0]), (delta, carry_factor), reverse=True
    )
    return advantages, advantages + value


@struct.dataclass
class PPOBatch:
    """Augmented transitions of a rollout with what the update needs; batch dims [...].

    state: s~; action: x_{k+1}; log_prob: log p_old(x_{k+1} | s~) at rollout time;
    log_ratio: l_k at rollout time (the one inside the soft reward); advantage: GAE of the
    soft reward; value_target: advantage + V_old(s~).
    """

    state: AugmentedState
    action: Array
    log_prob: Array
    log_ratio: Array
    advantage: Array
    value_target: Array


def normalize_advantages(advantage: Array, mode: str) -> Array:
    """"center": A - mean A (the spec's choice); "standardize": (A - mean) / (std + 1e-8)."""
    if mode == "none":
        return advantage
    centred = advantage - jnp.mean(advantage)
    if mode == "center":
        return centred
    if mode == "standardize":
        return centred / (jnp.std(advantage) + 1e-8)
    raise ValueError(f"unknown advantage normalization {mode!r}; allowed: {list(ADVANTAGE_NORMALIZATIONS)}")


def ppo_loss(
    policy_params: Params,
    value_params: Params,
    batch: PPOBatch,
    entropy_coef: Array | float,
    clip_eps: Array | float,
    value_coef: Array | float,
    transform: DiffusionLoss,
    value_apply: ValueApply,
    advantage_normalization: str = "center",
) -> tuple[Array, dict[str, Array]]:
    """policy_loss + noising_loss + value_coef * value_loss on a minibatch (batch dims [B]).

    rho = exp(log p_theta(x_{k+1}|s~) - log p_old), one ratio per denoising step;
    advantage: the stored GAE with the current l_k in place of the stored one inside the
    soft reward, A + c * (l_old - sg(l_theta)), then normalised over the minibatch;
    policy_loss = -mean min(rho A, clip(rho, 1 - eps, 1 + eps) A);
    noising_loss = -c * mean(sg(rho) * [unclipped] * log q_phi(x_k | x_{k+1})): the
      gradient of the entropy term through the noising kernel's parameters (its score-function
      part is in the surrogate); exactly 0 for the Gaussian, whose log q is 0;
    value_loss = 0.5 * mean (V(s~) - value_target)^2.
    Returns (loss, metrics).
    """
    terms = transform.evaluate(policy_params, batch.state, batch.action)
    log_rho = terms.log_prob - batch.log_prob
    rho = jnp.exp(log_rho)
    advantage = batch.advantage + entropy_coef * (
        batch.log_ratio - jax.lax.stop_gradient(terms.log_ratio)
    )
    advantage = jax.lax.stop_gradient(normalize_advantages(advantage, advantage_normalization))
    unclipped_objective = rho * advantage
    clipped_objective = jnp.clip(rho, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
    policy_loss = -jnp.mean(jnp.minimum(unclipped_objective, clipped_objective))
    unclipped = (unclipped_objective <= clipped_objective).astype(jnp.float32)
    log_noising = terms.log_prob - terms.log_ratio
    noising_loss = -entropy_coef * jnp.mean(jax.lax.stop_gradient(rho * unclipped) * log_noising)
    value = value_apply(value_params, transform.state_input(batch.state))
    value_loss = 0.5 * jnp.mean(jnp.square(value - batch.value_target))
    loss = policy_loss + noising_loss + value_coef * value_loss
    clipped_fraction = jnp.mean((jnp.abs(rho - 1.0) > clip_eps).astype(jnp.float32))
    metrics = {
        "policy_loss": policy_loss,
        "noising_loss": noising_loss,
        "value_loss": value_loss,
        "clip_fraction": clipped_fraction,
        "approx_kl": jnp.mean((rho - 1.0) - log_rho),
        "ratio_deviation": jnp.max(jnp.abs(rho - 1.0)),
        "step_log_ratio": jnp.mean(terms.log_ratio),
    }
    return loss, metrics
