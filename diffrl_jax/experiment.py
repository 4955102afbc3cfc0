"""Running a training job as `experiments/train.py` does: configs from presets and overrides,
seeds on a device mesh, chunks of intervals with full-state checkpoints, resume, progress and
metric logs, NaN stops, summary.json and plots."""

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from diffrl_jax.checkpoints import (
    CHECKPOINT_SUBDIR,
    SUPERSEDED_SUBDIR,
    CheckpointError,
    CheckpointStore,
    complete_checkpoint_steps,
    nonfinite_leaves,
)
from diffrl_jax.compile_progress import compile_programs
from diffrl_jax.config_overrides import parse_overrides
from diffrl_jax.envs import (
    check_env_name,
    env_spec,
    import_env_modules,
    peaks_of,
    probe_states_of,
)
from diffrl_jax.envs.brax_core import BRAX_BACKENDS
from diffrl_jax.parallel import (
    gather_to_host,
    global_seed_keys,
    is_main_process,
    make_mesh,
    mesh_shape,
    seed_sharding,
    wait_for_all_processes,
)
from diffrl_jax.parallel.mesh import check_divisible
from diffrl_jax.plots import plot_run, sample_policy_actions
from diffrl_jax.presets import AUTHORS_PRESETS, apply_overrides, named_preset_overrides
from diffrl_jax.run_logs import METRIC_FORMATS, PROGRESS_MODES, IntervalReporter, make_sinks
from diffrl_jax.training import ALGOS, mesh_program, schedule_of, trainer_for
from diffrl_jax.validation import (
    ConfigError,
    require_choice,
    require_int_at_least,
    require_writable_dir,
)

__all__ = ["ALGOS", "DEFAULT_ENV", "RUN_CONFIG_FILE", "DivergenceMonitor", "RunOptions",
           "accelerator_scale_warning", "build_summary", "config_differences",
           "config_from_dict", "config_to_dict", "enable_compilation_cache", "experiment_mesh",
           "host_cpu_tag", "make_config", "requested_conflicts", "run_experiment"]

DEFAULT_ENV = "brax/inverted_pendulum"


def make_config(algo: str, env: str, backend: str = "mjx", total_steps: int | None = None,
                preset: str = "default", settings: Sequence[str] = (), **overrides: Any) -> Any:
    """The resolved, validated config: the algorithm's defaults, then the named preset
    ("default": the (algo, env) preset of `diffrl_jax.presets`), then keyword overrides, then
    `settings` ("field=value" / "nested.field=value" strings, as `--set` takes them)."""
    trainer = trainer_for(algo)
    _check_env(env)
    require_choice("config", "backend", backend, BRAX_BACKENDS)
    config = trainer.config_class(algo=algo, env=env, backend=backend)
    config = apply_overrides(config, named_preset_overrides(preset, algo, env))
    return _apply_arguments(config, total_steps, settings, overrides)


def _check_env(env: str) -> None:
    try:
        check_env_name(env)  # the specific reason (e.g. a playground/ task) if there is one
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _apply_arguments(config: Any, total_steps: int | None, settings: Sequence[str],
                     overrides: dict[str, Any]) -> Any:
    """config with total_steps, then the keyword overrides, then `settings` applied; validated."""
    if total_steps is not None:
        overrides = dict(overrides, total_env_steps=total_steps)
    config = apply_overrides(config, overrides)
    fixed = [item for item in settings if str(item).split("=", 1)[0].strip() in ("algo", "env", "backend")]
    if fixed:
        raise ConfigError(f"{fixed}: algo, env and backend choose the preset; give them as "
                          f"--algo/--env/--backend (arguments of make_config), not as overrides")
    config = apply_overrides(config, parse_overrides(list(settings), config))
    return config.validate()


def requested_conflicts(saved: Any, algo: str | None = None, env: str | None = None,
                        backend: str | None = None, preset: str | None = None,
                        total_steps: int | None = None, settings: Sequence[str] = (),
                        **overrides: Any) -> list[str]:
    """'field: saved vs given' for each config field that the given arguments set otherwise
    than the saved config (a checkpoint's) has it. Only the arguments given (not None, not
    empty) are compared: they are applied on top of the saved config, in `make_config`'s
    order (env, backend, the named preset's fields, total_steps, overrides, settings), so an
    argument left out never counts, and a differing algo is the one conflict shown. Raises
    ConfigError for an invalid argument."""
    if algo is not None and algo != saved.algo:
        trainer_for(algo)  # an unknown algorithm is a ConfigError of its own
        return [f"algo: {saved.algo!r} vs {algo!r}"]
    given = saved
    if env is not None:
        _check_env(env)
        given = given.replace(env=env)
    if backend is not None:
        require_choice("config", "backend", backend, BRAX_BACKENDS)
        given = given.replace(backend=backend)
    if preset is not None:
        given = apply_overrides(given, named_preset_overrides(preset, saved.algo, given.env))
    given = _apply_arguments(given, total_steps, settings, overrides)
    return config_differences(config_to_dict(saved), config_to_dict(given))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready view of a (nested) config dataclass."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "tolist"):
            value = value.tolist()
        out[field.name] = value
    return out


