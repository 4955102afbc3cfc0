"""MuJoCo Playground's DM Control suite as `EnvCore`s: "playground/<Task>", e.g.
"playground/CartpoleSwingup".

Always built on MJX's JAX implementation (`impl="jax"`): playground's default, Warp, is for
GPUs (about 40x slower than JAX on a CPU). The raw playground env, no wrappers:
playground's `done` is the termination flag (on the DM Control tasks only non-finite physics
sets it); time limits and auto-resets are added by `make_environment`. The physics pytree
is playground's `State` (mjx Data, obs, reward, done, metrics, info). All DM Control
actuators have control range [-1, 1], so actions pass through unscaled.

Only the DM Control suite is supported: playground's locomotion and manipulation tasks
download their robot assets on first use. mujoco_playground is imported lazily (importing it
takes about 2.5 s) and is optional: `pip install -e ".[playground]"`.
"""

import importlib.util
from typing import Any

import jax
import jax.numpy as jnp

from diffrl_jax.envs.base import EnvCore
from diffrl_jax.types import Array

PLAYGROUND_PREFIX = "playground/"
PLAYGROUND_VERSION = "0.2.0"
INSTALL_HINT = 'pip install -e ".[playground]"'

# mujoco_playground.registry.dm_control_suite.ALL_ENVS of playground 0.2.0, in its order (a
# test checks it is the same), so that `list_envs()` needs no import of playground.
DMC_TASKS: tuple[str, ...] = (
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance",
    "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun",
    "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim", "HopperHop", "HopperStand",
    "HumanoidStand", "HumanoidWalk", "HumanoidRun", "PendulumSwingup", "PointMass",
    "ReacherEasy", "ReacherHard", "SwimmerSwimmer6", "WalkerRun", "WalkerStand", "WalkerWalk",
)

# Tasks playground 0.2.0 cannot build with the pinned MuJoCo (3.17): task -> why.
_REACHER = ("playground's Reacher builds its model with MjSpec.find_body, which MuJoCo 3.17 "
            "no longer has (AttributeError: 'mujoco._specs.MjSpec' object has no attribute "
            "'find_body')")
KNOWN_BROKEN: dict[str, str] = {"ReacherEasy": _REACHER, "ReacherHard": _REACHER}

PLAYGROUND_TASKS: tuple[str, ...] = tuple(t for t in DMC_TASKS if t not in KNOWN_BROKEN)


def playground_installed() -> bool:
    """Whether mujoco_playground can be imported (checked without importing it)."""
    return importlib.util.find_spec("mujoco_playground") is not None


def playground_env_names() -> list[str]:
    """The "playground/<Task>" names `make_env` can build, sorted; [] when mujoco_playground
    is not installed."""
    if not playground_installed():
        return []
    return sorted(PLAYGROUND_PREFIX + t for t in PLAYGROUND_TASKS)


def _registry() -> Any:
    """mujoco_playground.registry, or an ImportError saying how to install it."""
    try:
        from mujoco_playground import registry
    except ImportError as err:
        raise ImportError(
            f"the playground/ environments need MuJoCo Playground (mujoco_playground), which "
            f"is not installed ({err}); install it with {INSTALL_HINT}"
        ) from err
    return registry


def _mujoco_version() -> str:
    import mujoco

    return mujoco.__version__


def check_playground_task(task: str) -> None:
    """Raises unless `make_playground_core(task)` can work: ImportError when
    mujoco_playground is missing; ValueError for a known-broken task, a locomotion or
    manipulation task (assets downloaded on first use, so not supported), or an unknown one
    (listing the supported tasks)."""
    if not playground_installed():
        _registry()  # raises the ImportError with the install hint
    if task in PLAYGROUND_TASKS:
        return
    name = PLAYGROUND_PREFIX + task
    if task in KNOWN_BROKEN:
        raise ValueError(f"{name} cannot be built with MuJoCo {_mujoco_version()} and "
                         f"playground {PLAYGROUND_VERSION}: {KNOWN_BROKEN[task]}")
    registry = _registry()
    for suite in ("locomotion", "manipulation"):
        if task in getattr(registry, suite).ALL_ENVS:
            raise ValueError(
                f"{name} is one of playground's {suite} tasks; only the DM Control suite is "
                f"supported (the {suite} tasks download their robot assets on first use, and "
                f"need Warp or a GPU for speed). Supported: {list(PLAYGROUND_TASKS)}")
    raise ValueError(f"unknown playground task {task!r}; supported (the DM Control suite): "
                     f"{list(PLAYGROUND_TASKS)}")


def load_playground_env(task: str) -> tuple[Any, Any]:
    """(playground env, its config) for DM Control task `task`, with MJX's JAX implementation.
    A failure inside playground is re-raised as a ValueError naming the task."""
    check_playground_task(task)
    registry = _registry()
    config = registry.get_default_config(task)
    try:
        env = registry.load(task, config=config, config_overrides={"impl": "jax"})
    except Exception as err:  # anything playground raises, named
        raise ValueError(f"playground/{task} could not be built (MuJoCo {_mujoco_version()}): "
                         f"{type(err).__name__}: {err}") from err
    return env, config


def make_playground_core(task: str) -> tuple[EnvCore, int]:
    """(`EnvCore` of DM Control task `task`, its default episode length in our steps).

    Observations [S] (flat vectors only), actions [A] in [-1, 1]. Playground's env.step
    already runs ctrl_dt / sim_dt physics substeps, but not the config's `action_repeat`:
    playground leaves that to brax's EpisodeWrapper (which repeats env.step, sums the
    rewards and counts the repeats towards episode_length). So with action_repeat r > 1 (no
    DM Control default config has one) each of our steps is r env.steps, rewards summed,
    terminal if any was, and the default episode length is cfg.episode_length // r.
    """
    env, config = load_playground_env(task)
    obs_shape = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
    if not isinstance(obs_shape, jax.ShapeDtypeStruct) or len(obs_shape.shape) != 1:
        raise ValueError(
            f"playground/{task} has observations {obs_shape}; only flat vector observations "
            "are supported"
        )
    repeat = int(config.get("action_repeat", 1))
    core = playground_core(env, int(obs_shape.shape[0]), repeat)
    return core, max(1, int(config.episode_length) // repeat)


def playground_core(env: Any, obs_dim: int, action_repeat: int = 1) -> EnvCore:
    """The `EnvCore` of a loaded playground env; each step is `action_repeat` env.steps."""

    def reset(key):
        state = env.reset(key)
        return state, state.obs

    def env_step(state, action: Array):
        # Playground's reward functions write into state.metrics (and some into info) in
        # place: give them copies, not the dicts of the state passed in.
        state = state.replace(metrics=dict(state.metrics), info=dict(state.info))
        return env.step(state, action)

    def step(state, action: Array):
        if action_repeat == 1:
            state = env_step(state, action)
            return state, state.obs, state.reward, state.done

        def repeat(carry, _):
            state, total, done = carry
            state = env_step(state, action)
            return (state, total + state.reward, jnp.maximum(done, state.done)), None

        zero = jnp.zeros_like(state.reward)
        (state, total, done), _ = jax.lax.scan(
            repeat, (state, zero, jnp.zeros_like(state.done)), None, length=action_repeat)
        return state, state.obs, total, done

    def physics_finite(state) -> Array:
        data = state.data
        return jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))

    return EnvCore(
        obs_dim=obs_dim,
        action_dim=int(env.action_size),
        reset=reset,
        step=step,
        physics_finite=physics_finite,
    )
