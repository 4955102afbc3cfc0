"""Shared fixtures: small policies built with non-trivial control so the kernels are exercised."""

import jax
import pytest

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
