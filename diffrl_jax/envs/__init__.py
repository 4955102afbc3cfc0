"""Environments: one batched, auto-resetting interface over brax, MuJoCo Playground (DM
Control suite), toy environments and the user's own (`register_env`), and observation
normalisation with running statistics."""

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
from diffrl_jax.envs.registry import (
    BRAX_EPISODE_LENGTH,
    EnvSpec,
    check_env_name,
    env_spec,
    list_envs,
    make_env,
    peaks_of,
    probe_states_of,
    register_env,
    registered_envs,
    unregister_env,
)
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
)
from diffrl_jax.envs.user_modules import import_env_modules

__all__ = [
    "BRAX_BACKENDS",
    "BRAX_EPISODE_LENGTH",
    "DMC_TASKS",
    "KNOWN_BROKEN",
    "PLAYGROUND_TASKS",
    "TOY_PEAKS",
    "TOY_SPECS",
    "EnvCore",
    "EnvSpec",
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
    "env_spec",
    "import_env_modules",
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
    "probe_states_of",
    "register_env",
    "registered_envs",
    "unregister_env",
    "update_stats",
]
