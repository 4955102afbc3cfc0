"""Kernel log-densities are exact Gaussians (spec oracle 1) and the schedules are as specified."""

import math

import flax.linen as nn
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

PRIOR_VAR, FRICTION = 9.0, 0.25  # the config defaults sigma_p = 3 and friction 0.25


def policy_control_output(policy, params, obs, latent, step):
    """f(x, s, k) read back from the kernel mean (sigma_p = 3, friction = 0.25)."""
    # The kernel's mean is x + eta(-x/sigma^2 + f), so f can be read back.
    mean, _ = policy.kernel(params, obs, latent, step)
    dt = np.asarray(jax.nn.softplus(params["dt"]))[np.asarray(step)][..., None] / 0.25
    return (np.asarray(mean) - np.asarray(latent)) / dt + np.asarray(latent) / 9.0


class AffineDrift(nn.Module):
    """A closed-form drift f(x, s, k) = W x + V s + c_k, for control_network= and
    noising_network=: latent [..., A], obs [..., S], step [...] -> [..., A]. Params
    {"params": {"W": [A, A], "V": [A, S], "c": [K, A]}}, set by hand with `affine_params`."""

    num_steps: int

    @nn.compact
    def __call__(self, latent, obs, step):
        A, S = latent.shape[-1], obs.shape[-1]
        W = self.param("W", nn.initializers.zeros, (A, A), latent.dtype)
        V = self.param("V", nn.initializers.zeros, (A, S), latent.dtype)
        c = self.param("c", nn.initializers.zeros, (self.num_steps, A), latent.dtype)
        return latent @ W.T + obs @ V.T + c[step]


def affine_params(seed, K, A, S, scale=0.6):
    """Random (W, V, c) as float64 numpy arrays, and the same as an AffineDrift param tree."""
    rng = np.random.default_rng(seed)
    W, V, c = (scale * rng.standard_normal(shape) for shape in ((A, A), (A, S), (K, A)))
    return (W, V, c), {"params": {"W": jnp.asarray(W), "V": jnp.asarray(V), "c": jnp.asarray(c)}}


def affine(theta, x, s, k):
    """The drift W x + V s + c_k in numpy: x [N, A], s [N, S], k [N] -> [N, A]."""
    W, V, c = theta
    return x @ W.T + s @ V.T + c[k]


def raw_step_sizes(eta, friction=FRICTION):
    """Raw dt with softplus(dt) / friction = eta (numpy, written out)."""
    return np.log(np.expm1(np.asarray(eta) * friction))


def hand_means(x, s, k, y, eta, theta, noising_theta=None):
    """Kernel means of spec section 2, written out: p's at x_k with f(x_k, s, k), q's at
    x_{k+1} with b(x_{k+1}, s, k) (0 without a noising drift). eta [N, A] or [N, 1]."""
    m_p = x + eta * (-x / PRIOR_VAR + affine(theta, x, s, k))
    b = 0.0 if noising_theta is None else affine(noising_theta, y, s, k)
    m_q = y + eta * (-y / PRIOR_VAR + b)
    return m_p, m_q


def closed_form_policy(A, S, K, seed=0, noising=False, **overrides):
    """A diffusion policy whose f (and b, with noising=True) is an AffineDrift with random
    coefficients set by hand, and step sizes eta_k = 0.18, 0.45, 0.9, 1.3, ... (2 eta_k != 1).
    Returns (policy, params, theta, noising_theta, eta [K])."""
    cfg = small_diffusion_config(num_steps=K, learn_noising_drift=noising, **overrides)
    policy = make_diffusion_policy(S, A, cfg, control_network=AffineDrift(K),
                                   noising_network=AffineDrift(K))
    theta, control = affine_params(seed, K, A, S)
    eta = np.array([0.18, 0.45, 0.9, 1.3, 0.07, 0.6])[:K]
    params = {"control": control, "dt": jnp.asarray(raw_step_sizes(eta), jnp.float32)}
    noising_theta = None
    if noising:
        noising_theta, params["noising_drift"] = affine_params(seed + 1, K, A, S)
    return policy, params, theta, noising_theta, eta


