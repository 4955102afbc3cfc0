"""The diffusion policy of spec section 2: K Langevin denoising steps from a Gaussian prior.

Parameters (a dict pytree):
  "control":        params of f_theta(x_k, s, k)
  "dt":             raw step sizes [K] (or [K, A] with dt_per_dimension); eta_k uses softplus
                    (fixed at their initial schedule, gradient stopped, with learn_step_sizes
                    False)
  "friction":       raw friction [] (only with learn_friction)
  "noising_drift":  params of b_phi(x_{k+1}, s, k) (only with learn_noising_drift)
eta_k = softplus(dt_k) / softplus(friction). Both kernels of the pair (x_k, x_{k+1}) use eta_k;
the noising kernel's drift is evaluated at x_{k+1}, the point it conditions on.

Deterministic sampling (`deterministic=True`; config.deterministic_sampler), in pre-squash x:
  "ode" (default; the authors' evaluation sampler, spec section 5): x_0 ~ prior, then
      x_{k+1} = x_k + eta_k * (-x_k / sigma_p^2 + 0.5 * f_theta(x_k, s, k)), no noise.
      Deterministic means "no per-step noise": the action is a function of (s, x_0) and
      still depends on the prior draw, so a two-mode policy sends different draws to
      different modes. What it is: for a step x + eta b + sqrt(2 eta) xi with drift
      b = -x / sigma_p^2 + f, the probability-flow ODE (same marginals, no noise) is
      dx = (b - grad log p_k(x)) dt, which needs the score of x_k's marginal, and the chain
      does not learn it. This ODE is that flow exactly where grad log p_k = f / 2. (Were f the
      drift of the time reversal of the noising dynamics dx = -x / sigma_p^2 dt + sqrt(2) dW,
      the flow would be x + eta * f / 2; the authors also keep -x / sigma_p^2, a shrink by
      eta_k / sigma_p^2 per step.) So it is a noise-free heuristic: it need not reproduce
      the stochastic chain's action distribution.
  "mean": x_0 = 0 (the prior mean) and every kernel mean; a function of s alone. For a
      policy symmetric about x = 0 with two modes this path can stay in the valley between them.
"""

import dataclasses
import math
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffrl_jax.networks.activations import ACTIVATIONS
from diffrl_jax.networks.control import ControlNetwork
from diffrl_jax.policies.base import Policy, StepEval, check_step_inputs, scan_chain
from diffrl_jax.policies.kernels import (
    diag_gaussian_log_density,
    inverse_softplus,
    langevin_mean,
    scale_gradient,
)
from diffrl_jax.policies.schedules import SCHEDULES, step_schedule
from diffrl_jax.policies.squash import tanh_log_det, tanh_squash
from diffrl_jax.types import Array, Params, PRNGKey
from diffrl_jax.validation import (
    require_bool,
    require_choice,
    require_in_range,
    require_int_at_least,
    require_layer_sizes,
    require_positive,
)

# deterministic samplers (see the module docstring): name -> what the chain does
DETERMINISTIC_SAMPLERS = {
    "ode": "x_0 from the prior, then noise-free steps x + eta * (-x / sigma_p^2 + f / 2) "
           "(the authors' ODE; the action depends on the x_0 draw)",
    "mean": "x_0 = 0 and the kernels' means (a function of the observation alone)",
}


