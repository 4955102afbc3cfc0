"""Deterministic sampling of the diffusion policy (the authors' ODE and the kernel-mean path)
and the prior draw x'_0 that rollouts store for the next chain (issue 19, items 4 and 5).

Oracles: hand computation of the step formulas, the reward peaks of toy/bandit, and a
hand-built control network in closed form (no training)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax import make_diffusion_loss, make_diffusion_policy, make_gaussian_policy
from diffrl_jax.checkpoint_eval import _deterministic_mode
from diffrl_jax.envs import init_stats, make_env, peaks_of
from diffrl_jax.envs.toy import bandit_reward
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.policies.diffusion import DETERMINISTIC_SAMPLERS
from diffrl_jax.training import OffPolicyConfig
from diffrl_jax.training.collection import step_envs
from diffrl_jax.training.evaluation import evaluate_policy
from diffrl_jax.training.on_policy import collect_rollout
from diffrl_jax.validation import ConfigError

SIGMA = 3.0  # the default prior_std
# the default step sizes (dt0 0.125, linear schedule with m = 0.17, friction 0.25), by hand:
# eta_k = 0.125 * ((1 - t) * 0.17 + t) / 0.25 with t = (8 - k) / 8
ETA = [0.125 * ((1 - (8 - k) / 8) * 0.17 + (8 - k) / 8) / 0.25 for k in range(8)]


class LinearControl(nn.Module):
    """f(x, s, k) = a * x + c: no parameters, so every step can be computed by hand."""

    a: float = 0.4
    c: float = 0.3

    @nn.compact
    def __call__(self, latent, obs, step):
        return self.a * latent + self.c + 0.0 * obs[..., :1]


class MixtureScoreControl(nn.Module):
    """The control whose total Langevin drift -x / sigma_p^2 + f is the score of an equal
    mixture of N(+-mu, s^2) per dimension: grad log m(x) = (mu tanh(mu x / s^2) - x) / s^2.
    Symmetric about x = 0, two modes at the latents of the reward peaks +-0.5."""

    mu: float = math.atanh(0.5)
    s: float = 0.35

    @nn.compact
    def __call__(self, latent, obs, step):
        score = (self.mu * jnp.tanh(self.mu * latent / self.s**2) - latent) / self.s**2
        return latent / SIGMA**2 + score + 0.0 * obs[..., :1]


def _policy(sampler, control, obs_dim=1, action_dim=1):
    config = DiffusionPolicyConfig(deterministic_sampler=sampler)
    return make_diffusion_policy(obs_dim, action_dim, config, control_network=control)


def test_ode_step_matches_hand_computation():
    policy = _policy("ode", LinearControl(), obs_dim=2, action_dim=2)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.ones((1, 2))
    x = jnp.array([[0.7, -1.2]])
    for k in (0, 3, 7):
        step = jnp.full((1,), k, jnp.int32)
        out, ev = policy.sample_step(params, obs, x, step, jax.random.PRNGKey(1), True)
        # x + eta * (-x / 9 + 0.5 * (0.4 x + 0.3)), written out per dimension
        hand = [xi + ETA[k] * (-xi / 9.0 + 0.5 * (0.4 * xi + 0.3)) for xi in (0.7, -1.2)]
        np.testing.assert_allclose(out[0], hand, rtol=1e-6, atol=1e-7)
        # its StepEval is the kernels' log-densities at the point taken
        again = policy.evaluate(params, obs, x, step, out)
        np.testing.assert_allclose(ev.log_ratio, again.log_ratio, rtol=1e-6)
    # the whole chain: a prior draw (the stochastic chain's own, same key), then K ODE steps
    key = jax.random.PRNGKey(5)
    chain = policy.sample_chain(params, obs, key, True)
    x0 = np.asarray(chain.latents[0, 0], np.float64)
    np.testing.assert_array_equal(x0, policy.sample_chain(params, obs, key).latents[0, 0])
    assert np.all(np.abs(x0) > 1e-3)  # not the prior mean
    xs = [x0]
    for k in range(8):
        xs.append(xs[-1] + ETA[k] * (-xs[-1] / 9.0 + 0.5 * (0.4 * xs[-1] + 0.3)))
    np.testing.assert_allclose(chain.latents[0], np.stack(xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chain.action[0], np.clip(np.tanh(xs[-1]), -0.999, 0.999), rtol=1e-5)
    other = policy.sample_chain(params, obs, jax.random.PRNGKey(6), True)
    assert float(jnp.abs(other.latents[0, 0] - chain.latents[0, 0]).min()) > 1e-3  # new draw


def test_mean_option_keeps_the_zero_start_kernel_mean_chain():
    policy = _policy("mean", LinearControl(), obs_dim=2, action_dim=2)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.ones((3, 2))
    a = policy.sample_chain(params, obs, jax.random.PRNGKey(2), True)
    b = policy.sample_chain(params, obs, jax.random.PRNGKey(3), True)
    np.testing.assert_array_equal(a.latents, b.latents)  # no key dependence at all
    xs = [np.zeros(2)]
    for k in range(8):  # the kernel mean x + eta * (-x / 9 + 0.4 x + 0.3), by hand
        xs.append(xs[-1] + ETA[k] * (-xs[-1] / 9.0 + 0.4 * xs[-1] + 0.3))
    for i in range(3):
        np.testing.assert_allclose(a.latents[i], np.stack(xs), rtol=1e-5, atol=1e-6)


def test_ode_lands_on_a_peak_where_the_mean_path_stays_in_the_valley():
    """A symmetric two-mode policy: the mean path from x_0 = 0 never leaves 0 (the valley,
    reward ~0); the ODE from prior draws ends near one of the two peaks, both used."""
    peaks = np.asarray(peaks_of("toy/bandit"))
    obs = jnp.ones((1000, 1))
    key = jax.random.PRNGKey(0)
    ode = _policy("ode", MixtureScoreControl())
    actions = np.asarray(ode.sample_chain(ode.init(key), obs, key, True).action[:, 0])
    distance = np.min(np.abs(actions[:, None] - peaks[None]), axis=1)
    assert np.mean(distance < 0.05) > 0.9
    assert 0.35 < np.mean(actions > 0) < 0.65  # both modes
    mean = _policy("mean", MixtureScoreControl())
    mean_actions = mean.sample_chain(mean.init(key), obs, key, True).action
    np.testing.assert_allclose(mean_actions, 0.0, atol=1e-6)

    # the same through the evaluation program on toy/bandit (rewards of the real env)
    env = make_env("toy/bandit")
    returns = {}
    for name, policy in (("ode", ode), ("mean", mean)):
        transform = make_diffusion_loss(policy)
        _, det = evaluate_policy(env, transform, policy.init(key), init_stats(1),
                                 jax.random.PRNGKey(1), 256, tuple(peaks), normalize_obs=False)
        returns[name] = float(jnp.mean(det.returns))
        counts = np.asarray(det.mode_counts)
        if name == "ode":
            assert counts.min() > 0.25 * counts.sum()
    assert returns["ode"] > 0.85
    assert returns["mean"] < 1e-3  # 2 exp(-12.5) ~ 7e-6 at a = 0


def test_evaluation_draws_other_x0_for_the_deterministic_half():
    policy = _policy("ode", LinearControl())
    transform = make_diffusion_loss(policy)
    env = make_env("toy/bandit")
    params = policy.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(3)
    stochastic, deterministic = evaluate_policy(env, transform, params, init_stats(1), key, 8,
                                                normalize_obs=False)
    # the deterministic half's returns are a function of its x_0 draws: they come from the
    # step key folded with 1, not from the step key that the stochastic half uses
    step_key = jax.random.split(jax.random.split(key)[1], env.episode_length)[0]
    chain = transform.act(params, jnp.ones((8, 1)), jax.random.fold_in(step_key, 1), True)
    np.testing.assert_allclose(deterministic.returns, bandit_reward(chain.action[:, 0]), rtol=1e-5)
    shared = transform.act(params, jnp.ones((8, 1)), step_key, True)
    assert not np.allclose(shared.latents[:, 0], chain.latents[:, 0])


def test_config_names_the_sampler_and_checkpoint_eval_describes_it():
    with pytest.raises(ConfigError, match=r"DiffusionPolicyConfig\.deterministic_sampler must be "
                                          r"one of \['ode', 'mean'\]"):
        DiffusionPolicyConfig(deterministic_sampler="flow")
    assert DiffusionPolicyConfig().deterministic_sampler == "ode"
    for sampler in DETERMINISTIC_SAMPLERS:
        config = OffPolicyConfig(algo="diffsac",
                                 diffusion=DiffusionPolicyConfig(deterministic_sampler=sampler))
        assert _deterministic_mode(config) == DETERMINISTIC_SAMPLERS[sampler]
    assert "Gaussian" in _deterministic_mode(OffPolicyConfig(algo="sac"))


# ---- item 5: the x'_0 stored with each environment step ---------------------------------


def _rollout(policy, env_name, T=5, N=4):
    env = make_env(env_name)
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    env_state = env.reset(jax.random.PRNGKey(1), N)
    out = collect_rollout(env, transform, params, env_state, init_stats(env.obs_dim), jnp.zeros(N),
                          jax.random.PRNGKey(2), T, True)
    return env, transform, params, env_state, out


def test_on_policy_rollout_stores_the_next_chains_real_x0():
    policy = make_diffusion_policy(3, 1, DiffusionPolicyConfig(num_steps=3, hidden_sizes=(8,),
                                                               time_hidden=8))
    *_, (_, _, tr, _) = _rollout(policy, "toy/double_well")
    # the next state of step t's last denoising step is step t + 1's first state
    np.testing.assert_array_equal(tr.next_prior_latent[:-1], tr.latents[1:, :, 0])
    np.testing.assert_array_equal(tr.next_obs[:-1], tr.obs[1:])  # no episode ends here
    # the x_0 are prior draws: spread like N(0, 3^2), and the last x'_0 is a new draw
    assert 1.5 < float(jnp.std(tr.latents[:, :, 0])) < 5.0
    assert float(jnp.abs(tr.next_prior_latent[-1] - tr.latents[:, :, 0]).min()) > 0.0


def test_step_envs_starts_from_a_given_x0_and_gaussian_rollouts_are_unchanged():
    policy = make_diffusion_policy(1, 1, DiffusionPolicyConfig(num_steps=2, hidden_sizes=(8,),
                                                               time_hidden=8))
    env = make_env("toy/bandit")
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    state = env.reset(jax.random.PRNGKey(1), 3)
    x0 = jnp.array([[1.0], [-2.0], [0.5]])
    _, tr, _, _ = step_envs(env, transform, params, state, init_stats(1), jnp.zeros(3),
                            jax.random.PRNGKey(2), False, x0)
    np.testing.assert_array_equal(tr.latents[:, 0], x0)
    _, own, _, _ = step_envs(env, transform, params, state, init_stats(1), jnp.zeros(3),
                             jax.random.PRNGKey(2), False)
    np.testing.assert_array_equal(own.next_prior_latent, tr.next_prior_latent)
    assert float(jnp.abs(own.latents[:, 0] - own.next_prior_latent).min()) > 0.0

    # the Gaussian's x_0 is the dummy 0 either way: its rollout is the old step-by-step one
    gaussian = make_gaussian_policy(3, 1, GaussianPolicyConfig((8,)))
    env, transform, params, env_state, (_, _, tr, _) = _rollout(gaussian, "toy/double_well")
    old_step = jax.jit(lambda s, r, k: step_envs(env, transform, params, s,
                                                 init_stats(env.obs_dim), r, k, True))
    returns = jnp.zeros(4)
    for t, key in enumerate(jax.random.split(jax.random.PRNGKey(2), 5)):
        env_state, old, returns, _ = old_step(env_state, returns, key)
        for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(jax.tree.map(lambda x: x[t], tr))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # scan vs loop rounding
