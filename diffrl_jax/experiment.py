"""Running a training job as `experiments/train.py` does: presets, seeds, timing, summary.json."""

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffrl_jax.envs import list_envs, peaks_of
from diffrl_jax.presets import apply_overrides, preset_overrides
from diffrl_jax.training import off_policy

ALGOS = off_policy.OFF_POLICY_ALGOS


def make_config(algo: str, env: str, backend: str = "mjx", total_steps: int | None = None,
                **overrides: Any) -> off_policy.OffPolicyConfig:
    """The resolved config: algorithm defaults, then the (algo, env) preset, then overrides."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; allowed: {list(ALGOS)}")
    if env not in list_envs():
        raise ValueError(f"unknown environment {env!r}; allowed: {list_envs()}")
    config = off_policy.OffPolicyConfig(algo=algo, env=env, backend=backend)
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
    sched = off_policy.schedule_of(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    start = time.perf_counter()

    def report(metrics):
        steps = int(np.asarray(metrics["env_steps"]).reshape(-1)[0])
        ret = np.asarray(metrics["eval_return"]).reshape(-1)
        elapsed = time.perf_counter() - start
        print(f"[{algo} {env}] env steps {steps:>9,d}/{sched['total_env_steps']:,d}  "
              f"eval return {ret.mean():9.2f} (per seed {np.round(ret, 1).tolist()})  "
              f"{elapsed:7.1f}s", flush=True)

    def run(keys):
        def one(key):
            _, metrics = off_policy.train(key, config)
            return metrics
        metrics = jax.vmap(one)(keys)
        return metrics

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(keys).compile()
    compile_seconds = time.perf_counter() - t0
    if progress:
        print(f"[{algo} {env}] compiled in {compile_seconds:.1f}s; training {num_seeds} seed(s) "
              f"for {sched['total_env_steps']:,d} env steps each", flush=True)
    t1 = time.perf_counter()
    metrics = jax.tree.map(np.asarray, jax.block_until_ready(compiled(keys)))
    train_seconds = time.perf_counter() - t1
    if progress:
        for i in range(config.num_evals):
            report(jax.tree.map(lambda x: x[:, i], metrics))

    summary = build_summary(config, metrics, num_seeds, sched, compile_seconds, train_seconds,
                            time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


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
