"""Diffusion overhead: wall-clock per environment step of DiffSAC, DiffPPO, DiffWPO and
DiffREPPO against their Gaussian versions, everything else equal; and, as "algorithm" pairs,
one algorithm against another of the same loop at the same batch shape (e.g. REPPO against
our PPO: `--pairs reppo:ppo diffreppo:diffppo`).

    python benchmarks/diffusion_overhead.py [--env brax/inverted_pendulum]
        [--pairs diffsac:sac diffppo:ppo diffwpo:wpo diffreppo:reppo] [--total-steps 20000]
        [--num-envs N] [--num-steps K] [--repeats 3] [--quick] [--out FILE]

A pair is "algo:baseline". For each pair algo's preset for the environment is resolved. In a
diffusion pair (diff<X>:<X>) the baseline run uses that same config with only `algo` changed
and a Gaussian policy whose hidden layers and activation are the diffusion control network's,
so environments, batch, update ratio, critic, optimiser and evaluation schedule are equal and
the difference is the K-step chain (the Gaussian side therefore runs with the Diff preset's
settings, not its own preset's). In an algorithm pair (two algorithms of the same loop and
policy kind) the baseline runs algo's config with only `algo` changed: the same environments,
rollout shape, epochs, minibatches and policy. Each config's whole `train(key, config)` is
compiled once (compile seconds are reported apart); the timed runs alternate the two (order
swapped every repeat), each with a fresh key. The overhead is the ratio of seconds per
environment step, algo / baseline, per repeat. Prints a table and writes JSON (default:
benchmarks/results/diffusion_overhead.json). `--quick` is a smoke-sized CPU run (2,048 steps,
1 repeat).
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
from diffrl_jax.training import ALGOS, schedule_of, train, trainer_for
from diffrl_jax.training.algorithms import algorithm


def _kind(algo: str) -> str:
    """The algorithm's own policy kind ("gaussian", "diffusion", ...)."""
    return algorithm(algo).policy_kind

DEFAULT_PAIRS = ("diffsac:sac", "diffppo:ppo", "diffwpo:wpo", "diffreppo:reppo")


def paired_configs(algo: str, baseline: str, env: str, num_steps: int | None = None,
                   **overrides: Any) -> tuple[Any, Any]:
    """(algo's config, baseline's config), equal in every field but `algo` and, in a
    diffusion pair, the policy: the Gaussian's hidden sizes and activation are the diffusion
    control network's. num_steps: K for algo's own preset diffusion config (None: the
    preset's)."""
    if trainer_for(baseline).config_class is not trainer_for(algo).config_class:
        raise ValueError(f"{baseline!r} and {algo!r} do not share a trainer")
    diff = make_config(algo, env, **overrides)
    if num_steps is not None:
        diff = dataclasses.replace(
            diff, diffusion=dataclasses.replace(diff.diffusion, num_steps=num_steps)).validate()
    if _kind(algo) == _kind(baseline):  # an algorithm pair: only algo differs
        return diff, dataclasses.replace(diff, algo=baseline).validate()
    gaussian_policy = GaussianPolicyConfig(hidden_sizes=tuple(diff.diffusion.hidden_sizes),
                                           activation=diff.diffusion.activation)
    gauss = dataclasses.replace(diff, algo=baseline, gaussian=gaussian_policy).validate()
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
    """One row per "algo:baseline" pair: compile seconds, env steps/s, per-repeat overhead.
    The first repeat includes first-execution costs (no untimed warm-up run)."""
    runs = {}
    for pair in pairs:
        algo, baseline = parse_pair(pair)
        configs = paired_configs(algo, baseline, env, num_steps, **overrides)
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
        (algo_cfg, _, algo_compile), (base_cfg, _, base_compile) = runs[pair]
        steps = schedule_of(algo_cfg)["total_env_steps"]
        assert steps == schedule_of(base_cfg)["total_env_steps"]
        algo_s, base_s = seconds[pair]
        ratios = [a / b for a, b in zip(algo_s, base_s, strict=True)]
        rows.append({
            "algo": algo_cfg.algo, "baseline": base_cfg.algo,
            "pair_kind": ("algorithm" if _kind(algo_cfg.algo) == _kind(base_cfg.algo)
                          else "diffusion"),
            "num_steps_K": (algo_cfg.diffusion.num_steps if _kind(algo_cfg.algo) == "diffusion"
                            else 1),
            "num_envs": algo_cfg.num_envs, "env_steps_per_run": steps,
            "algo_compile_seconds": algo_compile, "baseline_compile_seconds": base_compile,
            "algo_env_steps_per_second": steps / statistics.median(algo_s),
            "baseline_env_steps_per_second": steps / statistics.median(base_s),
            "overhead_median": statistics.median(ratios),
            "overhead_min": min(ratios), "overhead_max": max(ratios),
            "algo_run_seconds": algo_s, "baseline_run_seconds": base_s,
        })
    return rows


def parse_pair(pair: str) -> tuple[str, str]:
    """"diffsac:sac" -> ("diffsac", "sac"): a diffusion pair (the Diff version of an algorithm
    and the algorithm) or an algorithm pair (two algorithms of the same loop and policy kind,
    e.g. "reppo:ppo"); ValueError otherwise."""
    parts = pair.split(":")
    if len(parts) == 2 and parts[0] == "diff" + parts[1] and parts[1] in ALGOS:
        return parts[0], parts[1]
    if (len(parts) == 2 and parts[0] != parts[1] and all(p in ALGOS for p in parts)
            and trainer_for(parts[0]).config_class is trainer_for(parts[1]).config_class
            and _kind(parts[0]) == _kind(parts[1])):
        return parts[0], parts[1]
    raise ValueError(f"a pair is 'diff<algo>:<algo>' (e.g. diffsac:sac) or two algorithms of the "
                     f"same loop and policy kind (e.g. reppo:ppo), got {pair!r}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    header = (f"{'algo/baseline':<18} {'K':>3} {'envs':>5} {'algo steps/s':>13} "
              f"{'base steps/s':>13} {'overhead':>9} {'[min, max]':>14} {'compile s a/b':>14}")
    print(header)
    for row in rows:
        spread = f"[{row['overhead_min']:.2f}, {row['overhead_max']:.2f}]"
        print(f"{row['algo'] + '/' + row['baseline']:<18} {row['num_steps_K']:>3} "
              f"{row['num_envs']:>5} {row['algo_env_steps_per_second']:>13,.0f} "
              f"{row['baseline_env_steps_per_second']:>13,.0f} {row['overhead_median']:>8.2f}x "
              f"{spread:>14} "
              f"{row['algo_compile_seconds']:>7.0f}/{row['baseline_compile_seconds']:<6.0f}")
    result = {"env": args.env, "requested_env_steps": args.total_steps, "repeats": args.repeats,
              "device": device, "jax_version": jax.__version__,
              "date": datetime.date.today().isoformat(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