def config_from_dict(data: dict[str, Any]) -> Any:
    """The config that `config_to_dict` wrote (e.g. into a checkpoint's meta), validated."""
    try:
        config_class = trainer_for(data["algo"]).config_class
    except KeyError as err:
        raise ValueError(f"a saved config needs an 'algo' field; got keys {sorted(data)}") from err
    defaults = config_class()
    values = {}
    for field in dataclasses.fields(config_class):
        if field.name not in data:
            raise ValueError(f"the saved config lacks the field {field.name!r} (written by "
                             f"another version of diffrl_jax?)")
        default, value = getattr(defaults, field.name), data[field.name]
        if dataclasses.is_dataclass(default):
            names = {f.name for f in dataclasses.fields(default)}
            if not isinstance(value, dict) or set(value) != names:
                got = sorted(value) if isinstance(value, dict) else value
                raise ValueError(f"the saved config's {field.name!r} has fields {got}, this "
                                 f"diffrl_jax expects {sorted(names)}")
            value = type(default)(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in value.items()})
        elif isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    unknown = sorted(set(data) - set(values))
    if unknown:
        raise ValueError(f"the saved config has fields this diffrl_jax does not know: {unknown}")
    return config_class(**values).validate()


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """'field: a vs b' for every (nested) field where two `config_to_dict` views differ."""
    out = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name, "<missing>"), b.get(name, "<missing>")
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_differences(x, y, f"{prefix}{name}.")
        elif x != y:
            out.append(f"{prefix}{name}: {x!r} vs {y!r}")
    return out


def experiment_mesh(shape: tuple[int, int] | None = None) -> Mesh:
    """The ("seed", "data") mesh of a run: `shape` = (seed shards, data shards) over the first
    seeds * data devices, or over all devices of all processes when several processes run;
    None: one device (all devices on the seed axis when several processes run)."""
    multi_process = jax.process_count() > 1
    if shape is None:
        return make_mesh(None, 1) if multi_process else make_mesh(1, 1, jax.devices()[:1])
    seeds, data = shape
    devices = jax.devices() if multi_process else jax.devices()[: seeds * data]
    return make_mesh(seeds, data, devices)


DEFAULT_CACHE_DIR = Path.home() / ".cache" / "diffrl_jax" / "xla"


def enable_compilation_cache(directory: str | Path | None = None) -> Path:
    """Turns on JAX's persistent compilation cache, so a rerun or a resume of the same program
    loads it instead of compiling; returns the folder used: `host_cpu_tag()` under `directory`
    (default `DIFFRL_JAX_CACHE` or ~/.cache/diffrl_jax/xla). XLA builds a program's CPU code
    for the CPU that compiles it and JAX's cache key does not name that CPU, so a cache shared
    by machines with different CPUs (a network home directory) could load code that crashes
    with SIGILL; one folder per CPU type keeps them apart."""
    path = Path(directory or os.environ.get("DIFFRL_JAX_CACHE") or DEFAULT_CACHE_DIR)
    path = path / host_cpu_tag()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


def host_cpu_tag() -> str:
    """"host-<machine>-<12 hex digits>": the digits hash this CPU's model name and feature
    flags (/proc/cpuinfo on Linux; `platform.processor()` elsewhere), so machines tag alike
    exactly when XLA would build the same CPU code on them."""
    import hashlib
    import platform

    described = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields = {}
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())  # the first CPU's
        flags = fields.get("flags") or fields.get("Features") or ""
        described = f"{fields.get('model name', '')}|{' '.join(sorted(flags.split()))}"
    except OSError:
        pass
    digest = hashlib.sha256(described.encode()).hexdigest()[:12]
    return f"host-{platform.machine() or 'cpu'}-{digest}"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is driven (none of it changes what is computed).

    The driver runs one evaluation interval per call of the compiled program, so progress,
    stop requests and the divergence check act after every interval.
    checkpoint_every: intervals between checkpoints; 0: only at the end (and on a stop).
    max_to_keep: checkpoints kept (older ones are deleted once a newer one is committed).
    metrics_formats: any of csv, jsonl, tensorboard, wandb. progress: "bar" (a progress bar
    on a terminal, lines otherwise), "lines" or "none". stop_after_steps: stop (with a
    checkpoint) once this many env steps per seed are done, to continue later with resume.
    nan_patience: stop when some seed skipped more than half of its updates (non-finite loss
    or gradients) in this many consecutive intervals. plots: write learning_curve.png (and
    action_histogram.png on toy environments).
    """

    checkpoint_every: int = 1
    max_to_keep: int = 2
    checkpoints: bool = True
    metrics_formats: tuple[str, ...] = ("csv", "jsonl")
    progress: str = "bar"
    stop_after_steps: int | None = None
    nan_patience: int = 2
    plots: bool = True
    wandb_project: str = "diffrl_jax"

    def validate(self) -> "RunOptions":
        require_int_at_least("RunOptions", "checkpoint_every", self.checkpoint_every, 0)
        require_int_at_least("RunOptions", "max_to_keep", self.max_to_keep, 1)
        require_int_at_least("RunOptions", "nan_patience", self.nan_patience, 1)
        require_choice("RunOptions", "progress", self.progress, PROGRESS_MODES)
        if self.stop_after_steps is not None:
            require_int_at_least("RunOptions", "stop_after_steps", self.stop_after_steps, 1)
            if not self.checkpoints:
                raise ConfigError("RunOptions.stop_after_steps needs checkpoints to resume from")
        unknown = [f for f in self.metrics_formats if f not in METRIC_FORMATS]
        if unknown:
            raise ConfigError(f"RunOptions.metrics_formats: unknown {unknown}; allowed: "
                              f"{list(METRIC_FORMATS)}")
        return self


class _StopRequests:
    """Ctrl-C (SIGINT) or SIGTERM (time limits, preemption) while training: the first asks
    the run to stop after the current interval and write a checkpoint; after it the signals'
    default handling is back, so a second Ctrl-C aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        print(f"\n{signal.Signals(signum).name}: stopping after the current interval and writing "
              f"a checkpoint (Ctrl-C again aborts without one)", file=sys.stderr, flush=True)

    def agreed(self) -> bool:
        """Whether any process was asked to stop (every process must call this together)."""
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.int32(self.requested))
        return bool(np.asarray(flags).any())

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