@dataclasses.dataclass(frozen=True)
class DiffusionPolicyConfig:
    """Settings of the diffusion policy; defaults are the paper authors' (spec section 7)."""

    num_steps: int = 8  # K
    prior_std: float = 3.0  # sigma_p
    dt0: float = 0.125
    schedule: str = "linear"  # one of SCHEDULES
    schedule_min: float = 0.17  # m
    dt_per_dimension: bool = False
    friction: float = 0.25
    learn_friction: bool = False
    learn_step_sizes: bool = True
    hidden_sizes: tuple[int, ...] = (256, 256, 256, 256)
    activation: str = "gelu"
    time_frequencies: int = 4
    time_hidden: int = 64
    control_init_scale: float = 1e-8
    control_clip: float = 1e4
    learn_noising_drift: bool = False
    squash_clip: float = 1e-3
    squash_log_det: bool = False
    deterministic_sampler: str = "ode"  # one of DETERMINISTIC_SAMPLERS

    def __post_init__(self) -> None:
        o = "DiffusionPolicyConfig"
        require_int_at_least(o, "num_steps", self.num_steps, 1)
        require_positive(o, "prior_std", self.prior_std)
        require_positive(o, "dt0", self.dt0)
        require_choice(o, "schedule", self.schedule, SCHEDULES)
        require_positive(o, "schedule_min", self.schedule_min)
        require_positive(o, "friction", self.friction)
        require_layer_sizes(o, "hidden_sizes", self.hidden_sizes)
        require_choice(o, "activation", self.activation, ACTIVATIONS)
        require_int_at_least(o, "time_frequencies", self.time_frequencies, 1)
        require_int_at_least(o, "time_hidden", self.time_hidden, 1)
        require_in_range(o, "control_init_scale", self.control_init_scale, 0.0, 1.0, closed=True)
        require_positive(o, "control_clip", self.control_clip)
        require_in_range(o, "squash_clip", self.squash_clip, 0.0, 1.0)
        require_choice(o, "deterministic_sampler", self.deterministic_sampler,
                       tuple(DETERMINISTIC_SAMPLERS))
        for flag in ("dt_per_dimension", "learn_friction", "learn_step_sizes",
                     "learn_noising_drift", "squash_log_det"):
            require_bool(o, flag, getattr(self, flag))


