"""The environment layer: shapes, episode ends (termination vs truncation), auto-resets with
fresh random states, non-finite masking, the toy rewards, the observation normaliser, errors,
and jit / vmap over keys.

MJX compilation dominates the runtime, so the inverted pendulum's jitted reset and step are
built once per module (episode_length 5: zero actions keep the pole up for 5 steps, a
constant action 1.0 drops it in 2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl_jax.envs import (
    BRAX_BACKENDS,
    TOY_PEAKS,
    EnvCore,
    EnvState,
    StepOutput,
    bandit_reward,
    brax_env_names,
    double_well_reward,
    init_stats,
    list_envs,
    make_double_well_core,
    make_env,
    make_environment,
    mode_fractions,
    normalize,
    peaks_of,
    playground_env_names,
    update_stats,
)

N = 4
PENDULUM_LENGTH = 5
RESET_NOISE = 0.01  # brax's inverted pendulum: q, qd ~ U(-0.01, 0.01) around 0


@pytest.fixture(scope="module")
def pendulum():
    env = make_env("brax/inverted_pendulum", episode_length=PENDULUM_LENGTH)
    return env, jax.jit(env.reset, static_argnums=1), jax.jit(env.step)


def rollout(step, state, actions):
    """Python loop of step over actions [T, N, A]; returns the states after each step and
    the outputs, both as lists."""
    states, outs = [], []
    for a in actions:
        state, out = step(state, a)
        states.append(state)
        outs.append(out)
    return states, outs


def check_shapes(env, state: EnvState, out: StepOutput, n: int) -> None:
    assert state.obs.shape == (n, env.obs_dim) and state.obs.dtype == jnp.float32
    assert state.episode_step.shape == (n,) and state.episode_step.dtype == jnp.int32
    for leaf in jax.tree.leaves(state.physics):
        assert leaf.shape[0] == n
    assert out.next_obs.shape == (n, env.obs_dim) and out.next_obs.dtype == jnp.float32
    for field in (out.reward, out.terminated, out.truncated, out.nonfinite):
        assert field.shape == (n,) and field.dtype == jnp.float32


# ---------------------------------------------------------------- brax: inverted pendulum


def test_brax_shapes_and_dtypes(pendulum):
    env, reset, step = pendulum
    assert (env.name, env.obs_dim, env.action_dim) == ("brax/inverted_pendulum", 4, 1)
    assert env.episode_length == PENDULUM_LENGTH
    state = reset(jax.random.PRNGKey(0), N)
    np.testing.assert_array_equal(state.episode_step, np.zeros(N))
    assert np.all(np.abs(state.obs) <= RESET_NOISE)
    new_state, out = step(state, jnp.zeros((N, 1)))
    check_shapes(env, state, out, N)
    check_shapes(env, new_state, out, N)
    np.testing.assert_array_equal(out.reward, np.ones(N))  # +1 per upright step


def test_brax_default_episode_length_is_1000():
    assert make_env("brax/inverted_pendulum").episode_length == 1000


def test_brax_truncation_auto_resets_and_keeps_final_obs(pendulum):
    _, reset, step = pendulum
    state = reset(jax.random.PRNGKey(1), N)
    zeros = jnp.zeros((N, 1))
    for t in range(1, PENDULUM_LENGTH):
        before = state
        state, out = step(state, zeros)
        np.testing.assert_array_equal(out.terminated, np.zeros(N))
        np.testing.assert_array_equal(out.truncated, np.zeros(N))
        np.testing.assert_array_equal(state.episode_step, np.full(N, t))
        np.testing.assert_array_equal(state.obs, out.next_obs)
    assert not np.allclose(state.obs, before.obs)  # the physics moved

    last, out = step(state, zeros)
    np.testing.assert_array_equal(out.truncated, np.ones(N))
    np.testing.assert_array_equal(out.terminated, np.zeros(N))
    np.testing.assert_array_equal(last.episode_step, np.zeros(N))
    # next_obs is the obs this step reached: stepping the same physics with the time limit
    # far away (no reset) reaches the same observation.
    unlimited, unlimited_out = step(state.replace(episode_step=jnp.zeros(N, jnp.int32)), zeros)
    np.testing.assert_array_equal(unlimited_out.truncated, np.zeros(N))
    np.testing.assert_allclose(out.next_obs, unlimited.obs, atol=1e-6)
    # ... while the state holds a fresh episode's first observation, consistent with its physics
    assert np.all(np.abs(last.obs) <= RESET_NOISE)
    assert not np.allclose(last.obs, out.next_obs)
    np.testing.assert_array_equal(last.physics.obs, last.obs)
    after, out = step(last, zeros)
    np.testing.assert_array_equal(after.episode_step, np.ones(N))
    np.testing.assert_array_equal(out.truncated, np.zeros(N))


def test_brax_termination_is_not_truncation_and_clips_actions(pendulum):
    _, reset, step = pendulum
    state = reset(jax.random.PRNGKey(2), N)
    ones = jnp.ones((N, 1))
    state, out = step(state, ones)
    np.testing.assert_array_equal(out.terminated, np.zeros(N))
    # an out-of-range action is clipped to 1.0 before brax sees it
    clipped, clipped_out = step(state, jnp.full((N, 1), 7.0, jnp.float32))
    fallen, out = step(state, ones)
    np.testing.assert_array_equal(clipped_out.next_obs, out.next_obs)
    np.testing.assert_array_equal(out.terminated, np.ones(N))
    np.testing.assert_array_equal(out.truncated, np.zeros(N))
    assert np.all(np.abs(out.next_obs[:, 1]) > 0.2)  # the pole angle that ended it
    np.testing.assert_array_equal(fallen.episode_step, np.zeros(N))
    assert np.all(np.abs(fallen.obs) <= RESET_NOISE)


def test_brax_resets_are_fresh_random_states(pendulum):
    _, reset, step = pendulum
    state = reset(jax.random.PRNGKey(3), N)
    first_obs = [state.obs]
    for _ in range(3):  # three episodes that each fall after 2 steps
        state, _ = step(state, jnp.ones((N, 1)))
        state, out = step(state, jnp.ones((N, 1)))
        assert np.all(np.asarray(out.terminated) == 1.0)
        first_obs.append(state.obs)
    first_obs = np.stack(first_obs)  # [episodes, N, S]
    for i in range(len(first_obs)):
        for j in range(i + 1, len(first_obs)):
            assert np.all(np.abs(first_obs[i] - first_obs[j]).max(-1) > 1e-4)
    for e in first_obs:  # and the N envs differ from each other
        assert len({tuple(row) for row in np.round(e, 6)}) == N


def test_brax_nonfinite_physics_is_masked_and_reset(pendulum):
    _, reset, step = pendulum
    state = reset(jax.random.PRNGKey(4), N)
    action = jnp.array([[jnp.nan], [0.0], [0.0], [0.0]])
    new_state, out = step(state, action)
    np.testing.assert_array_equal(out.nonfinite, [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out.terminated, [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out.reward, [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(out.next_obs[0], state.obs[0])  # the obs acted on
    assert np.all(np.isfinite(new_state.obs))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new_state.physics.pipeline_state))
    np.testing.assert_array_equal(new_state.episode_step, [0, 1, 1, 1])


def test_vmap_over_keys_equals_a_loop_brax(pendulum):
    env, reset, step = pendulum
    actions = jnp.ones((3, N, 1))  # falls at step 2: the reset path runs under vmap

    def run(key):
        state, outs = jax.lax.scan(env.step, env.reset(key, N), actions)
        return state.obs, outs

    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    obs, outs = jax.jit(jax.vmap(run))(keys)
    assert np.all(np.asarray(outs.terminated[:, 1]) == 1.0)
    for i, key in enumerate(keys):
        states, loop_outs = rollout(step, reset(key, N), actions)  # the compiled N-env fns
        np.testing.assert_allclose(obs[i], states[-1].obs, atol=1e-5)
        for t, o in enumerate(loop_outs):
            np.testing.assert_allclose(outs.next_obs[i, t], o.next_obs, atol=1e-5)
            np.testing.assert_array_equal(outs.terminated[i, t], o.terminated)
            np.testing.assert_array_equal(outs.reward[i, t], o.reward)


# ---------------------------------------------------------------- toy environments


@pytest.mark.parametrize("name,obs_dim", [("toy/bandit", 1), ("toy/double_well", 3)])
def test_toy_shapes_and_dtypes(name, obs_dim):
    env = make_env(name)
    assert (env.obs_dim, env.action_dim) == (obs_dim, 1)
    state = env.reset(jax.random.PRNGKey(0), 5)
    new_state, out = jax.jit(env.step)(state, jnp.zeros((5, 1)))
    check_shapes(env, state, out, 5)
    check_shapes(env, new_state, out, 5)


def test_bandit_every_step_terminates_never_truncates():
    env = make_env("toy/bandit")
    assert env.episode_length == 1
    state = env.reset(jax.random.PRNGKey(0), 3)
    np.testing.assert_array_equal(state.obs, np.ones((3, 1)))
    state, out = env.step(state, jnp.array([[-0.5], [0.5], [0.0]]))
    np.testing.assert_array_equal(out.terminated, np.ones(3))
    np.testing.assert_array_equal(out.truncated, np.zeros(3))  # time limit too, but terminal
    np.testing.assert_array_equal(state.episode_step, np.zeros(3))
    np.testing.assert_allclose(out.reward, [1.0, 1.0, 0.0], atol=1e-4)


def test_toy_rewards_have_equal_peaks_at_plus_minus_half():
    grid = jnp.linspace(-1.0, 1.0, 2001)
    for reward_fn in (bandit_reward, double_well_reward):
        r = np.asarray(reward_fn(grid))
        left, right = grid[:1000], grid[1001:]
        assert float(left[np.argmax(r[:1000])]) == pytest.approx(-0.5, abs=1e-3)
        assert float(right[np.argmax(r[1001:])]) == pytest.approx(0.5, abs=1e-3)
        peaks = np.asarray(reward_fn(jnp.array([-0.5, 0.5])))
        np.testing.assert_allclose(peaks, [1.0, 1.0], atol=1e-6)
        assert r.max() <= 1.0 + 1e-6
        assert float(reward_fn(jnp.array(0.0))) < 0.01  # a valley between the modes
    assert TOY_PEAKS["toy/bandit"] == TOY_PEAKS["toy/double_well"] == (-0.5, 0.5)
    assert peaks_of("toy/double_well") == (-0.5, 0.5) and peaks_of("brax/ant") == ()


def test_three_peaks_bandit_has_equal_maxima_at_three_peaks():
    from diffrl_jax.envs.toy import three_peak_reward

    grid = np.linspace(-1.0, 1.0, 2001)  # step 0.001
    r = np.asarray(three_peak_reward(jnp.asarray(grid)))
    hand = sum(np.exp(-0.5 * ((grid - c) / 0.1) ** 2) for c in (-0.7, 0.0, 0.7))
    np.testing.assert_allclose(r, hand, atol=1e-6)
    maxima = [i for i in range(1, 2000) if r[i] > r[i - 1] and r[i] >= r[i + 1]]
    np.testing.assert_allclose(grid[maxima], [-0.7, 0.0, 0.7], atol=1e-3)
    np.testing.assert_allclose(r[maxima], [1.0, 1.0, 1.0], atol=1e-6)  # equal heights
    assert float(three_peak_reward(jnp.array(0.35))) < 0.01  # valleys between the modes
    assert TOY_PEAKS["toy/three_peaks"] == peaks_of("toy/three_peaks") == (-0.7, 0.0, 0.7)
    env = make_env("toy/three_peaks")
    assert (env.obs_dim, env.action_dim, env.episode_length) == (1, 1, 1)
    state = env.reset(jax.random.PRNGKey(0), 4)
    np.testing.assert_array_equal(state.obs, np.ones((4, 1)))
    _, out = jax.jit(env.step)(state, jnp.array([[-0.7], [0.0], [0.7], [0.35]]))
    np.testing.assert_allclose(out.reward, [1.0, 1.0, 1.0, 2 * np.exp(-0.5 * 3.5**2)], atol=1e-5)
    np.testing.assert_array_equal(out.terminated, np.ones(4))


def test_mode_fractions():
    actions = jnp.array([[-0.9], [-0.4], [-0.1], [0.3], [0.6], [1.0], [0.51], [-0.5]])
    np.testing.assert_allclose(mode_fractions(actions, (-0.5, 0.5)), [0.5, 0.5])
    np.testing.assert_allclose(mode_fractions(actions[:3], (-0.5, 0.5)), [1.0, 0.0])


def test_double_well_turns_and_truncates_with_final_obs():
    env = make_env("toy/double_well", episode_length=3)
    state = env.reset(jax.random.PRNGKey(0), 2)
    heading = np.arctan2(state.obs[:, 1], state.obs[:, 0])
    np.testing.assert_array_equal(state.obs[:, 2], [0.0, 0.0])
    turns = jnp.array([[0.5], [-1.0]])  # +45 and -90 degrees
    for t in range(1, 3):
        state, out = env.step(state, turns)
        heading = heading + np.array([np.pi / 4, -np.pi / 2])
        np.testing.assert_allclose(out.next_obs[:, 0], np.cos(heading), atol=1e-5)
        np.testing.assert_allclose(out.next_obs[:, 1], np.sin(heading), atol=1e-5)
        np.testing.assert_allclose(out.next_obs[:, 2], t / 3)
        np.testing.assert_allclose(out.reward, [1.0, -8.0], atol=1e-5)
    state, out = env.step(state, turns)
    np.testing.assert_array_equal(out.truncated, [1.0, 1.0])
    np.testing.assert_array_equal(out.terminated, [0.0, 0.0])
    np.testing.assert_allclose(out.next_obs[:, 2], [1.0, 1.0])  # final obs, before reset
    np.testing.assert_array_equal(state.obs[:, 2], [0.0, 0.0])  # the new episode's first
    np.testing.assert_array_equal(state.episode_step, [0, 0])


def test_double_well_resets_are_fresh():
    env = make_env("toy/double_well", episode_length=1)
    state = env.reset(jax.random.PRNGKey(0), 3)
    starts = [state.obs]
    for _ in range(4):
        state, _ = env.step(state, jnp.zeros((3, 1)))
        starts.append(state.obs)
    headings = np.arctan2(np.stack(starts)[..., 1], np.stack(starts)[..., 0]).ravel()
    assert len(np.unique(np.round(headings, 5))) == headings.size


def _faulty_double_well() -> EnvCore:
    """Double well whose action picks a failure: a > 0.9 NaN obs, a < -0.9 inf reward,
    |a| < 0.05 NaN physics with finite obs; otherwise unchanged."""
    core = make_double_well_core(10)

    def step(physics, action):
        physics, obs, reward, terminal = core.step(physics, action)
        a = action[0]
        obs = jnp.where(a > 0.9, jnp.nan, obs)
        reward = jnp.where(a < -0.9, jnp.inf, reward)
        physics = physics.replace(heading=jnp.where(jnp.abs(a) < 0.05, jnp.nan, physics.heading))
        return physics, obs, reward, terminal

    return core._replace(step=step)


def test_nonfinite_steps_are_masked_terminated_and_reset():
    env = make_environment("faulty", _faulty_double_well(), 10)
    state = env.reset(jax.random.PRNGKey(0), 5)
    state, _ = env.step(state, jnp.full((5, 1), 0.5))  # every env at episode_step 1
    # NaN obs (3.0 is clipped to 1.0, still > 0.9), inf reward, NaN physics, fine, fine
    action = jnp.array([[3.0], [-1.0], [0.0], [0.5], [-0.5]])
    new_state, out = jax.jit(env.step)(state, action)
    np.testing.assert_array_equal(out.nonfinite, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out.terminated, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out.truncated, [0, 0, 0, 0, 0])
    np.testing.assert_allclose(out.reward, [0, 0, 0, 1, 1], atol=1e-6)
    assert np.all(np.isfinite(out.next_obs)) and np.all(np.isfinite(new_state.obs))
    np.testing.assert_array_equal(out.next_obs[:3], state.obs[:3])
    np.testing.assert_array_equal(new_state.episode_step, [0, 0, 0, 2, 2])
    np.testing.assert_array_equal(new_state.obs[:3, 2], [0, 0, 0])  # reset: progress 0
    assert np.all(np.isfinite(new_state.physics.heading))


def test_vmap_over_keys_equals_a_loop_toy():
    env = make_env("toy/double_well", episode_length=3)

    def run(key):
        reset_key, action_key = jax.random.split(key)
        state = env.reset(reset_key, 3)
        actions = jax.random.uniform(action_key, (7, 3, 1), minval=-1.2, maxval=1.2)
        state, outs = jax.lax.scan(env.step, state, actions)
        return state, outs

    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    v_state, v_outs = jax.jit(jax.vmap(run))(keys)
    for i, key in enumerate(keys):
        state, outs = run(key)
        for a, b in zip(jax.tree.leaves((state, outs)), jax.tree.leaves((v_state, v_outs))):
            np.testing.assert_allclose(a, b[i], atol=1e-6)
    assert float(v_outs.truncated.sum()) == 4 * 3 * 2  # truncations at steps 3 and 6


# ---------------------------------------------------------------- normalisation


def test_normalizer_equals_numpy_over_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [
        rng.normal(3.0, 2.0, (7, 3)),
        rng.normal(-1.0, 0.5, (2, 5, 3)),
        rng.normal(10.0, 4.0, (1, 3)),
        rng.normal(0.0, 1.0, (64, 3)),
    ]
    stats = init_stats(3)
    update = jax.jit(update_stats)
    for b in batches:
        stats = update(stats, jnp.asarray(b, jnp.float32))
    everything = np.concatenate([b.reshape(-1, 3) for b in batches])
    np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-5)
    assert float(stats.count) == everything.shape[0]

    obs = jnp.asarray(everything[:5], jnp.float32)
    expected = (everything[:5] - everything.mean(0)) / np.sqrt(everything.var(0) + 1e-8)
    np.testing.assert_allclose(normalize(stats, obs), expected, rtol=1e-4, atol=1e-5)
    far = normalize(stats, jnp.full((2, 3), 1e6))
    np.testing.assert_array_equal(far, np.full((2, 3), 10.0))
    np.testing.assert_array_equal(normalize(stats, -jnp.full((3,), 1e6), clip=2.0), -2.0)


def test_normalizer_starts_as_identity_and_vmaps():
    obs = jnp.array([[1.5, -2.0]])
    np.testing.assert_allclose(normalize(init_stats(2), obs), obs, rtol=1e-6)
    batches = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 2)) * jnp.arange(1, 4)[:, None, None]
    stacked = jax.vmap(lambda _: init_stats(2))(jnp.arange(3))
    vmapped = jax.vmap(update_stats)(stacked, batches)
    for i in range(3):
        single = update_stats(init_stats(2), batches[i])
        np.testing.assert_allclose(vmapped.var[i], single.var, rtol=1e-6)
        np.testing.assert_allclose(vmapped.mean[i], single.mean, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- registry and errors


def test_list_envs_names_every_brax_env_and_the_toys():
    names = list_envs()
    for env_name in ("inverted_pendulum", "ant", "halfcheetah", "hopper", "reacher"):
        assert f"brax/{env_name}" in names
    assert {f"brax/{n}" for n in brax_env_names()} | {
        "toy/bandit", "toy/double_well", "toy/three_peaks"} | set(
        playground_env_names()  # playground/<Task>: tests/test_playground.py
    ) == set(names)
    assert set(BRAX_BACKENDS) == {"mjx", "spring", "positional", "generalized"}


def test_unknown_names_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown environment 'brax/nope'.*toy/bandit"):
        make_env("brax/nope")
    with pytest.raises(ValueError, match="unknown environment 'ant'.*brax/ant"):
        make_env("ant")
    with pytest.raises(ValueError, match="unknown backend 'warp'.*generalized"):
        make_env("brax/ant", backend="warp")
    with pytest.raises(ValueError, match="episode_length"):
        make_env("toy/bandit", episode_length=0)
    env = make_env("toy/double_well")
    with pytest.raises(ValueError, match="num_envs"):
        env.reset(jax.random.PRNGKey(0), 0)
    state = env.reset(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match=r"action must have shape \[num_envs=2, action_dim=1\]"):
        env.step(state, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="obs_dim=3"):
        update_stats(init_stats(3), jnp.zeros((4, 2)))


def test_backend_changing_state_structure_raises():
    core = make_double_well_core(10)
    bad = core._replace(step=lambda p, a: ({"oops": p}, *core.step(p, a)[1:]))
    env = make_environment("bad", bad, 10)
    with pytest.raises(ValueError, match="structure differs"):
        env.step(env.reset(jax.random.PRNGKey(0), 2), jnp.zeros((2, 1)))