RUN_FILES = ("summary.json", "metrics.csv", "metrics.jsonl", CHECKPOINT_SUBDIR)
# The config, seeds and seed of a run, written before anything compiles: a run stopped before
# its first checkpoint (e.g. killed while compiling) is started afresh from it on --resume.
RUN_CONFIG_FILE = "run_config.json"


def _recorded(out: Path) -> list[str]:
    """The RUN_FILES in which `out` holds results: summary.json, metric files with rows,
    complete checkpoints (an empty metrics file or checkpoints folder records nothing)."""
    def has_rows(path: Path, header: int) -> bool:
        if not path.is_file():
            return False
        with open(path, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if line.strip()) > header
    found = {"summary.json": (out / "summary.json").exists(),
             "metrics.csv": has_rows(out / "metrics.csv", 1),
             "metrics.jsonl": has_rows(out / "metrics.jsonl", 0),
             CHECKPOINT_SUBDIR: bool(complete_checkpoint_steps(out))}
    return [name for name in RUN_FILES if found[name]]


def _refuse_existing_run(out: Path, main: bool) -> bool:
    """Raises CheckpointError if `out` holds results of a run; True when it holds only the
    leftovers of a run that recorded nothing (stopped before its first interval), which this
    run then replaces (said on stderr)."""
    existing = _recorded(out)
    if existing:
        hint = ("" if CHECKPOINT_SUBDIR in existing or "summary.json" in existing else
                " (it has no complete checkpoint: --resume starts it afresh from its saved config)")
        raise CheckpointError(
            f"{out} already holds a run ({', '.join(existing)}); continue it with --resume "
            f"{out}{hint} or write this run to another --out (nothing was overwritten)")
    leftovers = [name for name in (RUN_CONFIG_FILE,) + RUN_FILES if (out / name).exists()]
    if leftovers and main:
        print(f"reusing {out}: the run started there stopped before recording anything "
              f"({', '.join(leftovers)} hold no results); this run replaces it",
              file=sys.stderr, flush=True)
    return bool(leftovers)


def _saved_run(out: Path, resume_step: int | None) -> dict[str, Any]:
    """The RUN_CONFIG_FILE record of a run in `out` that has no complete checkpoint;
    CheckpointError when there is none to start afresh from."""
    path = out / RUN_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no complete checkpoint in {out / CHECKPOINT_SUBDIR} and no saved "
                              f"config ({path}): nothing to resume; start a fresh run with --out")
    if resume_step is not None:
        raise CheckpointError(f"no checkpoint {resume_step} in {out / CHECKPOINT_SUBDIR}: it holds "
                              f"no complete checkpoint (leave out --resume-step to start the run "
                              f"afresh from its saved config)")
    try:
        record = json.loads(path.read_text())
        config_from_dict(record["config"])
        int(record["num_seeds"])
        int(record["seed"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {err}); nothing "
                              f"to resume") from err
    return record


def _write_saved_run(out: Path, config: Any, num_seeds: int, seed: int,
                     imports: Sequence[str] = ()) -> None:
    """imports: the modules that register environments (`import_env_modules`' records), to
    import again on resume; env_source: the module that registered a user environment."""
    out.mkdir(parents=True, exist_ok=True)
    spec = env_spec(config.env)
    record = {"algo": config.algo, "env": config.env, "num_seeds": num_seeds, "seed": seed,
              "imports": list(imports), "env_source": spec.source if spec else None,
              "config": config_to_dict(config)}
    _write_record(out, record)


def _write_record(out: Path, record: dict[str, Any]) -> None:
    tmp = out / f".{RUN_CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out / RUN_CONFIG_FILE)


