"""Brax environments as `EnvCore`s: the raw `brax.envs` env, no brax wrappers.

Brax's own `done` is the termination flag; time limits and auto-resets are added by
`make_environment`. The physics pytree is brax's `State` (pipeline state, obs, reward, done,
metrics, info). brax is imported lazily: importing it takes about a second.
"""

from typing import cast

import jax
import jax.numpy as jnp

from diffrl_jax.envs.base import EnvCore
from diffrl_jax.types import Array

BRAX_BACKENDS = ("mjx", "spring", "positional", "generalized")


def brax_env_names() -> list[str]:
    """The environments registered in `brax.envs`, sorted (e.g. "ant", "hopper")."""
    from brax import envs

    # brax has no public listing; its registry dict is what get_environment reads.
    return sorted(envs._envs)


def make_brax_core(env_name: str, backend: str = "mjx") -> EnvCore:
    """The raw brax env `env_name` on physics `backend`, as an unbatched `EnvCore`."""
    names = brax_env_names()
    if env_name not in names:
        raise ValueError(f"unknown brax environment {env_name!r}; allowed: {names}")
    if backend not in BRAX_BACKENDS:
        raise ValueError(f"unknown brax backend {backend!r}; allowed: {list(BRAX_BACKENDS)}")
    from brax import envs

    try:
        env = envs.get_environment(env_name, backend=backend)
    except ValueError as e:  # e.g. swimmer supports only "generalized"
        raise ValueError(
            f"brax environment {env_name!r} cannot be built with backend {backend!r}: {e}"
        ) from e
    obs_shape = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
    if not isinstance(obs_shape, jax.ShapeDtypeStruct) or len(obs_shape.shape) != 1:
        raise ValueError(
            f"brax environment {env_name!r} has observations {obs_shape}; only flat "
            "vector observations are supported"
        )

    # brax types obs as an array or a dict of arrays; this env's is one flat array (checked above)
    def reset(key):
        state = env.reset(key)
        return state, cast(Array, state.obs)

    def step(state, action: Array):
        state = env.step(state, action)
        return state, cast(Array, state.obs), state.reward, state.done

    def physics_finite(state) -> Array:
        pipeline = state.pipeline_state
        parts = [getattr(pipeline, f, None) for f in ("q", "qd")] if pipeline is not None else []
        finite = [jnp.all(jnp.isfinite(p)) for p in parts if p is not None]
        return jnp.all(jnp.asarray(finite)) if finite else jnp.asarray(True)

    return EnvCore(
        obs_dim=int(obs_shape.shape[0]),
        action_dim=int(env.action_size),
        reset=reset,
        step=step,
        physics_finite=physics_finite,
    )
