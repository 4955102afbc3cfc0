"""The shared diffusion-loss transform: Gaussian reduction, estimators, entropy, temperature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ACTION_DIM, OBS_DIM, small_diffusion_config
from diffrl_jax import (
    make_diffusion_loss,
    make_diffusion_policy,
    make_gaussian_policy,
    sampled_loss,
)
from diffrl_jax.networks import MLP
from diffrl_jax.policies import GaussianPolicyConfig, prior_entropy_per_dim
from diffrl_jax.transforms import AugmentedState


def quadratic_q(critic_input):
    """A stand-in critic on [obs, action]: peak at action = obs[:A]."""
    obs, action = critic_input[..., :OBS_DIM], critic_input[..., -ACTION_DIM:]
    return -jnp.sum(jnp.square(action - 0.5 * obs[..., :ACTION_DIM]), axis=-1)


def sac_actor_objective(terms, alpha, q_fn):
    """SAC's actor objective written once, against PolicyTerms only."""
    return alpha * terms.log_ratio - q_fn(terms.critic_input)


def test_gaussian_sac_actor_loss_and_gradient_equal_textbook():
    cfg = GaussianPolicyConfig(hidden_sizes=(16, 16))
    policy = make_gaussian_policy(OBS_DIM, ACTION_DIM, cfg)
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, OBS_DIM))
    state = transform.initial_state(obs, jax.random.PRNGKey(2))
    key, alpha = jax.random.PRNGKey(3), 0.2
    loss_fn = sampled_loss(transform, sac_actor_objective)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state, key, alpha, quadratic_q
    )

    def textbook(p):
        out = MLP((16, 16, 2 * ACTION_DIM)).apply(p["network"], obs)
        mu, sigma = out[:, :ACTION_DIM], jax.nn.softplus(out[:, ACTION_DIM:]) + cfg.min_std
        u = mu + sigma * jax.random.normal(key, mu.shape)
        a = jnp.tanh(u)
        log_pi = jnp.sum(jax.scipy.stats.norm.logpdf(u, mu, sigma) - jnp.log(1 - a**2), -1)
        q = -jnp.sum(jnp.square(a - 0.5 * obs[:, :ACTION_DIM]), -1)
        return jnp.mean(alpha * log_pi - q)

    ref_loss, ref_grads = jax.value_and_grad(textbook)(params)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-4, abs=1e-4)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5)
    # entropy estimate of the Gaussian is -E[log pi]
    assert float(transform.entropy(terms)) == pytest.approx(-float(jnp.mean(terms.log_ratio)))


def test_diffusion_per_step_terms_are_reparameterised_samples_of_the_kernel():
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (32, OBS_DIM))
    state = transform.sample_states(params, obs, jax.random.PRNGKey(2))
    terms = transform.sample(params, state, jax.random.PRNGKey(3))
    ev = policy.evaluate(params, state.obs, state.latent, state.step, terms.action)
    np.testing.assert_allclose(terms.log_ratio, ev.log_ratio, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        terms.critic_input, policy.features(state.obs, state.latent, state.step, terms.action)
    )
    # the action carries gradient to the control network (reparameterisation)
    grad = jax.grad(lambda p: jnp.sum(transform.sample(p, state, jax.random.PRNGKey(3)).action))(params)
    assert float(jnp.abs(jax.tree.leaves(grad["control"])[-1]).sum()) > 0


def test_sample_states_visit_every_step_with_the_current_chain_and_no_gradient():
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.ones((400, OBS_DIM))
    key = jax.random.PRNGKey(4)
    state = transform.sample_states(params, obs, key)
    counts = np.bincount(np.asarray(state.step), minlength=policy.num_steps)
    assert counts.min() > 60 and len(counts) == policy.num_steps
    chain = policy.sample_chain(params, obs, jax.random.split(key)[0])
    np.testing.assert_allclose(
        state.latent, chain.latents[np.arange(400), np.asarray(state.step)], rtol=1e-5, atol=1e-5
    )
    grad = jax.grad(lambda p: jnp.sum(transform.sample_states(p, obs, key).latent))(params)
    assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree.leaves(grad))


