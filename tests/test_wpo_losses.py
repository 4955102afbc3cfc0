"""WPO / DiffWPO updates checked against closed forms: the Gaussian WPO gradient on a quadratic
Q is the Wasserstein gradient projected on (mu, sigma); the natural-gradient option is the
inverse Fisher of the step kernel; DiffWPO's gradient is the finite difference of its stated
surrogate; the analytic kernel KL and its multiplier."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from diffrl_jax.algorithms.constraints import kernel_kl, kl_coef_loss
from diffrl_jax.algorithms.wpo import wpo_actor_loss, wpo_gradients, wpo_surrogate
from diffrl_jax.policies import GaussianPolicyConfig, make_diffusion_policy, make_gaussian_policy
from diffrl_jax.policies.kernels import diag_gaussian_kl, diag_gaussian_log_density
from diffrl_jax.transforms import AugmentedState, make_diffusion_loss

from conftest import small_diffusion_config

A = 2
MIN_STD = 1e-3
H = jnp.array([1.5, 0.5])  # Q(s, u) = -0.5 * sum_d H_d (u_d - C_d)^2
C = jnp.array([0.3, -0.4])


def quadratic_critic(_, features):
    """Q of the pre-squash action: the Gaussian's critic sees [obs, tanh(u)]."""
    u = jnp.arctanh(features[..., 1:])
    q = -0.5 * jnp.sum(H * (u - C) ** 2, -1)
    return jnp.stack([q, q + 1.0], -1)  # two critics; min picks the first


def gaussian_setup(num_samples, key=0):
    policy = make_gaussian_policy(1, A, GaussianPolicyConfig(hidden_sizes=(4,), min_std=MIN_STD))
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(key))
    state = AugmentedState(obs=jnp.zeros((num_samples, 1)), latent=jnp.zeros((num_samples, A)),
                           step=jnp.zeros((num_samples,), jnp.int32))
    mean, std = policy.kernel(params, state.obs[:1], state.latent[:1], state.step[:1])
    return policy, transform, params, state, mean[0], std[0]


def mean_std_gradients(grads, std):
    """Gradients w.r.t. (mu, sigma) read off the output layer's bias (obs = 0 makes the
    output mu = b_mu + const, sigma = softplus(b_raw + const) + min_std)."""
    bias = grads["network"]["params"]["dense_1"]["bias"]
    sigmoid = 1.0 - jnp.exp(-(std - MIN_STD))  # softplus'(raw) written through sigma
    return bias[:A], bias[A:] / sigmoid


def wpo_loss(params, transform, state, actions, natural):
    g_l, g_q = wpo_gradients(params, state, actions, None, quadratic_critic, transform, natural)
    return jnp.mean(wpo_surrogate(g_l, g_q, 0.0))


