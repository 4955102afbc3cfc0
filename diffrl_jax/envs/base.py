"""The batched environment interface every trainer is written against.

An `Environment` is a named tuple of pure functions over an explicit `EnvState`, batched over
N environments. `step` clips the action to [-1, 1], ends episodes (termination from the
backend, truncation at `episode_length`, or non-finite physics) and auto-resets the ended
environments with fresh random initial states. An `EnvCore` is one unbatched environment as
pure functions; `make_environment` (in `episodes.py`) turns a core into an `Environment`.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from flax import struct

from diffrl_jax.types import Array, PRNGKey


@struct.dataclass
class EnvState:
    """The state of N environments.

    physics:      the backend state pytree, every leaf with leading dim N (a brax State, or a
                  toy env's state).
    obs:          [N, S] float32, the observation the agent acts on now (after any auto-reset).
    episode_step: [N] int32, steps taken in the current episode.
    key:          PRNG key for future resets.
    """

    physics: Any
    obs: Array
    episode_step: Array
    key: PRNGKey


@struct.dataclass
class StepOutput:
    """What one batched step produced; every field float32.

    next_obs:   [N, S] the observation reached by this step BEFORE auto-reset (the final
                observation when an episode ends; bootstrap from it). Always finite: where
                the physics went non-finite it is the observation the agent acted on.
    reward:     [N] (0 where the physics went non-finite).
    terminated: [N] 1.0 = true terminal (no bootstrap); includes non-finite steps.
    truncated:  [N] 1.0 = time limit reached and not terminated (bootstrap).
    nonfinite:  [N] 1.0 = the physics produced NaN/inf this step; the episode ends.
    """

    next_obs: Array
    reward: Array
    terminated: Array
    truncated: Array
    nonfinite: Array

    @property
    def ended(self) -> Array:
        """[N] 1.0 where the episode ended this step (terminated, truncated or non-finite)."""
        return jnp.maximum(self.terminated, self.truncated)


class Environment(NamedTuple):
    """N batched environments as pure, jit- and vmap-safe functions.

    name:           the registered name, e.g. "brax/hopper" or "toy/bandit".
    obs_dim:        S.
    action_dim:     A.
    episode_length: steps after which an episode is truncated.
    reset(key, num_envs) -> EnvState; num_envs is a static Python int (mark it static
        under jit).
    step(state, action [N, A]) -> (EnvState, StepOutput); the action is clipped to
        [-1, 1]; ended environments are reset with fresh random initial states.
    """

    name: str
    obs_dim: int
    action_dim: int
    episode_length: int
    reset: Callable[[PRNGKey, int], EnvState]
    step: Callable[[EnvState, Array], tuple[EnvState, StepOutput]]


class EnvCore(NamedTuple):
    """One unbatched environment as pure functions, the layer below `Environment`.

    obs_dim, action_dim: S and A.
    reset(key) -> (physics, obs [S]): a random initial state.
    step(physics, action [A]) -> (physics, obs [S], reward [], terminal []): action already
        clipped to [-1, 1]; terminal is bool or 0/1 (the backend's own "done", never a
        time limit). The physics pytree must keep the structure and dtypes of reset's.
    physics_finite(physics) -> [] bool: False where the backend state itself went
        non-finite (obs and reward are checked separately).
    """

    obs_dim: int
    action_dim: int
    reset: Callable[[PRNGKey], tuple[Any, Array]]
    step: Callable[[Any, Array], tuple[Any, Array, Array, Array]]
    physics_finite: Callable[[Any], Array]
