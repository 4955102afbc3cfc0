"""The WPO surrogate at alpha > 0 against closed forms: the entropy term's sign and size.

The surrogate sum_d sg(alpha g_l - g_Q)_d (g_l)_d, g_l = grad_x' l, g_Q = grad_x' Q, has the
parameter gradient E[(alpha g_l - g_Q) . d g_l / d theta] (actions held fixed). Written out:

Tanh-Gaussian, u = mu + sigma eps, l = log pi = log N(u; mu, sigma^2) - sum log(1 - tanh(u)^2),
g_l = -eps / sigma + 2 tanh(u), d g_l / d mu = 1 / sigma^2, d g_l / d sigma = 2 eps / sigma^2;
with Q = -0.5 sum H (u - C)^2 (g_Q = -H (u - C)) and Stein's E[eps tanh(u)] = sigma E[sech^2 u]:
    dL/dmu    = (2 alpha E[tanh u] + H (mu - C)) / sigma^2
    dL/dsigma = 2 (-alpha / sigma + 2 alpha sigma E[sech^2 u] + H sigma) / sigma^2.
The -alpha / sigma is the heat flow (d sigma / dt = alpha / sigma under the natural scaling
sigma^2 / 2): alpha > 0 pushes sigma up.

Diffusion step, y = x_{k+1} ~ N(m_p, v), m_p = x + eta (-x / sigma_p^2 + f), v = 2 eta, b = 0:
g_l = -(y - m_p) / v - (1 - a)(x - (1 - a) y) / v with a = eta / sigma_p^2, and
d g_l / d f = eta / v = 1 / 2, so for f = W x + V s + c_k:
    dL/dc_k = E[alpha g_l - g_Q] / 2 = (-alpha (1 - a)(x - (1 - a) m_p) / v + H (m_p - C)) / 2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from diffrl_jax.algorithms.wpo import wpo_actor_loss, wpo_gradients, wpo_surrogate
from diffrl_jax.policies import GaussianPolicyConfig, make_gaussian_policy
from diffrl_jax.transforms import AugmentedState, make_diffusion_loss
from test_kernels import PRIOR_VAR, affine, closed_form_policy

A = 2
MIN_STD = 1e-3
H = np.array([1.5, 0.5])  # Q(s, u) = -0.5 * sum_d H_d (u_d - C_d)^2
C = np.array([0.3, -0.4])
MU, SIGMA = np.array([0.4, -0.5]), np.array([0.5, 0.7])
ALPHA = 0.5


def tanh_quadratic_critic(_, features):
    """Q of the pre-squash action: the Gaussian's critic sees [obs, tanh(u)]."""
    u = jnp.arctanh(features[..., 1:])
    q = -0.5 * jnp.sum(H * (u - C) ** 2, -1)
    return jnp.stack([q, q + 1.0], -1)  # two critics; min picks the first


def latent_quadratic_critic(_, features):
    """Q of x_{k+1}, the last A features of the diffusion policy's critic input."""
    q = -0.5 * jnp.sum(H * (features[..., -A:] - C) ** 2, -1)
    return jnp.stack([q + 1.0, q], -1)


def gaussian_setup(n):
    """Gaussian policy with obs = 0, so its output is the last bias: set to (MU, raw SIGMA)."""
    policy = make_gaussian_policy(1, A, GaussianPolicyConfig(hidden_sizes=(4,), min_std=MIN_STD))
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    raw = np.log(np.expm1(SIGMA - MIN_STD))
    params["network"]["params"]["dense_1"]["bias"] = jnp.asarray(np.concatenate([MU, raw]),
                                                                 jnp.float32)
    state = AugmentedState(obs=jnp.zeros((n, 1)), latent=jnp.zeros((n, A)),
                           step=jnp.zeros((n,), jnp.int32))
    mean, std = policy.kernel(params, state.obs[:1], state.latent[:1], state.step[:1])
    np.testing.assert_allclose(mean[0], MU, rtol=1e-6)
    np.testing.assert_allclose(std[0], SIGMA, rtol=1e-5)
    return transform, params, state


