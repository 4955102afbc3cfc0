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
from jax.sharding import Mesh

from diffrl_jax.checkpoints import CHECKPOINT_SUBDIR, CheckpointError, CheckpointStore
from diffrl_jax.config_overrides import parse_overrides
from diffrl_jax.envs import list_envs, peaks_of
from diffrl_jax.parallel import (
    gather_to_host,
    global_seed_keys,
    is_main_process,
    make_mesh,
    mesh_program,
    mesh_shape,
    seed_sharding,
)
from diffrl_jax.parallel.mesh import check_divisible
from diffrl_jax.plots import plot_run, sample_policy_actions, toy_probe_states
from diffrl_jax.presets import apply_overrides, named_preset_overrides
from diffrl_jax.run_logs import METRIC_FORMATS, PROGRESS_MODES, IntervalReporter, make_sinks
from diffrl_jax.training import ALGOS, schedule_of, trainer_for
from diffrl_jax.validation import ConfigError, require_choice, require_int_at_least

__all__ = ["ALGOS", "DivergenceMonitor", "RunOptions", "build_summary", "config_differences", "config_from_dict",
           "config_to_dict", "enable_compilation_cache", "experiment_mesh", "make_config",
           "run_experiment"]


def make_config(algo: str, env: str, backend: str = "mjx", total_steps: int | None = None,
                preset: str = "default", settings: Sequence[str] = (), **overrides: Any) -> Any:
    """The resolved, validated config: the algorithm's defaults, then the named preset
    ("default": the (algo, env) preset of `diffrl_jax.presets`), then keyword overrides, then
    `settings` ("field=value" / "nested.field=value" strings, as `--set` takes them)."""
    trainer = trainer_for(algo)
    if env not in list_envs():
        raise ConfigError(f"unknown environment {env!r}; allowed: {list_envs()}")
    config = trainer.config_class(algo=algo, env=env, backend=backend)
    config = apply_overrides(config, named_preset_overrides(preset, algo, env))
    if total_steps is not None:
        overrides = dict(overrides, total_env_steps=total_steps)
    config = apply_overrides(config, overrides)
    config = apply_overrides(config, parse_overrides(list(settings), config))
    return config.validate()


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
            nested = {f.name: value.get(f.name, getattr(default, f.name)) for f in dataclasses.fields(default)}
            value = type(default)(**{k: tuple(v) if isinstance(v, list) else v for k, v in nested.items()})
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
    """Turns on JAX's persistent compilation cache (default `DIFFRL_JAX_CACHE` or
    ~/.cache/diffrl_jax/xla), so a rerun of the same program loads instead of compiling."""
    path = Path(directory or os.environ.get("DIFFRL_JAX_CACHE") or DEFAULT_CACHE_DIR)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is driven (none of it changes what is computed).

    checkpoint_every: intervals between checkpoints (and the chunk of intervals compiled as
    one program); 0: only at the end. max_to_keep: checkpoints kept (older ones are deleted
    once a newer one is committed). metrics_formats: any of csv, jsonl, tensorboard, wandb.
    progress: "bar" (a progress bar on a terminal, lines otherwise), "lines" or "none".
    stop_after_steps: stop (with a checkpoint) once this many env steps per seed are done,
    to continue later with resume. nan_patience: stop when some seed skipped more than half
    of its updates (non-finite loss or gradients) in this many consecutive intervals.
    plots: write learning_curve.png (and action_histogram.png on toy environments).
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
        unknown = [f for f in self.metrics_formats if f not in METRIC_FORMATS]
        if unknown:
            raise ConfigError(f"RunOptions.metrics_formats: unknown {unknown}; allowed: "
                              f"{list(METRIC_FORMATS)}")
        return self


