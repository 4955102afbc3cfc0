"""Pieces every trainer shares: one vectorised environment step with the whole chain, and the
per-interval evaluation metrics. Both run inside the compiled program."""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.envs import Environment, EnvState, RunningStats, normalize
from diffrl_jax.training.evaluation import evaluate_policy
from diffrl_jax.transforms import ChainTransition
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss
from diffrl_jax.types import Array, Params, PRNGKey


@struct.dataclass
class StepCounters:
    """Per-step episode statistics of N training envs, summed over envs: [] each."""

    train_return_sum: Array  # sum of the returns of episodes that ended this step
    train_episodes: Array  # episodes that ended this step
    nonfinite_env_steps: Array  # steps whose physics went non-finite (masked by the env layer)


def policy_obs(obs_stats: RunningStats, obs: Array, normalize_obs: bool) -> Array:
    """What the policy and critics see: obs normalised by the running statistics, or raw."""
    return normalize(obs_stats, obs) if normalize_obs else obs


def step_envs(
    env: Environment,
    transform: DiffusionLoss,
    params: Params,
    env_state: EnvState,
    obs_stats: RunningStats,
    episode_return: Array,
    key: PRNGKey,
    normalize_obs: bool,
    prior_latent: Array | None = None,
    truncation_prob: Array | float = 0.0,
) -> tuple[EnvState, ChainTransition, Array, StepCounters]:
    """Samples a chain for each of the N envs' observations, steps the envs with its action.

    Returns (env_state, transition [N] with *raw* obs and next_obs, episode_return [N] reset
    where an episode ended, counters). The transition's next_prior_latent x'_0 is a fresh
    prior draw. prior_latent [N, A]: x_0 of this step's chains; passing the previous step's
    x'_0 makes the stored x'_0 the real x_0 of the next chain (the on-policy rollout does).
    None: the chains draw their own x_0, and the stored x'_0 is an independent draw with the
    same law (the next chain's x_0 is an independent prior draw too), so a target that
    averages over x'_0 (the off-policy one-step TD target) is unbiased either way.
    truncation_prob p: each env's episode is also truncated after this step with
    probability p (unless it terminates; bootstrapped like the time limit, so the objective
    is unchanged): training sees resets throughout instead of in bursts once episodes last
    to the time limit. The coin comes from fold_in(key, 7), so p = 0 leaves every random
    stream and result as without it. It acts through `EnvState.episode_step` (the library's
    environments truncate at episode_length).
    """
    act_key, prior_key = jax.random.split(key)
    cut = jax.random.uniform(jax.random.fold_in(key, 7), env_state.episode_step.shape) < truncation_prob
    env_state = dataclasses.replace(env_state, episode_step=jnp.where(
        cut, jnp.maximum(env_state.episode_step, env.episode_length - 1), env_state.episode_step
    ).astype(env_state.episode_step.dtype))
    raw_obs = env_state.obs
    n = raw_obs.shape[0]
    chain = transform.act(params, policy_obs(obs_stats, raw_obs, normalize_obs), act_key,
                          x0=prior_latent)
    env_state, out = env.step(env_state, chain.action)
    transition = ChainTransition(
        obs=raw_obs,
        latents=chain.latents,
        log_ratios=chain.log_ratios,
        log_probs=chain.log_probs,
        reward=out.reward,
        terminated=out.terminated,
        truncated=out.truncated,
        next_obs=out.next_obs,
        next_prior_latent=transform.policy.sample_prior(prior_key, (n,)),
    )
    ended = out.ended
    returns = episode_return + out.reward
    counters = StepCounters(
        train_return_sum=jnp.sum(ended * returns),
        train_episodes=jnp.sum(ended),
        nonfinite_env_steps=jnp.sum(out.nonfinite),
    )
    return env_state, transition, returns * (1.0 - ended), counters


def interval_metrics(
    env: Environment,
    transform: DiffusionLoss,
    params: Params,
    obs_stats: RunningStats,
    key: PRNGKey,
    num_eval_envs: int,
    normalize_obs: bool,
    peaks: Sequence[float],
    env_steps: Array,
    counters: StepCounters,
) -> dict[str, Array]:
    """Stochastic and deterministic evaluation plus the interval's training-episode stats.

    counters: the interval's StepCounters stacked over its steps (any leading shape).
    """
    stochastic, deterministic = evaluate_policy(
        env, transform, params, obs_stats, key, num_eval_envs, peaks, normalize_obs
    )
    episodes = jnp.sum(counters.train_episodes)
    return {
        "env_steps": env_steps,
        "eval_return": jnp.mean(stochastic.returns),
        "eval_return_deterministic": jnp.mean(deterministic.returns),
        "eval_length": jnp.mean(stochastic.lengths),
        "eval_mode_counts": stochastic.mode_counts,
        "train_return": jnp.sum(counters.train_return_sum) / jnp.maximum(episodes, 1.0),
        "train_episodes": episodes,
        "nonfinite_env_steps": jnp.sum(counters.nonfinite_env_steps),
    }