def make_diffusion_policy(
    obs_dim: int,
    action_dim: int,
    config: DiffusionPolicyConfig = DiffusionPolicyConfig(),
    control_network: nn.Module | None = None,
    noising_network: nn.Module | None = None,
) -> Policy:
    """Builds the diffusion policy as a `Policy` of pure functions.

    control_network / noising_network: optional flax modules called as
    module(latent [..., A], obs [..., S], step [...]) -> [..., A], replacing the default
    ControlNetwork for f_theta / b_phi (b_phi is used only with config.learn_noising_drift).
    """
    require_int_at_least("make_diffusion_policy", "obs_dim", obs_dim, 1)
    require_int_at_least("make_diffusion_policy", "action_dim", action_dim, 1)
    cfg = config
    K, A = cfg.num_steps, action_dim
    prior_var = cfg.prior_std**2

    def default_network() -> nn.Module:
        return ControlNetwork(
            action_dim=A,
            num_steps=K,
            hidden_sizes=cfg.hidden_sizes,
            activation=cfg.activation,
            time_frequencies=cfg.time_frequencies,
            time_hidden=cfg.time_hidden,
            output_init_scale=cfg.control_init_scale,
            output_clip=cfg.control_clip,
        )

    control = control_network if control_network is not None else default_network()
    noising = noising_network if noising_network is not None else default_network()
    dt_init = cfg.dt0 * step_schedule(cfg.schedule, K, cfg.schedule_min)
    dt_raw_init = np.array([inverse_softplus(float(d)) for d in dt_init], np.float32)
    if cfg.dt_per_dimension:
        dt_raw_init = np.repeat(dt_raw_init[:, None], A, axis=1)
    friction_raw_init = np.float32(inverse_softplus(cfg.friction))

    def init(key: PRNGKey) -> Params:
        control_key, noising_key = jax.random.split(key)
        latent = jnp.zeros((1, A))
        obs = jnp.zeros((1, obs_dim))
        step = jnp.zeros((1,), jnp.int32)
        params = {
            "control": control.init(control_key, latent, obs, step),
            "dt": jnp.asarray(dt_raw_init),
        }
        if cfg.learn_friction:
            params["friction"] = jnp.asarray(friction_raw_init)
        if cfg.learn_noising_drift:
            params["noising_drift"] = noising.init(noising_key, latent, obs, step)
        return params

    def step_size(params: Params, step: Array) -> Array:
        """eta_k for step [...] -> [..., A] (or [..., 1] when shared over dimensions)."""
        raw = params["dt"] if cfg.learn_step_sizes else jax.lax.stop_gradient(params["dt"])
        dt = jax.nn.softplus(raw[step])
        if not cfg.dt_per_dimension:
            dt = dt[..., None]
        friction = jax.nn.softplus(params["friction"]) if cfg.learn_friction else cfg.friction
        return dt / friction

    def denoising_kernel(params, obs, latent, step) -> tuple[Array, Array, Array]:
        """(mean, var, eta) of p_theta(. | x_k, s, k); mean and var [..., A]."""
        eta = step_size(params, step)
        # (cast: flax types apply() as if it could return (out, variables) without mutable=)
        drift = cast(Array, control.apply(params["control"], latent, obs, step))
        mean = langevin_mean(latent, eta, drift, prior_var)
        return mean, jnp.broadcast_to(2.0 * eta, mean.shape), eta

    def step_eval(params, obs, latent, step, next_latent, mean_p, var, eta,
                  natural_gradient: bool = False) -> StepEval:
        if natural_gradient:
            # inverse Fisher of N(mean, var) in (mean, var): var for the mean and 2 var^2 for
            # a per-dimension variance; a variance shared by the A dimensions (N(mean, v I))
            # has Fisher A / (2 v^2), so each dimension's cotangent is scaled by 2 v^2 / A
            # and their sum is the natural gradient of the one v.
            var_scale = 2.0 * jnp.square(var) / (1.0 if cfg.dt_per_dimension else A)
            log_prob = diag_gaussian_log_density(
                next_latent, scale_gradient(mean_p, var), scale_gradient(var, var_scale))
        else:
            log_prob = diag_gaussian_log_density(next_latent, mean_p, var)
        if cfg.learn_noising_drift:
            back_drift = cast(Array, noising.apply(params["noising_drift"], next_latent, obs, step))
        else:
            back_drift = 0.0
        mean_q = langevin_mean(next_latent, eta, back_drift, prior_var)
        log_noising = diag_gaussian_log_density(latent, mean_q, var)
        if cfg.squash_log_det:
            log_noising = log_noising + jnp.where(step == K - 1, tanh_log_det(next_latent), 0.0)
        return StepEval(log_prob=log_prob, log_noising=log_noising, log_ratio=log_prob - log_noising)

    def evaluate(
        params: Params, obs: Array, latent: Array, step: Array, next_latent: Array,
        natural_gradient: bool = False,
    ) -> StepEval:
        """Log-densities of a given transition (s, x_k, k) -> x_{k+1}; all [...].

        natural_gradient: gradients reaching the denoising kernel's mean and variance in
        log p are scaled by var and 2 var^2 (its inverse Fisher); log q is unchanged."""
        check_step_inputs(obs, latent, step, A, obs_dim)
        if next_latent.shape[-1:] != (A,):
            raise ValueError(f"next_latent must have shape [..., {A}], got {next_latent.shape}")
        mean, var, eta = denoising_kernel(params, obs, latent, step)
        return step_eval(params, obs, latent, step, next_latent, mean, var, eta, natural_gradient)

    def kernel(params: Params, obs: Array, latent: Array, step: Array) -> tuple[Array, Array]:
        """(mean, std) of p_theta(. | x_k, s, k): [..., A] each."""
        check_step_inputs(obs, latent, step, A, obs_dim)
        mean, var, _ = denoising_kernel(params, obs, latent, step)
        return mean, jnp.sqrt(var)

    def sample_step(
        params: Params, obs: Array, latent: Array, step: Array, key: PRNGKey,
        deterministic: bool = False,
    ) -> tuple[Array, StepEval]:
        """x_{k+1} ~ p_theta(. | x_k, s, k), reparameterised, with its StepEval (log-densities
        of the step taken under the kernels). deterministic: the noise-free step of
        config.deterministic_sampler, "ode": x_k + eta_k (-x_k / sigma_p^2 + f / 2); "mean":
        the kernel mean."""
        check_step_inputs(obs, latent, step, A, obs_dim)
        mean, var, eta = denoising_kernel(params, obs, latent, step)
        if deterministic and cfg.deterministic_sampler == "ode":
            # x + eta (-x / sigma_p^2 + f / 2) is the average of the kernel mean and the
            # control-free step x + eta (-x / sigma_p^2): no second network evaluation
            next_latent = 0.5 * (mean + langevin_mean(latent, eta, 0.0, prior_var))
        elif deterministic:
            next_latent = mean
        else:
            next_latent = mean + jnp.sqrt(var) * jax.random.normal(key, mean.shape, mean.dtype)
        return next_latent, step_eval(params, obs, latent, step, next_latent, mean, var, eta)

    def sample_prior(key: PRNGKey, batch_shape: tuple[int, ...]) -> Array:
        """x_0 ~ N(0, sigma_p^2 I), shape [*batch_shape, A]."""
        return cfg.prior_std * jax.random.normal(key, tuple(batch_shape) + (A,))

    def squash(latent: Array) -> Array:
        return tanh_squash(latent, cfg.squash_clip)

    def sample_chain(params: Params, obs: Array, key: PRNGKey, deterministic: bool = False,
                     x0: Array | None = None):
        """Samples the whole chain for obs [..., S]; see `scan_chain` (deterministic: the
        config's deterministic_sampler; "ode" starts from a prior draw, "mean" from 0)."""
        return scan_chain(sample_step, sample_prior, squash, K, params, obs, key, deterministic,
                          x0, deterministic_from_prior=cfg.deterministic_sampler == "ode")

    def state_features(obs: Array, latent: Array, step: Array) -> Array:
        """[obs, x_k, one_hot(k)] broadcast over batch dims: [..., S + A + K]."""
        onehot = jax.nn.one_hot(step, K, dtype=obs.dtype)
        batch = jnp.broadcast_shapes(obs.shape[:-1], latent.shape[:-1], step.shape)
        parts = [obs, latent, onehot]
        return jnp.concatenate([jnp.broadcast_to(p, batch + p.shape[-1:]) for p in parts], -1)

    def features(obs: Array, latent: Array, step: Array, next_latent: Array) -> Array:
        """[obs, x_k, one_hot(k), x_{k+1}]: [..., S + 2A + K]."""
        s = state_features(obs, latent, step)
        batch = jnp.broadcast_shapes(s.shape[:-1], next_latent.shape[:-1])
        return jnp.concatenate(
            [jnp.broadcast_to(s, batch + s.shape[-1:]),
             jnp.broadcast_to(next_latent, batch + next_latent.shape[-1:])], -1)

    def noising_leaves(params: Params):
        """True for dt (when learned), friction and the noising drift: the leaves q_phi
        depends on."""
        shared = {"dt": cfg.learn_step_sizes, "friction": True, "noising_drift": True}

        def mask(name: str, value: Params) -> Params:
            m = shared.get(name, False)
            return jax.tree.map(lambda _: m, value)

        return {name: mask(name, value) for name, value in params.items()}

    prior_entropy = A * prior_entropy_per_dim(cfg.prior_std)
    return Policy(
        num_steps=K,
        action_dim=A,
        obs_dim=obs_dim,
        prior_entropy=prior_entropy,
        init=init,
        sample_prior=sample_prior,
        sample_step=sample_step,
        evaluate=evaluate,
        sample_chain=sample_chain,
        kernel=kernel,
        squash=squash,
        state_features=state_features,
        features=features,
        noising_leaves=noising_leaves,
    )


def prior_entropy_per_dim(prior_std: float) -> float:
    """h_p = 0.5 * log(2 pi e sigma_p^2), the prior's entropy per action dimension."""
    return 0.5 * math.log(2.0 * math.pi * math.e * prior_std**2)
