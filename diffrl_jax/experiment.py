"""Running a training job as `experiments/train.py` does: presets, seeds, timing, summary.json."""

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from diffrl_jax.envs import list_envs, peaks_of
from diffrl_jax.parallel import (
    gather_to_host,
    global_seed_keys,
    is_main_process,
    make_mesh,
    mesh_shape,
    mesh_train,
    seed_sharding,
)
from diffrl_jax.presets import apply_overrides, preset_overrides
from diffrl_jax.training import ALGOS, schedule_of, trainer_for

__all__ = ["ALGOS", "ProgressPrinter", "build_summary", "config_to_dict", "experiment_mesh",
           "make_config", "run_experiment"]


def make_config(algo: str, env: str, backend: str = "mjx", total_steps: int | None = None,
                **overrides: Any) -> Any:
    """The resolved config: algorithm defaults, then the (algo, env) preset, then overrides."""
    trainer = trainer_for(algo)
    if env not in list_envs():
        raise ValueError(f"unknown environment {env!r}; allowed: {list_envs()}")
    config = trainer.config_class(algo=algo, env=env, backend=backend)
    config = apply_overrides(config, preset_overrides(algo, env))
    if total_steps is not None:
        overrides = dict(overrides, total_env_steps=total_steps)
    return apply_overrides(config, overrides).validate()


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


def run_experiment(algo: str, env: str, total_steps: int | None, num_seeds: int, seed: int,
                   out: str | Path, backend: str = "mjx", progress: bool = True,
                   mesh: Mesh | None = None, **overrides: Any) -> dict[str, Any]:
    """Trains num_seeds seeds as one vmapped program on `mesh` (default: one device, see
    `experiment_mesh`); returns the summary, which the main process also writes."""
    if not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    config = make_config(algo, env, backend, total_steps, **overrides)
    sched = schedule_of(config)
    mesh = experiment_mesh() if mesh is None else mesh
    main = is_main_process()
    out = Path(out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    keys = global_seed_keys(seed, num_seeds, seed_sharding(mesh))
    printer = ProgressPrinter(f"{algo} {env}", num_seeds, sched["total_env_steps"], progress and main)

    def seed_indexed(seed_index):
        def report(metrics):
            jax.debug.callback(printer.record, seed_index, metrics["env_steps"],
                               metrics["eval_return"])
        return report

    run = mesh_train(config, mesh, seed_indexed=seed_indexed)
    t0 = time.perf_counter()
    compiled = run.lower(keys).compile()
    compile_seconds = time.perf_counter() - t0
    if progress and main:
        seeds, data = mesh_shape(mesh)
        print(f"[{algo} {env}] compiled in {compile_seconds:.1f}s; training {num_seeds} seed(s) "
              f"for {sched['total_env_steps']:,d} env steps each on a {seeds} x {data} "
              f"(seed x data) mesh", flush=True)
    t1 = time.perf_counter()
    printer.start()
    metrics = jax.block_until_ready(compiled(keys)[1])
    train_seconds = time.perf_counter() - t1
    metrics = gather_to_host(metrics)

    summary = build_summary(config, metrics, num_seeds, sched, compile_seconds, train_seconds,
                            time.perf_counter() - t0)
    summary["mesh"] = dict(zip(mesh.axis_names, mesh_shape(mesh)))
    summary["processes"] = jax.process_count()
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class ProgressPrinter:
    """Collects per-seed interval reports from the running program; prints one line per
    interval once every seed has reported it (env steps, steps/s, returns, ETA)."""

    def __init__(self, label: str, num_seeds: int, total_steps: int, enabled: bool = True):
        self.label, self.num_seeds, self.total_steps, self.enabled = label, num_seeds, total_steps, enabled
        self.pending: dict[int, dict[int, float]] = {}
        self.lines: list[str] = []
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def record(self, seed_index, env_steps, eval_return) -> None:
        steps = int(env_steps)
        seeds = self.pending.setdefault(steps, {})
        seeds[int(seed_index)] = float(eval_return)
        if len(seeds) < self.num_seeds:
            return
        del self.pending[steps]
        elapsed = time.perf_counter() - self.t0
        rate = steps * self.num_seeds / max(elapsed, 1e-9)
        eta = (self.total_steps - steps) * self.num_seeds / max(rate, 1e-9)
        returns = [round(seeds[i], 1) for i in range(self.num_seeds)]
        line = (f"[{self.label}] env steps {steps:>9,d}/{self.total_steps:,d}  "
                f"{rate:9,.0f} steps/s  eval return {np.mean(returns):9.2f} {returns}  "
                f"elapsed {elapsed:6.1f}s  ETA {eta:6.1f}s")
        self.lines.append(line)
        if self.enabled:
            print(line, flush=True)


def build_summary(config, metrics, num_seeds, sched, compile_seconds, train_seconds, wall_seconds):
    curve = []
    for i in range(config.num_evals):
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