def _run_imports(out: Path, imports: Sequence[str], resume: bool,
                 main: bool) -> tuple[list[str], list[str]]:
    """Imports the modules that register environments: `imports` (ImportError if one fails),
    and on resume also those the run recorded in OUT/run_config.json (a failure there is
    kept as a note: the environment may be registered otherwise). Returns (the imports, as
    recorded, given and recorded; notes on recorded imports that failed). A resume given
    new imports adds them to the record."""
    imported = import_env_modules(imports)
    if not resume:
        return imported, []
    path = out / RUN_CONFIG_FILE
    try:
        record = json.loads(path.read_text())
        recorded = [str(x) for x in record.get("imports") or []]
    except (OSError, ValueError, AttributeError):
        return imported, []
    notes = []
    for spec in recorded:
        if spec in imported:
            continue
        try:
            import_env_modules([spec])
        except ImportError as err:
            notes.append(f"{err} (recorded in {path})")
    merged = list(dict.fromkeys(recorded + imported))
    if main and merged != recorded:
        try:
            _write_record(out, dict(record, imports=merged))
        except OSError:  # an unwritable run directory is reported by the checks that follow
            pass
    return merged, notes


def _require_run_env(env: str, out: Path, imported: Sequence[str], notes: Sequence[str],
                     main: bool) -> None:
    """ConfigError naming the environment and --import when the resumed run's environment
    is not registered in this process."""
    try:
        check_env_name(env)
    except ValueError as err:
        try:
            source = json.loads((out / RUN_CONFIG_FILE).read_text()).get("env_source")
        except (OSError, ValueError, AttributeError):
            source = None
        raise ConfigError(
            f"the run in {out} trains on environment {env!r}, which is not registered in this "
            f"process ({err}). "
            + (f"It was registered by module {source!r}. " if source else "")
            + (f"Imports tried: {list(imported)}. " if imported else "")
            + " ".join(notes)
            + " Give the module that registers it with --import MODULE_OR_FILE.py "
              "(run_experiment(..., imports=[...]))") from err
    if main:
        for note in notes:
            print(f"note: {note}; {env!r} is registered regardless", file=sys.stderr,
                  flush=True)


def _check_requested(saved: Any, where: str, requested: dict[str, Any], num_seeds: int | None,
                     seed: int | None, saved_seeds: int, saved_seed: int) -> None:
    """CheckpointError when an argument given to a resume (see `requested_conflicts`), the
    seed count or the seed differs from the saved run's."""
    diff = requested_conflicts(saved, **requested)
    if diff:
        raise CheckpointError(f"{where} was written by a run with another config (saved vs "
                              f"given): {'; '.join(diff)}; resume without --algo/--env/--set to "
                              f"continue it as it was")
    if num_seeds is not None and num_seeds != saved_seeds:
        raise CheckpointError(f"the checkpoint holds {saved_seeds} seeds, {num_seeds} given")
    if seed is not None and seed != saved_seed:
        raise CheckpointError(f"the checkpoint's run used seed {saved_seed}, {seed} given")


def _resolve_resume(requested, out, resume_step, num_seeds, seed, store):
    """(config, start step, meta) of the run to resume; `requested`: the config arguments
    given (`requested_conflicts`), which must agree with the checkpoint's config."""
    if store is None:
        raise ValueError("resuming needs checkpoints (do not disable them)")
    step, meta = store.read_meta(resume_step)
    saved = config_from_dict(meta["config"])
    _check_requested(saved, f"the checkpoint in {out}", requested, num_seeds, seed,
                     meta["num_seeds"], meta["seed"])
    return saved, step, meta


def _completed_summary(out: Path, step: int) -> dict[str, Any] | None:
    """OUT/summary.json when it records the run as completed at checkpoint `step`."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if (isinstance(summary, dict) and summary.get("status") == "completed"
            and (summary.get("checkpoints") or {}).get("last") == step):
        return summary
    return None


def accelerator_scale_warning(config: Any) -> str | None:
    """A one-line warning when JAX runs on the CPU (no accelerator) and `config` is at the
    paper authors' accelerator scale (`presets.AUTHORS_PRESETS`: the num_envs or the
    total_env_steps of its algorithm's entry, e.g. 1024 envs and 50M steps; the default
    preset on the paper's playground tasks); None otherwise."""
    if jax.default_backend() != "cpu":
        return None
    authors = AUTHORS_PRESETS.get(config.algo, {})
    if not (config.num_envs >= authors.get("num_envs", float("inf"))
            or config.total_env_steps >= authors.get("total_env_steps", float("inf"))):
        return None
    return (f"warning: no accelerator (JAX runs on the CPU), but {config.algo} on {config.env} "
            f"is set up at the paper authors' accelerator scale ({config.total_env_steps:,d} env "
            f"steps x {config.num_envs:,d} envs per seed; the default on the paper's playground "
            f"tasks): for a CPU run use --preset cpu")


