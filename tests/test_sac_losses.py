"""With the Gaussian policy, the SAC losses equal an independent textbook computation; with a
K-step diffusion chain, the critic's targets equal the DA-MDP rules computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffrl_jax import make_diffusion_loss, make_gaussian_policy, sampled_loss
from diffrl_jax.algorithms import sac_actor_objective, sac_critic_loss
from diffrl_jax.networks import MLP, EnsembleCritic
from diffrl_jax.policies import GaussianPolicyConfig
from diffrl_jax.transforms import ChainTransition
from test_kernels import closed_form_policy, hand_means

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


KD, AD, SD, BD = 3, 2, 3, 4  # diffusion chain: K steps, action and obs sizes, env steps


def closed_form_critic(p, features):
    """Two critics Q_i = w_i . z - c_i |z|^2 of the features z [..., F] -> [..., 2]."""
    return features @ p["w"].T - jnp.sum(jnp.square(features), -1, keepdims=True) * p["c"]


def hand_critic(p, z):
    """closed_form_critic in numpy."""
    return z @ np.asarray(p["w"], np.float64).T - np.sum(z**2, -1, keepdims=True) * np.asarray(p["c"])


def hand_features(obs, latent, step, next_latent):
    """[obs, x_k, one_hot(k), x_{k+1}] written out: [N, S + A + K + A]."""
    return np.concatenate([obs, latent, np.eye(KD)[step], next_latent], -1)


def hand_log_ratio(theta, eta, obs, latent, step, next_latent):
    """l = log p(x' | x_k) - log q(x_k | x') with scipy and the means of spec section 2."""
    e = eta[step][:, None]
    m_p, m_q = hand_means(latent, obs, step, next_latent, e, theta)
    sd = np.sqrt(2 * e)
    return (stats.norm.logpdf(next_latent, m_p, sd).sum(-1)
            - stats.norm.logpdf(latent, m_q, sd).sum(-1)), m_p, sd


def hand_targets(tr, theta, eta, tparams, alpha, gamma, mode, eps):
    """y per augmented transition (env step b major, then k), from the DA-MDP rules of spec
    section 4 written out: inside the chain (k < K-1) reward 0, no episode end, next state
    (s, x_{k+1}, k+1), discount 1 ("env") or gamma ("diffusion"); on the last step reward r,
    discount gamma, terminated stops the bootstrap (truncated does not), next state
    (s', x'_0, 0). x' = mean + sd * eps at the next state."""
    b, k = (a.ravel() for a in np.meshgrid(np.arange(BD), np.arange(KD), indexing="ij"))
    last = k == KD - 1
    obs2 = np.where(last[:, None], tr["next_obs"][b], tr["obs"][b])
    lat2 = np.where(last[:, None], tr["next_prior_latent"][b], tr["latents"][b, k + 1])
    k2 = np.where(last, 0, k + 1)
    reward = np.where(last, tr["reward"][b], 0.0)
    discount = np.where(last, gamma, 1.0 if mode == "env" else gamma)
    done = np.where(last, tr["terminated"][b], 0.0)
    _, m_p, sd = hand_log_ratio(theta, eta, obs2, lat2, k2, lat2)
    x_next = m_p + sd * eps
    log_ratio, _, _ = hand_log_ratio(theta, eta, obs2, lat2, k2, x_next)
    q_next = hand_critic(tparams, hand_features(obs2, lat2, k2, x_next)).min(-1)
    targets = reward + discount * (1 - done) * (q_next - alpha * log_ratio)
    current = hand_features(tr["obs"][b], tr["latents"][b, k], k, tr["latents"][b, k + 1])
    return targets, current


@pytest.mark.parametrize("mode", ["env", "diffusion"])
def test_diffusion_sac_critic_target_over_the_chain_equals_hand_computation(mode):
    """K = 3: ChainTransition -> transform.expand -> sac_critic_loss. Each augmented
    transition's target y (one per sample, by vmap) and the batch loss equal the DA-MDP rules
    with closed-form f and critics, scipy densities and the same noise for x'."""
    policy, params, theta, _, eta = closed_form_policy(AD, SD, KD)
    transform = make_diffusion_loss(policy, discount_mode=mode)
    rng = np.random.default_rng(11)
    tr = dict(obs=rng.standard_normal((BD, SD)), latents=2 * rng.standard_normal((BD, KD + 1, AD)),
              reward=np.array([1.5, -0.7, 0.3, 2.0]), terminated=np.array([1.0, 0, 0, 0]),
              truncated=np.array([0.0, 1, 0, 0]), next_obs=rng.standard_normal((BD, SD)),
              next_prior_latent=3 * rng.standard_normal((BD, AD)))
    chain = ChainTransition(**{n: jnp.asarray(v, jnp.float32) for n, v in tr.items()},
                            log_ratios=jnp.zeros((BD, KD)), log_probs=jnp.zeros((BD, KD)))
    gamma, alpha, key = 0.9, 0.3, jax.random.PRNGKey(7)
    batch = transform.expand(chain, gamma)
    flat = jax.tree.map(lambda a: a.reshape((BD * KD,) + a.shape[2:]), batch)
    F = SD + AD + KD + AD
    cparams = {"w": jnp.asarray(rng.standard_normal((2, F)) * 0.5, jnp.float32),
               "c": jnp.array([0.05, 0.1])}
    tparams = {"w": jnp.asarray(rng.standard_normal((2, F)) * 0.5, jnp.float32),
               "c": jnp.array([0.08, 0.02])}

    def loss(one_batch):
        return sac_critic_loss(cparams, tparams, params, one_batch, alpha, key, transform,
                               closed_form_critic)

    per_sample = jax.vmap(lambda one: loss(jax.tree.map(lambda a: a[None], one))[1]["target_mean"])
    eps_one = np.asarray(jax.random.normal(key, (1, AD)), np.float64)  # x' noise of a batch of 1
    ref, _ = hand_targets(tr, theta, eta, tparams, alpha, gamma, mode, eps_one)
    np.testing.assert_allclose(per_sample(flat), ref, rtol=1e-4, atol=1e-3)

    eps = np.asarray(jax.random.normal(key, (BD * KD, AD)), np.float64)
    ref, current = hand_targets(tr, theta, eta, tparams, alpha, gamma, mode, eps)
    q = hand_critic(cparams, current)
    ref_loss = 0.5 * np.sum(np.mean((q - ref[:, None]) ** 2, 0))
    got, metrics = loss(flat)
    assert float(got) == pytest.approx(ref_loss, rel=1e-4)
    assert float(metrics["target_mean"]) == pytest.approx(float(np.mean(ref)), rel=1e-4, abs=1e-3)
