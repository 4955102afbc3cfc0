"""Running a training job as `experiments/train.py` does: presets, seeds, timing, summary.json."""

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffrl_jax.envs import list_envs, peaks_of
from diffrl_jax.presets import apply_overrides, preset_overrides
from diffrl_jax.training import ALGOS, schedule_of, train, trainer_for

__all__ = ["ALGOS", "ProgressPrinter", "build_summary", "config_to_dict", "make_config",
           "run_experiment"]


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


def run_experiment(algo: str, env: str, total_steps: int | None, num_seeds: int, seed: int,
                   out: str | Path, backend: str = "mjx", progress: bool = True,
                   **overrides: Any) -> dict[str, Any]:
    """Trains num_seeds seeds as one vmapped program; writes and returns the summary."""
    if not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    config = make_config(algo, env, backend, total_steps, **overrides)
    sched = schedule_of(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    printer = ProgressPrinter(f"{algo} {env}", num_seeds, sched["total_env_steps"], progress)

    def run(keys):
        def one(key, seed_index):
            def report(metrics):
                jax.debug.callback(printer.record, seed_index, metrics["env_steps"],
                                   metrics["eval_return"])
            return train(key, config, on_interval=report)[1]

        return jax.vmap(one)(keys, jnp.arange(num_seeds))

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(keys).compile()
    compile_seconds = time.perf_counter() - t0
    if progress:
        print(f"[{algo} {env}] compiled in {compile_seconds:.1f}s; training {num_seeds} seed(s) "
              f"for {sched['total_env_steps']:,d} env steps each", flush=True)
    t1 = time.perf_counter()
    printer.start()
    metrics = jax.tree.map(np.asarray, jax.block_until_ready(compiled(keys)))
    train_seconds = time.perf_counter() - t1

    summary = build_summary(config, metrics, num_seeds, sched, compile_seconds, train_seconds,
                            time.perf_counter() - t0)
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
