"""The README's composition example: a loss the library does not ship (advantage-weighted
regression) becomes its diffusion version by composing the transform, with no library change."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from diffrl_jax import (
    ChainTransition,
    evaluated_loss,
    make_diffusion_loss,
    make_diffusion_policy,
    make_gaussian_policy,
)
from diffrl_jax.networks import MLP
from diffrl_jax.policies import DiffusionPolicyConfig, GaussianPolicyConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text()
    marker = "<!-- example: awr -->\n```python\n"
    assert marker in text, "README lost its AWR example"
    return text.split(marker, 1)[1].split("```", 1)[0]


def awr_objective(terms, advantage, beta):
    weight = jnp.minimum(jnp.exp(advantage / beta), 20.0)
    return -jax.lax.stop_gradient(weight) * terms.log_prob


def test_readme_example_runs_and_computes_diff_awr():
    namespace: dict = {}
    exec(compile(_readme_example(), str(README), "exec"), namespace)
    policy, params, aug = namespace["policy"], namespace["params"], namespace["aug"]
    assert policy.num_steps == 8  # the loop ended on the diffusion policy
    # the loss is -mean(w * log p_theta(x_{k+1} | x_k, s, k)) over all K augmented steps
    ev = policy.evaluate(params, aug.state.obs, aug.state.latent, aug.state.step, aug.action)
    weight = np.minimum(np.exp(np.asarray(namespace["advantage"]) / 1.0), 20.0)
    assert float(namespace["loss"]) == pytest.approx(float(-np.mean(weight * ev.log_prob)), rel=1e-5)
    assert namespace["terms"].log_prob.shape == (32, 8)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(namespace["grads"]))


def _gaussian_batch(policy, params, n=64):
    obs = jax.random.normal(jax.random.PRNGKey(1), (n, policy.obs_dim))
    transform = make_diffusion_loss(policy)
    chain = transform.act(params, obs, jax.random.PRNGKey(2))
    steps = ChainTransition(
        obs=obs, latents=chain.latents, log_ratios=chain.log_ratios, log_probs=chain.log_probs,
        reward=jnp.zeros(n), terminated=jnp.zeros(n), truncated=jnp.zeros(n),
        next_obs=obs, next_prior_latent=chain.latents[:, 0],
    )
    return transform, transform.expand(steps, 0.99), chain


def test_gaussian_composition_equals_textbook_awr():
    cfg = GaussianPolicyConfig(hidden_sizes=(16,))
    policy = make_gaussian_policy(4, 2, cfg)
    params = policy.init(jax.random.PRNGKey(0))
    transform, aug, chain = _gaussian_batch(policy, params)
    advantage = jax.random.normal(jax.random.PRNGKey(3), aug.reward.shape)
    loss, _ = evaluated_loss(transform, awr_objective)(params, aug.state, aug.action, advantage, 0.7)

    # textbook AWR on the environment actions a = tanh(u): -mean(w * log pi(a | s))
    obs = np.asarray(aug.state.obs[:, 0], np.float64)
    u = np.asarray(chain.latents[:, 1], np.float64)
    out = np.asarray(MLP((16, 4)).apply(params["network"], jnp.asarray(obs)), np.float64)
    mu, sigma = out[:, :2], np.log1p(np.exp(out[:, 2:])) + cfg.min_std
    a = np.tanh(u)
    log_pi = (stats.norm.logpdf(u, mu, sigma) - np.log1p(-a**2)).sum(-1)
    w = np.minimum(np.exp(np.asarray(advantage[:, 0]) / 0.7), 20.0)
    assert float(loss) == pytest.approx(float(-np.mean(w * log_pi)), rel=1e-4)


def test_diff_awr_gradient_step_raises_likelihood_of_advantaged_steps():
    """A few gradient steps of the composed DiffAWR loss move probability toward the
    augmented actions with positive advantage and away from those with negative advantage."""
    cfg = DiffusionPolicyConfig(num_steps=4, hidden_sizes=(32, 32), time_hidden=8)
    policy = make_diffusion_policy(2, 1, cfg)
    transform = make_diffusion_loss(policy)
    params = policy.init(jax.random.PRNGKey(0))
    obs = jnp.zeros((256, 2))
    chain = transform.act(params, obs, jax.random.PRNGKey(1))
    steps = ChainTransition(
        obs=obs, latents=chain.latents, log_ratios=chain.log_ratios, log_probs=chain.log_probs,
        reward=jnp.zeros(256), terminated=jnp.zeros(256), truncated=jnp.zeros(256),
        next_obs=obs, next_prior_latent=chain.latents[:, 0],
    )
    aug = transform.expand(steps, 0.99)
    # advantage: the final action is positive
    advantage = jnp.broadcast_to(jnp.sign(chain.latents[:, -1, 0])[:, None], aug.reward.shape)
    loss_fn = jax.jit(evaluated_loss(transform, awr_objective))
    grad_fn = jax.jit(jax.grad(lambda p: loss_fn(p, aug.state, aug.action, advantage, 1.0)[0]))
    before = transform.evaluate(params, aug.state, aug.action).log_prob
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)
    for _ in range(30):
        updates, opt_state = optimizer.update(grad_fn(params), opt_state)
        params = optax.apply_updates(params, updates)
    after = transform.evaluate(params, aug.state, aug.action).log_prob
    gain = np.asarray(after - before)
    positive = np.asarray(advantage) > 0
    assert gain[positive].mean() > gain[~positive].mean() + 0.01
    # and the new policy's actions move toward the advantaged side
    new_chain = transform.act(params, obs, jax.random.PRNGKey(5))
    assert float(jnp.mean(new_chain.latents[:, -1, 0] > 0)) > 0.6
    assert math.isfinite(float(loss_fn(params, aug.state, aug.action, advantage, 1.0)[0]))
