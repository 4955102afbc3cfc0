"""Environment names -> `Environment`s: "brax/<env>" for every brax env, "playground/<Task>"
for MuJoCo Playground's DM Control suite (when mujoco_playground is installed), and the toy
envs."""

from diffrl_jax.envs.base import Environment
from diffrl_jax.envs.brax_core import BRAX_BACKENDS, brax_env_names, make_brax_core
from diffrl_jax.envs.episodes import make_environment
from diffrl_jax.envs.playground import (
    PLAYGROUND_PREFIX,
    check_playground_task,
    make_playground_core,
    playground_env_names,
)
from diffrl_jax.envs.toy import TOY_SPECS
from diffrl_jax.validation import closest_name, require_int_at_least

BRAX_EPISODE_LENGTH = 1000


def list_envs() -> list[str]:
    """Every name `make_env` accepts, sorted (playground/ names only when mujoco_playground
    is installed; checking that imports nothing)."""
    return sorted([f"brax/{n}" for n in brax_env_names()] + playground_env_names()
                  + list(TOY_SPECS))


def check_env_name(name: str) -> None:
    """Raises unless `make_env` accepts `name`: for a playground/ name the specific reason
    (mujoco_playground not installed: ImportError; a broken, unsupported or unknown task:
    ValueError), otherwise a ValueError listing the registered names, with the name most
    likely meant (one differing only in case, else the closest) when there is one."""
    if name in list_envs():
        return
    close = closest_name(name, list_envs())
    hint = f" (did you mean {close!r}?)" if close else ""
    if name.startswith(PLAYGROUND_PREFIX):
        try:
            check_playground_task(name[len(PLAYGROUND_PREFIX):])
        except ValueError as err:
            if not (close and str(err).startswith("unknown playground task")):
                raise
    raise ValueError(f"unknown environment {name!r}{hint}; registered: {list_envs()}")


def make_env(
    name: str, *, backend: str = "mjx", episode_length: int | None = None
) -> Environment:
    """The batched, auto-resetting environment `name` (see `list_envs()`).

    backend: brax's physics pipeline, one of BRAX_BACKENDS (toy and playground envs accept
        and ignore it; playground envs always run MJX's JAX implementation).
    episode_length: the time limit; default 1000 for brax envs, the playground task's config
        (1000 on every DM Control task), the toy env's own otherwise.
    """
    if backend not in BRAX_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BRAX_BACKENDS)}")
    if episode_length is not None:
        require_int_at_least("make_env", "episode_length", episode_length, 1)
    if name in TOY_SPECS:
        spec = TOY_SPECS[name]
        length = spec.episode_length if episode_length is None else episode_length
        return make_environment(name, spec.make_core(length), length)
    if name.startswith(PLAYGROUND_PREFIX):
        core, default_length = make_playground_core(name[len(PLAYGROUND_PREFIX):])
        length = default_length if episode_length is None else episode_length
        return make_environment(name, core, length)
    prefix = "brax/"
    if name.startswith(prefix) and name[len(prefix):] in brax_env_names():
        core = make_brax_core(name[len(prefix):], backend)
        length = BRAX_EPISODE_LENGTH if episode_length is None else episode_length
        return make_environment(name, core, length)
    raise ValueError(f"unknown environment {name!r}; registered: {list_envs()}")
