"""Shared fixtures: small policies built with non-trivial control so the kernels are exercised."""

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import pytest

try:
    import fcntl
except ImportError:  # not POSIX: no cross-worker sharing
    fcntl = None

from diffrl_jax.policies import DiffusionPolicyConfig, make_diffusion_policy

OBS_DIM = 3
ACTION_DIM = 2


def small_diffusion_config(**overrides) -> DiffusionPolicyConfig:
    """A small network whose control is far from zero (init scale 0.5), so that f matters."""
    settings = dict(
        num_steps=4, hidden_sizes=(16, 16), time_hidden=8, control_init_scale=0.5
    )
    settings.update(overrides)
    return DiffusionPolicyConfig(**settings)


@pytest.fixture
def diffusion_policy():
    return make_diffusion_policy(OBS_DIM, ACTION_DIM, small_diffusion_config())


@pytest.fixture
def diffusion_params(diffusion_policy):
    return diffusion_policy.init(jax.random.PRNGKey(0))


class _CacheTally:
    """Counts this worker's persistent-cache hits and the compile seconds they saved (JAX's
    monitoring events), appended to `tally.jsonl` in the cache folder at the session's end."""

    def __init__(self):
        self.hits, self.saved = 0, 0.0

    def event(self, event: str, **kwargs: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            self.hits += 1

    def duration(self, event: str, seconds: float, **kwargs: Any) -> None:
        if event == "/jax/compilation_cache/compile_time_saved_sec":
            self.saved += seconds


@pytest.fixture(scope="session", autouse=True)
def session_compile_cache(tmp_path_factory):
    """One persistent compilation cache for the test session (all xdist workers): the suite
    compiles many identical training programs in different tests (and in the CLI subprocesses,
    through `DIFFRL_JAX_CACHE`), and loading one is a fraction of compiling it. Fresh per
    session, so a test never sees programs of an earlier version of the code; the tests about
    the cache itself name their own folders. `DIFFRL_TEST_COMPILE_CACHE=0` turns it off.
    Writes are under JAX's file lock (set by a size limit), so workers never read a half-written
    entry."""
    if os.environ.get("DIFFRL_TEST_COMPILE_CACHE", "1") == "0":
        yield None
        return
    shared = ("PYTEST_XDIST_WORKER" in os.environ and fcntl is not None)
    root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.getbasetemp()
    base = root / "compile_cache"
    base.mkdir(exist_ok=True)
    os.environ["DIFFRL_JAX_CACHE"] = str(base)  # CLI runs in subprocesses or in-process
    from diffrl_jax.experiment import enable_compilation_cache

    folder = enable_compilation_cache(base)
    jax.config.update("jax_compilation_cache_max_size", 16 * 2**30)  # turns on the file lock
    tally = _CacheTally()
    jax.monitoring.register_event_listener(tally.event)
    jax.monitoring.register_event_duration_secs_listener(tally.duration)
    yield folder
    with open(base / "tally.jsonl", "a") as out:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        out.write(f'{{"worker": "{worker}", "hits": {tally.hits}, '
                  f'"saved_seconds": {tally.saved:.1f}}}\n')


@pytest.fixture(scope="session", autouse=True)
def quick_compiles():
    """The test session compiles with most of XLA's optimisations off
    (`jax_disable_most_optimizations`): the tests' programs run for seconds but take tens of
    seconds to compile, and this cuts compile time by about 40 %. Subprocesses (CLI runs, the
    mesh tests) get it through `JAX_DISABLE_MOST_OPTIMIZATIONS=1` unless a test sets it (the
    compile cache and Ctrl-C tests set 0: they time or interrupt real compiles). The slow
    learning checks, whose programs run for minutes, turn it off (`full_optimisations`).
    `DIFFRL_TEST_FULL_OPT=1` keeps the optimisations everywhere."""
    if os.environ.get("DIFFRL_TEST_FULL_OPT") == "1":
        yield False
        return
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    jax.config.update("jax_disable_most_optimizations", True)
    yield True


@pytest.fixture(autouse=True)
def full_optimisations(request, quick_compiles):
    """XLA's full optimisations for the tests marked slow (see `quick_compiles`)."""
    if not quick_compiles or request.node.get_closest_marker("slow") is None:
        yield
        return
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


def pytest_collection_modifyitems(config, items):
    """Slow learning checks first (stable order otherwise): with `-n 2 --maxschedchunk 1`
    the two workers are handed tests a few at a time in this order, start on the minutes-long
    checks and fill in with the quick tests, so they finish together."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def computed_once(tmp_path_factory, name: str, compute: Callable[[Path], Any]) -> tuple[Any, Path]:
    """(compute(directory), directory) for an expensive module fixture, computed once per
    test session: under pytest-xdist the first worker to get here computes it (holding a
    file lock) and the others load its pickled result (the pytest-xdist recipe for
    session-wide fixtures), so its compiles are paid once. The directory is shared: tests
    must treat it as read-only (copy it to change it)."""
    if "PYTEST_XDIST_WORKER" not in os.environ or fcntl is None:
        directory = tmp_path_factory.mktemp(name)
        return compute(directory), directory
    root = tmp_path_factory.getbasetemp().parent  # shared by this session's workers
    directory, done = root / name, root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            directory.mkdir(exist_ok=True)
            done.write_bytes(pickle.dumps(compute(directory)))
        return pickle.loads(done.read_bytes()), directory