@pytest.mark.parametrize("noising", [False, True], ids=["b=0", "affine-b"])
def test_denoising_and_noising_log_densities_match_scipy(noising):
    """log p, log q and l from scipy.stats.norm with means written out by hand from x_k, eta
    and a closed-form f (q's mean at x_{k+1}); kernel() gives the same (mean, std)."""
    policy, params, theta, noising_theta, eta = closed_form_policy(
        ACTION_DIM, OBS_DIM, 4, noising=noising)
    rng = np.random.default_rng(1)
    n = 6
    s = rng.standard_normal((n, OBS_DIM))
    x = 2.0 * rng.standard_normal((n, ACTION_DIM))
    y = x + 0.7 * rng.standard_normal((n, ACTION_DIM))
    k = np.array([0, 1, 2, 3, 1, 2])
    ev = policy.evaluate(params, *(jnp.asarray(a, jnp.float32) for a in (s, x)),
                         jnp.asarray(k, jnp.int32), jnp.asarray(y, jnp.float32))

    e = eta[k][:, None]
    m_p, m_q = hand_means(x, s, k, y, e, theta, noising_theta)
    sd = np.sqrt(2 * e)
    ref_p = stats.norm.logpdf(y, loc=m_p, scale=sd).sum(-1)
    ref_q = stats.norm.logpdf(x, loc=m_q, scale=sd).sum(-1)
    assert np.abs(affine(theta, x, s, k)).min() > 0.05, "the drift must matter"
    np.testing.assert_allclose(ev.log_prob, ref_p, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ev.log_noising, ref_q, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ev.log_ratio, ref_p - ref_q, rtol=1e-5, atol=1e-4)
    mean, std = policy.kernel(params, jnp.asarray(s, jnp.float32), jnp.asarray(x, jnp.float32),
                              jnp.asarray(k, jnp.int32))
    np.testing.assert_allclose(mean, m_p, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, np.broadcast_to(sd, m_p.shape), rtol=1e-5)


@pytest.mark.parametrize("step", [0, 3], ids=["var=0.36", "var=2.6"])
def test_kernels_integrate_to_one_in_1d(step):
    """exp(log p(. | x_k)) and exp(log q(. | x_{k+1})) integrate to one and have the hand
    means, at steps whose variance 2 eta_k is 0.36 and 2.6 (a dropped normaliser scales the
    integral by sqrt(2 pi) or sqrt(2 eta)), with affine drifts f and b of size ~1."""
    policy, params, theta, noising_theta, eta = closed_form_policy(1, OBS_DIM, 4, noising=True)
    s = np.array([[0.3, -0.2, 1.0]])
    x_k, y_k = np.array([[0.7]]), np.array([[-1.1]])
    k = np.array([step])
    f, b = affine(theta, x_k, s, k), affine(noising_theta, y_k, s, k)
    assert min(abs(f.item()), abs(b.item())) > 0.2, "drifts must be non-trivial"
    m_p, m_q = hand_means(x_k, s, k, y_k, eta[step], theta, noising_theta)
    sd = math.sqrt(2 * eta[step])
    assert abs(2 * eta[step] - 1) > 0.5
    evaluate = jax.jit(policy.evaluate)
    obs, kk = jnp.asarray(s[0], jnp.float32), jnp.asarray(step, jnp.int32)

    def integral(center, density):
        grid = np.linspace(center - 12 * sd, center + 12 * sd, 4001)
        values = np.asarray(density(jnp.asarray(grid[:, None], jnp.float32)), np.float64)
        return integrate.simpson(values, x=grid), integrate.simpson(grid * values, x=grid)

    p_total, p_mean = integral(m_p.item(), lambda y: jnp.exp(
        evaluate(params, obs, jnp.asarray(x_k[0], jnp.float32), kk, y).log_prob))
    q_total, q_mean = integral(m_q.item(), lambda x: jnp.exp(
        evaluate(params, obs, x, kk, jnp.asarray(y_k[0], jnp.float32)).log_noising))
    assert p_total == pytest.approx(1.0, abs=1e-4)
    assert q_total == pytest.approx(1.0, abs=1e-4)
    assert p_mean == pytest.approx(m_p.item(), abs=1e-4)
    assert q_mean == pytest.approx(m_q.item(), abs=1e-4)


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
    mean, _ = policy.kernel(params, obs, latent, step)
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
