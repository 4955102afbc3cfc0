"""Trainers: each run is one pure function train(key, config) -> (state, metrics).

`trainer_for(algo)` gives the config class, schedule and train function of an algorithm, so
callers (the experiment command, sweeps) treat every algorithm alike.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from diffrl_jax.training import off_policy, on_policy
from diffrl_jax.training.off_policy import OFF_POLICY_ALGOS, OffPolicyConfig, OffPolicyState
from diffrl_jax.training.on_policy import ON_POLICY_ALGOS, OnPolicyConfig, OnPolicyState
from diffrl_jax.training.program import TrainProgram, run_intervals, run_program


class Trainer(NamedTuple):
    """config_class(algo=..., env=..., ...) -> config; schedule_of(config) -> dict with
    "total_env_steps"; train(key, config, on_interval=None, batch_sharding=None) ->
    (state, metrics); make_program(config, on_interval=None, batch_sharding=None) ->
    TrainProgram (the same run as init + interval, for drivers that checkpoint);
    build(config) -> (env, policy, transform, critic or value network)."""

    config_class: type
    schedule_of: Callable[[Any], dict[str, int]]
    train: Callable[..., tuple[Any, dict[str, Any]]]
    make_program: Callable[..., TrainProgram]
    build: Callable[[Any], tuple[Any, ...]]


TRAINERS: dict[str, Trainer] = {
    **{algo: Trainer(OffPolicyConfig, off_policy.schedule_of, off_policy.train,
                     off_policy.make_program, off_policy.build)
       for algo in OFF_POLICY_ALGOS},
    **{algo: Trainer(OnPolicyConfig, on_policy.schedule_of, on_policy.train,
                     on_policy.make_program, on_policy.build)
       for algo in ON_POLICY_ALGOS},
}
ALGOS = tuple(TRAINERS)


def trainer_for(algo: str) -> Trainer:
    """The trainer of `algo`; ValueError naming the allowed algorithms otherwise."""
    if algo not in TRAINERS:
        raise ValueError(f"unknown algorithm {algo!r}; allowed: {list(ALGOS)}")
    return TRAINERS[algo]


def train(key: Any, config: Any, on_interval: Callable[[dict[str, Any]], None] | None = None,
          batch_sharding: Any = None):
    """Trains with the trainer of config.algo: train(key, config) -> (state, metrics), pure,
    jit- and vmap-able (see `off_policy.train` and `on_policy.train`). batch_sharding: a
    `diffrl_jax.parallel.BatchSharding` (use `diffrl_jax.parallel.mesh_train`)."""
    return trainer_for(config.algo).train(key, config, on_interval, batch_sharding)


def make_program(config: Any, on_interval: Callable[[dict[str, Any]], None] | None = None,
                 batch_sharding: Any = None) -> TrainProgram:
    """The run of config.algo as a `TrainProgram` (init, interval, num_intervals):
    `run_program(make_program(config), key)` is `train(key, config)`."""
    return trainer_for(config.algo).make_program(config, on_interval, batch_sharding)


def schedule_of(config: Any) -> dict[str, int]:
    """The static loop lengths of config's trainer, including "total_env_steps"."""
    return trainer_for(config.algo).schedule_of(config)

__all__ = [
    "ALGOS",
    "OFF_POLICY_ALGOS",
    "ON_POLICY_ALGOS",
    "OffPolicyConfig",
    "OffPolicyState",
    "OnPolicyConfig",
    "OnPolicyState",
    "TRAINERS",
    "TrainProgram",
    "Trainer",
    "make_program",
    "run_intervals",
    "run_program",
    "schedule_of",
    "trainer_for",
    "train",
]
