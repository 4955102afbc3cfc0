"""DiffWPO's gradient for the leaves the noising kernel shares (step sizes dt, friction) is
the gradient of the free energy F = E_{x' ~ p_theta(.|s~)}[alpha * l(x'|s~) - Q(s~, x')]
itself (spec section 5), checked against central differences of F written in closed form;
the control network keeps the WPO surrogate's gradient.

Oracle: with a control drift f that does not depend on dt (a linear network, known in closed
form here) and b = 0, x' ~ N(m, 2 eta I) with m = x + eta (f - x / sigma^2), the noising mean
is c x' with c = 1 - eta / sigma^2, and for a quadratic Q every term of F is a Gaussian
moment:
  E[log p(x')]      = -A/2 (log(2 pi 2 eta) + 1)
  E[log q(x | x')]  = -1/2 sum_d [((x_d - c m_d)^2 + 2 eta c^2) / (2 eta) + log(2 pi 2 eta)]
  E[Q(x')]          = -1/2 sum_d h_d ((m_d - t_d)^2 + 2 eta)
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.algorithms.wpo import wpo_actor_loss, wpo_gradients, wpo_surrogate
from diffrl_jax.policies import (
    DiffusionPolicyConfig,
    GaussianPolicyConfig,
    make_diffusion_policy,
    make_gaussian_policy,
)
from diffrl_jax.transforms import AugmentedState, make_diffusion_loss

A, K, SIGMA = 2, 3, 3.0
GAIN = 0.7  # f(x, s, k) = GAIN * (x + s)
H = np.array([1.5, 0.8])  # Q(s~, x') = -1/2 sum_d H_d (x'_d - T_d)^2
T = np.array([0.9, -0.6])
ALPHA = 0.3
FRICTION = 0.4


class LinearControl(nn.Module):
    """f = w * (x + s), w initialised to GAIN."""

    @nn.compact
    def __call__(self, latent, obs, step):
        del step
        w = self.param("w", lambda _: jnp.asarray(GAIN, jnp.float32))
        return w * (latent + obs)


def quadratic_critic(_, features):
    x = features[..., -A:]
    q = -0.5 * jnp.sum(jnp.asarray(H) * (x - jnp.asarray(T)) ** 2, -1)
    return jnp.stack([q, q + 1.0], -1)  # twin critics; the min is the first


def softplus(x):
    return np.log1p(np.exp(x))


def free_energy(dt_raw, friction_raw, obs, latent, step):
    """F averaged over the given augmented states, in float64 numpy, from the moments above."""
    eta = softplus(dt_raw[step]) / softplus(friction_raw)  # [n]
    eta = eta[:, None]
    f = GAIN * (latent + obs)
    m = latent + eta * (f - latent / SIGMA**2)
    c = 1.0 - eta / SIGMA**2
    e_log_p = -0.5 * A * (np.log(2 * np.pi * 2 * eta[:, 0]) + 1.0)
    e_log_q = -0.5 * np.sum(((latent - c * m) ** 2 + 2 * eta * c**2) / (2 * eta)
                            + np.log(2 * np.pi * 2 * eta), -1)
    e_q = -0.5 * np.sum(H * ((m - T) ** 2 + 2 * eta), -1)
    return np.mean(ALPHA * (e_log_p - e_log_q) - e_q)


def setup(samples_per_state):
    config = DiffusionPolicyConfig(num_steps=K, prior_std=SIGMA, dt0=0.3, friction=FRICTION,
                                   learn_friction=True)
    policy = make_diffusion_policy(A, A, config, control_network=LinearControl())
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    obs = np.array([[0.4, -0.2], [-0.5, 0.3], [0.1, 0.8]])
    latent = np.array([[1.2, -0.7], [-2.0, 0.5], [0.3, 1.6]])
    step = np.arange(K)
    state = AugmentedState(obs=jnp.asarray(np.repeat(obs, samples_per_state, 0), jnp.float32),
                           latent=jnp.asarray(np.repeat(latent, samples_per_state, 0), jnp.float32),
                           step=jnp.asarray(np.repeat(step, samples_per_state), jnp.int32))
    return transform, params, state, (obs, latent, step)


def actor_loss_grads(transform, params, state):
    def loss(p):
        return wpo_actor_loss(p, p, state, jax.random.PRNGKey(1), jnp.float32(ALPHA),
                              jnp.float32(0.0), None, quadratic_critic, transform)
    return jax.grad(loss, has_aux=True)(params)


def test_step_size_and_friction_gradients_are_those_of_the_free_energy():
    transform, params, state, (obs, latent, step) = setup(samples_per_state=200_000)
    grads, metrics = actor_loss_grads(transform, params, state)
    dt_raw = np.asarray(params["dt"], np.float64)
    friction_raw = np.float64(params["friction"])
    h = 1e-5
    expected_dt = np.array([
        (free_energy(dt_raw + h * e, friction_raw, obs, latent, step)
         - free_energy(dt_raw - h * e, friction_raw, obs, latent, step)) / (2 * h)
        for e in np.eye(K)])
    expected_friction = (free_energy(dt_raw, friction_raw + h, obs, latent, step)
                         - free_energy(dt_raw, friction_raw - h, obs, latent, step)) / (2 * h)
    # the oracle's F is the mean the loss estimates
    np.testing.assert_allclose(metrics["free_energy"],
                               free_energy(dt_raw, friction_raw, obs, latent, step), rtol=0.01)
    assert np.all(np.abs(expected_dt) > 0.05), expected_dt  # a gradient worth checking
    np.testing.assert_allclose(grads["dt"], expected_dt, rtol=0.03, atol=0.005)
    np.testing.assert_allclose(grads["friction"], expected_friction, rtol=0.03, atol=0.005)


def test_control_network_keeps_the_wpo_surrogate_gradient():
    """The control leaf's gradient is exactly that of sum_d sg(alpha g_l - g_Q)_d (g_l)_d at
    the loss's own samples; the free-energy term does not reach it."""
    transform, params, state, _ = setup(samples_per_state=64)
    grads, _ = actor_loss_grads(transform, params, state)
    actions = transform.sample(jax.lax.stop_gradient(params), state, jax.random.PRNGKey(1)).action

    def surrogate(p):
        g_l, g_q = wpo_gradients(p, state, actions, None, quadratic_critic, transform)
        return jnp.mean(wpo_surrogate(g_l, g_q, ALPHA))

    expected = jax.grad(surrogate)(params)["control"]
    np.testing.assert_allclose(grads["control"]["params"]["w"], expected["params"]["w"],
                               rtol=1e-5)
    assert abs(float(expected["params"]["w"])) > 1e-3


