"""Shared fixtures: small policies built with non-trivial control so the kernels are exercised."""

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import pytest

try:
    import fcntl
except ImportError:  # not POSIX: no cross-worker sharing
    fcntl = None

from diffrl_jax.policies import DiffusionPolicyConfig, make_diffusion_policy

OBS_DIM = 3
ACTION_DIM = 2


def small_diffusion_config(**overrides) -> DiffusionPolicyConfig:
    """A small network whose control is far from zero (init scale 0.5), so that f matters."""
    settings = dict(
        num_steps=4, hidden_sizes=(16, 16), time_hidden=8, control_init_scale=0.5
    )
    settings.update(overrides)
    return DiffusionPolicyConfig(**settings)


@pytest.fixture
def diffusion_policy():
    return make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())


@pytest.fixture
def diffusion_params(diffusion_policy):
    return diffusion_policy.init(jax.random.PRNGKey(0))


def pytest_collection_modifyitems(config, items):
    """Slow learning checks first (stable order otherwise): with `-n 2 --maxschedchunk 1`
    the two workers are handed tests a few at a time in this order, start on the minutes-long
    checks and fill in with the quick tests, so they finish together."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def computed_once(tmp_path_factory, name: str, compute: Callable[[Path], Any]) -> tuple[Any, Path]:
    """(compute(directory), directory) for an expensive module fixture, computed once per
    test session: under pytest-xdist the first worker to get here computes it (holding a
    file lock) and the others load its pickled result (the pytest-xdist recipe for
    session-wide fixtures), so its compiles are paid once. The directory is shared: tests
    must treat it as read-only (copy it to change it)."""
    if "PYTEST_XDIST_WORKER" not in os.environ or fcntl is None:
        directory = tmp_path_factory.mktemp(name)
        return compute(directory), directory
    root = tmp_path_factory.getbasetemp().parent  # shared by this session's workers
    directory, done = root / name, root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            directory.mkdir(exist_ok=True)
            done.write_bytes(pickle.dumps(compute(directory)))
        return pickle.loads(done.read_bytes()), directory
