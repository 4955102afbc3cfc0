"""Environments: one batched, auto-resetting interface over brax, MuJoCo Playground (DM
Control suite) and toy environments, and observation normalisation with running statistics."""

from diffrl_jax.envs.base import EnvCore, Environment, EnvState, StepOutput
from diffrl_jax.envs.brax_core import BRAX_BACKENDS, brax_env_names, make_brax_core
from diffrl_jax.envs.episodes import make_environment
from diffrl_jax.envs.normalization import RunningStats, init_stats, normalize, update_stats
from diffrl_jax.envs.playground import (
    DMC_TASKS,
    KNOWN_BROKEN,
    PLAYGROUND_TASKS,
    make_playground_core,
    playground_env_names,
)
from diffrl_jax.envs.registry import BRAX_EPISODE_LENGTH, check_env_name, list_envs, make_env
from diffrl_jax.envs.toy import (
    TOY_PEAKS,
    TOY_SPECS,
    ToySpec,
    ToyState,
    bandit_reward,
    double_well_reward,
    make_bandit_core,
    make_double_well_core,
    mode_fractions,
    nearest_peak,
    peaks_of,
)

__all__ = [
    "BRAX_BACKENDS",
    "BRAX_EPISODE_LENGTH",
    "DMC_TASKS",
    "KNOWN_BROKEN",
    "PLAYGROUND_TASKS",
    "TOY_PEAKS",
    "TOY_SPECS",
    "EnvCore",
    "EnvState",
    "Environment",
    "RunningStats",
    "StepOutput",
    "ToySpec",
    "ToyState",
    "bandit_reward",
    "brax_env_names",
    "check_env_name",
    "double_well_reward",
    "init_stats",
    "list_envs",
    "make_bandit_core",
    "make_brax_core",
    "make_double_well_core",
    "make_env",
    "make_environment",
    "make_playground_core",
    "mode_fractions",
    "nearest_peak",
    "normalize",
    "peaks_of",
    "playground_env_names",
    "update_stats",
]
