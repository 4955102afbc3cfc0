"""Toy environments with several equally good actions, for checking that policies stay
multimodal.

All have a 1-D action a in [-1, 1] and equal reward maxima of value 1 at the actions
`TOY_SPECS[name].peaks` (a = -0.5 and +0.5, or -0.7, 0 and +0.7 for toy/three_peaks), so "mode
fractions" (the share of actions nearest each peak) measure whether a policy keeps every mode.

- toy/bandit: every step is a whole episode (terminated). obs = [1.0]; reward = two
  Gaussian bumps exp(-(a -+ 0.5)^2 / (2 * 0.1^2)).
- toy/three_peaks: the bandit with three bumps of the same width 0.1, at a = -0.7, 0, +0.7.
  Equal in action space, but not in the policies' pre-squash x = atanh(a): there the outer
  bumps are 1 / (1 - 0.7^2) ~ 1.96 times as wide as the middle one (see
  benchmarks/multimodality.py for what that does to the diffusion policies).
- toy/double_well: the turning double well. A heading angle h (uniform at reset) turns by
  a * 90 degrees per step; reward = 1 - ((turn / 45 deg)^2 - 1)^2 = 1 - 16 (a^2 - 1/4)^2,
  a quartic well with equal maxima 1 at turns of -45 and +45 degrees and 0 at a = 0;
  obs = (cos h, sin h, t / episode_length). No termination; episodes end by truncation.

Each `ToySpec` also carries the toy's probe states (the states at which `plots` histograms a
policy's actions) and its reward as a function of the action; `registry` registers the toys
with them like any environment registered with `register_env`.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffrl_jax.envs.base import EnvCore
from diffrl_jax.types import Array, PRNGKey

BUMP_WIDTH = 0.1
THREE_PEAKS = (-0.7, 0.0, 0.7)


class ToySpec(NamedTuple):
    """peaks: actions of the equal reward maxima; episode_length: the default time limit;
    make_core(episode_length) -> EnvCore; probe_states(num_states) -> (labels, raw obs
    [S, obs_dim]); reward_of_action(a [...]) -> [...]: the reward of one step as a function
    of the (first) action."""

    peaks: tuple[float, ...]
    episode_length: int
    make_core: Callable[[int], EnvCore]
    probe_states: Callable[[int], tuple[list[str], np.ndarray]] | None = None
    reward_of_action: Callable[[Array], Array] | None = None


@struct.dataclass
class ToyState:
    """heading [] float32 (radians, in [-pi, pi)); t [] int32 steps taken."""

    heading: Array
    t: Array


def bandit_reward(action: Array) -> Array:
    """[...] -> [...]: two Gaussian bumps of height 1 at a = -0.5 and a = +0.5."""
    bump = lambda c: jnp.exp(-0.5 * ((action - c) / BUMP_WIDTH) ** 2)
    return bump(-0.5) + bump(0.5)


def three_peak_reward(action: Array) -> Array:
    """[...] -> [...]: three Gaussian bumps of width BUMP_WIDTH at a = -0.7, 0, +0.7 (maxima
    1 + 2 exp(-24.5) ~ 1 at each: the neighbouring bumps add < 5e-11)."""
    bump = lambda c: jnp.exp(-0.5 * ((action - c) / BUMP_WIDTH) ** 2)
    return sum((bump(c) for c in THREE_PEAKS), start=jnp.zeros_like(action))


def double_well_reward(action: Array) -> Array:
    """[...] -> [...]: 1 - 16 (a^2 - 1/4)^2, maxima 1 at a = +-0.5, 0 at a = 0."""
    return 1.0 - 16.0 * (action**2 - 0.25) ** 2


def _always_finite(state: ToyState) -> Array:
    return jnp.isfinite(state.heading)


def make_bandit_core(episode_length: int = 1,
                     reward_fn: Callable[[Array], Array] = bandit_reward) -> EnvCore:
    """The one-step bandit with reward reward_fn(a) (a scalar action -> []); every step
    terminates, so episode_length never binds."""
    del episode_length

    def reset(key: PRNGKey):
        del key
        return ToyState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)), jnp.ones(1)

    def step(state: ToyState, action: Array):
        next_state = dataclasses.replace(state, t=state.t + 1)
        return next_state, jnp.ones(1), reward_fn(action[0]), jnp.asarray(True)

    return EnvCore(1, 1, reset, step, _always_finite)


def make_three_peaks_core(episode_length: int = 1) -> EnvCore:
    """The one-step bandit with three equal peaks (`three_peak_reward`)."""
    return make_bandit_core(episode_length, three_peak_reward)


def make_double_well_core(episode_length: int = 10) -> EnvCore:
    """The turning double well; episode_length sets the progress feature's scale."""

    def observe(state: ToyState) -> Array:
        progress = state.t.astype(jnp.float32) / episode_length
        return jnp.stack([jnp.cos(state.heading), jnp.sin(state.heading), progress])

    def reset(key: PRNGKey):
        heading = jax.random.uniform(key, (), jnp.float32, -math.pi, math.pi)
        state = ToyState(heading, jnp.zeros((), jnp.int32))
        return state, observe(state)

    def step(state: ToyState, action: Array):
        turned = state.heading + action[0] * (math.pi / 2)
        heading = jnp.mod(turned + math.pi, 2 * math.pi) - math.pi
        next_state = ToyState(heading, state.t + 1)
        return next_state, observe(next_state), double_well_reward(action[0]), jnp.asarray(False)

    return EnvCore(3, 1, reset, step, _always_finite)


