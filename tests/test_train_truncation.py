"""Random training truncation (`train_truncation_prob`, issue 19.9): each training episode is
also truncated with probability p per step, bootstrapped like the time limit; p = 0 changes
nothing. Checked on the turning double well, whose episodes never terminate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffrl_jax.envs import init_stats, make_env
from diffrl_jax.policies import GaussianPolicyConfig, make_gaussian_policy
from diffrl_jax.training import OnPolicyConfig
from diffrl_jax.training.collection import step_envs
from diffrl_jax.transforms import make_diffusion_loss
from diffrl_jax.validation import ConfigError

N, STEPS = 256, 40


def rollout_ends(p: float, episode_length: int = 10_000):
    """(truncated [STEPS, N], terminated [STEPS, N], obs [STEPS, N, obs_dim]) of STEPS steps."""
    env = make_env("toy/double_well", episode_length=episode_length)
    policy = make_gaussian_policy(env.obs_dim, env.action_dim, GaussianPolicyConfig(hidden_sizes=(8,)))
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))

    def step(state, key):
        state, transition, _, _ = step_envs(env, transform, params, state, init_stats(env.obs_dim),
                                            jnp.zeros(N), key, False, truncation_prob=p)
        return state, (transition.truncated, transition.terminated, transition.obs)

    state = env.reset(jax.random.PRNGKey(1), N)
    _, out = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.PRNGKey(2), STEPS)))(state)
    return tuple(np.asarray(x) for x in out)


def test_zero_probability_changes_nothing_and_only_the_time_limit_truncates():
    truncated, terminated, _ = rollout_ends(0.0, episode_length=7)
    assert not terminated.any()
    # every env truncates exactly at steps 7, 14, ... of the rollout
    expected = np.zeros(STEPS, bool)
    expected[6::7] = True
    np.testing.assert_array_equal(truncated, np.broadcast_to(expected[:, None], truncated.shape))
    # (that p = 0 leaves every random stream alone: tests/test_pins.py, recorded before)


def test_truncation_rate_matches_the_probability():
    p = 0.1
    truncated, terminated, _ = rollout_ends(p)
    assert not terminated.any()
    count, trials = int(truncated.sum()), truncated.size
    low, high = stats.binom.interval(0.999, trials, p)
    assert low <= count <= high, (count, trials * p)
    # every step of every env may be cut: the first step too, not only late ones
    assert truncated[0].any() and truncated[-1].any()


def test_probability_one_minus_epsilon_truncates_every_step():
    truncated, _, _ = rollout_ends(1.0 - 1e-7)
    assert truncated.all()


@pytest.mark.parametrize("p", [-0.1, 1.0, 2.0])
def test_invalid_probability_is_refused_naming_the_field(p):
    with pytest.raises(ConfigError, match=r"train_truncation_prob must lie in \[0, 1\)"):
        OnPolicyConfig(algo="ppo", env="toy/bandit", train_truncation_prob=p).validate()
