"""The entropy lower bound and the path KL bound of spec section 3, against closed forms.

With a LINEAR control f(x, s, k) = a_k x + c_k and a 1-D action, every step of the chain is
an affine map plus Gaussian noise,

    x_{k+1} = alpha_k x_k + beta_k + sqrt(2 eta_k) eps_k,
    alpha_k = 1 + eta_k (-1 / sigma_p^2 + a_k),   beta_k = eta_k c_k,

so from x_0 ~ N(0, sigma_p^2) every marginal x_k ~ N(m_k, v_k) is known exactly:

    m_{k+1} = alpha_k m_k + beta_k,   v_{k+1} = alpha_k^2 v_k + 2 eta_k,
    Cov(x_k, x_{k+1}) = alpha_k v_k.

That gives exact oracles, all computed here in float64 independently of the library:
  * H(x_K) = 0.5 log(2 pi e v_K), the true entropy the estimate H_hat must lower-bound;
  * E[l_k] for the library's Langevin noising kernel q (a Gaussian expectation of a quadratic),
    hence the exact expected value of H_hat and of the entropy gap H(x_K) - E[H_hat];
  * the exact posterior q*(x_k | x_{k+1}) of the chain, with which the bound is an equality.

Every Monte-Carlo comparison uses a tolerance of Z standard errors, the standard error being
estimated from the same samples; with N = 200k samples these are a few 1e-3 nats.
The fixture is parametrised over a K = 4 chain and a single-step (K = 1) chain, so every test
checks both.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffrl_jax.policies import DiffusionPolicyConfig, make_diffusion_policy
from diffrl_jax.policies.kernels import inverse_softplus

NUM_SAMPLES = 200_000
Z = 5.0  # tolerance in standard errors; the keys are fixed, this only guards against RNG changes
PRIOR_STD = 3.0
FRICTION = 0.25  # eta_k = softplus(dt_k) / friction (friction not learned)
# The normalised Gaussian target pi* of the path-bound tests. Its width is comparable to x_K's,
# so that log pi*(x_K) has a small variance (MC error ~3e-3) while KL(x_K || pi*) ~ 0.18 is not 0.
TARGET_MEAN, TARGET_STD = 1.0, 2.0


class LinearControl(nn.Module):
    """f(x, s, k) = a[k] * x + c[k], elementwise; the observation is ignored."""

    a_init: tuple[float, ...]
    c_init: tuple[float, ...]

    @nn.compact
    def __call__(self, latent, obs, step):
        a = self.param("a", lambda _key: jnp.asarray(self.a_init, jnp.float32))
        c = self.param("c", lambda _key: jnp.asarray(self.c_init, jnp.float32))
        return a[step][..., None] * latent + c[step][..., None]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One linear-Gaussian chain: step sizes eta_k and control coefficients a_k, c_k."""

    eta: tuple[float, ...]
    a: tuple[float, ...]
    c: tuple[float, ...]


# Exact entropy gaps (from `exact_expected_log_ratios`): about 0.188 nats for K = 4 and 0.140
# for K = 1; with a = c = 0 the same step sizes would give a gap of only ~3e-5.
SETTINGS = {
    "K4": Setting(eta=(0.4, 0.3, 0.2, 0.1), a=(-0.3, 0.2, -0.4, 0.1), c=(0.5, -0.3, 0.4, 0.2)),
    "K1": Setting(eta=(0.4,), a=(-0.4,), c=(0.5,)),
}


def closed_form_chain(setting: Setting) -> dict:
    """alpha_k, beta_k [K] and the exact marginal means m_k, variances v_k [K+1] (float64)."""
    eta, a, c = (np.asarray(v, np.float64) for v in (setting.eta, setting.a, setting.c))
    alpha = 1.0 + eta * (-1.0 / PRIOR_STD**2 + a)
    beta = eta * c
    means, variances = [0.0], [PRIOR_STD**2]
    for k in range(len(eta)):
        means.append(alpha[k] * means[-1] + beta[k])
        variances.append(alpha[k] ** 2 * variances[-1] + 2.0 * eta[k])
    return dict(eta=eta, alpha=alpha, beta=beta, m=np.array(means), v=np.array(variances))


