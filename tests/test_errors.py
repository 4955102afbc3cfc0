"""Bad input gets a clear error naming the problem."""

import jax
import jax.numpy as jnp
import pytest

from conftest import ACTION_DIM, OBS_DIM, small_diffusion_config
from diffrl_jax import ConfigError, make_diffusion_loss, make_diffusion_policy, make_gaussian_policy
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig, step_schedule
from diffrl_jax.transforms import ChainTransition


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_steps", 0, "num_steps must be an integer >= 1"),
        ("num_steps", 2.5, "num_steps must be an integer >= 1"),
        ("prior_std", 0.0, "prior_std must be a finite number > 0"),
        ("prior_std", -3.0, "prior_std must be a finite number > 0"),
        ("prior_std", float("nan"), "prior_std must be a finite number > 0"),
        ("dt0", 0.0, "dt0 must be a finite number > 0"),
        ("schedule", "sigmoid", "schedule must be one of ['linear', 'cosine', 'constant']"),
        ("friction", -1.0, "friction must be a finite number > 0"),
        ("hidden_sizes", (), "hidden_sizes must be a non-empty tuple"),
        ("activation", "swish2", "activation must be one of"),
        ("squash_clip", 1.0, "squash_clip must lie in (0.0, 1.0)"),
        ("learn_friction", "yes", "learn_friction must be a bool"),
    ],
)
def test_invalid_diffusion_config_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=r"DiffusionPolicyConfig\." + field) as info:
        DiffusionPolicyConfig(**{field: value})
    assert message in str(info.value)


def test_invalid_gaussian_config_names_the_field():
    with pytest.raises(ConfigError, match="GaussianPolicyConfig.min_std"):
        GaussianPolicyConfig(min_std=0.0)


def test_unknown_schedule_name_in_schedule_function():
    with pytest.raises(ValueError, match="unknown step schedule 'exp'"):
        step_schedule("exp", 8, 0.17)


def test_invalid_dimensions():
    with pytest.raises(ConfigError, match="action_dim"):
        make_diffusion_policy(OBS_DIM, 0)
    with pytest.raises(ConfigError, match="obs_dim"):
        make_gaussian_policy(0, ACTION_DIM)


@pytest.mark.parametrize("kind", ["diffusion", "gaussian"])
def test_wrong_shapes_are_rejected(kind):
    if kind == "diffusion":
        policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())
    else:
        policy = make_gaussian_policy(OBS_DIM, ACTION_DIM, GaussianPolicyConfig((8,)))
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.zeros((4, OBS_DIM))
    latent = jnp.zeros((4, ACTION_DIM))
    step = jnp.zeros((4,), jnp.int32)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="obs has last dimension 5"):
        policy.sample_chain(params, jnp.zeros((4, 5)), key)
    with pytest.raises(ValueError, match="latent must have shape"):
        policy.evaluate(params, obs, jnp.zeros((4, 3)), step, latent)
    with pytest.raises(ValueError, match="next_latent must have shape"):
        policy.evaluate(params, obs, latent, step, jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="step must be an integer array"):
        policy.evaluate(params, obs, latent, jnp.zeros((4,)), latent)
    with pytest.raises(ValueError, match="batch dimensions do not broadcast"):
        policy.evaluate(params, obs, jnp.zeros((3, ACTION_DIM)), step, jnp.zeros((3, ACTION_DIM)))
    with pytest.raises(ValueError, match=r"obs must have shape \[\.\.\., obs_dim\]"):
        policy.sample_step(params, jnp.zeros(()), latent, step, key)


def test_transform_rejects_unknown_options_and_wrong_chain_length():
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())
    with pytest.raises(ValueError, match="unknown estimator 'reinforce'"):
        make_diffusion_loss(policy, estimator="reinforce")
    with pytest.raises(ValueError, match="unknown discount_mode 'episode'"):
        make_diffusion_loss(policy, discount_mode="episode")
    transform = make_diffusion_loss(policy)
    B = 2
    bad = ChainTransition(
        obs=jnp.zeros((B, OBS_DIM)),
        latents=jnp.zeros((B, 3, ACTION_DIM)),  # K + 1 = 3, but the policy has K = 4
        log_ratios=jnp.zeros((B, 2)),
        log_probs=jnp.zeros((B, 2)),
        reward=jnp.zeros(B),
        terminated=jnp.zeros(B),
        truncated=jnp.zeros(B),
        next_obs=jnp.zeros((B, OBS_DIM)),
        next_prior_latent=jnp.zeros((B, ACTION_DIM)),
    )
    with pytest.raises(ValueError, match=r"K \+ 1 = 5"):
        transform.expand(bad, 0.99)
