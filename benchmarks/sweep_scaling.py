"""Sweep scaling: what n seeds trained as one vmapped program cost against one seed.

    python benchmarks/sweep_scaling.py [--algos diffppo diffsac] [--seeds 1 4 16 64]
        [--env brax/inverted_pendulum] [--total-steps 2560] [--num-envs N] [--repeats 3]
        [--isolate {auto,on,off}] [--quick] [--out FILE]

For each algorithm and each seed count n, the config is `make_config(algo, env,
total_steps=..., num_evals=2[, num_envs=...])` and the program is the seed sweep of the
project, `jax.jit(jax.vmap(lambda k: train(k, config)[1]))` on n keys (n = 1 is the same
vmapped program with one key). It is compiled once (compile seconds are reported apart), then
run once untimed (first-execution costs: buffer allocation, autotuning), then `--repeats`
times, each with fresh keys and `block_until_ready`. Seed counts run in increasing order,
each count's repeats back to back.

Reported per (algo, n) row:
  run_seconds              every repeat's wall-clock seconds; run_seconds_median their median
  seconds_per_seed         run_seconds_median / n
  cost_vs_1_seed           run_seconds_median(n) / run_seconds_median(1) of the same algorithm
                           (the target: 64 seeds <= 8x one seed on a GPU); `--seeds` must
                           therefore include 1
  env_steps_per_second     n * env_steps_per_run / run_seconds_median, summed over the seeds
                           (env_steps_per_run: one seed's steps, `schedule_of(config)`)
  compiled_memory          XLA's static memory analysis of the compiled program
                           (`compiled.memory_analysis()`), on every backend:
                           footprint_bytes = argument + output - alias + temp bytes (buffers the
                           program needs at once on the device, as XLA plans them; alias bytes
                           are outputs sharing an argument's buffer, counted once); the raw
                           fields are kept. {"available": false, "reason": ...} where the
                           backend gives no analysis.
  device_memory            the device allocator's counters, `jax.local_devices()[0]
                           .memory_stats()` (GPU/TPU; CPU gives None -> {"available": false}):
                           peak_bytes_in_use after the timed runs, peak_bytes_after_compile
                           (compilation, e.g. GPU autotuning, allocates too) and
                           bytes_in_use_before_runs. The peak is a process-wide high-water
                           mark, so with isolation (`--isolate on`, or `auto` where the device
                           has memory stats) every row runs in a fresh Python process and the
                           peak is that row's own; with `--isolate off` it is the mark since
                           the benchmark's process started ("scope" says which).

Prints a table and writes JSON (default: benchmarks/results/sweep_scaling.json) with the
device kind, JAX version, date, settings and one row per (algo, seeds).
`--quick` is a smoke-sized run of the benchmark itself: toy/bandit, seeds 1 2 4, 1,024 env
steps, 1 repeat and, unless --algos is given, only ppo (the Diff algorithms' compilation
alone takes minutes on a CPU). On a CPU the default seed list is slow (64 seeds run 64x the
work on a few cores); pass --seeds 1 4 16. The default 2,560 steps per seed are CPU-sized: the
off-policy presets on inverted_pendulum prefill 2,000 random steps, then learn for 544 (34
iterations of 16 envs x 16 updates for DiffSAC); DiffPPO runs 2,048 steps (two evaluation
intervals of 2 rollouts of 512). On a GPU pass more (e.g. --total-steps 20000).
Compilation, not running, dominates a CPU run: about 1-2 minutes per (algo, seeds) row.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from diffrl_jax.experiment import make_config
from diffrl_jax.training import ALGOS, schedule_of, train

DEFAULT_ALGOS = ("diffppo", "diffsac")
DEFAULT_SEEDS = (1, 4, 16, 64)
DEFAULT_TOTAL_STEPS = 2_560
QUICK_ALGOS = ("ppo",)
QUICK_SEEDS = (1, 2, 4)
QUICK_TOTAL_STEPS = 1_024
REPO_ROOT = Path(__file__).resolve().parents[1]

MEMORY_NOTES = {
    "compiled_memory": "XLA's static plan for the compiled program (compiled.memory_analysis()): "
                       "footprint_bytes = argument + output - alias + temp bytes; no runtime "
                       "measurement, same on every backend. xla_peak_bytes is XLA's own "
                       "peak_memory_in_bytes, kept raw: on CPU (jax 0.9.2) it is far below "
                       "temp_bytes, so it is not used",
    "device_memory": "the device allocator's counters (jax.local_devices()[0].memory_stats()); "
                     "absent on CPU. peak_bytes_in_use is a process-wide high-water mark: its "
                     "'scope' says whether the row ran in a fresh process (the row's own peak) "
                     "or shares the process with earlier rows",
}


def sweep_config(algo: str, env: str, total_steps: int, num_envs: int | None = None) -> Any:
    """The benchmark's config of `algo` on `env`: the preset, total_steps, 2 evaluations."""
    overrides: dict[str, Any] = {"num_evals": 2}
    if num_envs is not None:
        overrides["num_envs"] = num_envs
    return make_config(algo, env, total_steps=total_steps, **overrides)


