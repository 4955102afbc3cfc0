"""The one shared diffusion-loss transform (spec section 4).

`make_diffusion_loss(policy)` returns a `DiffusionLoss`: a named tuple of pure functions that
owns everything that differs between a MaxEnt algorithm and its diffusion version: acting
(sampling the whole chain), the DA-MDP bookkeeping, evaluating l_k, the estimators, the
entropy estimate H_hat and the temperature loss. With a Gaussian policy (K = 1, l = log pi)
the same functions give plain SAC/PPO/WPO quantities, so algorithm code written against
`PolicyTerms` never asks which policy it holds.

Base losses are written as per-sample objectives `objective(terms, *args) -> [...]`; the
combinators `sampled_loss` and `evaluated_loss` lift them into losses of parameters, the way
optax wrappers lift a gradient transformation:

    sac_actor = sampled_loss(transform, lambda t, alpha, q: alpha * t.log_ratio - q(t.critic_input))
    awr_actor = evaluated_loss(transform, lambda t, w: -w * t.log_prob)
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.policies.base import ChainSample, Policy, StepEval
from diffrl_jax.transforms import damdp
from diffrl_jax.transforms.damdp import AugmentedState, AugmentedTransition, ChainTransition
from diffrl_jax.types import Array, Params, PRNGKey

ESTIMATORS = ("per_step", "full_chain")


@struct.dataclass
class PolicyTerms:
    """What a base loss sees of the policy at a batch of augmented states. Batch dims [...].

    state:        the augmented states s~ (for "full_chain" terms, s~_{K-1} of each chain).
    action:       x_{k+1} [..., A] (full chain: x_K), differentiable when sampled.
    log_ratio:    l_k [...], the stand-in for log pi (full chain: sum_k l_k).
    log_prob:     log p_theta(x_{k+1} | s~) [...] (full chain: summed over k).
    critic_input: policy.features(s~, x_{k+1}) [..., F], the critic's input.
    num_steps:    how many chain steps log_ratio sums (1 per step, K for a full chain); static.
    """

    state: AugmentedState
    action: Array
    log_ratio: Array
    log_prob: Array
    critic_input: Array
    num_steps: int = struct.field(pytree_node=False, default=1)


class DiffusionLoss(NamedTuple):
    """The shared transform: pure functions closed over a policy and two static options.

    act(params, obs, key, deterministic=False, x0=None) -> ChainSample (policy.sample_chain)
    augment(transition, step, discount) -> AugmentedTransition at index `step`
    expand(transition, discount) -> all K augmented transitions, batch [...] -> [..., K]
    initial_state(obs, key) -> AugmentedState at step 0 with x_0 from the prior
    sample_states(params, obs, key) -> AugmentedState, k ~ U{0..K-1}, x_k from the current
        chain (no gradient): augmented states visited by the current policy
    evaluate(params, state, action, natural_gradient=False) -> PolicyTerms at given
        (s~, x_{k+1}); natural_gradient preconditions the kernel's gradients (see Policy)
    kernel(params, state) -> (mean, std) [..., A] of the step kernel p_theta(. | s~)
    sample(params, state, key) -> PolicyTerms with x_{k+1} ~ p_theta(. | s~), reparameterised
    sample_chains(params, obs, key) -> PolicyTerms of whole reparameterised chains
    actor_terms(params, state, key) -> terms of the configured estimator: "per_step" samples
        one step at each given state, "full_chain" a whole chain from each state's obs
    critic_input(state, action) -> [..., F], the critic's input for (s~, x_{k+1})
    state_input(state) -> [..., F_s], a state-value critic's input for s~
    entropy(terms) -> H_hat = prior_entropy - (K / terms.num_steps) * mean(log_ratio)
    chain_entropy(log_ratios [..., K]) -> H_hat of stored whole chains of the current policy,
        prior_entropy - mean over [...] of sum_k l_k (an on-policy rollout's chains)
    temperature_loss(log_alpha, entropy, target_entropy) -> alpha * sg(entropy - target)
    target_entropy(multiplier) -> prior_entropy - multiplier * A: the authors' target -m*A
        on their estimate (which omits H(prior)), shifted onto ours. With the diffusion
        policy's squash_log_det option H_hat bounds the entropy of the squashed action,
        which is at most A * log 2, so the target is reachable only for m > h_p - log 2.
    """

    policy: Policy
    discount_mode: str
    estimator: str
    act: Callable[..., ChainSample]
    augment: Callable[[ChainTransition, Array, Array | float], AugmentedTransition]
    expand: Callable[[ChainTransition, Array | float], AugmentedTransition]
    initial_state: Callable[[Array, PRNGKey], AugmentedState]
    sample_states: Callable[[Params, Array, PRNGKey], AugmentedState]
    evaluate: Callable[..., PolicyTerms]
    kernel: Callable[[Params, AugmentedState], tuple[Array, Array]]
    sample: Callable[[Params, AugmentedState, PRNGKey], PolicyTerms]
    sample_chains: Callable[[Params, Array, PRNGKey], PolicyTerms]
    actor_terms: Callable[[Params, AugmentedState, PRNGKey], PolicyTerms]
    critic_input: Callable[[AugmentedState, Array], Array]
    state_input: Callable[[AugmentedState], Array]
    entropy: Callable[[PolicyTerms], Array]
    chain_entropy: Callable[[Array], Array]
    temperature_loss: Callable[[Array, Array, Array | float], Array]
    target_entropy: Callable[[float], float]


def make_diffusion_loss(
    policy: Policy, discount_mode: str = "env", estimator: str = "per_step"
) -> DiffusionLoss:
    """Builds the shared transform for `policy` (diffusion chain or Gaussian).

    discount_mode: "env" (gamma only on the last denoising step) or "diffusion" (a factor on
    every augmented step). estimator: "per_step" or "full_chain" (spec section 4).
    """
    damdp.check_discount_mode(discount_mode)
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; allowed: {list(ESTIMATORS)}")
    K = policy.num_steps

    def act(params: Params, obs: Array, key: PRNGKey, deterministic: bool = False,
            x0: Array | None = None) -> ChainSample:
        return policy.sample_chain(params, obs, key, deterministic, x0)

    def augment(transition: ChainTransition, step: Array, discount: Array | float) -> AugmentedTransition:
        _check_chain_length(transition)
        return damdp.augment(transition, step, discount, discount_mode)

    def expand(transition: ChainTransition, discount: Array | float) -> AugmentedTransition:
        _check_chain_length(transition)
        return damdp.expand(transition, discount, discount_mode)

    def _check_chain_length(transition: ChainTransition) -> None:
        if transition.latents.ndim < 2 or transition.latents.shape[-2] != K + 1:
            raise ValueError(
                f"transition.latents must have shape [..., K + 1 = {K + 1}, A], "
                f"got {transition.latents.shape}"
            )

    def initial_state(obs: Array, key: PRNGKey) -> AugmentedState:
        batch = obs.shape[:-1]
        return AugmentedState(
            obs=obs, latent=policy.sample_prior(key, batch), step=jnp.zeros(batch, jnp.int32)
        )

    def sample_states(params: Params, obs: Array, key: PRNGKey) -> AugmentedState:
        chain_key, step_key = jax.random.split(key)
        chain = jax.lax.stop_gradient(policy.sample_chain(params, obs, chain_key))
        batch = obs.shape[:-1]
        step = jax.random.randint(step_key, batch, 0, K, dtype=jnp.int32)
        latent = jnp.take_along_axis(chain.latents, step[..., None, None], axis=-2)[..., 0, :]
        return AugmentedState(obs=obs, latent=latent, step=step)

    def step_terms(state: AugmentedState, action: Array, ev: StepEval) -> PolicyTerms:
        return PolicyTerms(
            state=state,
            action=action,
            log_ratio=ev.log_ratio,
            log_prob=ev.log_prob,
            critic_input=critic_input(state, action),
        )

    def evaluate(params: Params, state: AugmentedState, action: Array,
                 natural_gradient: bool = False) -> PolicyTerms:
        ev = policy.evaluate(params, state.obs, state.latent, state.step, action, natural_gradient)
        return step_terms(state, action, ev)

    def kernel(params: Params, state: AugmentedState) -> tuple[Array, Array]:
        return policy.kernel(params, state.obs, state.latent, state.step)

    def sample(params: Params, state: AugmentedState, key: PRNGKey) -> PolicyTerms:
        action, ev = policy.sample_step(params, state.obs, state.latent, state.step, key)
        return step_terms(state, action, ev)

    def sample_chains(params: Params, obs: Array, key: PRNGKey) -> PolicyTerms:
        chain = policy.sample_chain(params, obs, key)
        batch = obs.shape[:-1]
        state = AugmentedState(
            obs=obs, latent=chain.latents[..., K - 1, :], step=jnp.full(batch, K - 1, jnp.int32)
        )
        action = chain.latents[..., K, :]
        return PolicyTerms(
            state=state,
            action=action,
            log_ratio=jnp.sum(chain.log_ratios, axis=-1),
            log_prob=jnp.sum(chain.log_probs, axis=-1),
            critic_input=critic_input(state, action),
            num_steps=K,
        )

    def actor_terms(params: Params, state: AugmentedState, key: PRNGKey) -> PolicyTerms:
        if estimator == "per_step":
            return sample(params, state, key)
        return sample_chains(params, state.obs, key)

    def critic_input(state: AugmentedState, action: Array) -> Array:
        return policy.features(state.obs, state.latent, state.step, action)

    def state_input(state: AugmentedState) -> Array:
        return policy.state_features(state.obs, state.latent, state.step)

    def entropy(terms: PolicyTerms) -> Array:
        return policy.prior_entropy - (K / terms.num_steps) * jnp.mean(terms.log_ratio)

    def chain_entropy(log_ratios: Array) -> Array:
        if log_ratios.ndim < 1 or log_ratios.shape[-1] != K:
            raise ValueError(f"log_ratios must have shape [..., K = {K}], got {log_ratios.shape}")
        return policy.prior_entropy - jnp.mean(jnp.sum(log_ratios, axis=-1))

    def temperature_loss(log_alpha: Array, entropy: Array, target_entropy: Array | float) -> Array:
        return jnp.exp(log_alpha) * jax.lax.stop_gradient(entropy - target_entropy)

    def target_entropy(multiplier: float) -> float:
        return policy.prior_entropy - multiplier * policy.action_dim

    return DiffusionLoss(
        policy=policy,
        discount_mode=discount_mode,
        estimator=estimator,
        act=act,
        augment=augment,
        expand=expand,
        initial_state=initial_state,
        sample_states=sample_states,
        evaluate=evaluate,
        kernel=kernel,
        sample=sample,
        sample_chains=sample_chains,
        actor_terms=actor_terms,
        critic_input=critic_input,
        state_input=state_input,
        entropy=entropy,
        chain_entropy=chain_entropy,
        temperature_loss=temperature_loss,
        target_entropy=target_entropy,
    )


Objective = Callable[..., Array]
"""objective(terms: PolicyTerms, *args) -> per-sample loss [...]."""


def sampled_loss(
    transform: DiffusionLoss, objective: Objective
) -> Callable[..., tuple[Array, PolicyTerms]]:
    """Lifts a per-sample objective to `loss(params, state, key, *args) -> (mean, terms)`,
    evaluated on actions the policy samples at `state` with the transform's estimator."""

    def loss(params: Params, state: AugmentedState, key: PRNGKey, *args: Any):
        terms = transform.actor_terms(params, state, key)
        return jnp.mean(objective(terms, *args)), terms

    return loss


def evaluated_loss(
    transform: DiffusionLoss, objective: Objective
) -> Callable[..., tuple[Array, PolicyTerms]]:
    """Lifts a per-sample objective to `loss(params, state, action, *args) -> (mean, terms)`,
    evaluated on given (stored) augmented actions."""

    def loss(params: Params, state: AugmentedState, action: Array, *args: Any):
        terms = transform.evaluate(params, state, action)
        return jnp.mean(objective(terms, *args)), terms

    return loss