def test_full_chain_terms_sum_the_chain_and_see_the_last_step():
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())
    transform = make_diffusion_loss(policy, estimator="full_chain")
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, OBS_DIM))
    state = transform.initial_state(obs, jax.random.PRNGKey(9))
    key = jax.random.PRNGKey(3)
    terms = transform.actor_terms(params, state, key)
    chain = policy.sample_chain(params, obs, key)
    K = policy.num_steps
    assert terms.num_steps == K
    np.testing.assert_allclose(terms.log_ratio, chain.log_ratios.sum(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.action, chain.latents[:, K])
    np.testing.assert_array_equal(terms.state.step, K - 1)
    np.testing.assert_allclose(terms.state.latent, chain.latents[:, K - 1])
    # the gradient flows through every step: dt of the first step matters
    loss = sampled_loss(transform, sac_actor_objective)
    grad = jax.grad(lambda p: loss(p, state, key, 0.1, quadratic_q)[0])(params)
    assert np.all(np.abs(np.asarray(grad["dt"])) > 0)


def test_per_step_and_full_chain_entropy_estimates_agree():
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.tile(jnp.array([[0.2, -0.4, 1.0]]), (20000, 1))
    per_step = make_diffusion_loss(policy, estimator="per_step")
    full = make_diffusion_loss(policy, estimator="full_chain")
    state = per_step.sample_states(params, obs, jax.random.PRNGKey(1))
    h_step = per_step.entropy(per_step.actor_terms(params, state, jax.random.PRNGKey(2)))
    h_chain_terms = full.actor_terms(params, state, jax.random.PRNGKey(3))
    h_chain = full.entropy(h_chain_terms)
    # standard error of the per-step estimate: K * std(l) / sqrt(n)
    l = per_step.actor_terms(params, state, jax.random.PRNGKey(2)).log_ratio
    se = policy.num_steps * float(jnp.std(l)) / math.sqrt(l.size)
    assert abs(float(h_step) - float(h_chain)) < 5 * se + 1e-3
    # the entropy estimate includes H(prior)
    expected = policy.prior_entropy - float(jnp.mean(h_chain_terms.log_ratio))
    assert float(h_chain) == pytest.approx(expected, rel=1e-6)


def test_temperature_loss_lowers_alpha_when_entropy_is_above_target():
    transform = make_diffusion_loss(make_gaussian_policy(OBS_DIM, ACTION_DIM))
    log_alpha = jnp.log(0.5)
    loss = transform.temperature_loss(log_alpha, jnp.array(2.0), -1.0)
    assert float(loss) == pytest.approx(0.5 * 3.0)
    g = jax.grad(lambda la: transform.temperature_loss(la, jnp.array(2.0), -1.0))(log_alpha)
    assert float(g) > 0  # gradient descent lowers log alpha
    g = jax.grad(lambda la: transform.temperature_loss(la, jnp.array(-3.0), -1.0))(log_alpha)
    assert float(g) < 0
    # no gradient reaches the entropy (policy) side
    assert float(jax.grad(lambda h: transform.temperature_loss(log_alpha, h, -1.0))(2.0)) == 0.0


def test_target_entropy_conventions():
    diffusion = make_diffusion_loss(make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config()))
    gaussian = make_diffusion_loss(make_gaussian_policy(OBS_DIM, ACTION_DIM))
    h_p = prior_entropy_per_dim(3.0)
    assert h_p == pytest.approx(2.518, abs=1e-3)
    # the authors' target -m*A on an estimate without H(prior) is (h_p - m) * A on ours
    assert diffusion.target_entropy(8.0) == pytest.approx((h_p - 8.0) * ACTION_DIM)
    assert gaussian.target_entropy(1.0) == pytest.approx(-1.0 * ACTION_DIM)


def test_one_algorithm_body_runs_unchanged_with_both_policies():
    """The same jitted SAC-style actor step accepts either transform: no policy-type branches."""

    def actor_step(transform, params, obs, key):
        state = transform.sample_states(params, obs, key)
        loss = sampled_loss(transform, sac_actor_objective)
        (value, terms), grads = jax.value_and_grad(loss, has_aux=True)(
            params, state, key, 0.1, quadratic_q
        )
        return value, transform.entropy(terms), grads

    obs = jax.random.normal(jax.random.PRNGKey(1), (16, OBS_DIM))
    for policy in (
        make_gaussian_policy(OBS_DIM, ACTION_DIM, GaussianPolicyConfig((8,))),
        make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config()),
    ):
        transform = make_diffusion_loss(policy)
        params = policy.init(jax.random.PRNGKey(0))
        value, entropy, grads = jax.jit(actor_step, static_argnums=0)(
            transform, params, obs, jax.random.PRNGKey(2)
        )
        assert np.isfinite(float(value)) and np.isfinite(float(entropy))
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_initial_state_draws_the_prior():
    policy = make_diffusion_policy(OBS_DIM, 1, small_diffusion_config())
    transform = make_diffusion_loss(policy)
    state = transform.initial_state(jnp.zeros((20000, OBS_DIM)), jax.random.PRNGKey(0))
    assert isinstance(state, AugmentedState)
    np.testing.assert_array_equal(state.step, 0)
    assert float(jnp.std(state.latent)) == pytest.approx(3.0, rel=0.03)