def seed_keys(num_seeds: int, repeat: int) -> jax.Array:
    """The keys of one timed repeat (repeat -1: the keys the program is compiled for)."""
    return jax.random.split(jax.random.PRNGKey(1 + repeat), num_seeds)


def compile_sweep(config: Any, num_seeds: int) -> tuple[Any, float]:
    """(compiled keys -> metrics of every seed, compile seconds) of the vmapped sweep."""
    t0 = time.perf_counter()
    sweep = jax.jit(jax.vmap(lambda key: train(key, config)[1]))
    compiled = sweep.lower(seed_keys(num_seeds, -1)).compile()
    return compiled, time.perf_counter() - t0


def compiled_memory(compiled: Any) -> dict[str, Any]:
    """XLA's memory analysis of a compiled program (see the module docstring)."""
    try:
        stats = compiled.memory_analysis()
    except Exception as err:  # backends without an analysis raise (e.g. NotImplementedError)
        return {"available": False, "reason": f"memory_analysis() raised {err!r}"}
    if stats is None:
        return {"available": False, "reason": "memory_analysis() returned None on this backend"}
    fields = {"argument_bytes": "argument_size_in_bytes", "output_bytes": "output_size_in_bytes",
              "alias_bytes": "alias_size_in_bytes", "temp_bytes": "temp_size_in_bytes",
              "generated_code_bytes": "generated_code_size_in_bytes",
              "xla_peak_bytes": "peak_memory_in_bytes",
              "host_argument_bytes": "host_argument_size_in_bytes",
              "host_output_bytes": "host_output_size_in_bytes",
              "host_temp_bytes": "host_temp_size_in_bytes"}
    out: dict[str, Any] = {"available": True}
    for name, attr in fields.items():
        value = getattr(stats, attr, None)
        out[name] = None if value is None else int(value)
    parts = [out[k] for k in ("argument_bytes", "output_bytes", "temp_bytes")]
    if any(p is None for p in parts):
        out["footprint_bytes"] = None
        out["reason"] = "the analysis lacks argument, output or temp sizes on this JAX"
    else:
        out["footprint_bytes"] = sum(parts) - (out["alias_bytes"] or 0)
    return out


def device_memory_stats() -> dict[str, Any] | None:
    """The first local device's allocator counters, or None where it keeps none (CPU)."""
    try:
        return jax.local_devices()[0].memory_stats()
    except Exception:
        return None


