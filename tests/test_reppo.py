"""REPPO / DiffREPPO (spec section 5) against independent oracles: the HL-Gauss histogram
against scipy's normal cdf bin by bin, the TD(lambda) scan against numbers worked out by
hand, the K = 1 Gaussian losses and gradients against a textbook REPPO written here in plain
jnp (hand-written networks, closed-form Gaussian KL, scipy histogram), the KL switch and the
two duals' signs, and a tiny end-to-end run of both algorithms."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffrl_jax.algorithms.constraints import kl_coef_loss
from diffrl_jax.algorithms.reppo import (
    categorical_value,
    critic_loss,
    hl_gauss_probs,
    kl_switch,
    reppo_actor_loss,
    td_lambda_targets,
)
from diffrl_jax.experiment import make_config
from diffrl_jax.learners.reppo import REPPOBatch
from diffrl_jax.networks.critic import CategoricalCritic
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig
from diffrl_jax.policies.gaussian import make_gaussian_policy
from diffrl_jax.training import OnPolicyConfig, train
from diffrl_jax.training.algorithms import build, make_learner
from diffrl_jax.transforms import AugmentedState, make_diffusion_loss
from diffrl_jax.validation import ConfigError

# ---- HL-Gauss ----------------------------------------------------------------------------

def scipy_histogram(target: float, num_bins: int, vmin: float, vmax: float,
                    sigma_ratio: float) -> np.ndarray:
    """Bin masses of N(target, sigma^2) by scipy, the outside mass on the edge bins."""
    width = (vmax - vmin) / num_bins
    sigma = sigma_ratio * width
    masses = []
    for i in range(num_bins):
        lo = -np.inf if i == 0 else vmin + i * width
        hi = np.inf if i == num_bins - 1 else vmin + (i + 1) * width
        masses.append(stats.norm.cdf(hi, target, sigma) - stats.norm.cdf(lo, target, sigma))
    return np.array(masses)


@pytest.mark.parametrize("target", [-3.0, -1.0, -0.93, 0.0, 0.4123, 1.7, 2.0, 5.0])
def test_hl_gauss_matches_scipy_bin_masses(target):
    num_bins, vmin, vmax, ratio = 15, -1.0, 2.0, 0.75
    got = np.asarray(hl_gauss_probs(jnp.asarray(target, jnp.float32), num_bins, vmin, vmax,
                                    ratio))
    want = scipy_histogram(target, num_bins, vmin, vmax, ratio)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert abs(got.sum() - 1.0) < 1e-5


def test_hl_gauss_mean_and_edges():
    num_bins, vmin, vmax, ratio = 151, -100.0, 200.0, 0.75
    width = (vmax - vmin) / num_bins
    centres = vmin + (np.arange(num_bins) + 0.5) * width
    inside = jnp.asarray([-90.0, -3.3, 0.0, 17.25, 123.4, 190.0])
    probs = np.asarray(hl_gauss_probs(inside, num_bins, vmin, vmax, ratio))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # the histogram's mean is the target (to a small fraction of a bin) inside the range
    np.testing.assert_allclose(probs @ centres, np.asarray(inside), atol=0.01 * width)
    # the categorical value of log-probabilities as logits is that mean
    value = categorical_value(jnp.log(jnp.asarray(probs) + 1e-30), vmin, vmax)
    np.testing.assert_allclose(np.asarray(value), np.asarray(inside), atol=0.01 * width)
    # outside the range the edge bins take the outside mass: below vmin all but
    # Phi((vmin + w - t) / sigma)'s complement sits in bin 0
    outside = jnp.asarray([-500.0, 1000.0])
    probs = np.asarray(hl_gauss_probs(outside, num_bins, vmin, vmax, ratio))
    assert probs[0, 0] == pytest.approx(1.0, abs=1e-6) and probs[1, -1] == pytest.approx(1.0, abs=1e-6)
    # at the range's ends: the edge bin holds Phi(w / sigma) of the mass (scipy), half of it
    # from outside the range
    at_ends = np.asarray(hl_gauss_probs(jnp.asarray([vmin, vmax]), num_bins, vmin, vmax, ratio))
    edge = stats.norm.cdf(1.0 / ratio)
    assert at_ends[0, 0] == pytest.approx(edge, abs=1e-5)
    assert at_ends[1, -1] == pytest.approx(edge, abs=1e-5)


# ---- TD(lambda) ----------------------------------------------------------------------------

def test_td_lambda_against_hand_computed_sequence():
    # column 0: a termination at i = 1 and a truncation at i = 3, per-step gamma and lambda
    #   G4 = 5 + 0.9 * (0.25 * 50 + 0.75 * 50) = 50       (last: pure bootstrap)
    #   G3 = 4 + 0.5 * Q = 4 + 0.5 * 40 = 24             (truncated: bootstrap only)
    #   G2 = 3 + 1.0 * (1.0 * G3 + 0.0 * 30) = 27
    #   G1 = 2 + 0.8 * 0 = 2                              (terminated)
    #   G0 = 1 + 0.9 * (0.5 * G1 + 0.5 * 10) = 1 + 0.9 * 6 = 6.4
    # column 1: no ends, lambda 1, gamma 0.5: Monte Carlo plus the final bootstrap
    #   G4 = 1 + 0.5 * 10 = 6, G3 = 4, G2 = 3, G1 = 2.5, G0 = 2.25
    reward = np.array([[1, 1], [2, 1], [3, 1], [4, 1], [5, 1]], np.float32)
    next_q = np.array([[10, 0], [20, 0], [30, 0], [40, 0], [50, 10]], np.float32)
    gamma = np.array([[0.9, 0.5], [0.8, 0.5], [1.0, 0.5], [0.5, 0.5], [0.9, 0.5]], np.float32)
    lam = np.array([[0.5, 1], [0.5, 1], [1.0, 1], [0.5, 1], [0.25, 1]], np.float32)
    term = np.zeros((5, 2), np.float32)
    term[1, 0] = 1
    trunc = np.zeros((5, 2), np.float32)
    trunc[3, 0] = 1
    got = td_lambda_targets(*(jnp.asarray(x) for x in (reward, next_q, gamma, lam, term, trunc)))
    want = np.array([[6.4, 2.25], [2.0, 2.5], [27.0, 3.0], [24.0, 4.0], [50.0, 6.0]])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_td_lambda_zero_is_one_step_targets():
    rng = np.random.default_rng(0)
    r, q, g = (jnp.asarray(rng.normal(size=(7, 3)), jnp.float32) for _ in range(3))
    g = jnp.abs(g) / 3
    term = jnp.asarray(rng.random((7, 3)) < 0.2, jnp.float32)
    trunc = jnp.asarray(rng.random((7, 3)) < 0.2, jnp.float32) * (1 - term)
    got = td_lambda_targets(r, q, g, jnp.zeros_like(r), term, trunc)
    np.testing.assert_allclose(np.asarray(got), np.asarray(r + g * (1 - term) * q), rtol=1e-6)


# ---- K = 1: textbook REPPO ------------------------------------------------------------------

OBS, ACT, HIDDEN, BINS, VMIN, VMAX, RATIO = 3, 2, 8, 11, -2.0, 3.0, 0.75


def dense(p, x):
    return x @ p["kernel"] + p["bias"]


def textbook_policy(params, obs):
    """(mu, sigma) of the tanh-Gaussian: Dense -> relu -> Dense, sigma = softplus + 1e-3."""
    net = params["network"]["params"]
    out = dense(net["dense_1"], jax.nn.relu(dense(net["dense_0"], obs)))
    mu, raw = out[..., :ACT], out[..., ACT:]
    return mu, jnp.log1p(jnp.exp(raw)) + 1e-3


def textbook_critic_logits(params, obs, action):
    """Dense -> LayerNorm -> relu -> Dense on [obs, action]."""
    net = params["params"]["critic"]
    h = dense(net["dense_0"], jnp.concatenate([obs, action], -1))
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    ln = net["layer_norm_0"]
    h = (h - mean) / jnp.sqrt(var + 1e-6) * ln["scale"] + ln["bias"]
    return dense(net["dense_1"], jax.nn.relu(h))


CENTRES = VMIN + (np.arange(BINS) + 0.5) * (VMAX - VMIN) / BINS


def textbook_actor_loss(params, old_params, critic_params, obs, eps, alpha, kl_coef, kl_bound):
    mu, sigma = textbook_policy(params, obs)
    u = mu + sigma * eps
    a = jnp.tanh(u)
    log_pi = jnp.sum(-0.5 * ((u - mu) / sigma) ** 2 - jnp.log(sigma) - 0.5 * math.log(2 * math.pi)
                     - jnp.log(1 - a ** 2), -1)
    probs = jax.nn.softmax(textbook_critic_logits(critic_params, obs, a), -1)
    q = probs @ jnp.asarray(CENTRES, jnp.float32)
    mu0, sigma0 = jax.lax.stop_gradient(textbook_policy(old_params, obs))
    kl = jnp.sum(jnp.log(sigma / sigma0) + (sigma0 ** 2 + (mu0 - mu) ** 2) / (2 * sigma ** 2) - 0.5,
                 -1)
    per_sample = jnp.where(kl < kl_bound, alpha * log_pi - q, kl_coef * kl)
    return jnp.mean(per_sample), kl


def textbook_critic_loss(critic_params, obs, action, target_probs):
    logits = textbook_critic_logits(critic_params, obs, action)
    return -jnp.mean(jnp.sum(target_probs * jax.nn.log_softmax(logits, -1), -1))


@pytest.fixture(scope="module")
def gaussian_setup():
    policy = make_gaussian_policy(OBS, ACT, GaussianPolicyConfig(hidden_sizes=(HIDDEN,)))
    transform = make_diffusion_loss(policy)
    critic = CategoricalCritic(hidden_sizes=(HIDDEN,), num_bins=BINS)
    k = jax.random.split(jax.random.PRNGKey(3), 6)
    params = policy.init(k[0])
    # the old policy: the current one perturbed, so the KLs spread around the bound
    leaves, tree = jax.tree.flatten(params)
    noise = jax.random.split(k[1], len(leaves))
    old_params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(n, x.shape)
                                           for x, n in zip(leaves, noise, strict=True)])
    critic_params = critic.init(k[2], jnp.zeros((1, OBS + ACT)))
    B = 12
    obs = jax.random.normal(k[3], (B, OBS))
    state = AugmentedState(obs=obs, latent=jnp.zeros((B, ACT)), step=jnp.zeros(B, jnp.int32))
    return policy, transform, critic, params, old_params, critic_params, obs, state, k[4]


def test_gaussian_actor_loss_and_gradient_equal_textbook_reppo(gaussian_setup):
    _, transform, critic, params, old_params, critic_params, obs, state, key = gaussian_setup
    alpha, kl_coef = 0.3, 2.5
    # the transform's Gaussian step draws its noise as normal(key, mu.shape): the same eps
    eps = jax.random.normal(key, (obs.shape[0], ACT))
    _, kl = textbook_actor_loss(params, old_params, critic_params, obs, eps, alpha, kl_coef, 0.0)
    kl_bound = float(np.median(np.asarray(kl)))  # about half the samples on each side
    assert 0 < np.mean(np.asarray(kl) >= kl_bound) < 1

    def q_value(features):
        logits = critic.apply(critic_params, features)
        return categorical_value(logits, VMIN, VMAX)

    def ours(p):
        return reppo_actor_loss(p, old_params, state, key, alpha, kl_coef, kl_bound, q_value,
                                transform)[0]

    def textbook(p):
        return textbook_actor_loss(p, old_params, critic_params, obs, eps, alpha, kl_coef,
                                   kl_bound)[0]

    np.testing.assert_allclose(float(ours(params)), float(textbook(params)), rtol=1e-5)
    ours_grad, book_grad = jax.grad(ours)(params), jax.grad(textbook)(params)
    for a, b in zip(jax.tree.leaves(ours_grad), jax.tree.leaves(book_grad), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    _, (_, metrics) = reppo_actor_loss(params, old_params, state, key, alpha, kl_coef,
                                       kl_bound, q_value, transform)
    np.testing.assert_allclose(float(metrics["kl"]), float(jnp.mean(kl)), rtol=1e-5)


def test_gaussian_critic_loss_and_gradient_equal_textbook(gaussian_setup):
    _, transform, critic, _, _, critic_params, obs, state, _ = gaussian_setup
    B = obs.shape[0]
    rng = np.random.default_rng(1)
    action = jnp.asarray(rng.normal(size=(B, ACT)), jnp.float32)  # pre-squash u
    target = rng.uniform(VMIN - 1, VMAX + 1, size=B).astype(np.float32)  # some outside
    probs = jnp.asarray(np.stack([scipy_histogram(t, BINS, VMIN, VMAX, RATIO) for t in target]),
                        jnp.float32)
    features = transform.critic_input(state, action)

    def ours(cp):
        out = critic.apply(cp, features)
        return jnp.mean(critic_loss(out, jnp.asarray(target), "hl_gauss", VMIN, VMAX, RATIO))

    def textbook(cp):
        return textbook_critic_loss(cp, obs, jnp.tanh(action), probs)

    np.testing.assert_allclose(float(ours(critic_params)), float(textbook(critic_params)),
                               rtol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.grad(ours)(critic_params)),
                    jax.tree.leaves(jax.grad(textbook)(critic_params)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # the MSE option: 0.5 * (Q - G)^2 with Q the single output
    out = jnp.asarray(rng.normal(size=(B, 1)), jnp.float32)
    np.testing.assert_allclose(
        np.asarray(critic_loss(out, jnp.asarray(target), "mse", VMIN, VMAX, RATIO)),
        0.5 * (np.asarray(out)[:, 0] - target) ** 2, rtol=1e-6)


# ---- the KL switch and the duals -----------------------------------------------------------

def test_kl_switch_takes_one_term_per_sample():
    free_energy = jnp.asarray([1.0, -2.0, 0.5])
    kl = jnp.asarray([0.01, 0.05, 0.04])  # below, above, at the bound 0.04
    coef = jnp.asarray(3.0)
    grads = jax.grad(lambda f, k, c: jnp.sum(kl_switch(f, k, c, 0.04)), argnums=(0, 1, 2))(
        free_energy, kl, coef)
    np.testing.assert_array_equal(np.asarray(grads[0]), [1.0, 0.0, 0.0])  # free energy below
    np.testing.assert_array_equal(np.asarray(grads[1]), [0.0, 3.0, 3.0])  # lambda_KL above
    assert float(grads[2]) == 0.0  # the multiplier is a constant in the actor's loss
    np.testing.assert_allclose(np.asarray(kl_switch(free_energy, kl, coef, 0.04)),
                               [1.0, 0.15, 0.12], rtol=1e-6)


def test_dual_signs():
    # KL multiplier: gradient descent raises log lambda_KL while KL_hat > eps, lowers it below
    assert float(jax.grad(kl_coef_loss)(jnp.asarray(0.0), jnp.asarray(0.08), 0.04)) < 0
    assert float(jax.grad(kl_coef_loss)(jnp.asarray(0.0), jnp.asarray(0.01), 0.04)) > 0
    # temperature: descent lowers log alpha while H_hat > target, raises it below
    policy = make_gaussian_policy(OBS, ACT, GaussianPolicyConfig(hidden_sizes=(HIDDEN,)))
    transform = make_diffusion_loss(policy)
    assert float(jax.grad(transform.temperature_loss)(jnp.asarray(0.0), 1.0, -2.0)) > 0
    assert float(jax.grad(transform.temperature_loss)(jnp.asarray(0.0), -3.0, -2.0)) < 0


# ---- config and end to end -----------------------------------------------------------------

def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="critic_loss"):
        OnPolicyConfig(algo="reppo", critic_loss="l1").validate()
    with pytest.raises(ConfigError, match="vmin"):
        OnPolicyConfig(algo="reppo", vmin=1.0, vmax=1.0).validate()
    with pytest.raises(ConfigError, match="kl_bound"):
        OnPolicyConfig(algo="reppo", kl_bound=0.0).validate()
    config = make_config("diffreppo", "brax/inverted_pendulum")
    assert config.algo == "diffreppo" and config.vmin < config.vmax
    authors = make_config("diffreppo", "brax/inverted_pendulum", preset="authors")
    assert (authors.kl_bound, authors.num_bins, authors.vmin, authors.vmax) == (0.04, 151, -100, 200)
    assert authors.num_minibatches == 8 * authors.diffusion.num_steps
    for env in ("toy/bandit", "toy/double_well", "toy/three_peaks"):
        for algo in ("reppo", "diffreppo"):
            assert make_config(algo, env).algo == algo


TINY: dict[str, Any] = dict(
    env="toy/bandit", total_env_steps=128, num_envs=4, unroll_length=4, num_epochs=2,
    num_minibatches=2, num_evals=2, num_eval_envs=8, value_hidden=(16,), num_bins=21,
    vmin=-2.0, vmax=3.0,
    diffusion=DiffusionPolicyConfig(num_steps=3, hidden_sizes=(16,), time_hidden=8),
    gaussian=GaussianPolicyConfig(hidden_sizes=(16,)),
)
METRICS = {"critic_loss", "value_error", "actor_loss", "kl", "kl_clipped_fraction", "q",
           "step_log_ratio", "entropy", "alpha", "kl_coef", "first_minibatch_kl",
           "next_q_mean", "target_mean", "target_std", "soft_reward_mean", "rollout_entropy",
           "eval_return", "eval_return_deterministic", "nonfinite_updates"}


@pytest.mark.parametrize("algo", ["reppo", "diffreppo"])
def test_tiny_train(algo):
    config = OnPolicyConfig(algo=algo, **TINY).validate()
    _, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    assert METRICS <= set(metrics), METRICS - set(metrics)
    for name, value in metrics.items():
        assert np.all(np.isfinite(np.asarray(value))), name
        assert np.asarray(value).shape[0] == 2, name
    # the first minibatch's actor compares the rollout's policy with itself
    np.testing.assert_array_equal(np.asarray(metrics["first_minibatch_kl"]), 0.0)
    assert np.all(np.asarray(metrics["nonfinite_updates"]) == 0)
    assert np.all(np.asarray(metrics["alpha"]) > 0)


# ---- the auxiliary predictions (next embedding, reward) ------------------------------------

def textbook_trunk(net, features):
    """The critic's hidden layers (Dense -> LayerNorm -> relu) by hand."""
    h = features
    for i in range(len([k for k in net if k.startswith("layer_norm_")])):
        h = dense(net[f"dense_{i}"], h)
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        ln = net[f"layer_norm_{i}"]
        h = jax.nn.relu((h - mean) / jnp.sqrt(var + 1e-6) * ln["scale"] + ln["bias"])
    return h


