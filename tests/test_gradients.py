"""Values and gradients of log p, log q and l_k against hand derivations (closed-form drifts
replace the control and noising networks), of log pi against a hand-written tanh-Gaussian, and
the pathwise gradient through a sampled chain against finite differences.

Run in float64 (jax.enable_x64) so the comparisons are accurate to ~1e-9.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import ACTION_DIM, OBS_DIM, small_diffusion_config
from diffrl_jax.policies import GaussianPolicyConfig, make_diffusion_policy, make_gaussian_policy
from test_kernels import FRICTION, PRIOR_VAR, AffineDrift, affine, affine_params


def _finite_difference_check(fn, params, num_coords=12, eps=1e-6, seed=0):
    """Compares jax.grad(fn) with central differences on random coordinates of every leaf."""
    grads = jax.grad(fn)(params)
    fn = jax.jit(fn)
    leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(grads)
    rng = np.random.default_rng(seed)
    checked = 0
    for i, (leaf, g) in enumerate(zip(leaves, grad_leaves)):
        flat = np.asarray(leaf, np.float64).ravel()
        idx = rng.choice(flat.size, size=min(num_coords, flat.size), replace=False)
        for j in idx:
            def shifted(delta):
                new = flat.copy()
                new[j] += delta
                new_leaves = list(leaves)
                new_leaves[i] = jnp.asarray(new.reshape(np.shape(leaf)))
                return float(fn(jax.tree.unflatten(treedef, new_leaves)))

            numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
            analytic = float(np.asarray(g).ravel()[j])
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7), (i, j)
            checked += 1
    return checked


def softplus(z):
    return np.logaddexp(0.0, z)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def hand_log_densities_and_gradients(raw, x, s, k, y, num_steps, flags):
    """log p, log q [N] of spec section 2 written out in numpy, and the gradients of
    sum_n log p and sum_n log q w.r.t. the raw parameters, derived by hand:

    m_p = x + eta (-x / sigma_p^2 + f), f = W x + V s + c_k; m_q = y + eta (-y / sigma_p^2 + b),
    b = U y + V' s + c'_k (0 without a noising drift); v = 2 eta; r_p = y - m_p, r_q = x - m_q.
    d log p / d f = eta r_p / v = r_p / 2, d log q / d b = r_q / 2,
    d log p / d eta = r_p (-x / sigma_p^2 + f) / v + r_p^2 / v^2 - 1 / v (per dimension;
    summed over dimensions when eta is shared), the same for q with (x, r_p, f) -> (y, r_q, b);
    eta = softplus(dt_k) / softplus(friction) carries them to dt and friction.
    """
    W, V, c = (raw["control"]["params"][n] for n in ("W", "V", "c"))
    dt = raw["dt"]
    friction = softplus(raw["friction"]) if flags["learn_friction"] else FRICTION
    per_dim = flags["dt_per_dimension"]
    eta = softplus(dt[k]) / friction
    eta = eta if per_dim else eta[:, None]
    f = affine((W, V, c), x, s, k)
    if flags["noising"]:
        nt = tuple(raw["noising_drift"]["params"][n] for n in ("W", "V", "c"))
        b = affine(nt, y, s, k)
    else:
        b = np.zeros_like(y)
    m_p = x + eta * (-x / PRIOR_VAR + f)
    m_q = y + eta * (-y / PRIOR_VAR + b)
    v = 2.0 * eta
    r_p, r_q = y - m_p, x - m_q
    log_p = np.sum(-0.5 * (r_p**2 / v + np.log(v) + np.log(2 * np.pi)), -1)
    log_q = np.sum(-0.5 * (r_q**2 / v + np.log(v) + np.log(2 * np.pi)), -1)
    if flags["squash_log_det"]:
        log_q = log_q + np.where(k == num_steps - 1, np.sum(np.log(1 - np.tanh(y) ** 2), -1), 0.0)

    def drift_grads(g, inputs):  # g = d/d(drift) [N, A] -> grads of (W, V, c)
        gc = np.zeros((num_steps, g.shape[-1]))
        np.add.at(gc, k, g)
        return {"params": {"W": g.T @ inputs, "V": g.T @ s, "c": gc}}

    def step_size_grads(d_eta):  # [N, A] per-dimension d/d eta -> grads of dt (, friction)
        if not per_dim:
            d_eta = d_eta.sum(-1, keepdims=True)
        d_dt = (d_eta / friction) * sigmoid(dt[k] if per_dim else dt[k][:, None])
        g_dt = np.zeros_like(dt)
        np.add.at(g_dt, k, d_dt if per_dim else d_dt[:, 0])
        out = {"dt": g_dt}
        if flags["learn_friction"]:
            out["friction"] = np.sum(d_eta * (-eta / friction)) * sigmoid(raw["friction"])
        return out

    zero = lambda tree: jax.tree.map(np.zeros_like, tree)  # noqa: E731
    grad_p = {"control": drift_grads(r_p / 2, x),
              **step_size_grads(r_p * (-x / PRIOR_VAR + f) / v + r_p**2 / v**2 - 1 / v)}
    grad_q = {"control": zero(raw["control"]),
              **step_size_grads(r_q * (-y / PRIOR_VAR + b) / v + r_q**2 / v**2 - 1 / v)}
    if flags["noising"]:
        grad_p["noising_drift"] = zero(raw["noising_drift"])
        grad_q["noising_drift"] = drift_grads(r_q / 2, y)
    return log_p, log_q, grad_p, grad_q


@pytest.mark.parametrize(
    "flags",
    [
        dict(learn_friction=True, dt_per_dimension=False, noising=False, squash_log_det=False),
        dict(learn_friction=True, dt_per_dimension=True, noising=True, squash_log_det=False),
        dict(learn_friction=False, dt_per_dimension=False, noising=False, squash_log_det=True),
    ],
    ids=["friction", "per-dim-dt+noising-drift", "logdet"],
)
def test_log_densities_and_gradients_match_hand_derivation(flags):
    """float64: the values of log p, log q, l and the gradients of sum log p and sum log q
    w.r.t. f's coefficients, dt, friction and b's coefficients equal the hand derivation
    (a closed-form affine f and b replace the networks). The gradients are taken of log p and
    log q separately: in l = log p - log q the normalisers, which share eta, cancel."""
    K, A, S, n = 4, ACTION_DIM, OBS_DIM, 8
    with jax.enable_x64(True):
        cfg = small_diffusion_config(
            num_steps=K, learn_friction=flags["learn_friction"],
            dt_per_dimension=flags["dt_per_dimension"], learn_noising_drift=flags["noising"],
            squash_log_det=flags["squash_log_det"])
        policy = make_diffusion_policy(S, A, cfg, control_network=AffineDrift(K),
                                       noising_network=AffineDrift(K))
        rng = np.random.default_rng(4)
        raw = {"control": affine_params(0, K, A, S)[1],
               "dt": rng.uniform(-1.5, 0.5, (K, A) if flags["dt_per_dimension"] else (K,))}
        if flags["learn_friction"]:
            raw["friction"] = np.float64(-0.4)
        if flags["noising"]:
            raw["noising_drift"] = affine_params(1, K, A, S)[1]
        raw = jax.tree.map(lambda a: np.asarray(a, np.float64), raw)
        params = jax.tree.map(jnp.asarray, raw)
        assert set(params) == set(policy.init(jax.random.PRNGKey(0)))
        s = rng.standard_normal((n, S))
        x = 2.0 * rng.standard_normal((n, A))
        y = x + 0.8 * rng.standard_normal((n, A))
        k = np.arange(n) % K
        args = (jnp.asarray(s), jnp.asarray(x), jnp.asarray(k, jnp.int32), jnp.asarray(y))

        log_p, log_q, grad_p, grad_q = hand_log_densities_and_gradients(raw, x, s, k, y, K, flags)
        ev = policy.evaluate(params, *args)
        np.testing.assert_allclose(ev.log_prob, log_p, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ev.log_noising, log_q, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ev.log_ratio, log_p - log_q, rtol=1e-10, atol=1e-10)
        for field, expected in (("log_prob", grad_p), ("log_noising", grad_q)):
            got = jax.grad(lambda p, f=field: jnp.sum(getattr(policy.evaluate(p, *args), f)))(params)
            assert jax.tree.structure(got) == jax.tree.structure(expected), field
            for path, g in jax.tree_util.tree_leaves_with_path(got):
                e = functools.reduce(lambda t, key: t[key.key], path, expected)
                np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-10,
                                           err_msg=f"{field} {jax.tree_util.keystr(path)}")
        assert np.abs(grad_p["dt"]).min() > 1e-3 and np.abs(grad_q["dt"]).min() > 1e-3


def test_reparameterised_chain_gradients_match_finite_differences():
    """d/dtheta of sum_k l_k along a sampled chain (fixed noise), as the full-chain estimator
    uses: checks that the gradient flows through every sampled x_{k+1} (no stray stop_gradient);
    the formulas themselves are checked against the hand derivations above."""
    with jax.enable_x64(True):
        policy = make_diffusion_policy(
            OBS_DIM, ACTION_DIM, small_diffusion_config(learn_friction=True)
        )
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), policy.init(jax.random.PRNGKey(0)))
        obs = jax.random.normal(jax.random.PRNGKey(2), (3, OBS_DIM), jnp.float64)

        def loss(p):
            chain = policy.sample_chain(p, obs, jax.random.PRNGKey(5))
            return jnp.sum(chain.log_ratios) + jnp.sum(jnp.square(chain.latents[..., -1, :]))

        _finite_difference_check(loss, params, num_coords=6)


def test_gaussian_log_pi_value_and_gradient_match_hand_derivation():
    """float64: log pi(tanh(u) | s) = sum_d log N(u_d; mu_d, sigma_d^2) - log(1 - tanh(u_d)^2)
    against scipy, and its gradient w.r.t. every network weight by hand: d/dmu = (u - mu) /
    sigma^2, d/dsigma = (u - mu)^2 / sigma^3 - 1 / sigma, sigma = softplus(raw) + min_std,
    then back through the one-hidden-layer ReLU MLP written out in numpy."""
    n, hidden, min_std = 6, 8, GaussianPolicyConfig().min_std
    with jax.enable_x64(True):
        policy = make_gaussian_policy(OBS_DIM, ACTION_DIM, GaussianPolicyConfig(hidden_sizes=(hidden,)))
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), policy.init(jax.random.PRNGKey(0)))
        rng = np.random.default_rng(3)
        layers = params["network"]["params"]
        layers["dense_0"]["bias"] = jnp.asarray(0.3 * rng.standard_normal(hidden))
        layers["dense_1"]["bias"] = jnp.asarray(0.5 * rng.standard_normal(2 * ACTION_DIM))
        W0, b0, W1, b1 = (np.asarray(layers[d][w]) for d in ("dense_0", "dense_1")
                          for w in ("kernel", "bias"))
        s = rng.standard_normal((n, OBS_DIM))
        u = rng.standard_normal((n, ACTION_DIM))
        pre = s @ W0 + b0
        h = np.maximum(pre, 0.0)
        out = h @ W1 + b1
        mu, raw = out[:, :ACTION_DIM], out[:, ACTION_DIM:]
        sigma = softplus(raw) + min_std
        ref = np.sum(stats.norm.logpdf(u, mu, sigma) - np.log(1 - np.tanh(u) ** 2), -1)
        d_out = np.concatenate([(u - mu) / sigma**2,
                                ((u - mu) ** 2 / sigma**3 - 1 / sigma) * sigmoid(raw)], -1)
        d_h = (d_out @ W1.T) * (pre > 0)
        expected = {"dense_0": {"kernel": s.T @ d_h, "bias": d_h.sum(0)},
                    "dense_1": {"kernel": h.T @ d_out, "bias": d_out.sum(0)}}

        args = (jnp.asarray(s), jnp.zeros((n, ACTION_DIM)), jnp.zeros(n, jnp.int32), jnp.asarray(u))
        ev = policy.evaluate(params, *args)
        np.testing.assert_allclose(ev.log_ratio, ref, rtol=1e-10, atol=1e-10)
        got = jax.grad(lambda p: jnp.sum(policy.evaluate(p, *args).log_ratio))(params)
        for d in expected:
            for w in expected[d]:
                np.testing.assert_allclose(got["network"]["params"][d][w], expected[d][w],
                                           rtol=1e-9, atol=1e-12, err_msg=f"{d}/{w}")