def measure_row(algo: str, num_seeds: int, config: Any, repeats: int,
                fresh_process: bool = False) -> dict[str, Any]:
    """Compiles and times the sweep of num_seeds seeds (cost_vs_1_seed is added by
    `add_cost_ratios`, which needs the 1-seed row)."""
    before = device_memory_stats()
    compiled, compile_seconds = compile_sweep(config, num_seeds)
    after_compile = device_memory_stats()
    jax.block_until_ready(compiled(seed_keys(num_seeds, repeats)))  # untimed warm-up
    seconds = []
    for r in range(repeats):
        keys = jax.block_until_ready(seed_keys(num_seeds, r))
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(keys))
        seconds.append(time.perf_counter() - t0)
    after_runs = device_memory_stats()

    if after_runs is None or "peak_bytes_in_use" not in after_runs:
        device_memory: dict[str, Any] = {
            "available": False,
            "reason": "jax.local_devices()[0].memory_stats() gives no peak_bytes_in_use "
                      "on this backend (CPU returns None)"}
    else:
        device_memory = {
            "available": True,
            "scope": ("fresh process for this row: the row's own peak" if fresh_process else
                      "process-wide high-water mark since the benchmark started "
                      "(includes earlier rows)"),
            "peak_bytes_in_use": int(after_runs["peak_bytes_in_use"]),
            "peak_bytes_after_compile": int((after_compile or {}).get("peak_bytes_in_use", 0)),
            "bytes_in_use_before_runs": int((after_compile or {}).get("bytes_in_use", 0)),
            "bytes_in_use_before_compile": int((before or {}).get("bytes_in_use", 0)),
            "bytes_limit": after_runs.get("bytes_limit"),
        }
    steps = schedule_of(config)["total_env_steps"]
    median = statistics.median(seconds)
    device = jax.devices()[0]
    return {
        "algo": algo, "num_seeds": num_seeds, "num_envs": config.num_envs,
        "env_steps_per_run": steps,
        "compile_seconds": compile_seconds,
        "run_seconds": seconds,
        "run_seconds_median": median,
        "seconds_per_seed": median / num_seeds,
        "env_steps_per_second": num_seeds * steps / median,
        "compiled_memory": compiled_memory(compiled),
        "device_memory": device_memory,
        "device": device.device_kind, "platform": device.platform,
    }