def mean_std_gradients(grads):
    """Gradients w.r.t. (mu, sigma) read off the output layer's bias (obs = 0)."""
    bias = np.asarray(grads["network"]["params"]["dense_1"]["bias"], np.float64)
    dsigma_draw = 1.0 - np.exp(-(SIGMA - MIN_STD))  # softplus'(raw) written through sigma
    return bias[:A], bias[A:] / dsigma_draw


def gaussian_expectation(g):
    """E[g(u)] per dimension for u ~ N(MU, SIGMA^2), by quadrature."""
    return np.array([integrate.quad(lambda u, d=d: g(u) * stats.norm.pdf(u, MU[d], SIGMA[d]),
                                    MU[d] - 12 * SIGMA[d], MU[d] + 12 * SIGMA[d])[0]
                     for d in range(A)])


def test_gaussian_surrogate_gradient_at_alpha_is_exact_on_given_samples():
    """On fixed samples u = mu + sigma eps: dL/dmu = mean(alpha g_l - g_Q) / sigma^2 and
    dL/dsigma = mean((alpha g_l - g_Q) 2 eps) / sigma^2, g_l and g_Q written out."""
    n = 4096
    transform, params, state = gaussian_setup(n)
    eps = np.clip(np.random.default_rng(0).standard_normal((n, A)), -4, 4)
    u = MU + SIGMA * eps

    def loss(p):
        g_l, g_q = wpo_gradients(p, state, jnp.asarray(u, jnp.float32), None,
                                 tanh_quadratic_critic, transform)
        return jnp.mean(wpo_surrogate(g_l, g_q, ALPHA))

    g_mu, g_sigma = mean_std_gradients(jax.grad(loss)(params))
    coeff = ALPHA * (-eps / SIGMA + 2 * np.tanh(u)) + H * (u - C)
    np.testing.assert_allclose(g_mu, coeff.mean(0) / SIGMA**2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g_sigma, (coeff * 2 * eps).mean(0) / SIGMA**2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("natural", [False, True])
def test_gaussian_wpo_actor_loss_gradient_at_alpha_is_the_closed_form(natural):
    """wpo_actor_loss (its own samples, no KL) at alpha = 0.5: the (mu, sigma) gradient is the
    closed form of the module docstring (times sigma^2 and sigma^2 / 2 with the natural
    option); the alpha terms are many tolerances wide, and descent raises sigma."""
    n = 200_000
    transform, params, state = gaussian_setup(n)

    def loss(p):
        return wpo_actor_loss(p, params, state, jax.random.PRNGKey(3), ALPHA, 0.0, None,
                              tanh_quadratic_critic, transform, natural_gradient=natural)[0]

    g_mu, g_sigma = mean_std_gradients(jax.grad(loss)(params))
    e_tanh = gaussian_expectation(np.tanh)
    e_sech2 = gaussian_expectation(lambda u: 1 - np.tanh(u) ** 2)

    def closed_form(alpha):
        mu = (2 * alpha * e_tanh + H * (MU - C)) / SIGMA**2
        sigma = 2 * (-alpha / SIGMA + 2 * alpha * SIGMA * e_sech2 + H * SIGMA) / SIGMA**2
        if natural:
            mu, sigma = mu * SIGMA**2, sigma * SIGMA**2 / 2
        return mu, sigma

    exp_mu, exp_sigma = closed_form(ALPHA)
    tol_mu, tol_sigma = 0.02 * np.abs(exp_mu).max(), 0.02 * np.abs(exp_sigma).max()
    np.testing.assert_allclose(g_mu, exp_mu, atol=tol_mu)
    np.testing.assert_allclose(g_sigma, exp_sigma, atol=tol_sigma)
    flip_mu, flip_sigma = closed_form(-ALPHA)
    assert np.abs(flip_mu - exp_mu).min() > 5 * tol_mu
    assert np.abs(flip_sigma - exp_sigma).min() > 5 * tol_sigma
    # the entropy part alone, -alpha / sigma (heat flow), has the sign that raises sigma
    entropy_sigma = np.asarray(closed_form(ALPHA)[1]) - np.asarray(closed_form(0.0)[1])
    assert np.all(entropy_sigma < 0)


def diffusion_setup():
    """K = 2 closed-form chain (affine f, b = 0), A = 2, S = 3."""
    policy, params, theta, _, eta = closed_form_policy(A, 3, 2)
    return make_diffusion_loss(policy), params, theta, eta


def hand_step_coefficients(theta, eta, s, x, k, y, alpha):
    """(alpha g_l - g_Q) / 2 per sample [N, A]: d surrogate / d f, with g_l written out."""
    e = eta[k][:, None]
    v, a = 2 * e, e / PRIOR_VAR
    m_p = x + e * (-x / PRIOR_VAR + affine(theta, x, s, k))
    g_l = -(y - m_p) / v - (1 - a) * (x - (1 - a) * y) / v
    g_q = -H * (y - C)
    return (alpha * g_l - g_q) / 2


def test_diffusion_control_gradient_at_alpha_is_exact_on_given_samples():
    """Control network f = W x + V s + c_k: the surrogate's gradient at alpha = 0.5 is
    coeff^T [x, s, onehot(k)] / N with coeff = (alpha g_l - g_Q) / 2 by hand."""
    transform, params, theta, eta = diffusion_setup()
    rng = np.random.default_rng(5)
    n = 64
    s, x = rng.standard_normal((n, 3)), 2 * rng.standard_normal((n, A))
    k = np.arange(n) % 2
    y = x + rng.standard_normal((n, A))
    state = AugmentedState(jnp.asarray(s, jnp.float32), jnp.asarray(x, jnp.float32),
                           jnp.asarray(k, jnp.int32))

    def loss(p):
        g_l, g_q = wpo_gradients(p, state, jnp.asarray(y, jnp.float32), None,
                                 latent_quadratic_critic, transform)
        return jnp.mean(wpo_surrogate(g_l, g_q, ALPHA))

    got = jax.grad(loss)(params)["control"]["params"]
    coeff = hand_step_coefficients(theta, eta, s, x, k, y, ALPHA) / n
    gc = np.zeros((2, A))
    np.add.at(gc, k, coeff)
    np.testing.assert_allclose(got["W"], coeff.T @ x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["V"], coeff.T @ s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["c"], gc, rtol=1e-4, atol=1e-5)


def test_diffusion_wpo_actor_loss_control_gradient_at_alpha_is_the_closed_form():
    """wpo_actor_loss (its own samples) at one augmented state, alpha = 0.5: dL/dc_k equals
    (-alpha (1 - a)(x - (1 - a) m_p) / v + H (m_p - C)) / 2; other steps' c get nothing."""
    transform, params, theta, eta = diffusion_setup()
    n, k = 100_000, 1
    s0, x0 = np.array([[0.5, -1.0, 0.3]]), np.array([[2.5, -1.5]])
    state = AugmentedState(jnp.asarray(np.repeat(s0, n, 0), jnp.float32),
                           jnp.asarray(np.repeat(x0, n, 0), jnp.float32),
                           jnp.full((n,), k, jnp.int32))

    def loss(p):
        return wpo_actor_loss(p, params, state, jax.random.PRNGKey(4), ALPHA, 0.0, None,
                              latent_quadratic_critic, transform)[0]

    got = np.asarray(jax.grad(loss)(params)["control"]["params"]["c"])
    e, kk = eta[k], np.array([k])
    v, a = 2 * e, e / PRIOR_VAR
    m_p = (x0 + e * (-x0 / PRIOR_VAR + affine(theta, x0, s0, kk)))[0]

    def closed_form(alpha):
        return (-alpha * (1 - a) * (x0[0] - (1 - a) * m_p) / v + H * (m_p - C)) / 2

    tol = 0.01 * np.abs(closed_form(ALPHA)).max()
    np.testing.assert_allclose(got[k], closed_form(ALPHA), atol=tol)
    np.testing.assert_allclose(got[1 - k], 0.0, atol=1e-6)
    assert np.abs(closed_form(-ALPHA) - closed_form(ALPHA)).min() > 5 * tol
