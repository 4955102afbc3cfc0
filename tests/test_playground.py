"""MuJoCo Playground's DM Control suite as playground/<Task> environments: loading, batched
episodes under jit (time limits, non-finite physics), the error cases, the registry, and the
presets of the paper's tasks (the authors' settings) and of the CPU tasks."""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("mujoco_playground")

from diffrl_jax.envs import list_envs, make_env  # noqa: E402
from diffrl_jax.envs.playground import (  # noqa: E402
    DMC_TASKS,
    KNOWN_BROKEN,
    PLAYGROUND_TASKS,
    load_playground_env,
    make_playground_core,
    playground_core,
)
from diffrl_jax.experiment import make_config  # noqa: E402
from diffrl_jax.presets import AUTHORS_PRESETS, CPU_PLAYGROUND_PRESETS, PAPER_TASKS  # noqa: E402
from diffrl_jax.validation import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ("sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo")
TASK = "playground/PendulumSwingup"  # the cheapest to compile: 1 joint, 1 actuator
LENGTH = 3


@pytest.fixture(scope="module")
def pendulum():
    """(env with episode_length 3, jitted reset, jitted step): compiled once per module."""
    env = make_env(TASK, episode_length=LENGTH)
    return env, jax.jit(env.reset, static_argnums=1), jax.jit(env.step)


# ---- the task table and the registry ---------------------------------------------------------


def test_task_table_is_playgrounds_dm_control_suite():
    from mujoco_playground import registry

    assert DMC_TASKS == tuple(registry.dm_control_suite.ALL_ENVS)
    assert set(KNOWN_BROKEN) == {"ReacherEasy", "ReacherHard"}
    assert len(PLAYGROUND_TASKS) == 23


def test_list_envs_has_the_working_playground_tasks():
    names = list_envs()
    assert [n for n in names if n.startswith("playground/")] == \
        sorted(f"playground/{t}" for t in PLAYGROUND_TASKS)
    assert "playground/CartpoleSwingup" in names and "playground/ReacherEasy" not in names
    assert "brax/inverted_pendulum" in names and "toy/bandit" in names


@pytest.mark.parametrize("task, obs_dim, action_dim", [
    ("CartpoleSwingup", 5, 1), ("WalkerWalk", 24, 6),
])
def test_loading_gives_the_dims_and_the_configs_episode_length(task, obs_dim, action_dim):
    core, length = make_playground_core(task)
    assert (core.obs_dim, core.action_dim, length) == (obs_dim, action_dim, 1000)
    env, _ = load_playground_env(task)
    assert env.mjx_model.impl.value == "jax"  # never playground's default, Warp


def test_make_env_defaults_and_ignores_backend():
    env = make_env(TASK, backend="spring")
    assert (env.name, env.obs_dim, env.action_dim, env.episode_length) == (TASK, 3, 1, 1000)
    assert make_env(TASK, episode_length=7).episode_length == 7


# ---- episodes under jit -----------------------------------------------------------------------


def test_reset_and_step_are_finite_and_truncate_at_the_time_limit(pendulum):
    env, reset, step = pendulum
    state = reset(jax.random.PRNGKey(0), 2)
    assert state.obs.shape == (2, 3) and bool(jnp.all(jnp.isfinite(state.obs)))
    outs = []
    for k in jax.random.split(jax.random.PRNGKey(1), 2 * LENGTH + 1):
        state, out = step(state, jax.random.uniform(k, (2, 1), minval=-2.0, maxval=2.0))
        outs.append(out)
    truncated = np.stack([o.truncated for o in outs])
    expected = np.zeros((2 * LENGTH + 1, 2))
    expected[LENGTH - 1::LENGTH] = 1.0
    np.testing.assert_array_equal(truncated, expected)
    for out in outs:
        assert bool(jnp.all(jnp.isfinite(out.next_obs)))
        assert bool(jnp.all((out.reward >= 0) & (out.reward <= 1)))
        assert not bool(jnp.any(out.terminated)) and not bool(jnp.any(out.nonfinite))
    np.testing.assert_array_equal(state.episode_step, [1, 1])


def test_nonfinite_physics_ends_the_episode(pendulum):
    env, reset, step = pendulum
    state = reset(jax.random.PRNGKey(0), 2)
    data = state.physics.data
    data = data.replace(qpos=data.qpos.at[0].set(jnp.nan))
    state = state.replace(physics=state.physics.replace(data=data))
    state, out = step(state, jnp.zeros((2, 1)))
    np.testing.assert_array_equal(out.nonfinite, [1.0, 0.0])
    np.testing.assert_array_equal(out.terminated, [1.0, 0.0])
    assert bool(jnp.all(jnp.isfinite(out.next_obs))) and float(out.reward[0]) == 0.0
    assert bool(jnp.all(jnp.isfinite(state.physics.data.qpos)))  # env 0 was reset


