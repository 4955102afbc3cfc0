"""REPPO on DA-MDP batches (spec section 5, REPPO / DiffREPPO; Voelcker et al. 2025): the
HL-Gauss categorical critic, TD(lambda) soft Q targets over augmented steps, and the pathwise
actor loss with the KL-clipped switch.

Nothing here knows whether the policy is a diffusion chain or a Gaussian: the transform gives
l_k (log pi for the Gaussian), the step kernels for the KL and the critic's input. With the
Gaussian transform this is textbook REPPO.
"""

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from diffrl_jax.algorithms.constraints import kernel_kl
from diffrl_jax.transforms.damdp import AugmentedState
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss, PolicyTerms
from diffrl_jax.types import Array, Params, PRNGKey

CRITIC_LOSSES = ("hl_gauss", "mse")

QValue = Callable[[Array], Array]
"""q_value(critic features [..., F]) -> Q [...] (a critic with its parameters bound)."""


def bin_centers(num_bins: int, vmin: Array | float, vmax: Array | float) -> Array:
    """Centres of num_bins equal bins on [vmin, vmax]: [num_bins]."""
    width = (vmax - vmin) / num_bins
    return vmin + (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) * width


def hl_gauss_probs(target: Array, num_bins: int, vmin: Array | float, vmax: Array | float,
                   sigma_ratio: Array | float) -> Array:
    """HL-Gauss histogram of scalar targets [...] -> probabilities [..., num_bins].

    Bin i covers [vmin + i w, vmin + (i + 1) w], w = (vmax - vmin) / num_bins; its mass is
    that of N(target, sigma^2), sigma = sigma_ratio * w, over the bin. The mass outside
    [vmin, vmax] goes to the edge bins (bin 0 takes everything below vmin + w, the last bin
    everything above vmax - w), so the probabilities sum to 1 for any target, also one
    outside the range (then nearly all mass sits in the nearer edge bin).
    """
    width = (vmax - vmin) / num_bins
    sigma = sigma_ratio * width
    inner_edges = vmin + jnp.arange(1, num_bins, dtype=jnp.float32) * width  # [num_bins - 1]
    cdf = jax.scipy.stats.norm.cdf((inner_edges - target[..., None]) / sigma)
    zeros = jnp.zeros(target.shape + (1,), cdf.dtype)
    ones = jnp.ones(target.shape + (1,), cdf.dtype)
    cdf = jnp.concatenate([zeros, cdf, ones], axis=-1)  # outer edges at -inf and +inf
    return cdf[..., 1:] - cdf[..., :-1]


def categorical_value(logits: Array, vmin: Array | float, vmax: Array | float) -> Array:
    """The expected bin centre under softmax(logits): [..., num_bins] -> [...]."""
    centers = bin_centers(logits.shape[-1], vmin, vmax)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * centers, axis=-1)


def critic_value(output: Array, mode: str, vmin: Array | float, vmax: Array | float) -> Array:
    """Q from the critic's output [..., num_bins] ("hl_gauss": the categorical value of the
    logits) or [..., 1] ("mse": the scalar): [...]."""
    if mode == "hl_gauss":
        return categorical_value(output, vmin, vmax)
    if mode == "mse":
        return output[..., 0]
    raise ValueError(f"unknown critic loss {mode!r}; allowed: {list(CRITIC_LOSSES)}")


def critic_loss(output: Array, target: Array, mode: str, vmin: Array | float,
                vmax: Array | float, sigma_ratio: Array | float) -> Array:
    """Per-sample critic loss [...]: "hl_gauss": the cross-entropy of softmax(output) to the
    HL-Gauss histogram of the target (no gradient into the target); "mse":
    0.5 * (Q - target)^2."""
    target = jax.lax.stop_gradient(target)
    if mode == "hl_gauss":
        probs = hl_gauss_probs(target, output.shape[-1], vmin, vmax, sigma_ratio)
        return -jnp.sum(probs * jax.nn.log_softmax(output, axis=-1), axis=-1)
    if mode == "mse":
        return 0.5 * jnp.square(output[..., 0] - target)
    raise ValueError(f"unknown critic loss {mode!r}; allowed: {list(CRITIC_LOSSES)}")


