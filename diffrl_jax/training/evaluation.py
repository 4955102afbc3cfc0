"""Evaluation episodes inside the compiled program (lax.scan over one episode length)."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from diffrl_jax.envs import Environment, RunningStats, nearest_peak, normalize
from diffrl_jax.transforms.diffusion_loss import DiffusionLoss
from diffrl_jax.types import Array, Params, PRNGKey


@struct.dataclass
class EvalResult:
    """returns [E]: return of each eval env's first episode; lengths [E];
    mode_counts [P]: actions (first dimension) nearest each reward peak, over all steps of
    the first episodes (P = 0 where the environment declares no peaks)."""

    returns: Array
    lengths: Array
    mode_counts: Array


def evaluate_policy(
    env: Environment,
    transform: DiffusionLoss,
    params: Params,
    obs_stats: RunningStats,
    key: PRNGKey,
    num_envs: int,
    peaks: Sequence[float] = (),
    normalize_obs: bool = True,
) -> tuple[EvalResult, EvalResult]:
    """Runs one episode in each of 2 * num_envs fresh environments: the first num_envs act
    with the stochastic policy, the others with the deterministic one (the policy's
    noise-free chain: for the diffusion policy its config's deterministic_sampler, by default
    the authors' ODE from a prior draw x_0, so its actions still depend on x_0; for the
    Gaussian the mean action). The deterministic half draws its x_0 with another key than
    the stochastic half, so the two do not share prior draws. One batched environment step
    serves both, so the environment's step function is compiled once for evaluation.
    Returns (stochastic, deterministic) results."""
    reset_key, act_key = jax.random.split(key)
    state = env.reset(reset_key, 2 * num_envs)

    def body(carry, step_key):
        state, ret, length, alive, counts = carry
        obs = normalize(obs_stats, state.obs) if normalize_obs else state.obs
        stochastic = transform.act(params, obs[:num_envs], step_key, False).action
        deterministic = transform.act(params, obs[num_envs:], jax.random.fold_in(step_key, 1),
                                      True).action
        action = jnp.concatenate([stochastic, deterministic], axis=0)
        state, out = env.step(state, action)
        ret = ret + alive * out.reward
        length = length + alive
        if len(peaks):
            counts = counts + alive[:, None] * nearest_peak(action, peaks)
        alive = alive * (1.0 - out.ended)
        return (state, ret, length, alive, counts), None

    n = 2 * num_envs
    init = (state, jnp.zeros(n), jnp.zeros(n), jnp.ones(n), jnp.zeros((n, len(peaks))))
    keys = jax.random.split(act_key, env.episode_length)
    (_, ret, length, _, counts), _ = jax.lax.scan(body, init, keys)

    def result(part: slice) -> EvalResult:
        return EvalResult(returns=ret[part], lengths=length[part], mode_counts=jnp.sum(counts[part], 0))

    return result(slice(0, num_envs)), result(slice(num_envs, n))
