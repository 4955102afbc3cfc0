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