class _StopRequests:
    """Ctrl-C while training: the first one asks the run to stop after the current chunk of
    intervals and write a checkpoint; a second one aborts at once."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after the current interval and writing a checkpoint "
              "(Ctrl-C again aborts without one)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _resolve_run(given, out, resume, resume_step, num_seeds, store):
    """(config, start step or None, meta) for a fresh run or a resumed one; `given`: the
    config the arguments resolve to (None when only resuming)."""
    if not resume:
        if given is None:
            raise ValueError("algo is required unless resuming")
        if store is not None and store.steps():
            raise CheckpointError(
                f"{out} already holds checkpoints {store.steps()}; resume them with --resume "
                f"{out} or write this run to another --out (nothing was overwritten)")
        return given, None, None
    if store is None:
        raise ValueError("resuming needs checkpoints (do not disable them)")
    step, meta = store.read_meta(resume_step)
    saved = config_from_dict(meta["config"])
    if given is not None:
        diff = config_differences(config_to_dict(saved), config_to_dict(given))
        if diff:
            raise CheckpointError(f"the checkpoint in {out} was written by a run with another "
                                  f"config (checkpoint vs given): {diff}; resume without "
                                  f"--algo/--env/--set to continue it as it was")
    if num_seeds is not None and num_seeds != meta["num_seeds"]:
        raise CheckpointError(f"the checkpoint holds {meta['num_seeds']} seeds, {num_seeds} given")
    return saved, step, meta


def run_experiment(algo: str | None, env: str, total_steps: int | None,
                   num_seeds: int | None, seed: int | None, out: str | Path,
                   backend: str = "mjx", progress: bool | str = True, mesh: Mesh | None = None,
                   preset: str = "default", settings: Sequence[str] = (),
                   options: RunOptions | None = None, resume: bool = False,
                   resume_step: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Trains num_seeds seeds as one vmapped program on `mesh` (default: one device, see
    `experiment_mesh`), in chunks of `options.checkpoint_every` intervals with a full-state
    checkpoint after each; returns the summary, which the main process also writes to
    OUT/summary.json.

    resume: continue the run in `out` from its latest checkpoint (or `resume_step`); algo,
    env and the config arguments may then be None / left out, and if given must match the
    checkpoint's config. A resumed run computes exactly what the uninterrupted run would.
    progress: True ("bar"), False ("none") or a mode of `RunOptions.progress`.
    """
    options = (options or RunOptions()).validate()
    if not isinstance(progress, str):
        progress = options.progress if progress else "none"
    if not resume and (not isinstance(num_seeds, int) or num_seeds < 1):
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    out = Path(out)
    main = is_main_process()
    given = None  # checked before anything is written
    if algo is not None:
        given = make_config(algo, env, backend, total_steps, preset=preset, settings=settings,
                            **overrides)
    if resume and not (out / CHECKPOINT_SUBDIR).is_dir():
        raise CheckpointError(f"no complete checkpoint in {out / CHECKPOINT_SUBDIR}")
    store = (CheckpointStore(out, options.max_to_keep, read_only=False)
             if options.checkpoints else None)
    try:
        config, start_step, meta = _resolve_run(given, out, resume, resume_step, num_seeds, store)
        if meta is not None:
            num_seeds, seed = meta["num_seeds"], meta["seed"]
        seed = 0 if seed is None else seed
        return _train_in_chunks(config, num_seeds, seed, out, progress, mesh, options, store,
                                start_step, meta, main)
    finally:
        if store is not None:
            store.wait()
            store.close()


def _train_in_chunks(config, num_seeds, seed, out, progress, mesh, options, store, start_step,
                     meta, main):
    sched = schedule_of(config)
    mesh = experiment_mesh() if mesh is None else mesh
    check_divisible(config, num_seeds, mesh)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    num_intervals = config.num_evals
    steps_per_interval = (sched["total_env_steps"] - sched.get("prefill_iters", 0) * config.num_envs) // num_intervals
    first_steps = sched.get("prefill_iters", 0) * config.num_envs  # env steps before interval 0
    done = 0 if meta is None else meta["intervals_done"]
    start_env_steps = first_steps + done * steps_per_interval
    sinks = make_sinks(out, options.metrics_formats,
                       resume_from_env_steps=start_env_steps if meta is not None else None,
                       wandb_project=options.wandb_project,
                       wandb_config=config_to_dict(config)) if main else []
    reporter = IntervalReporter(num_seeds, sched["total_env_steps"], f"{config.algo} {config.env}",
                                sinks, progress if main else "none", start_env_steps,
                                start_interval=done)

    def seed_indexed(seed_index):
        def report(metrics):
            jax.debug.callback(reporter.record, seed_index, metrics)
        return report

    program = mesh_program(config, mesh, seed_indexed=seed_indexed)
    keys = global_seed_keys(seed, num_seeds, seed_sharding(mesh))
    abstract = program.abstract_state(keys)
    every = options.checkpoint_every or num_intervals
    compiled: dict[int, Any] = {}
    compile_seconds = 0.0
    t_wall = time.perf_counter()

    def chunk_fn(n: int):
        nonlocal compile_seconds
        if n not in compiled:
            t = time.perf_counter()
            compiled[n] = program.chunk(n).lower(abstract).compile()
            compile_seconds += time.perf_counter() - t
        return compiled[n]

    history: dict[str, np.ndarray] = {}
    if meta is None:
        t = time.perf_counter()
        state = program.init.lower(keys).compile()(keys)
        compile_seconds += time.perf_counter() - t  # includes the (short) prefill
    else:
        state, history = store.restore(start_step, abstract)
    chunk_fn(min(every, num_intervals - done)) if done < num_intervals else None
    if main:
        seeds_axis, data_axis = mesh_shape(mesh)
        reporter.compile_report(compile_seconds, (
            f"{'resuming' if meta else 'training'} {num_seeds} seed(s) "
            f"{'from ' + format(start_env_steps, ',d') + ' ' if meta else ''}"
            f"to {sched['total_env_steps']:,d} env steps each on a {seeds_axis} x {data_axis} "
            f"(seed x data) mesh"))
    status, message = "completed", None
    last_saved = start_step
    monitor = DivergenceMonitor(num_seeds, sched["updates_per_interval"], options.nan_patience)
    good_checkpoint = start_step
    train_seconds = 0.0
    reporter.start()
    with _StopRequests() as stop, reporter:
        while done < num_intervals:
            n = min(every, num_intervals - done)
            fn = chunk_fn(n)
            t = time.perf_counter()
            state, metrics = fn(state)
            metrics = gather_to_host(jax.block_until_ready(metrics))
            train_seconds += time.perf_counter() - t
            history = _append_history(history, metrics)
            done += n
            env_steps = first_steps + done * steps_per_interval
            if monitor.update(metrics["nonfinite_updates"]):
                status = "diverged"
                message = (f"{monitor.describe()}; stopped at {env_steps:,d} env steps. Last "
                           f"checkpoint from before: "
                           f"{good_checkpoint if good_checkpoint is not None else 'none'}")
                break
            healthy = monitor.streak.max() == 0  # no checkpoints while updates are being skipped
            if store is not None and healthy and (done % every == 0 or done == num_intervals
                                                  or stop.requested or _past(options, env_steps)):
                store.save(env_steps, state, history, _meta(config, num_seeds, seed, mesh, done))
                last_saved = good_checkpoint = env_steps
            if stop.requested and done < num_intervals:
                status, message = "interrupted", f"interrupted at {env_steps:,d} env steps"
                break
            if _past(options, env_steps) and done < num_intervals:
                status, message = "stopped", f"stopped after {env_steps:,d} env steps as asked"
                break
    if message and main:
        resume_hint = (f"; continue with --resume {out}" if status in ("interrupted", "stopped")
                       and last_saved is not None else "")
        print(f"[{config.algo} {config.env}] {message}{resume_hint}", file=sys.stderr, flush=True)
    summary = build_summary(config, history, num_seeds, sched, compile_seconds, train_seconds,
                            time.perf_counter() - t_wall)
    steps_this_run = (first_steps + done * steps_per_interval) - start_env_steps
    summary["env_steps_per_second"] = steps_this_run * num_seeds / max(train_seconds, 1e-9)
    summary.update(
        status=status, message=message, intervals_done=done, num_intervals=num_intervals,
        seed=seed, resumed_from=start_step,
        checkpoints={"dir": str(store.directory) if store else None,
                     "steps": (store.steps() if store else []), "last": last_saved},
        mesh=dict(zip(mesh.axis_names, mesh_shape(mesh))), processes=jax.process_count(),
    )
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if options.plots:
            _write_plots(out, config, summary, state, num_seeds)
    return summary


