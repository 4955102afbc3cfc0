"""PPO pieces against independent textbook computations: GAE with plain Python loops, the
clipped-surrogate loss and its gradient with a hand-written tanh-Gaussian, and the DA-MDP
bookkeeping of a tiny diffusion rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.algorithms.ppo import PPOBatch, gae, normalize_advantages, ppo_loss
from diffrl_jax.networks.critic import EnsembleCritic
from diffrl_jax.networks.mlp import MLP
from diffrl_jax.policies import GaussianPolicyConfig, make_gaussian_policy
from diffrl_jax.policies import make_diffusion_policy
from diffrl_jax.learners.ppo import rollout_batch
from diffrl_jax.training.on_policy import OnPolicyConfig
from diffrl_jax.transforms import AugmentedState, ChainTransition, make_diffusion_loss

from conftest import small_diffusion_config

OBS, ACT = 3, 2


def reference_gae(reward, value, next_value, discount, lam, terminated, truncated):
    """Textbook GAE, one environment at a time, with plain Python loops over time."""
    length, num_envs = reward.shape
    advantages = np.zeros((length, num_envs))
    for n in range(num_envs):
        running = 0.0
        for i in reversed(range(length)):
            if i == length - 1 or terminated[i, n] or truncated[i, n]:
                running = 0.0  # the trace stops at an episode end and at the rollout's end
            bootstrap = 0.0 if terminated[i, n] else discount[i, n] * next_value[i, n]
            delta = reward[i, n] + bootstrap - value[i, n]
            running = delta + discount[i, n] * lam[i, n] * running
            advantages[i, n] = running
    return advantages


def test_gae_matches_python_loops_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    length, num_envs = 12, 3
    reward, value, next_value = (rng.normal(size=(length, num_envs)) for _ in range(3))
    discount = rng.uniform(0.8, 1.0, size=(length, num_envs))
    lam = rng.uniform(0.5, 1.0, size=(length, num_envs))
    terminated = np.zeros((length, num_envs), bool)
    truncated = np.zeros((length, num_envs), bool)
    terminated[3, 0] = terminated[7, 1] = True
    truncated[5, 0] = truncated[2, 2] = truncated[9, 1] = True
    adv, target = gae(*(jnp.asarray(x, jnp.float32) for x in
                        (reward, value, next_value, discount, lam, terminated, truncated)))
    expected = reference_gae(reward, value, next_value, discount, lam, terminated, truncated)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(target, expected + value, rtol=1e-5, atol=1e-5)
    # truncation bootstraps with the final observation's value, termination does not
    i = 5
    assert adv[i, 0] == pytest.approx(reward[i, 0] + discount[i, 0] * next_value[i, 0] - value[i, 0], abs=1e-5)
    i = 3
    assert adv[i, 0] == pytest.approx(reward[i, 0] - value[i, 0], abs=1e-5)


def _gaussian_setup():
    policy = make_gaussian_policy(OBS, ACT, GaussianPolicyConfig(hidden_sizes=(8,)))
    transform = make_diffusion_loss(policy)
    value_net = EnsembleCritic(hidden_sizes=(8,), num_critics=1)
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    params = policy.init(keys[0])
    value_params = value_net.init(keys[1], jnp.zeros((1, OBS)))
    B = 32
    obs = jax.random.normal(keys[2], (B, OBS))
    u = jax.random.normal(keys[3], (B, ACT))
    batch = PPOBatch(
        state=AugmentedState(obs=obs, latent=jnp.zeros((B, ACT)), step=jnp.zeros((B,), jnp.int32)),
        action=u,
        # old log-probs near the current ones, so some ratios fall outside the clip range
        log_prob=transform.evaluate(params, AugmentedState(obs, jnp.zeros((B, ACT)),
                                                           jnp.zeros((B,), jnp.int32)), u).log_prob
        + 0.3 * jax.random.normal(keys[4], (B,)),
        log_ratio=jnp.zeros(B),  # unused with entropy_coef = 0
        advantage=jax.random.normal(keys[5], (B,)) + 0.5,
        value_target=jax.random.normal(keys[6], (B,)),
    )
    return policy, transform, value_net, params, value_params, batch


def textbook_ppo_loss(params, value_params, batch, network, value_net, clip_eps, value_coef,
                      min_std, standardize):
    """Schulman et al.'s clipped surrogate for a tanh-Gaussian, written from scratch.

    The tanh log-Jacobian is the same for old and new policy at a given u, so the ratio uses
    the Gaussian density of u alone."""
    out = network.apply(params["network"], batch.state.obs)
    mu, raw = jnp.split(out, 2, axis=-1)
    sigma = jax.nn.softplus(raw) + min_std
    u = batch.action
    log_gauss = jnp.sum(-0.5 * ((u - mu) / sigma) ** 2 - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi), -1)
    old_log_gauss = batch.log_prob + jnp.sum(jnp.log(1.0 - jnp.tanh(u) ** 2), -1)
    ratio = jnp.exp(log_gauss - old_log_gauss)
    adv = batch.advantage
    adv = (adv - adv.mean()) / (adv.std() + 1e-8) if standardize else adv - adv.mean()
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    value = value_net.apply(value_params, batch.state.obs)[..., 0]
    return -surrogate.mean() + value_coef * 0.5 * jnp.mean((value - batch.value_target) ** 2)


@pytest.mark.parametrize("normalization", ["center", "standardize"])
def test_gaussian_ppo_loss_and_gradient_equal_textbook(normalization):
    policy, transform, value_net, params, value_params, batch = _gaussian_setup()
    network = MLP((8, 2 * ACT), activation="relu")

    def ours(p, v):
        return ppo_loss(p, v, batch, 0.0, 0.2, 0.5, transform,
                        lambda vp, f: value_net.apply(vp, f)[..., 0], normalization)[0]

    def textbook(p, v):
        return textbook_ppo_loss(p, v, batch, network, value_net, 0.2, 0.5, 1e-3,
                                 normalization == "standardize")

    loss, grads = jax.value_and_grad(ours, argnums=(0, 1))(params, value_params)
    ref_loss, ref_grads = jax.value_and_grad(textbook, argnums=(0, 1))(params, value_params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the batch really exercises clipping on both sides
    _, metrics = ppo_loss(params, value_params, batch, 0.0, 0.2, 0.5, transform,
                          lambda vp, f: value_net.apply(vp, f)[..., 0], normalization)
    assert 0.1 < float(metrics["clip_fraction"]) < 0.9
    assert float(metrics["noising_loss"]) == 0.0


def test_ratio_is_one_and_soft_advantage_is_unchanged_at_the_rollout_parameters():
    policy = make_diffusion_policy(OBS, ACT, small_diffusion_config())
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (16, OBS))
    chain = policy.sample_chain(params, obs, jax.random.PRNGKey(2))
    k = 2
    state = AugmentedState(obs, chain.latents[:, k], jnp.full((16,), k, jnp.int32))
    advantage = jax.random.normal(jax.random.PRNGKey(3), (16,))
    batch = PPOBatch(state=state, action=chain.latents[:, k + 1], log_prob=chain.log_probs[:, k],
                     log_ratio=chain.log_ratios[:, k], advantage=advantage,
                     value_target=jnp.zeros(16))
    value_apply = lambda vp, f: jnp.sum(f, -1) * vp  # noqa: E731
    c = 0.3
    _, metrics = ppo_loss(params, 0.0, batch, c, 0.2, 0.5, transform, value_apply, "center")
    assert float(metrics["ratio_deviation"]) < 1e-5
    # at the rollout parameters: policy loss = -mean(centred A), noising loss = -c mean log q
    centred = advantage - advantage.mean()
    np.testing.assert_allclose(metrics["policy_loss"], -centred.mean(), atol=1e-6)
    log_q = chain.log_probs[:, k] - chain.log_ratios[:, k]
    np.testing.assert_allclose(metrics["noising_loss"], -c * log_q.mean(), rtol=1e-4)


def test_advantage_uses_the_current_log_ratio_and_noising_term_has_its_gradient():
    """Away from the rollout parameters the surrogate's advantage is A + c (l_old - l_theta),
    and the noising term's gradient is -c * mean(rho * 1[unclipped] * grad log q)."""
    policy = make_diffusion_policy(OBS, ACT, small_diffusion_config())
    transform = make_diffusion_loss(policy)
    old = policy.init(jax.random.PRNGKey(0))
    new = jax.tree.map(lambda x: x * 1.05, old)
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, OBS))
    chain = policy.sample_chain(old, obs, jax.random.PRNGKey(2))
    k = 1
    state = AugmentedState(obs, chain.latents[:, k], jnp.full((64,), k, jnp.int32))
    batch = PPOBatch(state=state, action=chain.latents[:, k + 1], log_prob=chain.log_probs[:, k],
                     log_ratio=chain.log_ratios[:, k],
                     advantage=jax.random.normal(jax.random.PRNGKey(3), (64,)),
                     value_target=jnp.zeros(64))
    value_apply = lambda vp, f: jnp.zeros(f.shape[:-1]) + vp  # noqa: E731
    c, eps = 0.5, 0.2

    def expected(params):
        ev = policy.evaluate(params, state.obs, state.latent, state.step, batch.action)
        rho = jnp.exp(ev.log_prob - batch.log_prob)
        adv = batch.advantage + c * (batch.log_ratio - jax.lax.stop_gradient(ev.log_ratio))
        adv = jax.lax.stop_gradient(adv - adv.mean())
        surrogate = jnp.minimum(rho * adv, jnp.clip(rho, 1 - eps, 1 + eps) * adv)
        unclipped = jax.lax.stop_gradient((rho * adv <= jnp.clip(rho, 1 - eps, 1 + eps) * adv) * rho)
        return -surrogate.mean() - c * jnp.mean(unclipped * ev.log_noising)

    def ours(params):
        return ppo_loss(params, 0.0, batch, c, eps, 0.0, transform, value_apply, "center")[0]

    np.testing.assert_allclose(ours(new), expected(new), rtol=1e-5)
    g, g_ref = jax.grad(ours)(new), jax.grad(expected)(new)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert np.abs(np.asarray(g["dt"])).max() > 0  # the step sizes get a gradient
    assert np.abs(np.asarray(ours(new) - ours(old))) > 1e-4  # the perturbation matters