def bandit_probe_states(num_states: int) -> tuple[list[str], np.ndarray]:
    """The bandits' one state whatever num_states is: (["the state (obs=[1])"], [[1.0]])."""
    del num_states
    return ["the state (obs=[1])"], np.ones((1, 1), np.float32)


def double_well_probe_states(num_states: int) -> tuple[list[str], np.ndarray]:
    """num_states headings h = -pi + 2 pi i / num_states (spread over [-pi, pi)) at t = 0:
    obs [num_states, 3] = (cos h, sin h, 0), labelled like "h=-90°"."""
    headings = -math.pi + 2 * math.pi * np.arange(num_states) / num_states
    obs = np.stack([np.cos(headings), np.sin(headings), np.zeros(num_states)], axis=-1)
    labels = [f"h={round(math.degrees(h))}°" for h in headings]
    return labels, obs.astype(np.float32)


TOY_SPECS: dict[str, ToySpec] = {
    "toy/bandit": ToySpec(peaks=(-0.5, 0.5), episode_length=1, make_core=make_bandit_core,
                          probe_states=bandit_probe_states, reward_of_action=bandit_reward),
    "toy/double_well": ToySpec(
        peaks=(-0.5, 0.5), episode_length=10, make_core=make_double_well_core,
        probe_states=double_well_probe_states, reward_of_action=double_well_reward,
    ),
    "toy/three_peaks": ToySpec(peaks=THREE_PEAKS, episode_length=1,
                               make_core=make_three_peaks_core,
                               probe_states=bandit_probe_states,
                               reward_of_action=three_peak_reward),
}
TOY_PEAKS: dict[str, tuple[float, ...]] = {name: s.peaks for name, s in TOY_SPECS.items()}


def nearest_peak(actions: Array, peaks: Sequence[float]) -> Array:
    """actions [..., A] (the first dimension is used) -> one-hot [..., P] of the nearest peak."""
    peak_array = jnp.asarray(peaks, jnp.float32)
    nearest = jnp.argmin(jnp.abs(actions[..., :1] - peak_array), axis=-1)
    return jax.nn.one_hot(nearest, len(peaks))


def mode_fractions(actions: Array, peaks: Sequence[float]) -> Array:
    """actions [..., A] (the first dimension is used) -> [P]: share nearest each peak."""
    onehot = nearest_peak(actions, peaks)
    return jnp.mean(onehot.reshape(-1, len(peaks)), axis=0)