def _aux_learner(aux_loss_mult=1.0, aux=True):
    config = OnPolicyConfig(algo="diffreppo", aux_predictions=aux, aux_loss_mult=aux_loss_mult,
                            **dict(TINY, value_hidden=(16, 8))).validate()
    env, policy, transform = build(config)
    learner = make_learner(config, env, policy, transform, lambda x: x, 1, 10)
    return learner, transform, learner.init(jax.random.PRNGKey(4))


def _aux_batch(transform, rng, B=6, H=8):
    state = AugmentedState(obs=jnp.asarray(rng.normal(size=(B, 1)), jnp.float32),
                           latent=jnp.asarray(rng.normal(size=(B, 1)), jnp.float32),
                           step=jnp.asarray(rng.integers(0, 3, size=B), jnp.int32))
    return REPPOBatch(state=state, action=jnp.asarray(rng.normal(size=(B, 1)), jnp.float32),
                      target=jnp.asarray(rng.uniform(-1, 2, size=B), jnp.float32),
                      next_embedding=jnp.asarray(rng.normal(size=(B, H)), jnp.float32),
                      reward=jnp.asarray(rng.uniform(0, 1, size=B), jnp.float32))


def test_aux_losses_equal_a_textbook_forward_of_the_heads():
    learner, transform, state = _aux_learner()
    batch = _aux_batch(transform, np.random.default_rng(0))
    _, metrics = jax.jit(learner.update)(state, batch, jax.random.PRNGKey(1))
    params = state.critic_params["params"]
    h = textbook_trunk(params["critic"], transform.critic_input(batch.state, batch.action))
    assert h.shape == (6, 8)  # the last hidden layer: the embedding
    next_embedding = dense(params["next_embedding"], h)
    reward = dense(params["reward"], h)[:, 0]
    np.testing.assert_allclose(
        float(metrics["aux_embedding_loss"]),
        float(np.mean((np.asarray(next_embedding) - np.asarray(batch.next_embedding)) ** 2)),
        rtol=1e-5)
    np.testing.assert_allclose(
        float(metrics["aux_reward_loss"]),
        float(np.mean((np.asarray(reward) - np.asarray(batch.reward)) ** 2)), rtol=1e-5)