def _stop_boundary(stop_after_steps: int, first_steps: int, per_interval: int, done: int,
                   num_intervals: int) -> int:
    """The intervals done when a run stops for stop_after_steps: at the first interval
    boundary at or after it (at least one more interval; num_intervals: it completes)."""
    needed = -(-(stop_after_steps - first_steps) // per_interval)  # ceil
    return min(num_intervals, max(done + 1, needed))


def run_experiment(algo: str | None, env: str | None, total_steps: int | None,
                   num_seeds: int | None, seed: int | None, out: str | Path,
                   backend: str | None = None, progress: bool | str = True,
                   mesh: Mesh | None = None, preset: str | None = None,
                   settings: Sequence[str] = (),
                   options: RunOptions | None = None, resume: bool = False,
                   resume_step: int | None = None, imports: Sequence[str] = (),
                   **overrides: Any) -> dict[str, Any]:
    """Trains num_seeds seeds as one vmapped program on `mesh` (default: one device, see
    `experiment_mesh`), one evaluation interval per call, with a full-state checkpoint every
    `options.checkpoint_every` intervals; returns the summary, which the main process also
    writes to OUT/summary.json (its "status": completed, stopped, interrupted or diverged;
    "stop_requested": whether a Ctrl-C / SIGTERM came, also one too late to stop the run,
    e.g. during its last interval, so a caller running several runs can stop after it).

    A fresh run: env None is DEFAULT_ENV, backend None "mjx", preset None "default". It
    refuses an `out` that already holds results of a run (`_recorded`); one that holds only
    the leftovers of a run stopped before recording anything is reused. Before anything
    compiles it writes OUT/run_config.json (config, seeds, seed).

    resume: continue the run in `out` from its latest checkpoint (or `resume_step`; later
    checkpoints are then moved aside to OUT/superseded_checkpoints); algo, env and the config
    arguments may be None, and those given are applied on top of the checkpoint's config and
    must not change it (`requested_conflicts`: arguments left out are not compared). A
    resumed run computes exactly what the uninterrupted run would. A run with no complete
    checkpoint (stopped before its first) is started afresh from OUT/run_config.json; a
    completed run (summary.json says so) is returned as it is, with nothing compiled.
    `out` must be a directory that can be written (or created): ConfigError otherwise.
    progress: True ("bar"), False ("none") or a mode name.
    imports: modules (names importable from sys.path or the working directory, or .py
    files) imported first, for environments they register (`envs.register_env`); recorded in
    OUT/run_config.json and, on resume, imported again with the given ones.
    """
    options = (options or RunOptions()).validate()
    if not isinstance(progress, str):
        progress = options.progress if progress else "none"
    if not resume and (isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1):
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    out = Path(out)
    main = is_main_process()
    given = None  # checked before anything is written
    requested = dict(algo=algo, env=env, backend=backend, preset=preset,
                     total_steps=total_steps, settings=settings, **overrides)
    imported, import_notes = _run_imports(out, imports, resume, main)
    if not resume:
        if algo is None:
            raise ValueError("algo is required unless resuming")
        given = make_config(algo, env or DEFAULT_ENV, backend or "mjx", total_steps,
                            preset=preset or "default", settings=settings, **overrides)
    require_writable_dir("output directory", out)
    saved_run, reused = None, False
    if resume:
        if not complete_checkpoint_steps(out):
            saved_run = _saved_run(out, resume_step)
    else:
        reused = _refuse_existing_run(out, main)
    # Every process checks `out` before any process writes into it (a shared filesystem).
    wait_for_all_processes("run_directory_checked")
    store = (CheckpointStore(out, options.max_to_keep, read_only=False)
             if options.checkpoints else None)
    try:
        config, start_step, meta = given, None, None
        if saved_run is not None:
            config = config_from_dict(saved_run["config"])
            _check_requested(config, f"the saved config {out / RUN_CONFIG_FILE}", requested,
                             num_seeds, seed, saved_run["num_seeds"], saved_run["seed"])
            num_seeds, seed = saved_run["num_seeds"], saved_run["seed"]
            if main:
                print(f"{out} holds no complete checkpoint (its run stopped before the first "
                      f"one): starting that run afresh from its saved config "
                      f"({RUN_CONFIG_FILE})", file=sys.stderr, flush=True)
        elif resume:
            config, start_step, meta = _resolve_resume(requested, out, resume_step, num_seeds,
                                                       seed, store)
            num_seeds, seed = meta["num_seeds"], meta["seed"]
            if meta["intervals_done"] >= meta["num_intervals"]:
                previous = _completed_summary(out, start_step)
                if previous is not None:
                    message = f"the run is already complete ({start_step:,d} env steps); nothing to do"
                    if main:
                        print(f"{out}: {message}", file=sys.stderr, flush=True)
                    return dict(previous, message=message, resumed_from=start_step,
                                compile_seconds=0.0, train_seconds=0.0, wall_seconds=0.0,
                                env_steps_per_second=None, stop_requested=False)
            assert store is not None  # _resolve_resume refuses a run without checkpoints
            moved = store.supersede_after(start_step)
            if moved and main:
                print(f"resuming from checkpoint {start_step}: the later checkpoints {moved} "
                      f"were moved to {out / SUPERSEDED_SUBDIR}", file=sys.stderr, flush=True)
        assert config is not None  # a fresh run's, a saved config's or a checkpoint's
        if resume:
            _require_run_env(config.env, out, imported, import_notes, main)
        seed = 0 if seed is None else seed
        if meta is None and main:
            assert num_seeds is not None  # checked above unless resumed from a saved config
            _write_saved_run(out, config, num_seeds, seed, imported)
        warning = accelerator_scale_warning(config)
        if warning and main:
            print(warning, file=sys.stderr, flush=True)
        return _train(config, num_seeds, seed, out, progress, mesh, options, store,
                      start_step, meta, main, restarted=saved_run is not None or reused)
    finally:
        if store is not None:
            store.wait()
            store.close()


def _train(config, num_seeds, seed, out, progress, mesh, options, store, start_step, meta, main,
           restarted=False):
    sched = schedule_of(config)
    mesh = experiment_mesh() if mesh is None else mesh
    check_divisible(config, num_seeds, mesh)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    num_intervals = config.num_evals
    first_steps = sched.get("prefill_iters", 0) * config.num_envs  # env steps before interval 0
    per_interval = (sched["total_env_steps"] - first_steps) // num_intervals
    done = 0 if meta is None else meta["intervals_done"]
    start_env_steps = first_steps + done * per_interval
    # a resumed run drops the metric rows after its checkpoint; a restarted one all of them
    sinks = make_sinks(out, options.metrics_formats,
                       resume_from_env_steps=(start_env_steps if meta is not None or restarted
                                              else None),
                       wandb_project=options.wandb_project,
                       wandb_config=config_to_dict(config)) if main else []
    reporter = IntervalReporter(num_seeds, sched["total_env_steps"], f"{config.algo} {config.env}",
                                sinks, progress if main else "none", start_env_steps,
                                start_interval=done)

    if options.stop_after_steps is not None and done < num_intervals and main:
        stop_at = _stop_boundary(options.stop_after_steps, first_steps, per_interval, done,
                                 num_intervals)
        where = (f"stops at {first_steps + stop_at * per_interval:,d}, the first interval "
                 f"boundary at or after it" if stop_at < num_intervals else
                 f"is past the last interval boundary: the run completes at "
                 f"{sched['total_env_steps']:,d}")
        print(f"[{config.algo} {config.env}] stop_after_steps {options.stop_after_steps:,d} "
              f"{where} (one interval is {per_interval:,d} env steps per seed)",
              file=sys.stderr, flush=True)
    # No host callback in the programs (JAX never writes a program with one to its persistent
    # cache): each interval's metrics reach the reporter from the host once its call returns.
    program = mesh_program(config, mesh)
    keys = global_seed_keys(seed, num_seeds, seed_sharding(mesh))
    abstract = program.abstract_state(keys)
    t_wall = time.perf_counter()
    history: dict[str, np.ndarray] = {}
    seeds_axis, data_axis = mesh_shape(mesh)
    pieces = ([("initial state", lambda: program.init.lower(keys))] if meta is None else [])
    pieces += ([("interval", lambda: program.chunk(1).lower(abstract))]
               if done < num_intervals else [])
    compiled, compiled_report = compile_programs(
        pieces, f"{config.algo} {config.env}",
        f"the {' and '.join(name for name, _ in pieces)} program{'s' if len(pieces) > 1 else ''}"
        f" ({num_seeds} seed(s) on a {seeds_axis} x {data_axis} seed x data mesh)",
        show=main and reporter.mode != "none", stream=reporter.stream,
        interrupt_hint=_interrupt_hint(out, meta is not None))
    compiled = dict(zip((name for name, _ in pieces), compiled, strict=True))
    wait_for_all_processes("programs_compiled")
    compile_seconds = compiled_report.seconds
    if meta is None:
        state = compiled["initial state"](keys)  # small next to compiling
    else:
        state, history = store.restore(start_step, abstract)
    interval = compiled.get("interval")
    if main:
        what = (f"resuming {num_seeds} seed(s) from {start_env_steps:,d}" if meta else
                f"training {num_seeds} seed(s)")
        detail = (f"{what} to {sched['total_env_steps']:,d} env steps each on a {seeds_axis} x "
                  f"{data_axis} (seed x data) mesh")
        if done >= num_intervals:  # (summary.json was missing or not the checkpoint's)
            detail = (f"the run is already complete ({start_env_steps:,d} env steps); "
                      f"rebuilding its summary from the checkpoint")
        reporter.compile_report(
            compile_seconds,
            f"{compiled_report.cache_summary()} ({compiled_report.timing()}); {detail}")

    status, message = "completed", None
    last_saved, saved_at = start_step, done
    monitor = DivergenceMonitor(num_seeds, sched["updates_per_interval"], options.nan_patience)
    train_seconds = 0.0

    def save(env_steps: int) -> bool:
        nonlocal last_saved, saved_at
        bad = nonfinite_leaves(state)
        if bad:
            return False
        store.save(env_steps, state, history, _meta(config, num_seeds, seed, mesh, done))
        last_saved, saved_at = env_steps, done
        return True

    stop_agreed = False
    reporter.start()
    with _StopRequests() as stop, reporter:
        while done < num_intervals:
            assert interval is not None  # compiled whenever an interval is left
            t = time.perf_counter()
            state, metrics = interval(state)
            metrics = gather_to_host(jax.block_until_ready(metrics))
            train_seconds += time.perf_counter() - t
            _report_intervals(reporter, metrics)
            history = _append_history(history, metrics)
            done += 1
            env_steps = first_steps + done * per_interval
            if monitor.update(metrics["nonfinite_updates"]):
                status = "diverged"
                message = (f"{monitor.describe()}; stopped at {env_steps:,d} env steps without "
                           f"checkpointing them. Last checkpoint from before: "
                           f"{last_saved if last_saved is not None else 'none'}")
                break
            stop_agreed = stop.agreed()
            stopping = stop_agreed and done < num_intervals
            stopping_as_asked = _past(options, env_steps) and done < num_intervals
            finishing = done == num_intervals or stopping or stopping_as_asked
            due = options.checkpoint_every and done - saved_at >= options.checkpoint_every
            # no periodic checkpoints while updates are being skipped: the latest stays good
            if store is not None and (finishing or (due and monitor.healthy())):
                if not save(env_steps):
                    status = "diverged"
                    message = (f"the training state became non-finite at {env_steps:,d} env "
                               f"steps (not saved). Last checkpoint from before: "
                               f"{last_saved if last_saved is not None else 'none'}")
                    break
            if stopping:
                status, message = "interrupted", f"interrupted at {env_steps:,d} env steps"
                break
            if stopping_as_asked:
                status, message = "stopped", f"stopped after {env_steps:,d} env steps as asked"
                break
    if store is not None:
        store.wait()  # the summary names committed checkpoints only
    if message and main:
        resume_hint = (f"; continue with --resume {out}" if status in ("interrupted", "stopped")
                       else "")
        print(f"[{config.algo} {config.env}] {message}{resume_hint}", file=sys.stderr, flush=True)
    summary = build_summary(config, history, num_seeds, sched, compile_seconds, train_seconds,
                            time.perf_counter() - t_wall)
    steps_this_run = (first_steps + done * per_interval) - start_env_steps
    summary["env_steps_per_second"] = (steps_this_run * num_seeds / train_seconds
                                       if train_seconds > 0 else None)
    summary.update(
        status=status, message=message, intervals_done=done, num_intervals=num_intervals,
        seed=seed, resumed_from=start_step,
        # a Ctrl-C / SIGTERM that came too late to stop this run (during its last interval,
        # or while it was saving): the run is complete, but its caller was asked to stop
        stop_requested=bool(stop_agreed or stop.requested),
        checkpoints={"dir": str(store.directory) if store else None,
                     "steps": (store.steps() if store else []), "last": last_saved},
        mesh=dict(zip(mesh.axis_names, mesh_shape(mesh), strict=True)), processes=jax.process_count(),
        session_note="compile_seconds, train_seconds, wall_seconds and env_steps_per_second "
                     "cover this session only (a resumed run's earlier sessions are not added)",
    )
    notes = _env_notes(config.env, options.plots)
    if notes:
        summary["notes"] = notes
    if main:  # written before any plot: a figure that fails cannot lose the summary
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        for note in notes:
            print(f"[{config.algo} {config.env}] note: {note}", file=sys.stderr, flush=True)
    if options.plots:
        actions, labels, failed = _plot_inputs(config, state)  # a collective
        if main:
            plot_run(out, summary)
            if actions is not None:
                try:
                    plot_run(out, summary, actions, labels, curves=False)
                except Exception as err:  # noqa: BLE001 (an optional figure: reported, never fatal)
                    failed = f"{type(err).__name__}: {err}"
            if failed:
                print(f"[{config.algo} {config.env}] note: no action_histogram.png ({failed})",
                      file=sys.stderr, flush=True)
    return summary


def _env_notes(env: str, plots: bool = True) -> list[str]:
    """What a run on a registered `env` (a toy or a user's) leaves out because the
    environment does not declare it (reward peaks: mode fractions; probe states: the action
    histogram), one note each; none for Brax and Playground tasks, which have neither."""
    notes: list[str] = []
    if env_spec(env) is None:
        return notes
    if not peaks_of(env):
        notes.append(f"{env} declares no reward peaks (register_env's peaks): no mode "
                     f"fractions in summary.json")
    if plots:
        try:
            probes = probe_states_of(env, 4)
        except ValueError as err:  # a user's probe_states function: reported, never fatal
            notes.append(f"{env}'s probe states cannot be used ({err}): no action_histogram.png")
        else:
            if probes is None:
                notes.append(f"{env} declares no probe states (register_env's probe_states): "
                             f"no action_histogram.png")
    return notes


class DivergenceMonitor:
    """Counts, per seed, consecutive intervals in which more than half of the updates were
    skipped for non-finite losses or gradients; `update` is True once some seed has had
    `patience` such intervals in a row."""

    def __init__(self, num_seeds: int, updates_per_interval: int, patience: int):
        self.updates_per_interval, self.patience = updates_per_interval, patience
        self.streak = np.zeros(num_seeds, np.int64)
        self.worst = np.zeros(num_seeds, np.int64)

    def update(self, nonfinite_updates: Any) -> bool:
        """nonfinite_updates [seeds, intervals]: skipped updates per interval, in order."""
        skipped = np.asarray(nonfinite_updates) > 0.5 * self.updates_per_interval
        for i in range(skipped.shape[1]):
            self.streak = np.where(skipped[:, i], self.streak + 1, 0)
            self.worst = np.maximum(self.worst, self.streak)
        return bool(self.worst.max() >= self.patience)

    def healthy(self) -> bool:
        """No seed is in a run of skipped intervals now."""
        return bool(self.streak.max() == 0)

    def describe(self) -> str:
        seed = int(np.argmax(self.worst))
        return (f"seed {seed} skipped more than half of its {self.updates_per_interval} updates "
                f"(non-finite loss or gradients) in {int(self.worst[seed])} consecutive intervals")


def _interrupt_hint(out: Path, resumed: bool) -> str:
    """What an interrupted compilation leaves (see `compile_progress.compile_programs`)."""
    if resumed:
        return f"; {out} is as it was: continue with --resume {out}"
    return (f"; {out} holds no results yet: --resume {out} starts its saved config afresh, "
            f"or give it as --out again")


def _report_intervals(reporter: IntervalReporter, metrics: dict[str, np.ndarray]) -> None:
    """Hands each seed's metrics of each interval of a chunk ([seeds, intervals, ...]) to
    the reporter."""
    num_seeds, num_intervals = np.shape(metrics["env_steps"])[:2]
    for i in range(num_intervals):
        for s in range(num_seeds):
            reporter.record(s, {k: np.asarray(v)[s, i] for k, v in metrics.items()})


def _past(options: RunOptions, env_steps: int) -> bool:
    return options.stop_after_steps is not None and env_steps >= options.stop_after_steps


def _append_history(history: dict[str, np.ndarray], metrics: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-interval metrics [seeds, intervals, ...] so far, extended by a chunk's. Empty
    metrics (eval_mode_counts where an environment has no reward peaks) are not stored in
    checkpoints, so a restored history may lack them: they are re-created empty."""
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    if not history:
        return metrics
    done = next(iter(history.values())).shape[1]
    out = {}
    for k, v in metrics.items():
        before = history.get(k)
        if before is None:
            if v.size:
                raise CheckpointError(f"the restored metric history lacks {k!r}")
            before = np.zeros(v.shape[:1] + (done,) + v.shape[2:], v.dtype)
        out[k] = np.concatenate([before, v], axis=1)
    return out


def _meta(config, num_seeds, seed, mesh, intervals_done) -> dict[str, Any]:
    return {"algo": config.algo, "env": config.env, "num_seeds": num_seeds, "seed": seed,
            "intervals_done": intervals_done, "num_intervals": config.num_evals,
            "mesh": dict(zip(mesh.axis_names, mesh_shape(mesh), strict=True)),
            "config": config_to_dict(config)}


def _plot_inputs(config, state) -> tuple[Any, Any, str | None]:
    """(actions, labels, None) for the action histogram: seed 0's final policy at the
    environment's probe states; (None, None, None) for an environment without probe states;
    (None, None, why) when sampling them failed. Every process must call it."""
    try:
        probes = probe_states_of(config.env, 4)
    except ValueError as err:
        return None, None, f"its probe states cannot be used: {err}"
    if probes is None:
        return None, None, None
    labels, obs = probes
    params, stats = gather_to_host((state.policy_params, state.obs_stats))
    params, stats = jax.tree.map(lambda x: np.asarray(x)[0], (params, stats))
    try:
        actions = sample_policy_actions(config, params, stats, obs, 512, jax.random.PRNGKey(0))
    except Exception as err:  # noqa: BLE001 (an optional figure's input: reported, never fatal)
        return None, None, (f"sampling the policy at the probe states failed: "
                            f"{type(err).__name__}: {err}")
    return actions, labels, None


def build_summary(config, metrics, num_seeds, sched, compile_seconds, train_seconds, wall_seconds):
    """The summary.json contract of a run from its metrics ([seeds, intervals done, ...])."""
    curve = []
    for i in range(metrics["eval_return"].shape[1]):
        per_seed = metrics["eval_return"][:, i]
        curve.append({
            "env_steps": int(metrics["env_steps"][0, i]),
            "return_mean": float(np.mean(per_seed)),
            "return_per_seed": [float(x) for x in per_seed],
            "return_deterministic_per_seed": [float(x) for x in metrics["eval_return_deterministic"][:, i]],
        })
    summary = {
        "algo": config.algo,
        "env": config.env,
        "backend": config.backend,
        "total_env_steps": sched["total_env_steps"],
        "num_seeds": num_seeds,
        "final_eval_return": [float(x) for x in metrics["eval_return"][:, -1]],
        "final_eval_return_deterministic": [float(x) for x in metrics["eval_return_deterministic"][:, -1]],
        "eval_mode": {"final_eval_return": "stochastic", "final_eval_return_deterministic": "deterministic"},
        "eval_curve": curve,
        "env_steps_per_second": (sched["total_env_steps"] * num_seeds / train_seconds
                                 if train_seconds > 0 else None),
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "nonfinite_env_steps": [int(x) for x in metrics["nonfinite_env_steps"].sum(-1)],
        "nonfinite_updates": [int(x) for x in metrics["nonfinite_updates"].sum(-1)],
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "config": config_to_dict(config),
    }
    peaks = peaks_of(config.env)
    if peaks:
        counts = metrics["eval_mode_counts"][:, -1]
        fractions = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
        summary["mode_peaks"] = list(peaks)
        summary["mode_fractions"] = [[float(f) for f in row] for row in fractions]
    return summary
