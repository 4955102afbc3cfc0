"""The diffusion-augmented MDP (DA-MDP): turning environment steps into K augmented steps.

Augmented state s~ = (obs, x_k, k); augmented action x_{k+1}. Of the K augmented steps of one
environment step, only the last (k = K - 1) carries the reward, the episode end (terminated
or truncated) and, in "env" discount mode, the discount gamma; the others get reward 0,
no episode end and discount 1. In "diffusion" mode every augmented step is discounted by
the same per-augmented-step factor (the authors' gamma_d). After the last step the next
augmented state is (next_obs, x'_0, 0), x'_0 the transition's stored prior draw
(`ChainTransition.next_prior_latent`).
"""

import chex
import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.types import Array

DISCOUNT_MODES = ("env", "diffusion")


@struct.dataclass
class AugmentedState:
    """s~ = (obs [..., S], latent x_k [..., A], step k [...] int32)."""

    obs: Array
    latent: Array
    step: Array


@struct.dataclass
class ChainTransition:
    """One environment step together with the chain that produced its action.

    obs [..., S], latents [..., K + 1, A] (x_0..x_K), log_ratios and log_probs [..., K]
    (as returned by the chain sampler; trainers may store zeros when unused), reward [...],
    terminated [...] and truncated [...] (bool or 0/1), next_obs [..., S] (the final
    observation on an episode end, for bootstrapping), next_prior_latent [..., A] (x'_0, a
    prior draw for the next state's first latent: the on-policy rollout stores the next
    chain's actual x_0, except at a rollout's last step; the off-policy collection an
    independent draw with the same law, which leaves a one-step target unbiased).
    """

    obs: Array
    latents: Array
    log_ratios: Array
    log_probs: Array
    reward: Array
    terminated: Array
    truncated: Array
    next_obs: Array
    next_prior_latent: Array


@struct.dataclass
class AugmentedTransition:
    """One DA-MDP step (s~, x_{k+1}, r~, gamma~, ends, s~'), batch dims [...].

    discount is the factor applied to the next state's value: targets are
    reward + discount * (1 - terminated) * V(next_state). terminated/truncated are float32.
    """

    state: AugmentedState
    action: Array
    log_ratio: Array
    log_prob: Array
    reward: Array
    discount: Array
    terminated: Array
    truncated: Array
    next_state: AugmentedState


def check_discount_mode(discount_mode: str) -> None:
    """Raises ValueError naming the allowed modes."""
    if discount_mode not in DISCOUNT_MODES:
        raise ValueError(
            f"unknown discount_mode {discount_mode!r}; allowed: {list(DISCOUNT_MODES)}"
        )


def _check_chain_transition(tr: ChainTransition) -> int:
    """Shape checks; returns K."""
    if tr.latents.ndim < 2:
        raise ValueError(f"latents must have shape [..., K + 1, A], got {tr.latents.shape}")
    num_steps = tr.latents.shape[-2] - 1
    if num_steps < 1:
        raise ValueError(f"latents must hold K + 1 >= 2 latents, got {tr.latents.shape}")
    batch = tr.latents.shape[:-2]
    action_dim = tr.latents.shape[-1]
    try:
        chex.assert_shape([tr.log_ratios, tr.log_probs], batch + (num_steps,))
        chex.assert_shape([tr.reward, tr.terminated, tr.truncated], batch)
        chex.assert_shape([tr.obs, tr.next_obs], batch + (None,))
        chex.assert_equal_shape([tr.obs, tr.next_obs])
        chex.assert_shape(tr.next_prior_latent, batch + (action_dim,))
    except AssertionError as err:
        raise ValueError(
            f"ChainTransition fields do not fit latents of shape {tr.latents.shape} "
            f"(batch {batch}, K = {num_steps}, A = {action_dim}): {err}"
        ) from None
    return num_steps


def augment(
    transition: ChainTransition, step: Array, discount: Array | float, discount_mode: str = "env"
) -> AugmentedTransition:
    """The augmented transition at denoising index `step` ([...] int, or a scalar) of each
    environment step.

    discount: gamma per environment step ("env" mode) or per augmented step ("diffusion").
    It may be a traced scalar (a swept hyperparameter).
    """
    check_discount_mode(discount_mode)
    num_steps = _check_chain_transition(transition)
    batch = transition.latents.shape[:-2]
    step = jnp.broadcast_to(jnp.asarray(step, jnp.int32), batch)
    idx = step[..., None, None]
    latent = jnp.take_along_axis(transition.latents, idx, axis=-2)[..., 0, :]
    next_latent = jnp.take_along_axis(transition.latents, idx + 1, axis=-2)[..., 0, :]
    log_ratio = jnp.take_along_axis(transition.log_ratios, step[..., None], axis=-1)[..., 0]
    log_prob = jnp.take_along_axis(transition.log_probs, step[..., None], axis=-1)[..., 0]
    last = step == num_steps - 1
    lastf = last.astype(jnp.float32)
    discount = jnp.asarray(discount, jnp.float32)
    if discount_mode == "env":
        step_discount = jnp.where(last, discount, 1.0)
    else:
        step_discount = jnp.broadcast_to(discount, batch)
    next_state = AugmentedState(
        obs=jnp.where(last[..., None], transition.next_obs, transition.obs),
        latent=jnp.where(last[..., None], transition.next_prior_latent, next_latent),
        step=jnp.where(last, 0, step + 1).astype(jnp.int32),
    )
    return AugmentedTransition(
        state=AugmentedState(obs=transition.obs, latent=latent, step=step),
        action=next_latent,
        log_ratio=log_ratio,
        log_prob=log_prob,
        reward=lastf * transition.reward.astype(jnp.float32),
        discount=step_discount,
        terminated=lastf * transition.terminated.astype(jnp.float32),
        truncated=lastf * transition.truncated.astype(jnp.float32),
        next_state=next_state,
    )


def expand(
    transition: ChainTransition, discount: Array | float, discount_mode: str = "env"
) -> AugmentedTransition:
    """All K augmented transitions of each environment step: batch [...] -> [..., K]."""
    num_steps = _check_chain_transition(transition)
    batch_ndim = transition.latents.ndim - 2
    return jax.vmap(
        lambda k: augment(transition, k, discount, discount_mode), out_axes=batch_ndim
    )(jnp.arange(num_steps, dtype=jnp.int32))
