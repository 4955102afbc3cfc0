"""Equal results to float rounding (tolerances 1e-5 to 1e-4), jitted and not, vmapped and
looped: single calls of the policies and the transform, no training (tests/test_trainers.py
compares whole short runs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ACTION_DIM, OBS_DIM, small_diffusion_config
from diffrl_jax import make_diffusion_loss, make_diffusion_policy, make_gaussian_policy
from diffrl_jax.policies import GaussianPolicyConfig


def _policies():
    return {
        "diffusion": make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config()),
        "gaussian": make_gaussian_policy(OBS_DIM, ACTION_DIM, GaussianPolicyConfig((16,))),
    }


@pytest.mark.parametrize("name", ["diffusion", "gaussian"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_sample_chain_jit_equals_eager(name, deterministic):
    policy = _policies()[name]
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, OBS_DIM))
    key = jax.random.PRNGKey(2)
    eager = policy.sample_chain(params, obs, key, deterministic)
    jitted = jax.jit(policy.sample_chain, static_argnums=3)(params, obs, key, deterministic)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["diffusion", "gaussian"])
def test_sample_chain_vmap_over_keys_equals_loop(name):
    policy = _policies()[name]
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (3, OBS_DIM))
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    batched = jax.vmap(lambda k: policy.sample_chain(params, obs, k))(keys)
    for i, k in enumerate(keys):
        single = policy.sample_chain(params, obs, k)
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-5)


def test_batched_evaluation_equals_per_example_evaluation():
    policy = _policies()["diffusion"]
    params = policy.init(jax.random.PRNGKey(0))
    chain = policy.sample_chain(params, jnp.ones((4, OBS_DIM)), jax.random.PRNGKey(3))
    obs = jnp.ones((4, OBS_DIM))
    for k in range(policy.num_steps):
        step = jnp.full((4,), k, jnp.int32)
        batched = policy.evaluate(params, obs, chain.latents[:, k], step, chain.latents[:, k + 1])
        vmapped = jax.vmap(policy.evaluate, in_axes=(None, 0, 0, 0, 0))(
            params, obs, chain.latents[:, k], step, chain.latents[:, k + 1]
        )
        np.testing.assert_allclose(batched.log_ratio, vmapped.log_ratio, rtol=1e-5, atol=1e-5)
        # the chain's own log-ratios are the evaluation of its transitions
        np.testing.assert_allclose(batched.log_ratio, chain.log_ratios[:, k], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(batched.log_prob, chain.log_probs[:, k], rtol=1e-4, atol=1e-4)


def test_vmap_over_parameter_sets_equals_loop():
    """A seed sweep vmaps over parameters: each member's chain must equal, to rounding, the
    chain sampled with its parameters alone."""
    policy = _policies()["diffusion"]
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.vmap(policy.init)(keys)
    obs = jnp.ones((2, OBS_DIM))
    key = jax.random.PRNGKey(7)
    batched = jax.jit(jax.vmap(lambda p: policy.sample_chain(p, obs, key)))(params)
    for i, k in enumerate(keys):
        single = policy.sample_chain(policy.init(k), obs, key)
        np.testing.assert_allclose(batched.latents[i], single.latents, rtol=1e-5, atol=1e-5)


def test_transform_losses_jit_and_vmap_consistent():
    policy = _policies()["diffusion"]
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (6, OBS_DIM))
    state = transform.sample_states(params, obs, jax.random.PRNGKey(2))

    def entropy(p, key):
        return transform.entropy(transform.actor_terms(p, state, key))

    key = jax.random.PRNGKey(4)
    assert float(jax.jit(entropy)(params, key)) == pytest.approx(float(entropy(params, key)), abs=1e-4)
    keys = jax.random.split(key, 3)
    batched = jax.vmap(entropy, in_axes=(None, 0))(params, keys)
    looped = [float(entropy(params, k)) for k in keys]
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-4)


def test_deterministic_chain_is_noise_free_and_key_independent():
    # the "mean" sampler (the default "ode" one starts from a prior draw: see
    # test_deterministic_sampler.py)
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM,
                                   small_diffusion_config(deterministic_sampler="mean"))
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, OBS_DIM))
    a = policy.sample_chain(params, obs, jax.random.PRNGKey(2), True)
    b = policy.sample_chain(params, obs, jax.random.PRNGKey(3), True)
    np.testing.assert_allclose(a.latents, b.latents)
    np.testing.assert_array_equal(a.latents[:, 0], 0.0)  # starts at the prior mean
    # every step is the kernel mean of the previous latent
    x = a.latents[:, 0]
    for k in range(policy.num_steps):
        step = jnp.full((4,), k, jnp.int32)
        mean, _ = policy.sample_step(params, obs, x, step, jax.random.PRNGKey(9), True)
        np.testing.assert_allclose(a.latents[:, k + 1], mean, rtol=1e-5, atol=1e-6)
        x = mean
    np.testing.assert_allclose(a.action, policy.squash(a.latents[:, -1]))
    stochastic = policy.sample_chain(params, obs, jax.random.PRNGKey(2))
    assert float(jnp.abs(stochastic.latents - a.latents).max()) > 0.1
