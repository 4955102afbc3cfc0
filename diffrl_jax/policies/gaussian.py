"""The tanh-squashed Gaussian policy, as a one-step chain of the shared interface.

pi(a | s): u ~ N(mu(s), diag(sigma(s)^2)), a = tanh(u) (clipped to +-(1 - squash_clip)).
As a `Policy` it is the chain with K = 1: x_0 is a dummy zero vector, the step index is always
0, x_1 = u, and l_0 = log pi(a|s) = log N(u; mu, sigma^2) - sum_d log(1 - tanh(u_d)^2),
so H_hat = -E[log pi] with prior_entropy = 0. Critics see (obs, tanh(u)), as in textbook SAC.
Parameters: {"network": params of the MLP giving [mu, raw_sigma]}; sigma = softplus(raw) + min_std.
"""

import dataclasses
from typing import cast

import jax
import jax.numpy as jnp

from diffrl_jax.networks.activations import ACTIVATIONS
from diffrl_jax.networks.mlp import MLP
from diffrl_jax.policies.base import Policy, StepEval, check_step_inputs, scan_chain
from diffrl_jax.policies.kernels import diag_gaussian_log_density, scale_gradient
from diffrl_jax.policies.squash import tanh_log_det, tanh_squash
from diffrl_jax.types import Array, Params, PRNGKey
from diffrl_jax.validation import (
    require_choice,
    require_in_range,
    require_int_at_least,
    require_layer_sizes,
    require_positive,
)


@dataclasses.dataclass(frozen=True)
class GaussianPolicyConfig:
    """Settings of the tanh-Gaussian policy."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    min_std: float = 1e-3
    squash_clip: float = 1e-3

    def __post_init__(self) -> None:
        o = "GaussianPolicyConfig"
        require_layer_sizes(o, "hidden_sizes", self.hidden_sizes)
        require_choice(o, "activation", self.activation, ACTIVATIONS)
        require_positive(o, "min_std", self.min_std)
        require_in_range(o, "squash_clip", self.squash_clip, 0.0, 1.0)


def make_gaussian_policy(
    obs_dim: int, action_dim: int, config: GaussianPolicyConfig = GaussianPolicyConfig()
) -> Policy:
    """Builds the tanh-Gaussian policy as a one-step `Policy`."""
    require_int_at_least("make_gaussian_policy", "obs_dim", obs_dim, 1)
    require_int_at_least("make_gaussian_policy", "action_dim", action_dim, 1)
    cfg = config
    A = action_dim
    network = MLP(tuple(cfg.hidden_sizes) + (2 * A,), activation=cfg.activation)

    def init(key: PRNGKey) -> Params:
        return {"network": network.init(key, jnp.zeros((1, obs_dim)))}

    def distribution(params: Params, obs: Array) -> tuple[Array, Array]:
        """(mu, sigma) of the pre-squash Gaussian, each [..., A]."""
        # (cast: flax types apply() as if it could return (out, variables) without mutable=)
        out = cast(Array, network.apply(params["network"], obs))
        mean, raw_std = jnp.split(out, 2, axis=-1)
        return mean, jax.nn.softplus(raw_std) + cfg.min_std

    def log_pi(u: Array, mean: Array, std: Array) -> StepEval:
        log_prob = diag_gaussian_log_density(u, mean, jnp.square(std)) - tanh_log_det(u)
        return StepEval(log_prob=log_prob, log_noising=jnp.zeros_like(log_prob), log_ratio=log_prob)

    def evaluate(
        params: Params, obs: Array, latent: Array, step: Array, next_latent: Array,
        natural_gradient: bool = False,
    ) -> StepEval:
        """log pi(tanh(u) | s) for u = next_latent; latent and step are ignored (K = 1).

        natural_gradient: gradients reaching mu are scaled by sigma^2 and those reaching sigma
        by sigma^2 / 2, the inverse Fisher of N(mu, sigma^2) in (mu, sigma)."""
        check_step_inputs(obs, latent, step, A, obs_dim)
        if next_latent.shape[-1:] != (A,):
            raise ValueError(f"next_latent must have shape [..., {A}], got {next_latent.shape}")
        mean, std = distribution(params, obs)
        if natural_gradient:
            var = jnp.square(std)
            mean, std = scale_gradient(mean, var), scale_gradient(std, 0.5 * var)
        return log_pi(next_latent, mean, std)

    def kernel(params: Params, obs: Array, latent: Array, step: Array) -> tuple[Array, Array]:
        """(mu, sigma) of the pre-squash Gaussian, broadcast to the batch: [..., A] each."""
        mean, std = distribution(params, obs)
        batch = jnp.broadcast_shapes(obs.shape[:-1], latent.shape[:-1], step.shape)
        return jnp.broadcast_to(mean, batch + (A,)), jnp.broadcast_to(std, batch + (A,))

    def sample_step(
        params: Params, obs: Array, latent: Array, step: Array, key: PRNGKey,
        deterministic: bool = False,
    ) -> tuple[Array, StepEval]:
        """u = mu + sigma * eps (u = mu if deterministic), reparameterised, with log pi."""
        check_step_inputs(obs, latent, step, A, obs_dim)
        mean, std = distribution(params, obs)
        batch = jnp.broadcast_shapes(obs.shape[:-1], latent.shape[:-1], step.shape)
        mean, std = jnp.broadcast_to(mean, batch + (A,)), jnp.broadcast_to(std, batch + (A,))
        u = mean if deterministic else mean + std * jax.random.normal(key, mean.shape, mean.dtype)
        return u, log_pi(u, mean, std)

    def sample_prior(key: PRNGKey, batch_shape: tuple[int, ...]) -> Array:
        """The dummy x_0: zeros [*batch_shape, A]."""
        del key
        return jnp.zeros(tuple(batch_shape) + (A,))

    def squash(latent: Array) -> Array:
        return tanh_squash(latent, cfg.squash_clip)

    def sample_chain(params: Params, obs: Array, key: PRNGKey, deterministic: bool = False,
                     x0: Array | None = None):
        """One-step chain: latents [..., 2, A] = (x0 or 0, u), log_ratios [..., 1] = log pi;
        deterministic: u = mu. x0 is carried along only (the step ignores it)."""
        return scan_chain(sample_step, sample_prior, squash, 1, params, obs, key, deterministic, x0)

    def state_features(obs: Array, latent: Array, step: Array) -> Array:
        """The observation alone (x_0 and k are constant for K = 1): [..., S]."""
        batch = jnp.broadcast_shapes(obs.shape[:-1], latent.shape[:-1], step.shape)
        return jnp.broadcast_to(obs, batch + obs.shape[-1:])

    def features(obs: Array, latent: Array, step: Array, next_latent: Array) -> Array:
        """[obs, tanh(u)], the textbook SAC critic input: [..., S + A]."""
        s = state_features(obs, latent, step)
        a = squash(next_latent)
        batch = jnp.broadcast_shapes(s.shape[:-1], a.shape[:-1])
        return jnp.concatenate(
            [jnp.broadcast_to(s, batch + s.shape[-1:]), jnp.broadcast_to(a, batch + (A,))], -1)

    return Policy(
        num_steps=1,
        action_dim=A,
        obs_dim=obs_dim,
        prior_entropy=0.0,
        init=init,
        sample_prior=sample_prior,
        sample_step=sample_step,
        evaluate=evaluate,
        sample_chain=sample_chain,
        kernel=kernel,
        squash=squash,
        state_features=state_features,
        features=features,
    )
