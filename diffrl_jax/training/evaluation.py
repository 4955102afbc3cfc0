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
    deterministic: bool,
    peaks: Sequence[float] = (),
    normalize_obs: bool = True,
) -> EvalResult:
    """Runs one episode in each of num_envs fresh environments and scores it."""
    reset_key, act_key = jax.random.split(key)
    state = env.reset(reset_key, num_envs)

    def body(carry, step_key):
        state, ret, length, alive, counts = carry
        obs = normalize(obs_stats, state.obs) if normalize_obs else state.obs
        chain = transform.act(params, obs, step_key, deterministic)
        state, out = env.step(state, chain.action)
        ret = ret + alive * out.reward
        length = length + alive
        if len(peaks):
            counts = counts + jnp.sum(alive[:, None] * nearest_peak(chain.action, peaks), 0)
        ended = out.ended
        alive = alive * (1.0 - ended)
        return (state, ret, length, alive, counts), None

    init = (
        state,
        jnp.zeros(num_envs),
        jnp.zeros(num_envs),
        jnp.ones(num_envs),
        jnp.zeros(len(peaks)),
    )
    keys = jax.random.split(act_key, env.episode_length)
    (_, ret, length, _, counts), _ = jax.lax.scan(body, init, keys)
    return EvalResult(returns=ret, lengths=length, mode_counts=counts)