def test_action_repeat_steps_the_env_repeatedly(pendulum):
    _, reset, _ = pendulum
    state = jax.tree.map(lambda x: x[0], reset(jax.random.PRNGKey(3), 2).physics)
    env, _ = load_playground_env("PendulumSwingup")
    repeated = jax.jit(playground_core(env, 3, action_repeat=2).step)
    action = jnp.array([0.7])
    _, obs, reward, done = repeated(state, action)
    env_step = jax.jit(env.step)
    once = env_step(state, action)
    twice = env_step(once, action)
    np.testing.assert_allclose(obs, twice.obs, rtol=1e-6)
    np.testing.assert_allclose(reward, once.reward + twice.reward, rtol=1e-6)
    assert float(done) == 0.0


# ---- errors -----------------------------------------------------------------------------------


def test_unknown_task_lists_the_supported_ones():
    with pytest.raises(ValueError, match=r"unknown playground task 'CartpoleSwingUp'.*"
                                         r"'CartpoleSwingup'"):
        make_env("playground/CartpoleSwingUp")


def test_locomotion_and_manipulation_tasks_are_refused():
    with pytest.raises(ValueError, match=r"Go1JoystickFlatTerrain is one of playground's "
                                         r"locomotion tasks; only the DM Control suite"):
        make_env("playground/Go1JoystickFlatTerrain")
    with pytest.raises(ValueError, match=r"manipulation tasks; only the DM Control suite"):
        make_env("playground/PandaPickCube")


def test_reacher_says_why_it_is_broken():
    import mujoco

    with pytest.raises(ValueError, match=rf"playground/ReacherEasy.*MuJoCo "
                                         rf"{mujoco.__version__}.*find_body"):
        make_env("playground/ReacherEasy")
    with pytest.raises(ConfigError, match=r"playground/ReacherHard.*find_body"):
        make_config("sac", "playground/ReacherHard")


def test_a_failure_inside_playground_names_the_task(monkeypatch):
    from mujoco_playground import registry

    def broken(*args, **kwargs):
        raise RuntimeError("no such mesh")

    monkeypatch.setattr(registry, "load", broken)
    with pytest.raises(ValueError, match=r"playground/CheetahRun could not be built \(MuJoCo "
                                         r".*RuntimeError: no such mesh"):
        make_env("playground/CheetahRun")


def test_without_mujoco_playground_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco_playground", None)  # import fails, find_spec None
    assert importlib.util.find_spec("mujoco_playground") is None
    assert not any(n.startswith("playground/") for n in list_envs())
    assert "brax/inverted_pendulum" in list_envs()
    with pytest.raises(ImportError, match=r'pip install -e "\.\[playground\]"'):
        make_env("playground/CartpoleSwingup")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[playground\]"'):
        make_config("ppo", "playground/CartpoleSwingup")


# ---- presets and the CLI ----------------------------------------------------------------------


def _assert_has(config, overrides):
    for field, value in overrides.items():
        assert getattr(config, field) == value, field


@pytest.mark.parametrize("algo", ALGOS)
def test_paper_tasks_default_to_the_authors_settings(algo):
    assert len(PAPER_TASKS) == 11 and set(PAPER_TASKS) <= set(PLAYGROUND_TASKS)
    authors = make_config(algo, "playground/CheetahRun", preset="authors")
    for task in PAPER_TASKS:
        config = make_config(algo, f"playground/{task}")
        _assert_has(config, AUTHORS_PRESETS[algo])
        assert config.replace(env="playground/CheetahRun") == authors


@pytest.mark.parametrize("algo", ALGOS)
def test_cpu_presets(algo):
    cartpole = make_config(algo, "playground/CartpoleSwingup")
    _assert_has(cartpole, CPU_PLAYGROUND_PRESETS[algo])
    assert cartpole.num_envs in (16, 32) and cartpole.episode_length is None
    pendulum = make_config(algo, "playground/PendulumSwingup", preset="cpu")
    assert pendulum.replace(env="playground/CartpoleSwingup") == cartpole


def _train_cli():
    spec = importlib.util.spec_from_file_location("cli_train_pg", ROOT / "experiments" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_cli_accepts_a_playground_env(capsys):
    train = _train_cli()
    assert train.main(["--algo", "ppo", "--env", "playground/CartpoleSwingup",
                       "--list-fields"]) == 0
    out = capsys.readouterr().out
    assert "playground/CartpoleSwingup" in out
    assert train.main(["--algo", "sac", "--env", "playground/ReacherEasy", "--list-fields"]) == 2
    assert "find_body" in capsys.readouterr().err
