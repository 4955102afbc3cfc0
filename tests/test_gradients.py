"""Gradients of l_k with respect to network parameters, dt and friction equal finite differences.

Run in float64 (jax.enable_x64) so central differences are accurate to ~1e-8.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ACTION_DIM, OBS_DIM, small_diffusion_config
from diffrl_jax.policies import make_diffusion_policy, make_gaussian_policy


def _finite_difference_check(fn, params, num_coords=12, eps=1e-6, seed=0):
    """Compares jax.grad(fn) with central differences on random coordinates of every leaf."""
    grads = jax.grad(fn)(params)
    fn = jax.jit(fn)
    leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(grads)
    rng = np.random.default_rng(seed)
    checked = 0
    for i, (leaf, g) in enumerate(zip(leaves, grad_leaves)):
        flat = np.asarray(leaf, np.float64).ravel()
        idx = rng.choice(flat.size, size=min(num_coords, flat.size), replace=False)
        for j in idx:
            def shifted(delta):
                new = flat.copy()
                new[j] += delta
                new_leaves = list(leaves)
                new_leaves[i] = jnp.asarray(new.reshape(np.shape(leaf)))
                return float(fn(jax.tree.unflatten(treedef, new_leaves)))

            numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
            analytic = float(np.asarray(g).ravel()[j])
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7), (i, j)
            checked += 1
    return checked


def _batch(key, n=6):
    k1, k2, k3 = jax.random.split(key, 3)
    obs = jax.random.normal(k1, (n, OBS_DIM), jnp.float64)
    latent = 2.0 * jax.random.normal(k2, (n, ACTION_DIM), jnp.float64)
    next_latent = latent + 0.4 * jax.random.normal(k3, (n, ACTION_DIM), jnp.float64)
    step = jnp.arange(n, dtype=jnp.int32) % 4
    return obs, latent, step, next_latent


@pytest.mark.parametrize(
    "overrides",
    [
        dict(learn_friction=True),
        dict(learn_friction=True, dt_per_dimension=True, learn_noising_drift=True),
        dict(schedule="cosine", squash_log_det=True),
    ],
    ids=["friction", "per-dim-dt+noising-drift", "cosine+logdet"],
)
def test_log_ratio_gradients_match_finite_differences(overrides):
    with jax.enable_x64(True):
        policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config(**overrides))
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), policy.init(jax.random.PRNGKey(0)))
        obs, latent, step, next_latent = _batch(jax.random.PRNGKey(1))

        def loss(p):
            return jnp.sum(policy.evaluate(p, obs, latent, step, next_latent).log_ratio)

        assert set(params) >= {"control", "dt"}
        checked = _finite_difference_check(loss, params)
        assert checked > 20


def test_reparameterised_chain_gradients_match_finite_differences():
    """d/dtheta of sum_k l_k along a sampled chain (fixed noise), as the full-chain estimator uses."""
    with jax.enable_x64(True):
        policy = make_diffusion_policy(
            OBS_DIM, ACTION_DIM, small_diffusion_config(learn_friction=True)
        )
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), policy.init(jax.random.PRNGKey(0)))
        obs = jax.random.normal(jax.random.PRNGKey(2), (3, OBS_DIM), jnp.float64)

        def loss(p):
            chain = policy.sample_chain(p, obs, jax.random.PRNGKey(5))
            return jnp.sum(chain.log_ratios) + jnp.sum(jnp.square(chain.latents[..., -1, :]))

        _finite_difference_check(loss, params, num_coords=6)


def test_gaussian_log_pi_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        policy = make_gaussian_policy(OBS_DIM, ACTION_DIM)
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), policy.init(jax.random.PRNGKey(0)))
        obs, latent, step, u = _batch(jax.random.PRNGKey(3))
        step = jnp.zeros_like(step)

        def loss(p):
            return jnp.sum(policy.evaluate(p, obs, latent, step, u).log_ratio)

        _finite_difference_check(loss, params, num_coords=6)