def add_cost_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sets each row's cost_vs_1_seed = run_seconds_median / that of its algorithm's 1-seed
    row; ValueError if an algorithm has no 1-seed row."""
    base = {row["algo"]: row["run_seconds_median"] for row in rows if row["num_seeds"] == 1}
    for row in rows:
        if row["algo"] not in base:
            raise ValueError(f"no 1-seed row for {row['algo']!r}: the cost ratio needs one")
        row["cost_vs_1_seed"] = row["run_seconds_median"] / base[row["algo"]]
    return rows


def measure_row_in_subprocess(algo: str, num_seeds: int, args: argparse.Namespace,
                              env: dict[str, str]) -> dict[str, Any]:
    """measure_row in a fresh Python process (its device peak is the row's own)."""
    with tempfile.TemporaryDirectory() as tmp:
        row_out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--row", algo, str(num_seeds),
               "--row-out", str(row_out), "--env", args.env,
               "--total-steps", str(args.total_steps), "--repeats", str(args.repeats)]
        if args.num_envs is not None:
            cmd += ["--num-envs", str(args.num_envs)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not row_out.exists():
            raise RuntimeError(f"the row process for {algo} x {num_seeds} seeds failed "
                               f"(exit {done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(row_out.read_text())


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['env']}, {result['requested_env_steps']:,d} env steps requested per seed, "
          f"{result['repeats']} repeat(s), {result['device']}, jax {result['jax_version']}, "
          f"isolated rows: {result['isolate']}")
    print(f"{'algo':<8} {'seeds':>5} {'compile s':>9} {'run s':>8} {'s/seed':>8} "
          f"{'vs 1 seed':>9} {'steps/s (all)':>13} {'XLA MiB':>9} {'dev peak MiB':>12}")
    for row in result["rows"]:
        device = row["device_memory"]
        print(f"{row['algo']:<8} {row['num_seeds']:>5} {row['compile_seconds']:>9.1f} "
              f"{row['run_seconds_median']:>8.2f} {row['seconds_per_seed']:>8.3f} "
              f"{row['cost_vs_1_seed']:>8.2f}x {row['env_steps_per_second']:>13,.0f} "
              f"{_mb(row['compiled_memory'].get('footprint_bytes')):>9} "
              f"{_mb(device.get('peak_bytes_in_use')):>12}")
    print("run s: median of the repeats; XLA MiB: compiled program's argument + output - alias "
          "+ temp (memory_analysis); dev peak MiB: device allocator's peak_bytes_in_use "
          "(- where the backend keeps none)")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=None,
                        help=f"any of {' '.join(ALGOS)} (default: {' '.join(DEFAULT_ALGOS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help=f"seed counts, must include 1 (default: {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--env", default=None, help="default: brax/inverted_pendulum")
    parser.add_argument("--total-steps", type=int, default=None,
                        help=f"env steps per seed (default: {DEFAULT_TOTAL_STEPS:,d})")
    parser.add_argument("--num-envs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--repeats", type=int, default=None, help="default: 3")
    parser.add_argument("--isolate", choices=("auto", "on", "off"), default="auto",
                        help="run every row in a fresh process (auto: where the device keeps "
                             "memory stats, i.e. not on CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="toy/bandit, seeds 1 2 4, 1,024 steps, 1 repeat, ppo unless --algos")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sweep_scaling.json"))
    parser.add_argument("--row", nargs=2, metavar=("ALGO", "SEEDS"), help=argparse.SUPPRESS)
    parser.add_argument("--row-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    quick = args.quick
    defaults = dict(algos=QUICK_ALGOS if quick else DEFAULT_ALGOS,
                    seeds=QUICK_SEEDS if quick else DEFAULT_SEEDS,
                    env="toy/bandit" if quick else "brax/inverted_pendulum",
                    total_steps=QUICK_TOTAL_STEPS if quick else DEFAULT_TOTAL_STEPS,
                    repeats=1 if quick else 3)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, list(value) if isinstance(value, tuple) else value)

    unknown = [a for a in args.algos if a not in ALGOS]
    if unknown:
        parser.error(f"unknown algorithm(s) {', '.join(map(repr, unknown))} in --algos; "
                     f"allowed: {', '.join(ALGOS)}")
    if len(set(args.algos)) != len(args.algos):
        parser.error(f"--algos lists an algorithm twice: {' '.join(args.algos)}")
    bad = [n for n in args.seeds if n < 1]
    if bad:
        parser.error(f"--seeds must be positive seed counts, got {' '.join(map(str, bad))}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds lists a count twice: {' '.join(map(str, args.seeds))}")
    if args.row is None and 1 not in args.seeds:
        parser.error(f"--seeds must include 1: the cost ratio is time(n seeds) / time(1 seed), "
                     f"got {' '.join(map(str, args.seeds))}")
    args.seeds = sorted(args.seeds)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.total_steps < 1:
        parser.error(f"--total-steps must be >= 1, got {args.total_steps}")
    if args.num_envs is not None and args.num_envs < 1:
        parser.error(f"--num-envs must be >= 1, got {args.num_envs}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    if args.row is not None:  # one row, in the fresh process that --isolate started
        algo, num_seeds = args.row[0], int(args.row[1])
        config = sweep_config(algo, args.env, args.total_steps, args.num_envs)
        row = measure_row(algo, num_seeds, config, args.repeats, fresh_process=True)
        Path(args.row_out).write_text(json.dumps(row))
        return row

    # Every config is built (and so validated) before anything is compiled.
    configs = {algo: sweep_config(algo, args.env, args.total_steps, args.num_envs)
               for algo in args.algos}
    child_env = _child_env()
    isolate = args.isolate == "on"
    if args.isolate == "auto":
        # Asking initialises the backend; it must not preallocate most of a GPU's memory,
        # which the row processes need (no effect if this process has initialised it already).
        saved = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        try:
            isolate = device_memory_stats() is not None
        finally:
            if saved is None:
                del os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"]
            else:
                os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = saved

    rows = []
    for algo in args.algos:
        for num_seeds in args.seeds:
            if isolate:
                row = measure_row_in_subprocess(algo, num_seeds, args, child_env)
            else:
                row = measure_row(algo, num_seeds, configs[algo], args.repeats)
            rows.append(row)
            print(f"[{algo} x {num_seeds} seed(s)] compile {row['compile_seconds']:.1f}s, run "
                  f"{' '.join(f'{s:.2f}' for s in row['run_seconds'])}s", flush=True)
    add_cost_ratios(rows)

    result = {
        "benchmark": "sweep_scaling",
        "env": args.env, "requested_env_steps": args.total_steps,
        "num_envs_override": args.num_envs, "num_evals": 2,
        "algos": args.algos, "seeds": args.seeds, "repeats": args.repeats,
        "isolate": isolate, "quick": args.quick,
        "device": rows[0]["device"], "platform": rows[0]["platform"],
        "jax_version": jax.__version__, "date": datetime.date.today().isoformat(),
        "memory_notes": MEMORY_NOTES,
        "rows": rows,
    }
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
