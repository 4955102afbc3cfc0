"""Environment names -> `Environment`s: "brax/<env>" for every brax env, "playground/<Task>"
for MuJoCo Playground's DM Control suite (when mujoco_playground is installed), the toy envs,
and the environments registered with `register_env` under a "suite/name" of their own.

A registered environment (the toys are registered the same way) is a factory
`factory(episode_length) -> EnvCore | Environment` plus optional data for the toy metrics:
the actions of its reward peaks (mode shares in evaluations and summary.json), its probe
states (where `plots` histograms a policy's actions) and its reward as a function of the
action (the multimodality benchmark's Boltzmann target). What an environment does not
declare is skipped by whatever needs it, never guessed.
"""

import inspect
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from diffrl_jax.envs.base import EnvCore, Environment, EnvState, StepOutput
from diffrl_jax.envs.brax_core import BRAX_BACKENDS, brax_env_names, make_brax_core
from diffrl_jax.envs.episodes import make_environment
from diffrl_jax.envs.playground import (
    PLAYGROUND_PREFIX,
    check_playground_task,
    make_playground_core,
    playground_env_names,
)
from diffrl_jax.envs.toy import TOY_SPECS
from diffrl_jax.types import Array
from diffrl_jax.validation import closest_name, require_int_at_least

BRAX_EPISODE_LENGTH = 1000
# suites whose names the library itself resolves: register_env refuses them
RESERVED_SUITES = ("brax", "playground", "toy")
_NAME_PART = r"[A-Za-z0-9_.\-]+"
_NAME = re.compile(rf"{_NAME_PART}/{_NAME_PART}")
IMPORT_HINT = ("an environment registered with diffrl_jax.envs.register_env exists only in the "
               "process that registered it: import the module that registers it first "
               "(experiments/train.py, evaluate.py, sweep.py: --import MODULE_OR_FILE.py)")

ProbeStates = Callable[[int], tuple[list[str], np.ndarray]]


class EnvSpec(NamedTuple):
    """A registered environment.

    name:             "suite/name".
    factory:          factory(episode_length) -> EnvCore (batched and auto-reset by
                      `make_environment`) or a ready `Environment` of that episode_length.
    episode_length:   the default time limit.
    peaks:            actions (first action dimension, in [-1, 1]) of the reward maxima, for
                      mode shares; () when not declared.
    probe_states:     probe_states(num_states) -> (labels [S], raw obs [S, obs_dim] float32),
                      the states at which `plots` histograms a policy's actions; None when
                      not declared.
    reward_of_action: R(a [...]) -> [...], one step's reward as a function of the (first)
                      action; None when not declared (the multimodality benchmark needs it).
    source:           the module that registered it ("diffrl_jax" for the built-in toys).
    """

    name: str
    factory: Callable[[int], EnvCore | Environment]
    episode_length: int
    peaks: tuple[float, ...] = ()
    probe_states: ProbeStates | None = None
    reward_of_action: Callable[[Array], Array] | None = None
    source: str = "diffrl_jax"


_REGISTRY: dict[str, EnvSpec] = {
    name: EnvSpec(name, s.make_core, s.episode_length, tuple(s.peaks), s.probe_states,
                  s.reward_of_action)
    for name, s in TOY_SPECS.items()
}
_CHECKED: set[tuple[str, int]] = set()  # (name, episode_length) of user envs built and checked


# ---- registering ----------------------------------------------------------------------------