def soft_reward(reward: Array, discount: Array, alpha: Array | float,
                next_log_ratio: Array) -> Array:
    """r~ - gamma~ * alpha * sg(l(x'' | s~')), x'' sampled at the next augmented state (the
    next step's entropy term folded into this step's reward, as the authors do: not masked
    by termination)."""
    return reward - discount * alpha * jax.lax.stop_gradient(next_log_ratio)


def td_lambda_targets(
    reward: Array,
    next_value: Array,
    discount: Array,
    trace_decay: Array,
    terminated: Array,
    truncated: Array,
) -> Array:
    """TD(lambda) targets over a time-major sequence, all inputs [L, ...]:

    G_i = r_i + discount_i * [ truncated_i ? Q_{i+1}
                               : (1 - terminated_i) * (lambda_i G_{i+1} + (1 - lambda_i) Q_{i+1}) ]

    Q_{i+1} = next_value_i, the value of step i's own next state (the final observation where
    an episode ended), so truncation bootstraps and the trace never crosses an episode end;
    after the last element G_L = Q_L (pure bootstrap). trace_decay is lambda per step
    (lambda on last denoising steps only and 1 elsewhere in discount mode "env"). The
    environments never set both terminated and truncated. Returns G [L, ...].
    """
    chex.assert_equal_shape([reward, next_value, discount, trace_decay, terminated, truncated])
    terminated = terminated.astype(jnp.float32)
    truncated = truncated.astype(bool)

    def body(next_return, inputs):
        r, q, gamma, lam, term, trunc = inputs
        mixed = (1.0 - term) * (lam * next_return + (1.0 - lam) * q)
        g = r + gamma * jnp.where(trunc, q, mixed)
        return g, g

    _, returns = jax.lax.scan(
        body, next_value[-1],
        (reward, next_value, discount, trace_decay, terminated, truncated), reverse=True,
    )
    return returns


def kl_switch(free_energy: Array, kl: Array, kl_coef: Array | float,
              kl_bound: Array | float) -> Array:
    """REPPO's KL-clipped actor objective per sample: [KL < eps] * free_energy +
    [KL >= eps] * sg(lambda_KL) * KL."""
    return jnp.where(kl < kl_bound, free_energy, jax.lax.stop_gradient(kl_coef) * kl)


def reppo_actor_loss(
    policy_params: Params,
    old_policy_params: Params,
    state: AugmentedState,
    key: PRNGKey,
    alpha: Array | float,
    kl_coef: Array | float,
    kl_bound: Array | float,
    q_value: QValue,
    transform: DiffusionLoss,
) -> tuple[Array, tuple[PolicyTerms, dict[str, Array]]]:
    """Mean over the batch [B] of `kl_switch(sg(alpha) l(x'|s~) - Q(s~, x'), KL_hat, ...)`,
    x' reparameterised from p_theta(. | s~) (the transform's estimator),
    KL_hat = K * KL(p_old(. | s~) || p_theta(. | s~)) of the analytic step kernels.

    Returns (loss, (terms, metrics)); metrics: "kl" (mean KL_hat), "kl_clipped_fraction"
    (the share of samples at or above the bound), "q" (mean Q at x'), "step_log_ratio".
    """
    K = transform.policy.num_steps
    terms = transform.actor_terms(policy_params, state, key)
    q = q_value(terms.critic_input)
    kl = K * kernel_kl(old_policy_params, policy_params, state, transform)
    free_energy = jax.lax.stop_gradient(alpha) * terms.log_ratio - q
    loss = jnp.mean(kl_switch(free_energy, kl, kl_coef, kl_bound))
    metrics = {
        "kl": jnp.mean(kl),
        "kl_clipped_fraction": jnp.mean((kl >= kl_bound).astype(jnp.float32)),
        "q": jnp.mean(q),
        "step_log_ratio": jnp.mean(terms.log_ratio),
    }
    return loss, (terms, metrics)


__all__ = [
    "CRITIC_LOSSES", "bin_centers", "categorical_value", "critic_loss", "critic_value",
    "hl_gauss_probs", "kl_switch", "reppo_actor_loss", "soft_reward", "td_lambda_targets",
]
