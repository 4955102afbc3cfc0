"""Dispatch by algorithm: the loop of an algorithm (`trainer_for`) and the run of a config
(`train`, `make_program`, `schedule_of`), whichever loop its algorithm uses."""

from collections.abc import Callable
from typing import Any, NamedTuple

from diffrl_jax.training import off_policy, on_policy
from diffrl_jax.training.algorithms import algorithm, algorithm_names, build
from diffrl_jax.training.off_policy import OffPolicyConfig
from diffrl_jax.training.on_policy import OnPolicyConfig
from diffrl_jax.training.program import TrainProgram, run_program


class Trainer(NamedTuple):
    """An algorithm's loop: config_class(algo=..., env=..., ...) -> config; schedule_of(config)
    -> dict with "total_env_steps"; make_program(config, on_interval=None,
    batch_sharding=None) -> TrainProgram (the run as init + interval; `train` scans it);
    build(config) -> (env, policy, transform)."""

    config_class: type
    schedule_of: Callable[[Any], dict[str, int]]
    make_program: Callable[..., TrainProgram]
    build: Callable[[Any], tuple[Any, ...]]


LOOP_TRAINERS: dict[str, Trainer] = {
    "off_policy": Trainer(OffPolicyConfig, off_policy.schedule_of, off_policy.make_program, build),
    "on_policy": Trainer(OnPolicyConfig, on_policy.schedule_of, on_policy.make_program, build),
}


def trainer_for(algo: str) -> Trainer:
    """The loop of `algo`; ValueError naming the allowed algorithms otherwise."""
    return LOOP_TRAINERS[algorithm(algo).loop]


def algos() -> tuple[str, ...]:
    """Every algorithm's name, built-in and registered (`register_algorithm`)."""
    return algorithm_names()


ALGOS = algorithm_names()  # the built-in algorithms; `algos()` includes registered ones
OFF_POLICY_ALGOS = algorithm_names("off_policy")
ON_POLICY_ALGOS = algorithm_names("on_policy")


def train(key: Any, config: Any, on_interval: Callable[[dict[str, Any]], None] | None = None,
          batch_sharding: Any = None):
    """Trains with the loop of config.algo for config.total_env_steps: (final state,
    per-interval metrics, each leaf [num_evals, ...]). Pure: jit it, vmap it over keys and
    configs (a grid of traced hyperparameters x seeds is one compile).

    on_interval: called while tracing, inside the interval scan, with that interval's
    metrics (a `jax.debug.callback` in it reports from the running program; JAX does not
    write programs with host callbacks to its persistent cache). batch_sharding: a
    `diffrl_jax.parallel.BatchSharding` that keeps the environment batch split over a mesh
    axis (use `diffrl_jax.training.mesh_train`); None: no sharding constraints."""
    return run_program(make_program(config, on_interval, batch_sharding), key)


def make_program(config: Any, on_interval: Callable[[dict[str, Any]], None] | None = None,
                 batch_sharding: Any = None) -> TrainProgram:
    """The run of config.algo as a `TrainProgram` (init, interval, num_intervals):
    `run_program(make_program(config), key)` is `train(key, config)`."""
    return trainer_for(config.algo).make_program(config, on_interval, batch_sharding)


def schedule_of(config: Any) -> dict[str, int]:
    """The static loop lengths of config's loop, including "total_env_steps"."""
    return trainer_for(config.algo).schedule_of(config)
