"""With the Gaussian policy, the SAC losses equal an independent textbook computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax import make_diffusion_loss, make_gaussian_policy, sampled_loss
from diffrl_jax.algorithms import sac_actor_objective, sac_critic_loss
from diffrl_jax.networks import MLP, EnsembleCritic
from diffrl_jax.policies import GaussianPolicyConfig
from diffrl_jax.transforms import ChainTransition

S, A, B = 3, 2, 32


def _setup():
    cfg = GaussianPolicyConfig(hidden_sizes=(16,))
    policy = make_gaussian_policy(S, A, cfg)
    transform = make_diffusion_loss(policy)
    critic = EnsembleCritic(hidden_sizes=(16,), num_critics=2)
    params = policy.init(jax.random.PRNGKey(0))
    critic_params = critic.init(jax.random.PRNGKey(1), jnp.zeros((1, S + A)))
    target_params = critic.init(jax.random.PRNGKey(2), jnp.zeros((1, S + A)))
    obs = jax.random.normal(jax.random.PRNGKey(3), (B, S))
    next_obs = jax.random.normal(jax.random.PRNGKey(4), (B, S))
    chain = transform.act(params, obs, jax.random.PRNGKey(5))
    terminated = (jnp.arange(B) % 4 == 0).astype(jnp.float32)
    truncated = (jnp.arange(B) % 4 == 1).astype(jnp.float32)
    items = ChainTransition(
        obs=obs, latents=chain.latents, log_ratios=chain.log_ratios, log_probs=chain.log_probs,
        reward=jnp.linspace(-1, 1, B), terminated=terminated, truncated=truncated,
        next_obs=next_obs, next_prior_latent=jnp.zeros((B, A)),
    )
    batch = transform.augment(items, jnp.zeros(B, jnp.int32), 0.97)
    return cfg, policy, transform, critic, params, critic_params, target_params, batch


def _textbook_pi(cfg, params, obs, key):
    out = MLP((16, 2 * A)).apply(params["network"], obs)
    mu, sigma = out[:, :A], jax.nn.softplus(out[:, A:]) + cfg.min_std
    u = mu + sigma * jax.random.normal(key, mu.shape)
    a = jnp.tanh(u)
    log_pi = jnp.sum(jax.scipy.stats.norm.logpdf(u, mu, sigma) - jnp.log(1 - a**2), -1)
    return a, log_pi


def test_gaussian_sac_critic_loss_equals_textbook():
    cfg, policy, transform, critic, params, cparams, tparams, batch = _setup()
    alpha, key = 0.3, jax.random.PRNGKey(7)
    loss, metrics = sac_critic_loss(cparams, tparams, params, batch, alpha, key, transform, critic.apply)

    obs, next_obs = batch.state.obs, batch.next_state.obs
    a_next, log_pi_next = _textbook_pi(cfg, params, next_obs, key)
    q_next = critic.apply(tparams, jnp.concatenate([next_obs, a_next], -1)).min(-1)
    done = batch.terminated  # truncated transitions bootstrap
    y = batch.reward + 0.97 * (1 - done) * (q_next - alpha * log_pi_next)
    a = jnp.tanh(batch.action)
    q = critic.apply(cparams, jnp.concatenate([obs, a], -1))
    ref = 0.5 * (jnp.mean((q[:, 0] - y) ** 2) + jnp.mean((q[:, 1] - y) ** 2))
    assert float(loss) == pytest.approx(float(ref), rel=1e-4)  # float32 summation order
    np.testing.assert_array_equal(batch.truncated[1::4], 1.0)
    assert float(metrics["target_mean"]) == pytest.approx(float(jnp.mean(y)), rel=1e-5)


def test_gaussian_sac_actor_loss_and_gradient_equal_textbook():
    cfg, policy, transform, critic, params, cparams, _, batch = _setup()
    alpha, key = 0.3, jax.random.PRNGKey(8)
    loss_fn = sampled_loss(transform, sac_actor_objective)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch.state, key, alpha, cparams, critic.apply
    )

    def textbook(p):
        a, log_pi = _textbook_pi(cfg, p, batch.state.obs, key)
        q = critic.apply(cparams, jnp.concatenate([batch.state.obs, a], -1)).min(-1)
        return jnp.mean(alpha * log_pi - q)

    ref, ref_grads = jax.value_and_grad(textbook)(params)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5, abs=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5)