def test_aux_loss_weight_moves_the_critic_and_zero_weight_is_no_heads():
    """aux_loss_mult = 0: the critic's shared layers take the step of a critic without the
    heads (same value loss, same clipped norm); > 0 they take another one."""
    batch = _aux_batch(None, np.random.default_rng(2))
    key = jax.random.PRNGKey(1)
    plain, _, plain_state = _aux_learner(aux=False)
    plain_next, plain_metrics = jax.jit(plain.update)(plain_state, batch.replace(
        next_embedding=None, reward=None), key)
    assert set(plain_state.critic_params["params"]) == {"critic"}  # no heads without aux
    trunks = {}
    for weight in (0.0, 1.0):
        learner, _, state = _aux_learner(weight)
        # the heads' critic starts from the plain critic's shared layers
        assert jax.tree.all(jax.tree.map(jnp.array_equal, state.critic_params["params"]["critic"],
                                         plain_state.critic_params["params"]["critic"]))
        after, metrics = jax.jit(learner.update)(state, batch, key)
        assert float(metrics["critic_loss"]) == pytest.approx(float(plain_metrics["critic_loss"]))
        trunks[weight] = after.critic_params["params"]["critic"]
    same = jax.tree.map(lambda a, b: np.allclose(a, b, rtol=1e-6, atol=1e-7), trunks[0.0],
                        plain_next.critic_params["params"]["critic"])
    assert jax.tree.all(same)
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b, rtol=1e-4, atol=1e-6), trunks[1.0],
                         trunks[0.0])
    assert any(jax.tree.leaves(moved))
    with pytest.raises(ConfigError, match="aux_loss_mult"):
        OnPolicyConfig(algo="reppo", aux_loss_mult=-1.0).validate()


def test_tiny_train_with_aux_predictions_learns_the_bandit_reward():
    """On toy/bandit the reward is a function of the action: the reward head's error falls
    over training, and the metrics are finite."""
    config = OnPolicyConfig(algo="diffreppo", aux_predictions=True,
                            **dict(TINY, total_env_steps=1024, num_evals=4)).validate()
    _, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    reward_loss = np.asarray(metrics["aux_reward_loss"])
    assert np.all(np.isfinite(reward_loss)) and np.all(
        np.isfinite(np.asarray(metrics["aux_embedding_loss"])))
    assert reward_loss[-1] < 0.5 * reward_loss[0], reward_loss
