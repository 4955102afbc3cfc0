"""The on-policy trainer: counters and schedule, the ratio at the start of each update,
the learned entropy coefficient, learning-rate annealing, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax import ConfigError
from diffrl_jax.experiment import make_config
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.training import OnPolicyConfig, schedule_of, train
from diffrl_jax.learners import clipped_adam

TINY = dict(
    total_env_steps=128, num_envs=4, unroll_length=4, num_epochs=2, num_minibatches=2,
    num_evals=2, num_eval_envs=8, value_hidden=(16,), entropy_coef=0.05,
    diffusion=DiffusionPolicyConfig(num_steps=3, hidden_sizes=(16,), time_hidden=8),
    gaussian=GaussianPolicyConfig(hidden_sizes=(16,)),
)


def tiny_config(algo="diffppo", env="toy/bandit", **overrides):
    return OnPolicyConfig(algo=algo, env=env, **dict(TINY, **overrides)).validate()


@pytest.mark.parametrize("algo", ["ppo", "diffppo"])
def test_counters_schedule_and_ratio_at_the_first_minibatch(algo):
    config = tiny_config(algo, env="toy/double_well")
    sched = schedule_of(config)
    state, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    assert sched["total_env_steps"] == 128 and sched["iters_per_eval"] == 4
    assert int(state.env_steps) == 128
    np.testing.assert_array_equal(metrics["env_steps"], [64, 128])
    iterations = sched["iters_per_eval"] * config.num_evals
    assert int(state.updates) == iterations * config.num_epochs * config.num_minibatches
    # the first minibatch of every update sees the acting policy: ratio 1 (normalised obs
    # frozen over the rollout and its update); later minibatches have moved away from it
    assert float(np.max(metrics["first_minibatch_ratio_deviation"])) < 1e-5
    assert float(np.max(metrics["approx_kl"])) > 0
    # double well episodes last 10 steps: 16 steps x 4 envs per interval -> 4 or more ended
    assert np.all(metrics["train_episodes"] >= 4)
    assert metrics["eval_mode_counts"].shape == (2, 2)
    np.testing.assert_allclose(metrics["eval_length"], 10.0)
    for name in ("policy_loss", "value_loss", "entropy", "clip_fraction", "advantage_std"):
        assert metrics[name].shape == (config.num_evals,) and np.all(np.isfinite(metrics[name]))


def test_observation_statistics_count_every_rollout_observation():
    config = tiny_config(env="toy/double_well")
    state, _ = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    assert float(state.obs_stats.count) == 128.0
    unnormalised = tiny_config(env="toy/double_well", normalize_obs=False)
    state, _ = jax.jit(lambda k: train(k, unnormalised))(jax.random.PRNGKey(0))
    assert float(state.obs_stats.count) == 0.0


def test_entropy_coefficient_fixed_or_learned_towards_the_target():
    fixed = tiny_config()
    _, metrics = jax.jit(lambda k: train(k, fixed))(jax.random.PRNGKey(0))
    np.testing.assert_allclose(metrics["entropy_coef"], 0.05, rtol=1e-6)
    # a target far above the reachable entropy raises c; far below lowers it
    for multiplier, direction in ((-20.0, 1.0), (20.0, -1.0)):
        learned = tiny_config(learn_entropy_coef=True, entropy_coef_lr=0.1,
                              target_entropy_multiplier=multiplier)
        state, metrics = jax.jit(lambda k: train(k, learned))(jax.random.PRNGKey(0))
        change = float(np.exp(state.learner.log_entropy_coef)) - 0.05
        assert direction * change > 0.01, (multiplier, metrics["entropy_coef"], metrics["entropy"])


def test_dppo_with_zero_entropy_coefficient_runs_without_soft_reward():
    config = tiny_config(entropy_coef=0.0)
    _, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(metrics["entropy_coef"], 0.0)
    np.testing.assert_array_equal(metrics["noising_loss"], 0.0)
    assert np.all(np.isfinite(metrics["policy_loss"]))


def test_annealed_learning_rate_decays_linearly_to_zero():
    decay_steps = 4
    opt = clipped_adam(1e-2, 1e6, decay_steps)
    params = jnp.zeros(3)
    state = opt.init(params)
    steps = []
    for _ in range(decay_steps + 1):
        update, state = opt.update(jnp.ones(3), state)
        steps.append(float(jnp.abs(update).max()))
    # Adam's normalised step with a constant gradient is lr itself: 1e-2 * (1 - count / 4)
    np.testing.assert_allclose(steps, [1e-2, 7.5e-3, 5e-3, 2.5e-3, 0.0], rtol=1e-3, atol=1e-9)
    constant = clipped_adam(1e-2, 1e6, None)
    update, _ = constant.update(jnp.ones(3), constant.init(params))
    np.testing.assert_allclose(jnp.abs(update), 1e-2, rtol=1e-3)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="OnPolicyConfig.algo must be one of"):
        tiny_config(algo="a2c")
    with pytest.raises(ConfigError, match=r"num_minibatches \(5\) must divide"):
        tiny_config(num_minibatches=5)
    with pytest.raises(ConfigError, match=r"OnPolicyConfig.gae_lambda must lie in \[0.0, 1.0\]"):
        tiny_config(gae_lambda=1.5)
    with pytest.raises(ConfigError, match="OnPolicyConfig.entropy_coef must be a finite number >= 0"):
        tiny_config(entropy_coef=-0.1)
    with pytest.raises(ConfigError, match="entropy_coef .the initial value when learn_entropy_coef."):
        tiny_config(entropy_coef=0.0, learn_entropy_coef=True)
    with pytest.raises(ConfigError, match="OnPolicyConfig.advantage_normalization must be one of"):
        tiny_config(advantage_normalization="rank")
    with pytest.raises(ConfigError, match="is less than num_evals=2 rollouts"):
        tiny_config(total_env_steps=20)
    with pytest.raises(ConfigError, match="OnPolicyConfig.anneal_lr must be a bool"):
        tiny_config(anneal_lr="yes")
    with pytest.raises(ValueError, match=r"unknown config fields \['tau'\]"):
        make_config("ppo", "toy/bandit", tau=0.1)
