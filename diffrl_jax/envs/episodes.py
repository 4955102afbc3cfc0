"""Episode bookkeeping: batch an `EnvCore` over N envs into an `Environment`.

Per step and env: clip the action to [-1, 1]; step the core; flag non-finite obs, reward or
physics (reward -> 0, next_obs -> the observation acted on, counted as terminated);
truncate when `episode_step` reaches `episode_length` without termination; reset every
ended env from a fresh key. The resets run under `lax.cond(any ended)`, which under an outer
`jax.vmap` (a seed sweep) becomes a select that computes them every step.
"""

from numbers import Integral
from typing import Any

import jax
import jax.numpy as jnp

from diffrl_jax.envs.base import EnvCore, Environment, EnvState, StepOutput
from diffrl_jax.types import Array, PRNGKey
from diffrl_jax.validation import require_int_at_least


def make_environment(name: str, core: EnvCore, episode_length: int) -> Environment:
    """Returns the batched, auto-resetting `Environment` of `core`."""
    require_int_at_least("make_environment", "episode_length", episode_length, 1)

    def reset_batch(key: PRNGKey, num_envs: int) -> tuple[Any, Array]:
        physics, obs = jax.vmap(core.reset)(jax.random.split(key, num_envs))
        obs = _check_obs(name, obs, num_envs, core.obs_dim)
        return _strong(physics), obs.astype(jnp.float32)

    def reset(key: PRNGKey, num_envs: int) -> EnvState:
        if isinstance(num_envs, bool) or not isinstance(num_envs, Integral) or num_envs < 1:
            raise ValueError(
                f"{name}: num_envs must be a static Python int >= 1 (mark it static under "
                f"jit), got {num_envs!r}"
            )
        key, reset_key = jax.random.split(key)
        physics, obs = reset_batch(reset_key, num_envs)
        return EnvState(
            physics=physics,
            obs=obs,
            episode_step=jnp.zeros((num_envs,), jnp.int32),
            key=key,
        )

    def step(state: EnvState, action: Array) -> tuple[EnvState, StepOutput]:
        n = state.obs.shape[0]
        if action.shape != (n, core.action_dim):
            raise ValueError(
                f"{name}: action must have shape [num_envs={n}, action_dim={core.action_dim}],"
                f" got {action.shape}"
            )
        action = jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
        physics, obs, reward, terminal = jax.vmap(core.step)(state.physics, action)
        physics = _cast_like(physics, state.physics, name)
        obs = _check_obs(name, obs, n, core.obs_dim).astype(jnp.float32)
        reward = jnp.broadcast_to(reward, (n,)).astype(jnp.float32)
        terminal = jnp.broadcast_to(terminal, (n,)).astype(jnp.float32) > 0.5

        finite = (
            jnp.all(jnp.isfinite(obs), axis=-1)
            & jnp.isfinite(reward)
            & jax.vmap(core.physics_finite)(physics)
        )
        next_obs = jnp.where(finite[:, None], obs, state.obs)
        reward = jnp.where(finite, reward, 0.0)
        terminated = terminal | ~finite
        episode_step = state.episode_step + 1
        truncated = (episode_step >= episode_length) & ~terminated
        ended = terminated | truncated

        key, reset_key = jax.random.split(state.key)

        def with_resets(_):
            fresh, fresh_obs = reset_batch(reset_key, n)
            fresh = _cast_like(fresh, physics, name)
            pick = lambda new, old: jnp.where(_expand(ended, new), new, old)
            return jax.tree.map(pick, fresh, physics), pick(fresh_obs, next_obs)

        physics, obs_now = jax.lax.cond(
            jnp.any(ended), with_resets, lambda _: (physics, next_obs), None
        )
        new_state = EnvState(
            physics=physics,
            obs=obs_now,
            episode_step=jnp.where(ended, 0, episode_step).astype(jnp.int32),
            key=key,
        )
        out = StepOutput(
            next_obs=next_obs,
            reward=reward,
            terminated=terminated.astype(jnp.float32),
            truncated=truncated.astype(jnp.float32),
            nonfinite=(~finite).astype(jnp.float32),
        )
        return new_state, out

    return Environment(
        name=name,
        obs_dim=core.obs_dim,
        action_dim=core.action_dim,
        episode_length=episode_length,
        reset=reset,
        step=step,
    )


def _expand(mask: Array, like: Array) -> Array:
    """[N] mask -> [N, 1, ...] broadcastable against like [N, ...]."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _strong(tree: Any) -> Any:
    """Drops weak types so scan carries and cond branches keep one type per leaf."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


def _cast_like(tree: Any, like: Any, name: str) -> Any:
    """Casts tree's leaves to like's dtypes; raises if the structures differ."""
    if jax.tree.structure(tree) != jax.tree.structure(like):
        raise ValueError(
            f"{name}: the backend's step returned a physics state whose structure differs "
            f"from its reset's:\n{jax.tree.structure(tree)}\nvs\n{jax.tree.structure(like)}"
        )
    return jax.tree.map(lambda x, r: jnp.asarray(x, dtype=r.dtype), tree, like)


def _check_obs(name: str, obs: Any, n: int, obs_dim: int) -> Array:
    """Raises unless obs is one flat array [n, obs_dim] (e.g. not a dict observation)."""
    if not isinstance(obs, jax.Array) or obs.shape != (n, obs_dim):
        shape = getattr(obs, "shape", type(obs).__name__)
        raise ValueError(
            f"{name}: the backend returned observations of shape {shape}, expected one "
            f"array of shape [{n}, {obs_dim}]"
        )
    return obs