def test_gaussian_wpo_has_no_free_energy_term():
    """The Gaussian has no noising kernel: its loss is the surrogate (+ KL) alone."""
    policy = make_gaussian_policy(1, A, GaussianPolicyConfig(hidden_sizes=(4,)))
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    state = AugmentedState(obs=jnp.ones((8, 1)), latent=jnp.zeros((8, A)),
                           step=jnp.zeros((8,), jnp.int32))
    loss, metrics = wpo_actor_loss(params, params, state, jax.random.PRNGKey(1),
                                   jnp.float32(ALPHA), jnp.float32(0.0), None,
                                   lambda _, x: jnp.stack([x[..., -1]] * 2, -1), transform)
    assert "free_energy" not in metrics
    np.testing.assert_allclose(loss, metrics["actor_loss"])


@pytest.mark.parametrize("name", ["dt", "friction"])
def test_noising_leaves_mark_what_q_depends_on(name):
    transform, params, _, _ = setup(samples_per_state=1)
    mask = transform.policy.noising_leaves(params)
    assert mask[name] is True
    assert not any(jax.tree.leaves(mask["control"]))


def test_fixed_step_sizes_get_no_gradient_and_no_free_energy_term():
    """learn_step_sizes=False: dt keeps its initial schedule (zero gradient, from the loss
    and the KL alike) and, with nothing else the noising kernel depends on, the loss is the
    surrogate plus the KL alone."""
    config = DiffusionPolicyConfig(num_steps=K, prior_std=SIGMA, dt0=0.3, friction=FRICTION,
                                   learn_step_sizes=False)
    policy = make_diffusion_policy(A, A, config, control_network=LinearControl())
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    _, _, state, _ = setup(samples_per_state=8)
    moved = jax.tree.map(lambda x: x + 0.1, params)  # a target policy away from params

    def loss(p):
        return wpo_actor_loss(p, moved, state, jax.random.PRNGKey(1), jnp.float32(ALPHA),
                              jnp.float32(1.0), None, quadratic_critic, transform)

    grads, metrics = jax.grad(loss, has_aux=True)(params)
    assert "free_energy" not in metrics
    np.testing.assert_array_equal(grads["dt"], 0.0)
    assert abs(float(grads["control"]["params"]["w"])) > 1e-4
    assert transform.policy.noising_leaves(params)["dt"] is False
