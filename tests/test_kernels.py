"""Kernel log-densities are exact Gaussians (spec oracle 1) and the schedules are as specified."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from conftest import ACTION_DIM, OBS_DIM, small_diffusion_config
from diffrl_jax.networks import MLP
from diffrl_jax.policies import (
    GaussianPolicyConfig,
    make_diffusion_policy,
    make_gaussian_policy,
    step_schedule,
)
from diffrl_jax.policies.kernels import inverse_softplus
from diffrl_jax.policies.squash import tanh_log_det


def policy_control_output(policy, params, obs, latent, step):
    """f(x, s, k) read back from the kernel mean (sigma_p = 3, friction = 0.25)."""
    # The deterministic step returns mean = x + eta(-x/sigma^2 + f), so f can be read back.
    mean, _ = policy.sample_step(params, obs, latent, step, jax.random.PRNGKey(0), True)
    dt = np.asarray(jax.nn.softplus(params["dt"]))[np.asarray(step)][..., None] / 0.25
    return (np.asarray(mean) - np.asarray(latent)) / dt + np.asarray(latent) / 9.0


def test_denoising_and_noising_log_densities_match_scipy(diffusion_policy, diffusion_params):
    policy, params = diffusion_policy, diffusion_params
    key = jax.random.PRNGKey(1)
    k1, k2, k3 = jax.random.split(key, 3)
    obs = jax.random.normal(k1, (5, OBS_DIM))
    latent = 2.0 * jax.random.normal(k2, (5, ACTION_DIM))
    next_latent = latent + 0.5 * jax.random.normal(k3, (5, ACTION_DIM))
    step = jnp.array([0, 1, 2, 3, 1], jnp.int32)
    ev = policy.evaluate(params, obs, latent, step, next_latent)

    eta = np.asarray(jax.nn.softplus(params["dt"]))[np.asarray(step)][:, None] / 0.25
    f = policy_control_output(policy, params, obs, latent, step)
    assert np.abs(f).max() > 1e-2, "control should be non-trivial in this test"
    x, y = np.asarray(latent, np.float64), np.asarray(next_latent, np.float64)
    sd = np.sqrt(2 * eta)
    ref_p = stats.norm.logpdf(y, loc=x + eta * (-x / 9.0 + f), scale=sd).sum(-1)
    ref_q = stats.norm.logpdf(x, loc=y + eta * (-y / 9.0), scale=sd).sum(-1)
    np.testing.assert_allclose(ev.log_prob, ref_p, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ev.log_noising, ref_q, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ev.log_ratio, ref_p - ref_q, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("step", [0, 2])
def test_kernels_integrate_to_one_in_1d(step):
    policy = make_diffusion_policy(OBS_DIM, 1, small_diffusion_config())
    params = policy.init(jax.random.PRNGKey(3))
    obs = jnp.array([0.3, -0.2, 1.0])
    x_k = jnp.array([0.7])
    k = jnp.array(step, jnp.int32)

    def p_density(y):
        return float(jnp.exp(policy.evaluate(params, obs, x_k, k, jnp.array([y])).log_prob))

    def q_density(x):
        ev = policy.evaluate(params, obs, jnp.array([x]), k, x_k)  # q(x | x_{k+1} = 0.7)
        return float(jnp.exp(ev.log_noising))

    mean, _ = policy.sample_step(params, obs, x_k, k, jax.random.PRNGKey(0), True)
    center = float(mean[0])
    total_p, _ = integrate.quad(p_density, center - 10, center + 10, points=[center], limit=200)
    total_q, _ = integrate.quad(q_density, -10, 10, points=[0.7], limit=200)
    assert total_p == pytest.approx(1.0, abs=1e-4)
    assert total_q == pytest.approx(1.0, abs=1e-4)


def test_gaussian_policy_log_pi_is_change_of_variables_and_normalised():
    cfg = GaussianPolicyConfig(hidden_sizes=(8,))
    policy = make_gaussian_policy(OBS_DIM, 1, cfg)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.array([0.5, -1.0, 0.2])
    dummy, step = jnp.zeros(1), jnp.array(0, jnp.int32)
    # mu and sigma by hand from the network's raw outputs
    raw = MLP((8, 2), activation=cfg.activation).apply(params["network"], obs)
    mu, sigma = float(raw[0]), float(jax.nn.softplus(raw[1])) + cfg.min_std
    ev = policy.evaluate(params, obs, dummy, step, jnp.array([0.4]))
    ref = stats.norm.logpdf(0.4, loc=mu, scale=sigma) - math.log(1 - math.tanh(0.4) ** 2)
    assert float(ev.log_prob) == pytest.approx(ref, abs=1e-4)
    assert float(ev.log_ratio) == float(ev.log_prob)
    assert float(ev.log_noising) == 0.0

    def action_density(a):
        u = jnp.array([math.atanh(a)])
        return float(jnp.exp(policy.evaluate(params, obs, dummy, step, u).log_ratio))

    mode = math.tanh(mu)
    total, _ = integrate.quad(action_density, -1 + 1e-7, 1 - 1e-7, points=[mode], limit=400)
    assert total == pytest.approx(1.0, abs=1e-3)


def test_tanh_log_det_matches_autodiff():
    x = np.linspace(-6.0, 6.0, 25)
    grads = jax.vmap(jax.grad(jnp.tanh))(jnp.asarray(x[8:17]))  # |x| <= 2: float32 is exact
    np.testing.assert_allclose(tanh_log_det(x[8:17, None]), np.log(grads), rtol=1e-4, atol=1e-4)
    reference = np.log1p(-np.tanh(x) ** 2)  # float64 everywhere
    np.testing.assert_allclose(tanh_log_det(jnp.asarray(x)[:, None]), reference, atol=1e-4)
    pair = jnp.array([[0.3, -2.0]])
    assert float(tanh_log_det(pair)[0]) == pytest.approx(float(np.log1p(-np.tanh(0.3) ** 2) + np.log1p(-np.tanh(-2.0) ** 2)), abs=1e-5)


def test_schedules_match_spec_formulas():
    K, m = 8, 0.17
    t = (K - np.arange(K)) / K
    np.testing.assert_allclose(step_schedule("linear", K, m), (1 - t) * m + t, rtol=1e-6)
    cos = step_schedule("cosine", K, m)
    assert cos[0] == pytest.approx(1.0)
    assert np.all(np.diff(cos) < 0) and cos[-1] > m
    np.testing.assert_allclose(step_schedule("constant", K, m), np.ones(K))


def test_initial_step_sizes_follow_schedule_and_friction():
    cfg = small_diffusion_config(num_steps=8, dt0=0.125, friction=0.25)
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, cfg)
    params = policy.init(jax.random.PRNGKey(0))
    dt = jax.nn.softplus(params["dt"])
    np.testing.assert_allclose(dt, 0.125 * step_schedule("linear", 8, 0.17), rtol=1e-5)
    assert inverse_softplus(0.25) == pytest.approx(math.log(math.expm1(0.25)))


def test_default_control_is_near_zero_so_chain_starts_as_prior_langevin():
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM)  # default init scale 1e-8
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.ones((4, OBS_DIM))
    latent = jnp.full((4, ACTION_DIM), 1.5)
    step = jnp.arange(4, dtype=jnp.int32)
    mean, _ = policy.sample_step(params, obs, latent, step, jax.random.PRNGKey(0), True)
    eta = jax.nn.softplus(params["dt"])[step][:, None] / 0.25
    np.testing.assert_allclose(mean, latent - eta * latent / 9.0, atol=1e-6)


def test_dt_per_dimension_has_one_step_size_per_action_dimension():
    cfg = small_diffusion_config(dt_per_dimension=True)
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, cfg)
    params = policy.init(jax.random.PRNGKey(0))
    assert params["dt"].shape == (4, ACTION_DIM)
    params = dict(params, dt=params["dt"].at[:, 1].add(1.0))  # dimension 1 takes bigger steps
    obs, latent = jnp.zeros((OBS_DIM,)), jnp.zeros((ACTION_DIM,))
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    nxt = jax.vmap(lambda k: policy.sample_step(params, obs, latent, jnp.array(0), k)[0])(keys)
    var = np.var(np.asarray(nxt), axis=0)
    expected = 2 * np.asarray(jax.nn.softplus(params["dt"][0])) / 0.25
    np.testing.assert_allclose(var, expected, rtol=0.1)
    assert var[1] > 1.5 * var[0]


def test_learnable_friction_and_noising_drift_are_parameters():
    cfg = small_diffusion_config(learn_friction=True, learn_noising_drift=True)
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, cfg)
    params = policy.init(jax.random.PRNGKey(0))
    assert float(jax.nn.softplus(params["friction"])) == pytest.approx(0.25, rel=1e-5)
    assert "noising_drift" in params
    obs, x, y = jnp.ones(OBS_DIM), jnp.zeros(ACTION_DIM), jnp.ones(ACTION_DIM)
    step = jnp.array(1)
    base = policy.evaluate(params, obs, x, step, y)
    slower = dict(params, friction=params["friction"] + 1.0)
    assert float(policy.evaluate(slower, obs, x, step, y).log_prob) != pytest.approx(
        float(base.log_prob)
    )


def test_squash_log_det_option_only_changes_the_last_step():
    on = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config(squash_log_det=True))
    off = make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())
    params = off.init(jax.random.PRNGKey(0))
    obs, x, y = jnp.ones(OBS_DIM), jnp.zeros(ACTION_DIM), jnp.array([0.5, -1.0])
    for k in range(4):
        step = jnp.array(k)
        diff = on.evaluate(params, obs, x, step, y).log_ratio - off.evaluate(
            params, obs, x, step, y
        ).log_ratio
        expected = -float(tanh_log_det(y)) if k == 3 else 0.0
        assert float(diff) == pytest.approx(expected, abs=1e-5)


def test_control_output_is_clipped():
    cfg = small_diffusion_config(control_init_scale=1.0, control_clip=0.05)
    policy = make_diffusion_policy(OBS_DIM, ACTION_DIM, cfg)
    params = policy.init(jax.random.PRNGKey(0))
    obs = 100.0 * jnp.ones((8, OBS_DIM))
    latent = jnp.zeros((8, ACTION_DIM))
    step = jnp.zeros(8, jnp.int32)
    f = policy_control_output(policy, params, obs, latent, step)
    assert np.abs(f).max() <= 0.05 + 1e-4
    assert np.abs(f).max() > 0.04
