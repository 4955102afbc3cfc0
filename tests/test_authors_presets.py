"""The `authors` preset against the spec's numbers (issue 19.3): the DiffWPO KL bound is the
authors' bound on K * KL, DiffPPO's c is fixed and its friction learned, DiffWPO's step sizes
are per action dimension. The expected values are the spec's literals, not read from
presets.py; a tiny run of each diffusion preset checks that the flags reach training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.algorithms.wpo import wpo_actor_loss
from diffrl_jax.experiment import make_config
from diffrl_jax.policies import make_diffusion_policy
from diffrl_jax.training import train
from diffrl_jax.transforms import AugmentedState, make_diffusion_loss

from conftest import small_diffusion_config

ENV = "brax/inverted_pendulum"
# the authors' settings shrunk to a few seconds of CPU (sizes only; the flags under test stay)
TINY_OFF_POLICY = ["total_env_steps=96", "num_envs=4", "learning_starts=32", "batch_size=16",
                   "updates_per_step=2", "num_evals=1", "num_eval_envs=4", "buffer_size=128",
                   "critic_hidden=16", "diffusion.hidden_sizes=16", "diffusion.time_hidden=8"]
TINY_ON_POLICY = ["total_env_steps=64", "num_envs=4", "unroll_length=4", "num_epochs=2",
                  "num_minibatches=2", "num_evals=1", "num_eval_envs=4", "value_hidden=16",
                  "diffusion.hidden_sizes=16", "diffusion.time_hidden=8"]


def authors(algo, env=ENV, settings=()):
    return make_config(algo, env, preset="authors", settings=list(settings))


def test_wpo_kl_bound_is_the_authors_bound_on_k_times_the_per_step_kl():
    diffwpo, wpo = authors("diffwpo"), authors("wpo")
    # spec section 5: "bound 0.02 on K * KL, i.e. 0.0025 per step at K = 8"; K = 8 (section 7)
    assert diffwpo.diffusion.num_steps == 8
    assert diffwpo.kl_bound == pytest.approx(0.0025, rel=1e-12)
    # the Gaussian WPO is K = 1: K * KL is the KL itself (spec section 7: 0.02 for WPO)
    assert wpo.kl_bound == pytest.approx(0.02, rel=1e-12)


def test_the_kl_that_kl_bound_bounds_is_the_per_step_kernel_kl():
    """kl_bound is compared with wpo_actor_loss's "kl" (off_policy.py); that must be the mean
    over augmented states of ONE step kernel's KL (not K times it), or the preset's 0.02 / K
    would be K times too tight. Oracle: the closed-form Gaussian KL in NumPy."""
    K, A = 4, 2
    policy = make_diffusion_policy(3, A, small_diffusion_config(num_steps=K))
    transform = make_diffusion_loss(policy)
    target = policy.init(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x * 1.2 + 0.05, target)
    B = 8
    state = AugmentedState(obs=jax.random.normal(jax.random.PRNGKey(1), (B, 3)),
                           latent=jax.random.normal(jax.random.PRNGKey(2), (B, A)),
                           step=jnp.arange(B, dtype=jnp.int32) % K)

    def critic(_, features):
        q = -jnp.sum(features**2, -1)
        return jnp.stack([q, q], -1)

    _, metrics = wpo_actor_loss(params, target, state, jax.random.PRNGKey(3), 0.1, 1.0, None,
                                critic, transform)
    m0, s0 = map(np.asarray, policy.kernel(target, state.obs, state.latent, state.step))
    m1, s1 = map(np.asarray, policy.kernel(params, state.obs, state.latent, state.step))
    per_step = np.sum(np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5, -1)
    assert per_step.min() > 1e-4  # the two policies really differ at every step
    np.testing.assert_allclose(metrics["kl"], per_step.mean(), rtol=1e-5)


def test_diffppo_fixes_c_and_learns_the_friction():
    config = authors("diffppo")
    # spec section 5 (DiffPPO): "c fixed, default 2e-4"
    assert config.entropy_coef == 2e-4 and not config.learn_entropy_coef
    # spec section 7: friction 0.25 (here its initial value); issue 19.3: the authors learn it
    assert config.diffusion.friction == 0.25 and config.diffusion.learn_friction
    assert not config.diffusion.dt_per_dimension
    # the Gaussian PPO keeps section 7's learned temperature: init 0.01, multiplier 8
    ppo = authors("ppo")
    assert ppo.learn_entropy_coef and ppo.entropy_coef == 0.01
    assert ppo.target_entropy_multiplier == 8.0


def test_diffwpo_has_a_step_size_per_action_dimension():
    config = authors("diffwpo")
    # issue 19.3: the authors' DiffWPO learns dt per action dimension; friction 0.25 fixed
    assert config.diffusion.dt_per_dimension
    assert config.diffusion.friction == 0.25 and not config.diffusion.learn_friction
    # DiffSAC keeps section 7's shared step sizes and fixed friction
    diffsac = authors("diffsac").diffusion
    assert not diffsac.dt_per_dimension and not diffsac.learn_friction


@pytest.mark.parametrize("algo", ["diffppo", "diffwpo"])
def test_authors_diffusion_flags_reach_training(algo):
    """Shrunk to seconds, each preset trains with its flags: DiffPPO moves its friction away
    from 0.25, DiffWPO learns a [K, A] step-size table; every metric finite."""
    tiny = TINY_ON_POLICY if algo == "diffppo" else TINY_OFF_POLICY
    config = authors(algo, "toy/bandit", tiny)
    state, metrics = jax.jit(lambda k: train(k, config))(jax.random.PRNGKey(0))
    for name, value in metrics.items():
        assert np.all(np.isfinite(np.asarray(value))), name
    params = state.policy_params
    if algo == "diffppo":
        friction = float(jax.nn.softplus(params["friction"]))
        assert abs(friction - 0.25) > 1e-6, friction
        assert params["dt"].shape == (8,)
    else:
        assert params["dt"].shape == (8, 1)  # K = 8 steps x A = 1 (toy/bandit)
        assert "friction" not in params
