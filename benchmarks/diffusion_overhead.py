"""Diffusion overhead: wall-clock per environment step of DiffSAC, DiffPPO and DiffWPO against
their Gaussian versions, everything else equal.

    python benchmarks/diffusion_overhead.py [--env brax/inverted_pendulum]
        [--pairs diffsac:sac diffppo:ppo diffwpo:wpo] [--total-steps 20000] [--num-envs N]
        [--num-steps K] [--repeats 3] [--quick] [--out FILE]

For each pair the Diff algorithm's preset for the environment is resolved; the Gaussian run
uses that same config with only `algo` changed and a Gaussian policy whose hidden layers and
activation are the diffusion control network's, so environments, batch, update ratio, critic,
optimiser and evaluation schedule are equal and the difference is the K-step chain (the
Gaussian side therefore runs with the Diff preset's settings, not its own preset's). Each
config's whole `train(key, config)` is compiled once (compile seconds are reported apart); the
timed runs alternate Diff and Gaussian (order swapped every repeat), each with a fresh key.
The overhead is the ratio of seconds per environment step, Diff / Gaussian, per repeat.
Prints a table and writes JSON (default: benchmarks/results/diffusion_overhead.json).
`--quick` is a smoke-sized CPU run (2,048 steps, 1 repeat).
"""

import argparse
import dataclasses
import datetime
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from diffrl_jax.experiment import make_config
from diffrl_jax.policies import GaussianPolicyConfig
from diffrl_jax.training import schedule_of, train, trainer_for

DEFAULT_PAIRS = ("diffsac:sac", "diffppo:ppo", "diffwpo:wpo")


def paired_configs(diff_algo: str, gaussian_algo: str, env: str, num_steps: int | None = None,
                   **overrides: Any) -> tuple[Any, Any]:
    """(diffusion config, Gaussian config) equal in every field but `algo` and the policy:
    the Gaussian's hidden sizes and activation are the diffusion control network's.
    num_steps: K for the Diff algorithm's own preset diffusion config (None: the preset's)."""
    if trainer_for(gaussian_algo).config_class is not trainer_for(diff_algo).config_class:
        raise ValueError(f"{gaussian_algo!r} and {diff_algo!r} do not share a trainer")
    diff = make_config(diff_algo, env, **overrides)
    if num_steps is not None:
        diff = dataclasses.replace(
            diff, diffusion=dataclasses.replace(diff.diffusion, num_steps=num_steps)).validate()
    gaussian_policy = GaussianPolicyConfig(hidden_sizes=tuple(diff.diffusion.hidden_sizes),
                                           activation=diff.diffusion.activation)
    gauss = dataclasses.replace(diff, algo=gaussian_algo, gaussian=gaussian_policy).validate()
    return diff, gauss


def compile_run(config: Any) -> tuple[Any, float]:
    """(compiled key -> metrics, compile seconds) of the whole training run."""
    t0 = time.perf_counter()
    compiled = jax.jit(lambda key: train(key, config)[1]).lower(jax.random.PRNGKey(0)).compile()
    return compiled, time.perf_counter() - t0


def time_run(compiled: Any, key: Any) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(key))
    return time.perf_counter() - t0


def measure(pairs: Sequence[str], env: str, repeats: int, num_steps: int | None = None,
            **overrides: Any) -> list[dict[str, Any]]:
    """One row per "diff:gaussian" pair: compile seconds, env steps/s, per-repeat overhead.
    The first repeat includes first-execution costs (no untimed warm-up run)."""
    runs = {}
    for pair in pairs:
        diff_algo, gaussian_algo = parse_pair(pair)
        configs = paired_configs(diff_algo, gaussian_algo, env, num_steps, **overrides)
        runs[pair] = [(config, *compile_run(config)) for config in configs]

    seconds = {pair: ([], []) for pair in pairs}
    for r in range(repeats):
        for pair in pairs:
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                key = jax.random.PRNGKey(1000 * r + i + 1)
                seconds[pair][i].append(time_run(runs[pair][i][1], key))

    rows = []
    for pair in pairs:
        (diff_cfg, _, diff_compile), (gauss_cfg, _, gauss_compile) = runs[pair]
        steps = schedule_of(diff_cfg)["total_env_steps"]
        assert steps == schedule_of(gauss_cfg)["total_env_steps"]
        diff_s, gauss_s = seconds[pair]
        ratios = [d / g for d, g in zip(diff_s, gauss_s)]
        rows.append({
            "diffusion": diff_cfg.algo, "gaussian": gauss_cfg.algo,
            "num_steps_K": diff_cfg.diffusion.num_steps, "num_envs": diff_cfg.num_envs,
            "env_steps_per_run": steps,
            "diffusion_compile_seconds": diff_compile, "gaussian_compile_seconds": gauss_compile,
            "diffusion_env_steps_per_second": steps / statistics.median(diff_s),
            "gaussian_env_steps_per_second": steps / statistics.median(gauss_s),
            "overhead_median": statistics.median(ratios),
            "overhead_min": min(ratios), "overhead_max": max(ratios),
            "diffusion_run_seconds": diff_s, "gaussian_run_seconds": gauss_s,
        })
    return rows


def parse_pair(pair: str) -> tuple[str, str]:
    """"diffsac:sac" -> ("diffsac", "sac"); the first must be the Diff version of the second."""
    parts = pair.split(":")
    if len(parts) != 2 or parts[0] != "diff" + parts[1]:
        raise ValueError(f"a pair is 'diff<algo>:<algo>' (e.g. diffsac:sac), got {pair!r}")
    return parts[0], parts[1]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="brax/inverted_pendulum")
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS))
    parser.add_argument("--total-steps", type=int, default=20_000)
    parser.add_argument("--num-envs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--num-steps", type=int, default=None, help="K; default: the preset's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,048 steps, 1 repeat")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "diffusion_overhead.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.total_steps, args.repeats = 2_048, 1
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    overrides: dict[str, Any] = {"total_env_steps": args.total_steps, "num_evals": 2}
    if args.num_envs is not None:
        overrides["num_envs"] = args.num_envs
    rows = measure(args.pairs, args.env, args.repeats, args.num_steps, **overrides)

    device = jax.devices()[0].device_kind
    print(f"{args.env}, {args.total_steps:,d} env steps requested per run, {args.repeats} repeat(s), "
          f"{device}, jax {jax.__version__}")
    header = (f"{'pair':<16} {'K':>3} {'envs':>5} {'Diff steps/s':>13} {'Gauss steps/s':>14} "
              f"{'overhead':>9} {'[min, max]':>14} {'compile s D/G':>14}")
    print(header)
    for row in rows:
        print(f"{row['diffusion'] + '/' + row['gaussian']:<16} {row['num_steps_K']:>3} "
              f"{row['num_envs']:>5} {row['diffusion_env_steps_per_second']:>13,.0f} "
              f"{row['gaussian_env_steps_per_second']:>14,.0f} {row['overhead_median']:>8.2f}x "
              f"{'[%.2f, %.2f]' % (row['overhead_min'], row['overhead_max']):>14} "
              f"{row['diffusion_compile_seconds']:>7.0f}/{row['gaussian_compile_seconds']:<6.0f}")
    result = {"env": args.env, "requested_env_steps": args.total_steps, "repeats": args.repeats,
              "device": device, "jax_version": jax.__version__,
              "date": datetime.date.today().isoformat(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
