"""A training run as two pure pieces: the initial state and one evaluation interval.

`train(key, config)` is `program.init(key)` followed by a `lax.scan` of `program.interval`
over the run's `num_intervals`, one compiled program. Drivers that need the state between
intervals (checkpoints, resume) run the same interval function in chunks instead:
`run_intervals(program, state, n)` is a scan over n intervals, and consecutive chunks give the
same state as one scan over their sum (the scan body is the same computation).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import struct

from diffrl_jax.envs import EnvState, RunningStats
from diffrl_jax.types import Array, PRNGKey


class TrainProgram(NamedTuple):
    """init(key) -> state (after any prefill); interval(state) -> (state, metrics) runs one
    evaluation interval (training steps, then evaluation) and returns its reduced metrics;
    num_intervals: how many intervals the configured run has (config.num_evals)."""

    init: Callable[[PRNGKey], Any]
    interval: Callable[[Any], tuple[Any, dict[str, Array]]]
    num_intervals: int


def run_intervals(program: TrainProgram, state: Any, num_intervals: int) -> tuple[Any, dict[str, Array]]:
    """num_intervals intervals from `state`: (state, metrics with leaves [num_intervals, ...])."""
    return jax.lax.scan(lambda ts, _: program.interval(ts), state, None, length=num_intervals)


def run_program(program: TrainProgram, key: PRNGKey) -> tuple[Any, dict[str, Array]]:
    """The whole run: init, then every interval."""
    return run_intervals(program, program.init(key), program.num_intervals)


class LoopState(struct.PyTreeNode):
    """What every loop carries: the learner's state (`SACState`, `WPOState`, `PPOState`, ...)
    and the loop's own (environments, observation statistics, counters); a loop's state class
    adds its own fields (the off-policy replay buffer)."""

    learner: Any
    env_state: EnvState
    obs_stats: RunningStats
    episode_return: Array  # [N] running return of the current training episodes
    key: PRNGKey
    env_steps: Array
    updates: Array

    @property
    def policy_params(self) -> Any:
        """The acting policy's parameters (a learner state's `policy_params`, a field of the
        built-in ones)."""
        return self.learner.policy_params