def register_env(name: str, factory: Callable[[int], EnvCore | Environment], *,
                 episode_length: int = BRAX_EPISODE_LENGTH,
                 peaks: Sequence[float] | None = None,
                 probe_states: Any = None, probe_labels: Sequence[str] | None = None,
                 reward_of_action: Callable[[Array], Array] | None = None,
                 replace: bool = False) -> EnvSpec:
    """Registers an environment under `name`, after which `make_env`, `make_config`, `train`,
    `run_experiment`, sweeps, checkpoints and the experiments/ scripts (with --import) accept
    it. Returns its `EnvSpec`.

    name: "suite/name" (letters, digits, _ . -), suite not one of RESERVED_SUITES.
    factory: factory(episode_length: int) -> an `EnvCore` (one unbatched environment; it is
        batched and auto-reset by `make_environment`) or an `Environment` named `name` with
        that episode_length. It is called, and its result checked (types, dims, a trial
        reset and step traced with `jax.eval_shape`), the first time the name is checked or
        built, so a wrong factory is reported before anything compiles.
    episode_length: the default time limit (config.episode_length None).
    peaks: the actions (first action dimension) of equal reward maxima, each in [-1, 1]:
        evaluations then count the share of actions nearest each (summary.json's
        mode_fractions), and the action histogram marks them.
    probe_states: the states of the action histogram: raw observations [S, obs_dim]
        (labelled by probe_labels, default "state i"), or a function num_states ->
        (labels, obs [S, obs_dim]).
    reward_of_action: R(a) of the first action, for the multimodality benchmark's target.
    replace: replace an environment already registered under name (else ValueError).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"register_env: the name must be 'suite/name' (letters, digits, "
                         f"'_', '.', '-'; one '/'), e.g. 'user/three_peaks', got {name!r}")
    suite = name.split("/", 1)[0]
    if suite in RESERVED_SUITES:
        raise ValueError(f"register_env: the suite {suite!r} of {name!r} is the library's own "
                         f"(reserved: {list(RESERVED_SUITES)}); choose another, e.g. "
                         f"'user/{name.split('/', 1)[1]}'")
    if name in _REGISTRY and not replace:
        raise ValueError(f"register_env: {name!r} is already registered (by "
                         f"{_REGISTRY[name].source}); pass replace=True to replace it")
    if not callable(factory):
        raise TypeError(f"register_env({name!r}): factory must be callable as "
                        f"factory(episode_length) -> EnvCore | Environment, got "
                        f"{type(factory).__name__}")
    require_int_at_least(f"register_env({name!r})", "episode_length", episode_length, 1)
    if reward_of_action is not None and not callable(reward_of_action):
        raise TypeError(f"register_env({name!r}): reward_of_action must be callable, got "
                        f"{type(reward_of_action).__name__}")
    spec = EnvSpec(name, factory, episode_length, _checked_peaks(name, peaks),
                   _probe_function(name, probe_states, probe_labels), reward_of_action,
                   _caller_module())
    _REGISTRY[name] = spec
    _CHECKED.difference_update({key for key in _CHECKED if key[0] == name})
    return spec


def unregister_env(name: str) -> None:
    """Removes an environment registered with `register_env` (KeyError if there is none; the
    built-in toys cannot be removed)."""
    if name in TOY_SPECS:
        raise ValueError(f"unregister_env: {name!r} is built in")
    del _REGISTRY[name]
    _CHECKED.difference_update({key for key in _CHECKED if key[0] == name})


def registered_envs() -> dict[str, EnvSpec]:
    """name -> EnvSpec of the toys and every environment registered with `register_env`."""
    return dict(_REGISTRY)


def env_spec(name: str) -> EnvSpec | None:
    """The EnvSpec of a registered environment (toys included); None for brax, playground
    and unknown names."""
    return _REGISTRY.get(name)


def peaks_of(name: str) -> tuple[float, ...]:
    """The reward-peak actions of environment `name`; () for one without declared peaks."""
    spec = _REGISTRY.get(name)
    return spec.peaks if spec is not None else ()


def probe_states_of(name: str, num_states: int) -> tuple[list[str], np.ndarray] | None:
    """(labels [S], raw obs [S, obs_dim] float32): the probe states environment `name`
    declares for num_states (a function may ignore it, e.g. a bandit's one state); None when
    it declares none. ValueError for a num_states that is not a positive integer, or a
    declaration that returns something else than labels and a finite [S, obs_dim] array."""
    if (isinstance(num_states, bool) or not isinstance(num_states, (int, np.integer))
            or num_states < 1):
        raise ValueError(f"num_states must be a positive integer, got {num_states!r}")
    spec = _REGISTRY.get(name)
    if spec is None or spec.probe_states is None:
        return None
    result = spec.probe_states(int(num_states))
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ValueError(f"{name}: probe_states({num_states}) must return (labels, obs), "
                         f"got {type(result).__name__}")
    labels, obs = list(result[0]), np.asarray(result[1], np.float32)
    if obs.ndim != 2 or obs.shape[0] < 1 or not np.all(np.isfinite(obs)):
        raise ValueError(f"{name}: probe states must be a finite array [num_states >= 1, "
                         f"obs_dim], got shape {obs.shape}")
    if len(labels) != obs.shape[0] or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{name}: probe states need one string label per state: "
                         f"{len(labels)} labels for {obs.shape[0]} states")
    return labels, obs


def _caller_module() -> str:
    """The module that called register_env (for messages and run records)."""
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        return str(caller.f_globals.get("__name__", "?")) if caller else "?"
    finally:
        del frame


def _checked_peaks(name: str, peaks: Sequence[float] | None) -> tuple[float, ...]:
    if peaks is None:
        return ()
    try:
        values = tuple(float(p) for p in peaks)
    except (TypeError, ValueError) as err:
        raise ValueError(f"register_env({name!r}): peaks must be a sequence of numbers (actions "
                         f"of the first action dimension), got {peaks!r}") from err
    if not values or any(not math.isfinite(p) or not -1.0 <= p <= 1.0 for p in values):
        raise ValueError(f"register_env({name!r}): peaks must be one or more finite actions in "
                         f"[-1, 1] (or None), got {peaks!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"register_env({name!r}): peaks must differ, got {peaks!r}")
    return values


def _probe_function(name: str, probe_states: Any,
                    probe_labels: Sequence[str] | None) -> ProbeStates | None:
    """probe_states as a function num_states -> (labels, obs); fixed states checked now."""
    if probe_states is None:
        if probe_labels is not None:
            raise ValueError(f"register_env({name!r}): probe_labels without probe_states")
        return None
    if callable(probe_states):
        if probe_labels is not None:
            raise ValueError(f"register_env({name!r}): probe_labels go with fixed probe states; "
                             f"a probe_states function returns its own labels")
        return cast(ProbeStates, probe_states)
    try:
        obs = np.asarray(probe_states, np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"register_env({name!r}): probe_states must be raw observations "
                         f"[num_states, obs_dim] or a function, got {probe_states!r}") from err
    if obs.ndim != 2 or obs.shape[0] < 1 or obs.shape[1] < 1 or not np.all(np.isfinite(obs)):
        raise ValueError(f"register_env({name!r}): probe_states must be a finite array "
                         f"[num_states >= 1, obs_dim >= 1], got shape {obs.shape}")
    labels = ([f"state {i}" for i in range(obs.shape[0])] if probe_labels is None
              else [str(x) for x in probe_labels])
    if len(labels) != obs.shape[0]:
        raise ValueError(f"register_env({name!r}): {len(labels)} probe_labels for "
                         f"{obs.shape[0]} probe states")
    obs.setflags(write=False)
    return lambda num_states: (list(labels), obs.copy())


# ---- building and checking a registered environment ----------------------------------------

def _build_registered(spec: EnvSpec, length: int) -> Environment:
    """spec's Environment of episode `length`; a user factory's result is checked once."""
    builtin = spec.name in TOY_SPECS
    built = spec.factory(length)
    if isinstance(built, Environment):
        env = built
        if not builtin and (built.name != spec.name or built.episode_length != length):
            raise ValueError(
                f"{spec.name}: the factory returned an Environment named {built.name!r} with "
                f"episode_length {built.episode_length}; it must be named {spec.name!r} with "
                f"the episode_length it is called with ({length}) (or return an EnvCore)")
    elif isinstance(built, EnvCore):
        if not builtin:
            _check_dims(spec.name, built)
        env = make_environment(spec.name, built, length)
    else:
        raise ValueError(f"{spec.name}: the factory registered by {spec.source} returned "
                        f"{type(built).__module__}.{type(built).__qualname__}; it must return a "
                        f"diffrl_jax.envs.EnvCore (one unbatched environment) or a "
                        f"diffrl_jax.envs.Environment")
    if not builtin and (spec.name, length) not in _CHECKED:
        _check_dims(spec.name, env)
        _trial_step(spec, env)
        _CHECKED.add((spec.name, length))
    return env


def _check_dims(name: str, env: EnvCore | Environment) -> None:
    kind = type(env).__name__
    for field in ("obs_dim", "action_dim"):
        value = getattr(env, field)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: the factory's {kind} has {field} {value!r}; it must be "
                             f"a positive Python int")
    for field in ("reset", "step") + (("physics_finite",) if isinstance(env, EnvCore) else ()):
        if not callable(getattr(env, field)):
            raise ValueError(f"{name}: the factory's {kind}.{field} is not callable")


def _trial_step(spec: EnvSpec, env: Environment) -> None:
    """Traces (jax.eval_shape, nothing runs) a reset of 2 envs and one step with zero
    actions, and checks what they return against the declared dims and the probe states."""
    name, n = spec.name, 2
    try:
        state = jax.eval_shape(lambda key: env.reset(key, n), jax.random.PRNGKey(0))
        if not isinstance(state, EnvState):
            raise TypeError(f"reset returned {type(state).__name__}, not an EnvState")
        next_state, out = jax.eval_shape(env.step, state,
                                         jax.ShapeDtypeStruct((n, env.action_dim), jnp.float32))
        if not isinstance(next_state, EnvState) or not isinstance(out, StepOutput):
            raise TypeError("step must return (EnvState, StepOutput), got "
                            f"({type(next_state).__name__}, {type(out).__name__})")
    except Exception as err:  # the user's code: any error, reported with the env's name
        raise ValueError(f"{name}: a trial reset and step of the factory's environment failed "
                         f"(obs_dim {env.obs_dim}, action_dim {env.action_dim}): "
                         f"{type(err).__name__}: {err}") from err
    for what, got, want in (("reset's obs", state.obs.shape, (n, env.obs_dim)),
                            ("step's next_obs", out.next_obs.shape, (n, env.obs_dim)),
                            ("step's reward", out.reward.shape, (n,))):
        if tuple(got) != want:
            raise ValueError(f"{name}: {what} has shape {tuple(got)} for {n} envs, expected "
                             f"{want} (obs_dim {env.obs_dim})")
    probes = probe_states_of(name, 4)
    if probes is not None and probes[1].shape[1] != env.obs_dim:
        raise ValueError(f"{name}: its probe states have {probes[1].shape[1]} features, the "
                         f"environment's obs_dim is {env.obs_dim}")


# ---- names ----------------------------------------------------------------------------------

def list_envs() -> list[str]:
    """Every name `make_env` accepts, sorted (playground/ names only when mujoco_playground
    is installed; checking that imports nothing; registered names as registered now)."""
    return sorted([f"brax/{n}" for n in brax_env_names()] + playground_env_names()
                  + list(_REGISTRY))


def check_env_name(name: str) -> None:
    """Raises unless `make_env` accepts `name`: for a playground/ name the specific reason
    (mujoco_playground not installed: ImportError; a broken, unsupported or unknown task:
    ValueError), otherwise a ValueError listing the registered names, with the name most
    likely meant (one differing only in case, else the closest) when there is one, and for a
    name outside the library's suites how to register it. A name registered with
    `register_env` is built once and checked (see there)."""
    spec = _REGISTRY.get(name)
    if spec is not None:
        if name not in TOY_SPECS:
            _build_registered(spec, spec.episode_length)
        return
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
    raise ValueError(_unknown(name, hint))


def _unknown(name: str, hint: str = "") -> str:
    suite = name.split("/", 1)[0] if "/" in name else None
    extra = f"; {IMPORT_HINT}" if suite is not None and suite not in RESERVED_SUITES else ""
    return f"unknown environment {name!r}{hint}; registered: {list_envs()}{extra}"


def make_env(
    name: str, *, backend: str = "mjx", episode_length: int | None = None
) -> Environment:
    """The batched, auto-resetting environment `name` (see `list_envs()`).

    backend: brax's physics pipeline, one of BRAX_BACKENDS (toy, playground and registered
        envs accept and ignore it; playground envs always run MJX's JAX implementation).
    episode_length: the time limit; default 1000 for brax envs, the playground task's config
        (1000 on every DM Control task), the registered env's own otherwise.
    """
    if backend not in BRAX_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BRAX_BACKENDS)}")
    if episode_length is not None:
        require_int_at_least("make_env", "episode_length", episode_length, 1)
    spec = _REGISTRY.get(name)
    if spec is not None:
        length = spec.episode_length if episode_length is None else episode_length
        return _build_registered(spec, length)
    if name.startswith(PLAYGROUND_PREFIX):
        core, default_length = make_playground_core(name[len(PLAYGROUND_PREFIX):])
        length = default_length if episode_length is None else episode_length
        return make_environment(name, core, length)
    prefix = "brax/"
    if name.startswith(prefix) and name[len(prefix):] in brax_env_names():
        core = make_brax_core(name[len(prefix):], backend)
        length = BRAX_EPISODE_LENGTH if episode_length is None else episode_length
        return make_environment(name, core, length)
    raise ValueError(_unknown(name))