def exact_expected_log_ratios(chain: dict) -> np.ndarray:
    """E[l_k] [K] for the library's kernels, in closed form.

    x_{k+1} - mean_p = sqrt(2 eta) eps, so E[log p] = -0.5 log(4 pi eta) - 0.5. The Langevin
    noising kernel has mean gamma x_{k+1}, gamma = 1 - eta / sigma_p^2, and variance 2 eta, so
    E[log q] = -0.5 log(4 pi eta) - E[(x_k - gamma x_{k+1})^2] / (4 eta), where the second
    moment follows from the joint Gaussian law of (x_k, x_{k+1}).
    """
    eta, alpha, m, v = chain["eta"], chain["alpha"], chain["m"], chain["v"]
    gamma = 1.0 - eta / PRIOR_STD**2
    second_moment = (
        (m[:-1] - gamma * m[1:]) ** 2 + v[:-1] - 2.0 * gamma * alpha * v[:-1] + gamma**2 * v[1:]
    )
    return -0.5 + second_moment / (4.0 * eta)


def gaussian_log_density(x, mean, var):
    return -0.5 * ((x - mean) ** 2 / var + np.log(2.0 * math.pi * var))


def gaussian_entropy(var):
    return 0.5 * math.log(2.0 * math.pi * math.e * var)


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Sample mean and its Monte-Carlo standard error."""
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.shape[0]))


@pytest.fixture(scope="module", params=sorted(SETTINGS), ids=sorted(SETTINGS))
def chain(request):
    """Samples NUM_SAMPLES chains of the library's policy with the linear control.

    Returns float64 numpy arrays: latents [N, K+1], the library's log_ratios and log_probs
    [N, K] from sample_chain, log_probs re-evaluated by policy.evaluate on the sampled
    transitions [N, K], and the closed-form chain of `closed_form_chain`.
    """
    setting = SETTINGS[request.param]
    K = len(setting.eta)
    config = DiffusionPolicyConfig(num_steps=K, prior_std=PRIOR_STD, friction=FRICTION)
    control = LinearControl(a_init=setting.a, c_init=setting.c)
    policy = make_diffusion_policy(1, 1, config, control_network=control)
    params = policy.init(jax.random.PRNGKey(0))
    params["dt"] = jnp.asarray([inverse_softplus(e * FRICTION) for e in setting.eta], jnp.float32)

    obs = jnp.zeros((NUM_SAMPLES, 1))
    sample = jax.jit(policy.sample_chain)(params, obs, jax.random.PRNGKey(1234))
    latents = sample.latents  # [N, K+1, 1]
    steps = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32), (NUM_SAMPLES, K))
    evaluated = jax.jit(policy.evaluate)(
        params, obs[:, None, :], latents[:, :-1], steps, latents[:, 1:]
    )
    to64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    return dict(
        K=K,
        prior_entropy=float(policy.prior_entropy),
        latents=to64(latents[..., 0]),
        log_ratios=to64(sample.log_ratios),
        log_probs=to64(sample.log_probs),
        eval_log_probs=to64(evaluated.log_prob),
        exact=closed_form_chain(setting),
    )


def exact_posterior_log_density(chain) -> np.ndarray:
    """log q*(x_k | x_{k+1}) [N, K] on the sampled latents, q* the chain's exact posterior.

    (x_k, x_{k+1}) is jointly Gaussian with Cov = alpha_k v_k, so x_k | x_{k+1} is Gaussian with
    mean m_k + alpha_k v_k / v_{k+1} (x_{k+1} - m_{k+1}) and variance
    v_k - alpha_k^2 v_k^2 / v_{k+1}. By the Markov property this is also the law of x_k given
    the whole future x_{k+1:K}.
    """
    x, ex = chain["latents"], chain["exact"]
    m, v, alpha = ex["m"], ex["v"], ex["alpha"]
    mean = m[:-1] + alpha * v[:-1] / v[1:] * (x[:, 1:] - m[1:])
    var = v[:-1] - alpha**2 * v[:-1] ** 2 / v[1:]
    return gaussian_log_density(x[:, :-1], mean, var)


def test_sampled_marginals_match_closed_form(chain):
    """Sanity of the sampler: every x_k has the closed-form mean and variance, and consecutive
    latents have Cov(x_k, x_{k+1}) = alpha_k v_k (checks eta_k = softplus(dt_k) / friction, the
    drift -x / sigma_p^2 + f and the noise variance 2 eta_k of the denoising kernel)."""
    x, ex = chain["latents"], chain["exact"]
    n = x.shape[0]
    assert x.shape == (NUM_SAMPLES, chain["K"] + 1)
    for k in range(chain["K"] + 1):
        m, v = ex["m"][k], ex["v"][k]
        assert abs(x[:, k].mean() - m) < Z * math.sqrt(v / n), k
        # SE of the sample variance of a Gaussian: v sqrt(2 / (n - 1)).
        assert abs(x[:, k].var(ddof=1) - v) < Z * v * math.sqrt(2.0 / (n - 1)), k
    for k in range(chain["K"]):
        products = (x[:, k] - ex["m"][k]) * (x[:, k + 1] - ex["m"][k + 1])
        cov, se = mean_and_se(products)
        assert abs(cov - ex["alpha"][k] * ex["v"][k]) < Z * se, k


def test_log_ratios_match_independent_evaluation(chain):
    """The library's per-sample l_k (from sample_chain) and log p (from sample_chain and from
    evaluate) equal a float64 evaluation of the spec's two Gaussian kernels on the same latents."""
    x, ex = chain["latents"], chain["exact"]
    eta, alpha, beta = ex["eta"], ex["alpha"], ex["beta"]
    log_p = gaussian_log_density(x[:, 1:], alpha * x[:, :-1] + beta, 2.0 * eta)
    log_q = gaussian_log_density(x[:, :-1], (1.0 - eta / PRIOR_STD**2) * x[:, 1:], 2.0 * eta)
    np.testing.assert_allclose(chain["log_probs"], log_p, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(chain["eval_log_probs"], log_p, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(chain["log_ratios"], log_p - log_q, atol=1e-4, rtol=1e-5)


def test_entropy_estimate_is_a_lower_bound(chain):
    """H_hat = H(x_0) - E[sum_k l_k] lies below the exact H(x_K) = 0.5 log(2 pi e v_K), by a gap
    that is clearly positive (> 0.05 nats, far beyond Monte-Carlo error), and the estimate equals
    its exact expectation H(x_0) - sum_k E[l_k] (so the gap is neither too small nor too loose)."""
    ex = chain["exact"]
    assert chain["prior_entropy"] == pytest.approx(gaussian_entropy(PRIOR_STD**2), abs=1e-6)
    entropy_true = gaussian_entropy(ex["v"][-1])
    sum_l, se = mean_and_se(chain["log_ratios"].sum(axis=1))
    entropy_hat = chain["prior_entropy"] - sum_l
    exact_entropy_hat = gaussian_entropy(PRIOR_STD**2) - exact_expected_log_ratios(ex).sum()
    exact_gap = entropy_true - exact_entropy_hat

    assert exact_gap > 0.1
    assert se < 0.01
    assert entropy_true - entropy_hat > 0.05 + Z * se
    assert abs((entropy_true - entropy_hat) - exact_gap) < Z * se


def test_exact_posterior_closes_the_entropy_gap(chain):
    """With the exact posterior q* in place of the Langevin noising kernel, l*_k = log p - log q*
    telescopes per sample: log prior(x_0) + sum_k l*_k = log N(x_K; m_K, v_K) exactly. Hence
    H_hat* = H(x_0) - E[sum_k l*_k] equals H(x_K) up to Monte-Carlo error, and its gap is much
    smaller than the Langevin kernel's. log p is the library's (policy.evaluate)."""
    x, ex = chain["latents"], chain["exact"]
    l_star = chain["eval_log_probs"] - exact_posterior_log_density(chain)
    log_prior = gaussian_log_density(x[:, 0], 0.0, PRIOR_STD**2)
    log_marginal = gaussian_log_density(x[:, -1], ex["m"][-1], ex["v"][-1])
    np.testing.assert_allclose(log_prior + l_star.sum(axis=1), log_marginal, atol=1e-4, rtol=1e-5)

    entropy_true = gaussian_entropy(ex["v"][-1])
    sum_l_star, se_star = mean_and_se(l_star.sum(axis=1))
    gap_star = entropy_true - (chain["prior_entropy"] - sum_l_star)
    assert se_star < 0.004  # so the next line pins |gap*| below 0.02 nats
    assert abs(gap_star) < Z * se_star

    gap = entropy_true - (chain["prior_entropy"] - chain["log_ratios"].sum(axis=1).mean())
    assert abs(gap_star) < 0.1 * gap


def target_log_density(x):
    return stats.norm.logpdf(x, TARGET_MEAN, TARGET_STD)


def marginal_kl_to_target(m, v):
    """KL(N(m, v) || N(TARGET_MEAN, TARGET_STD^2)) in closed form."""
    s2 = TARGET_STD**2
    return 0.5 * (math.log(s2 / v) + (v + (m - TARGET_MEAN) ** 2) / s2 - 1.0)


def test_path_bound_dominates_marginal_kl(chain):
    """With a normalised Gaussian target pi* (log Z = 0), the path KL estimate
    E_p[log prior(x_0) + sum_k l_k - log pi*(x_K)] is >= the exact KL(N(m_K, v_K) || pi*) beyond
    Monte-Carlo error, and the excess equals the entropy gap H(x_K) - H_hat (the two differ only
    by the MC errors of E[log prior(x_0)] and E[log pi*(x_K)]) and its exact expectation."""
    x, ex = chain["latents"], chain["exact"]
    log_prior = stats.norm.logpdf(x[:, 0], 0.0, PRIOR_STD)
    log_target = target_log_density(x[:, -1])
    sum_l = chain["log_ratios"].sum(axis=1)
    path_kl, se_path = mean_and_se(log_prior + sum_l - log_target)
    kl_true = marginal_kl_to_target(ex["m"][-1], ex["v"][-1])
    assert kl_true > 0.1
    assert se_path < 0.005
    assert path_kl > kl_true + 0.05 + Z * se_path

    entropy_gap = gaussian_entropy(ex["v"][-1]) - (chain["prior_entropy"] - sum_l.mean())
    _, se_diff = mean_and_se(log_prior - log_target)
    assert abs((path_kl - kl_true) - entropy_gap) < Z * se_diff

    exact_gap = gaussian_entropy(ex["v"][-1]) - (
        gaussian_entropy(PRIOR_STD**2) - exact_expected_log_ratios(ex).sum()
    )
    assert abs((path_kl - kl_true) - exact_gap) < Z * se_path


def test_path_bound_is_tight_with_exact_posterior(chain):
    """With q* in the target path the data-processing inequality is an equality:
    E_p[log prior(x_0) + sum_k l*_k - log pi*(x_K)] = KL(N(m_K, v_K) || pi*) up to MC error."""
    x, ex = chain["latents"], chain["exact"]
    l_star = chain["eval_log_probs"] - exact_posterior_log_density(chain)
    log_prior = stats.norm.logpdf(x[:, 0], 0.0, PRIOR_STD)
    path_kl_star, se = mean_and_se(log_prior + l_star.sum(axis=1) - target_log_density(x[:, -1]))
    kl_true = marginal_kl_to_target(ex["m"][-1], ex["v"][-1])
    assert se < 0.004  # so the next line pins the difference below 0.02 nats
    assert abs(path_kl_star - kl_true) < Z * se
