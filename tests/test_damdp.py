"""DA-MDP bookkeeping: reward on the last denoising step, discount modes, episode ends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.transforms import ChainTransition, augment, expand

B, K, A, S = 3, 4, 2, 5


def _transition():
    latents = jnp.arange(B * (K + 1) * A, dtype=jnp.float32).reshape(B, K + 1, A)
    return ChainTransition(
        obs=jnp.ones((B, S)),
        latents=latents,
        log_ratios=jnp.arange(B * K, dtype=jnp.float32).reshape(B, K),
        log_probs=-jnp.arange(B * K, dtype=jnp.float32).reshape(B, K),
        reward=jnp.array([1.0, 2.0, 3.0]),
        terminated=jnp.array([False, True, False]),
        truncated=jnp.array([False, False, True]),
        next_obs=2.0 * jnp.ones((B, S)),
        next_prior_latent=-jnp.ones((B, A)),
    )


def test_expand_gives_k_augmented_steps_with_reward_and_ends_only_on_the_last():
    tr = _transition()
    aug = expand(tr, 0.99, "env")
    assert aug.reward.shape == (B, K) and aug.state.obs.shape == (B, K, S)
    np.testing.assert_array_equal(aug.reward[:, :-1], 0.0)
    np.testing.assert_array_equal(aug.reward[:, -1], tr.reward)
    np.testing.assert_array_equal(aug.terminated, [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(aug.truncated, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    # the reward summed over augmented steps is the environment reward
    np.testing.assert_allclose(aug.reward.sum(-1), tr.reward)


def test_env_discount_mode_discounts_only_the_last_step():
    aug = expand(_transition(), 0.9, "env")
    np.testing.assert_allclose(aug.discount, np.tile([1.0, 1.0, 1.0, 0.9], (B, 1)))
    # product over one environment step is gamma: K entropy terms undiscounted against each other
    np.testing.assert_allclose(np.prod(aug.discount, -1), 0.9)


def test_diffusion_discount_mode_discounts_every_step():
    aug = expand(_transition(), 0.999, "diffusion")
    np.testing.assert_allclose(aug.discount, np.full((B, K), 0.999))


def test_states_actions_and_next_states_chain_together():
    tr = _transition()
    aug = expand(tr, 0.99)
    for k in range(K):
        np.testing.assert_array_equal(aug.state.latent[:, k], tr.latents[:, k])
        np.testing.assert_array_equal(aug.action[:, k], tr.latents[:, k + 1])
        np.testing.assert_array_equal(aug.state.step[:, k], k)
        np.testing.assert_array_equal(aug.log_ratio[:, k], tr.log_ratios[:, k])
        np.testing.assert_array_equal(aug.log_prob[:, k], tr.log_probs[:, k])
    # inside the chain the next state is (obs, x_{k+1}, k+1) ...
    np.testing.assert_array_equal(aug.next_state.latent[:, :-1], aug.state.latent[:, 1:])
    np.testing.assert_array_equal(aug.next_state.step[:, :-1], aug.state.step[:, 1:])
    np.testing.assert_array_equal(aug.next_state.obs[:, :-1], tr.obs[:, None].repeat(K - 1, 1))
    # ... and after the last step it is (next_obs, x'_0, 0)
    np.testing.assert_array_equal(aug.next_state.obs[:, -1], tr.next_obs)
    np.testing.assert_array_equal(aug.next_state.latent[:, -1], tr.next_prior_latent)
    np.testing.assert_array_equal(aug.next_state.step[:, -1], 0)


def test_augment_at_a_step_equals_the_matching_slice_of_expand():
    tr = _transition()
    full = expand(tr, 0.95)
    step = jnp.array([0, 3, 2])
    one = augment(tr, step, 0.95)
    for leaf_one, leaf_full in zip(jax.tree.leaves(one), jax.tree.leaves(full)):
        np.testing.assert_array_equal(leaf_one, leaf_full[jnp.arange(B), step])


def test_discount_can_be_traced_and_vmapped_for_sweeps():
    tr = _transition()
    gammas = jnp.array([0.9, 0.99])
    out = jax.jit(jax.vmap(lambda g: expand(tr, g).discount))(gammas)
    np.testing.assert_allclose(out[:, 0, -1], gammas)


def test_td_target_over_one_environment_step_bootstraps_on_truncation_only():
    """r~ + discount * (1 - terminated) * V summed over the K steps telescopes as in the env."""
    tr = _transition()
    aug = expand(tr, 0.9)
    v_next = jnp.full((B, K), 10.0)
    target = aug.reward + aug.discount * (1.0 - aug.terminated) * v_next
    np.testing.assert_allclose(target[:, -1], [1 + 9.0, 2.0, 3 + 9.0])  # truncated still bootstraps
    np.testing.assert_allclose(target[:, :-1], 10.0)


def test_leading_batch_dims_are_preserved():
    tr = jax.tree.map(lambda x: jnp.broadcast_to(x, (2,) + x.shape), _transition())
    aug = expand(tr, 0.9)
    assert aug.reward.shape == (2, B, K)
    assert aug.state.obs.shape == (2, B, K, S)
    with pytest.raises(ValueError, match="ChainTransition fields do not fit"):
        expand(tr.replace(reward=jnp.zeros((2, B + 1))), 0.9)