def test_normalize_advantages_modes_and_error():
    a = jnp.array([1.0, 2.0, 6.0])
    np.testing.assert_allclose(normalize_advantages(a, "none"), a)
    np.testing.assert_allclose(normalize_advantages(a, "center"), a - 3.0)
    np.testing.assert_allclose(normalize_advantages(a, "standardize").std(), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown advantage normalization 'rank'"):
        normalize_advantages(a, "rank")


def test_rollout_batch_damdp_bookkeeping_on_a_tiny_rollout():
    """T = 2 env steps of N = 1 env with K = 3: 6 augmented steps in (t, k) order, reward
    only on last steps, soft reward -c * l_k on every step, GAE over the 6 steps with lambda
    applied once per env step ("env" mode), the chain's next state bootstrapped at its end."""
    K, T = 3, 2
    policy = make_diffusion_policy(1, 1, small_diffusion_config(num_steps=K))
    transform = make_diffusion_loss(policy, "env")
    rng = np.random.default_rng(0)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    transitions = ChainTransition(
        obs=f32([[[0.1]], [[0.2]]]),
        latents=f32(rng.normal(size=(T, 1, K + 1, 1))),
        log_ratios=f32(rng.normal(size=(T, 1, K))),
        log_probs=f32(rng.normal(size=(T, 1, K))),
        reward=f32([[1.0], [2.0]]),
        terminated=f32([[0.0], [0.0]]),
        truncated=f32([[1.0], [0.0]]),  # the first env step ends its episode by truncation
        next_obs=f32([[[0.7]], [[0.3]]]),
        next_prior_latent=f32([[[0.5]], [[-0.5]]]),
    )
    gamma, lam, c = 0.9, 0.8, 0.1
    config = OnPolicyConfig(algo="diffppo", discount=gamma, gae_lambda=lam,
                            diffusion=small_diffusion_config(num_steps=K))

    def value_apply(_, features):  # a known function of [obs, x_k, one_hot(k)]
        return features[..., 0] * 2.0 + features[..., 1] + jnp.sum(features[..., 2:] * jnp.arange(K), -1)

    batch, _ = rollout_batch(transitions, None, value_apply, transform, c, config)
    assert batch.advantage.shape == (T * K,)
    np.testing.assert_array_equal(batch.state.step, [0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(batch.state.obs[:, 0], [0.1] * 3 + [0.2] * 3)
    latents = np.asarray(transitions.latents)[:, 0, :, 0]
    np.testing.assert_allclose(batch.state.latent[:, 0], latents[:, :K].reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(batch.action[:, 0], latents[:, 1:].reshape(-1), rtol=1e-6)

    # plain-loop reference over the augmented sequence
    V = lambda obs, x, k: obs * 2.0 + x + k  # noqa: E731
    l = np.asarray(transitions.log_ratios)[:, 0]
    rewards, values, next_values, discounts, lams, terms, truncs = [], [], [], [], [], [], []
    for t in range(T):
        obs = float(transitions.obs[t, 0, 0])
        for k in range(K):
            last = k == K - 1
            rewards.append((float(transitions.reward[t, 0]) if last else 0.0) - c * l[t, k])
            values.append(V(obs, latents[t, k], k))
            if last:
                next_values.append(V(float(transitions.next_obs[t, 0, 0]),
                                     float(transitions.next_prior_latent[t, 0, 0]), 0))
            else:
                next_values.append(V(obs, latents[t, k + 1], k + 1))
            discounts.append(gamma if last else 1.0)
            lams.append(lam if last else 1.0)
            terms.append(False)
            truncs.append(bool(last and transitions.truncated[t, 0] > 0))
    col = lambda x: np.asarray(x, np.float64)[:, None]  # noqa: E731
    expected = reference_gae(col(rewards), col(values), col(next_values), col(discounts),
                             col(lams), col(terms), col(truncs))[:, 0]
    np.testing.assert_allclose(batch.advantage, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch.value_target, expected + np.asarray(values), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch.log_ratio, l.reshape(-1), rtol=1e-6)
