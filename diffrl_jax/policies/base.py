"""The one functional policy interface that every algorithm is written against.

A policy is a chain of K steps of the diffusion-augmented MDP (DA-MDP): augmented state
s~ = (obs, latent x_k, step k), augmented action x_{k+1}. The Gaussian policy is the chain
with K = 1 (its x_0 is a dummy zero vector), so algorithms never ask which policy they hold.

All functions are pure and jit/vmap-safe; `params` is a pytree. Leading batch dimensions
[...] are arbitrary and must agree between arguments (they broadcast).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import struct

from diffrl_jax.types import Array, Params, PRNGKey


@struct.dataclass
class StepEval:
    """Per-step log-densities of one augmented transition (s~, x_{k+1}). All [...].

    log_prob:    log p_theta(x_{k+1} | x_k, s, k), the step policy's log-likelihood
                 (the Gaussian's log pi(a|s)); what likelihood ratios use.
    log_noising: log q_phi(x_k | x_{k+1}, s, k), plus the squash log-det where that option
                 is on; 0 for the Gaussian.
    log_ratio:   l_k = log_prob - log_noising; the quantity that replaces log pi in MaxEnt
                 losses (for the Gaussian, exactly log pi(a|s)).
    """

    log_prob: Array
    log_noising: Array
    log_ratio: Array


@struct.dataclass
class ChainSample:
    """A whole sampled chain for observations of batch shape [...].

    latents:    [..., K + 1, A]  x_0 .. x_K (pre-squash).
    log_ratios: [..., K]         l_0 .. l_{K-1}.
    log_probs:  [..., K]         log p_theta of each step.
    action:     [..., A]         squash(x_K), what the environment receives.
    """

    latents: Array
    log_ratios: Array
    log_probs: Array
    action: Array


def no_leaves(params: Params) -> Any:
    """A mask with the structure of params and every leaf False."""
    return jax.tree.map(lambda _: False, params)


class Policy(NamedTuple):
    """A policy as pure functions over an explicit parameter pytree.

    num_steps:      K, static.
    action_dim:     A.
    prior_entropy:  H(x_0) entering the entropy estimate H_hat = prior_entropy - sum_k E[l_k];
                    0 for a policy whose single-step l is an exact log pi (the Gaussian).
    obs_dim:        S, the observation size the policy was built for.
    init(key) -> params.
    sample_prior(key, batch_shape) -> x_0 [*batch_shape, A].
    sample_step(params, obs, latent, step, key, deterministic) -> (next_latent, StepEval);
        reparameterised: next_latent is differentiable in params.
    evaluate(params, obs, latent, step, next_latent, natural_gradient=False) -> StepEval, for
        any given transition. natural_gradient preconditions the gradients that reach the
        step kernel's mean and scale by the inverse Fisher of that Gaussian (values unchanged).
    kernel(params, obs, latent, step) -> (mean, std) [..., A] of the Gaussian step kernel
        p_theta(. | x_k, s, k) in pre-squash space (analytic KLs between policies).
    sample_chain(params, obs, key, deterministic=False, x0=None) -> ChainSample; lax.scan
        over K steps (`scan_chain`); x0 [..., A]: start from a given x_0 instead of a draw.
    squash(latent) -> action in (-1, 1).
    state_features(obs, latent, step) -> [..., F_s], the augmented state as a critic input.
    features(obs, latent, step, next_latent) -> [..., F], augmented state-action critic input.
    noising_leaves(params) -> a pytree of Python bools with the structure of params: True
        for the leaves that the noising kernel q_phi depends on (the diffusion chain's step
        sizes and friction, which p_theta shares with q, and the noising drift). Losses
        whose surrogate is only valid for parameters of p_theta alone (DiffWPO's) give these
        leaves another gradient. Default: none (the Gaussian has no noising kernel).
    """

    num_steps: int
    action_dim: int
    obs_dim: int
    prior_entropy: float
    init: Callable[[PRNGKey], Params]
    sample_prior: Callable[[PRNGKey, tuple[int, ...]], Array]
    sample_step: Callable[..., tuple[Array, StepEval]]
    evaluate: Callable[..., StepEval]
    sample_chain: Callable[..., ChainSample]
    kernel: Callable[[Params, Array, Array, Array], tuple[Array, Array]]
    squash: Callable[[Array], Array]
    state_features: Callable[[Array, Array, Array], Array]
    features: Callable[[Array, Array, Array, Array], Array]
    noising_leaves: Callable[[Params], Any] = no_leaves


def check_step_inputs(
    obs: Array, latent: Array, step: Array, action_dim: int, obs_dim: int | None = None
) -> None:
    """Raises a ValueError naming the argument when shapes do not fit the policy.

    obs [..., S], latent [..., A], step [...] integer; batch dims must broadcast.
    """
    if obs.ndim < 1:
        raise ValueError(f"obs must have shape [..., obs_dim], got {obs.shape}")
    if obs_dim is not None and obs.shape[-1] != obs_dim:
        raise ValueError(
            f"obs has last dimension {obs.shape[-1]}, but the policy was initialised for "
            f"obs_dim={obs_dim}"
        )
    if latent.ndim < 1 or latent.shape[-1] != action_dim:
        raise ValueError(
            f"latent must have shape [..., action_dim={action_dim}], got {latent.shape}"
        )
    if not jax.numpy.issubdtype(step.dtype, jax.numpy.integer):
        raise ValueError(f"step must be an integer array, got dtype {step.dtype}")
    try:
        jax.numpy.broadcast_shapes(obs.shape[:-1], latent.shape[:-1], step.shape)
    except ValueError:
        raise ValueError(
            "batch dimensions do not broadcast: "
            f"obs {obs.shape[:-1]}, latent {latent.shape[:-1]}, step {step.shape}"
        ) from None


def scan_chain(
    sample_step: Callable[..., tuple[Array, StepEval]],
    sample_prior: Callable[[PRNGKey, tuple[int, ...]], Array],
    squash: Callable[[Array], Array],
    num_steps: int,
    params: Params,
    obs: Array,
    key: PRNGKey,
    deterministic: bool = False,
    x0: Array | None = None,
    deterministic_from_prior: bool = False,
) -> ChainSample:
    """Runs the K-step chain with lax.scan (K static) for observations [..., S].

    Stochastic: x_0 ~ prior, then x_{k+1} ~ sample_step. Deterministic: every step is
    sample_step's noise-free step, from x_0 = 0 (the prior mean), or from the prior draw
    with deterministic_from_prior (then the chain is noise-free given x_0, not a function
    of obs alone). x0 [..., A]: a given start (e.g. a draw made earlier) instead of either;
    the step keys are the same with and without it.
    """
    batch = obs.shape[:-1]
    prior_key, steps_key = jax.random.split(key)
    if x0 is not None:
        x0 = jax.numpy.broadcast_to(x0, batch + x0.shape[-1:])
    else:
        x0 = sample_prior(prior_key, batch)
        if deterministic and not deterministic_from_prior:
            x0 = jax.numpy.zeros_like(x0)
    step_keys = jax.random.split(steps_key, num_steps)

    def body(latent, inputs):
        k, step_key = inputs
        step = jax.numpy.full(batch, k, dtype=jax.numpy.int32)
        next_latent, ev = sample_step(params, obs, latent, step, step_key, deterministic)
        return next_latent, (next_latent, ev.log_ratio, ev.log_prob)

    x_last, (xs, log_ratios, log_probs) = jax.lax.scan(
        body, x0, (jax.numpy.arange(num_steps, dtype=jax.numpy.int32), step_keys)
    )
    latents = jax.numpy.concatenate([x0[None], xs], axis=0)
    return ChainSample(
        latents=jax.numpy.moveaxis(latents, 0, -2),
        log_ratios=jax.numpy.moveaxis(log_ratios, 0, -1),
        log_probs=jax.numpy.moveaxis(log_probs, 0, -1),
        action=squash(x_last),
    )