@pytest.mark.parametrize("natural", [False, True])
def test_gaussian_wpo_gradient_is_the_projected_wasserstein_gradient(natural):
    n = 200_000
    _, transform, params, state, mu, sigma = gaussian_setup(n)
    eps = jax.random.normal(jax.random.PRNGKey(7), (n, A))
    u = mu + sigma * eps
    grads = jax.grad(wpo_loss)(params, transform, state, u, natural)
    g_mu, g_sigma = mean_std_gradients(grads, sigma)
    # exact for these samples: dL/dmu = mean H (u - c) / sigma^2, dL/dsigma = mean 2 H (u - c) eps / sigma^2
    sample_mu = jnp.mean(H * (u - C), 0) / sigma**2
    sample_sigma = jnp.mean(2 * H * (u - C) * eps, 0) / sigma**2
    # in expectation: H (mu - c) / sigma^2 and 2 H / sigma
    expect_mu, expect_sigma = H * (mu - C) / sigma**2, 2 * H / sigma
    if natural:  # rescaled by sigma^2 and sigma^2 / 2: minus the Wasserstein flow of E[Q]
        sample_mu, sample_sigma = sample_mu * sigma**2, sample_sigma * sigma**2 / 2
        expect_mu, expect_sigma = H * (mu - C), H * sigma
        # d mu / dt = E[grad Q] = -H (mu - c), d sigma / dt = E[grad Q . eps] = -H sigma
    np.testing.assert_allclose(g_mu, sample_mu, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(g_sigma, sample_sigma, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(g_mu, expect_mu, rtol=0.02, atol=0.01)
    np.testing.assert_allclose(g_sigma, expect_sigma, rtol=0.02)


def test_natural_gradient_is_the_inverse_fisher_of_the_kernel():
    """For any loss of log pi, the natural option's gradient w.r.t. (mu, sigma) is F^-1 times
    the plain one, F the Fisher of N(mu, sigma^2) (the Hessian of the KL at equal arguments)."""
    n = 64
    _, transform, params, state, mu, sigma = gaussian_setup(n, key=3)
    u = jax.random.normal(jax.random.PRNGKey(1), (n, A)) * 2.0
    weights = jax.random.normal(jax.random.PRNGKey(2), (n,))

    def loss(p, natural):
        return jnp.mean(weights * transform.evaluate(p, state, u, natural).log_prob)

    plain = mean_std_gradients(jax.grad(loss)(params, False), sigma)
    natural = mean_std_gradients(jax.grad(loss)(params, True), sigma)
    for d in range(A):
        def kl(theta, d=d):
            return diag_gaussian_kl(mu[d:d + 1], sigma[d:d + 1], theta[:1], theta[1:])
        fisher = jax.hessian(kl)(jnp.array([mu[d], sigma[d]]))
        expected = jnp.linalg.solve(fisher, jnp.array([plain[0][d], plain[1][d]]))
        np.testing.assert_allclose([natural[0][d], natural[1][d]], expected, rtol=1e-4, atol=1e-7)


def isotropic_gaussian_kl(m0, v0, m1, v1):
    """KL(N(m0, v0 I) || N(m1, v1 I)) for means [A] and scalar variances, written out."""
    dim = m0.shape[-1]
    return 0.5 * (dim * (v0 / v1 - 1.0 + jnp.log(v1 / v0)) + jnp.sum((m1 - m0) ** 2) / v1)


@pytest.mark.parametrize("per_dimension", [False, True])
def test_diffusion_natural_gradient_is_the_inverse_fisher_of_the_kernel(per_dimension):
    """Diffusion kernel N(m, v): the option's parameter gradient is the pull-back through
    (m, v)(theta) of F^-1 times the plain (m, v) gradient, with F the Fisher of the kernel in
    its own coordinates (the Hessian of the KL at equal arguments): (m [A], v [A]) for a
    variance per dimension, (m [A], v) for one variance shared by the A dimensions (whose
    Fisher A / (2 v^2) a per-dimension 2 v^2 would overcount A times). Values unchanged."""
    policy = make_diffusion_policy(2, A, small_diffusion_config(dt_per_dimension=per_dimension))
    params = policy.init(jax.random.PRNGKey(0))
    if per_dimension:  # distinct variances per dimension
        params["dt"] = params["dt"] + jnp.array([0.0, 0.7])
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
    latent = jax.random.normal(jax.random.PRNGKey(2), (8, A))
    step = jnp.arange(8, dtype=jnp.int32) % 4
    nxt = latent + 0.3 * jax.random.normal(jax.random.PRNGKey(3), (8, A))

    def loss(p, natural):
        return jnp.mean(policy.evaluate(p, obs, latent, step, nxt, natural).log_prob)

    np.testing.assert_allclose(loss(params, True), loss(params, False), rtol=1e-6)

    def kernel(p):  # the kernel in its own coordinates: v [8, A] or [8, 1]
        m, s = policy.kernel(p, obs, latent, step)
        v = s**2 if per_dimension else s[:, :1] ** 2
        return m, v

    (m, v), pull_back = jax.vjp(kernel, params)
    plain = jax.grad(lambda m_, v_: jnp.mean(diag_gaussian_log_density(
        nxt, m_, jnp.broadcast_to(v_, m_.shape))), (0, 1))(m, v)

    def kl(theta, m0, v0):  # theta = (m [A], v [A] or [1])
        m1, v1 = theta[:A], theta[A:]
        if per_dimension:
            return jnp.sum(jax.vmap(isotropic_gaussian_kl)(m0[:, None], v0, m1[:, None], v1))
        return isotropic_gaussian_kl(m0, v0[0], m1, v1[0])

    def natural(m0, v0, gm, gv):
        theta = jnp.concatenate([m0, v0])
        fisher = jax.hessian(kl)(theta, m0, v0)
        out = jnp.linalg.solve(fisher, jnp.concatenate([gm, gv]))
        return out[:A], out[A:]

    (expected,) = pull_back(jax.vmap(natural)(m, v, *plain))
    got = jax.grad(loss)(params, True)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_diffwpo_gradient_matches_finite_differences_of_its_surrogate():
    """1-D diffusion policy, float64: d/dtheta of sum_d sg(alpha g_l - g_Q)_d (g_l)_d with the
    coefficients frozen at theta_0 equals central differences of that frozen surrogate."""
    with jax.enable_x64(True):
        policy = make_diffusion_policy(1, 1, small_diffusion_config(num_steps=3))
        transform = make_diffusion_loss(policy)
        params = jax.tree.map(lambda x: x.astype(jnp.float64), policy.init(jax.random.PRNGKey(0)))
        n = 16
        state = AugmentedState(obs=jax.random.normal(jax.random.PRNGKey(1), (n, 1), jnp.float64),
                               latent=jax.random.normal(jax.random.PRNGKey(2), (n, 1), jnp.float64),
                               step=jnp.arange(n, dtype=jnp.int32) % 3)
        actions = state.latent + 0.4 * jax.random.normal(jax.random.PRNGKey(3), (n, 1), jnp.float64)
        critic = lambda _, f: jnp.stack([jnp.sin(f[..., -1]) * f[..., 0] - f[..., -1] ** 2] * 2, -1)  # noqa: E731
        alpha = 0.3

        def loss(p):
            g_l, g_q = wpo_gradients(p, state, actions, None, critic, transform)
            return jnp.mean(wpo_surrogate(g_l, g_q, alpha))

        g_l0, g_q0 = wpo_gradients(params, state, actions, None, critic, transform)
        coeff = alpha * g_l0 - g_q0

        def frozen(p):
            g_l, _ = wpo_gradients(p, state, actions, None, critic, transform)
            return jnp.mean(jnp.sum(coeff * g_l, -1))

        flat, unravel = jax.flatten_util.ravel_pytree(params)
        grad = jax.flatten_util.ravel_pytree(jax.grad(loss)(params))[0]
        for seed in range(3):
            direction = jax.random.normal(jax.random.PRNGKey(10 + seed), flat.shape, jnp.float64)
            h = 1e-5
            fd = (frozen(unravel(flat + h * direction)) - frozen(unravel(flat - h * direction))) / (2 * h)
            np.testing.assert_allclose(jnp.dot(grad, direction), fd, rtol=1e-6, atol=1e-9)
        assert np.abs(np.asarray(grad)).max() > 1e-3


def test_kernel_kl_is_the_gaussian_kl():
    m0, s0, m1, s1 = 0.3, 0.7, -0.2, 1.3
    p, q = stats.norm(m0, s0), stats.norm(m1, s1)
    numeric, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -12, 12)
    got = diag_gaussian_kl(jnp.array([m0]), jnp.array([s0]), jnp.array([m1]), jnp.array([s1]))
    np.testing.assert_allclose(got, numeric, rtol=1e-5)
    policy = make_diffusion_policy(2, A, small_diffusion_config())
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    state = AugmentedState(jnp.ones((5, 2)), jnp.ones((5, A)), jnp.arange(5, dtype=jnp.int32) % 4)
    np.testing.assert_allclose(kernel_kl(params, params, state, transform), 0.0, atol=1e-6)
    moved = jax.tree.map(lambda x: x * 1.1, params)
    assert np.all(np.asarray(kernel_kl(params, moved, state, transform)) > 0)


def test_kl_multiplier_rises_above_the_bound_and_falls_below():
    up = jax.grad(kl_coef_loss)(jnp.log(0.5), 0.05, 0.02)
    down = jax.grad(kl_coef_loss)(jnp.log(0.5), 0.01, 0.02)
    assert up < 0 < down  # gradient descent raises log c when KL > bound


def test_actor_loss_adds_the_kl_penalty_and_samples_per_state():
    policy, transform, params, state, _, _ = gaussian_setup(8)
    target = jax.tree.map(lambda x: x + 0.05, params)
    key = jax.random.PRNGKey(0)
    args = (state, key, 0.0)
    base, m0 = wpo_actor_loss(params, target, *args, 0.0, None, quadratic_critic, transform, 3)
    with_kl, m1 = wpo_actor_loss(params, target, *args, 2.0, None, quadratic_critic, transform, 3)
    assert float(m0["kl"]) > 0
    np.testing.assert_allclose(with_kl - base, 2.0 * m0["kl"], rtol=1e-5)
    np.testing.assert_allclose(m1["actor_loss"], m0["actor_loss"])