class DivergenceMonitor:
    """Counts, per seed, consecutive intervals in which more than half of the updates were
    skipped for non-finite losses or gradients; `update` is True once some seed reaches
    `patience` such intervals."""

    def __init__(self, num_seeds: int, updates_per_interval: int, patience: int):
        self.updates_per_interval, self.patience = updates_per_interval, patience
        self.streak = np.zeros(num_seeds, np.int64)

    def update(self, nonfinite_updates: Any) -> bool:
        """nonfinite_updates [seeds, intervals]: skipped updates per interval, in order."""
        skipped = np.asarray(nonfinite_updates) > 0.5 * self.updates_per_interval
        for i in range(skipped.shape[1]):
            self.streak = np.where(skipped[:, i], self.streak + 1, 0)
        return bool(self.streak.max() >= self.patience)

    def describe(self) -> str:
        worst = int(np.argmax(self.streak))
        return (f"seed {worst} skipped more than half of its {self.updates_per_interval} updates "
                f"(non-finite loss or gradients) in {int(self.streak[worst])} consecutive intervals")


def _past(options: RunOptions, env_steps: int) -> bool:
    return options.stop_after_steps is not None and env_steps >= options.stop_after_steps


def _append_history(history: dict[str, np.ndarray], metrics: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-interval metrics [seeds, intervals, ...] so far, extended by a chunk's."""
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    if not history:
        return metrics
    return {k: np.concatenate([history[k], metrics[k]], axis=1) for k in metrics}


def _meta(config, num_seeds, seed, mesh, intervals_done) -> dict[str, Any]:
    return {"algo": config.algo, "env": config.env, "num_seeds": num_seeds, "seed": seed,
            "intervals_done": intervals_done, "num_intervals": config.num_evals,
            "mesh": dict(zip(mesh.axis_names, mesh_shape(mesh))),
            "config": config_to_dict(config)}


def _write_plots(out: Path, config, summary, state, num_seeds) -> None:
    """learning_curve.png; on toy environments also action_histogram.png of seed 0's final
    policy at the environment's probe states."""
    actions = labels = None
    if peaks_of(config.env):
        labels, obs = toy_probe_states(config.env, 4)
        seed0 = jax.tree.map(lambda x: np.asarray(gather_to_host(x))[0],
                             (state.policy_params, state.obs_stats))
        actions = sample_policy_actions(config, seed0[0], seed0[1], obs, 512, jax.random.PRNGKey(0))
    plot_run(out, summary, actions, labels)


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
        "env_steps_per_second": sched["total_env_steps"] * num_seeds / train_seconds,
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
