"""Cost of drawing actions: the diffusion chain (K steps) against the tanh-Gaussian.

    python benchmarks/acting_cost.py [--batch 256] [--steps 1 4 8] [--repeats 20] [--out FILE]

Times one jitted `sample_chain` call (batch of observations -> actions) per policy, with
compilation excluded, alternating the policies between repeats so that machine noise hits
them alike. Prints a table and writes JSON (default: benchmarks/results/acting_cost.json).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import jax

from diffrl_jax.policies import (
    DiffusionPolicyConfig,
    GaussianPolicyConfig,
    make_diffusion_policy,
    make_gaussian_policy,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20, help="calls per timed repeat")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "acting_cost.json"))
    args = parser.parse_args()

    S, A = args.obs_dim, args.action_dim
    policies = {"gaussian (256x256)": make_gaussian_policy(S, A, GaussianPolicyConfig())}
    for k in args.steps:
        policies[f"diffusion K={k} (4x256)"] = make_diffusion_policy(S, A, DiffusionPolicyConfig(num_steps=k))
    obs = jax.random.normal(jax.random.PRNGKey(0), (args.batch, S))
    runners = {}
    for name, policy in policies.items():
        params = policy.init(jax.random.PRNGKey(1))
        fn = jax.jit(lambda p, o, key, policy=policy: policy.sample_chain(p, o, key).action)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, obs, jax.random.PRNGKey(2)))
        runners[name] = (fn, params, time.perf_counter() - t0)

    times = {name: [] for name in runners}
    for r in range(args.repeats):
        for name, (fn, params, _) in runners.items():
            keys = jax.random.split(jax.random.PRNGKey(r), args.calls)
            t0 = time.perf_counter()
            for key in keys:
                out = fn(params, obs, key)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t0) / args.calls)

    base = statistics.median(times["gaussian (256x256)"])
    rows = []
    print(f"batch {args.batch}, obs {S}, action {A}, {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"{'policy':<26} {'median ms/call':>15} {'IQR ms':>10} {'vs gaussian':>12} {'compile s':>10}")
    for name, samples in times.items():
        med = statistics.median(samples)
        q = statistics.quantiles(samples, n=4)
        rows.append({"policy": name, "median_seconds": med, "iqr_seconds": q[2] - q[0],
                     "ratio_to_gaussian": med / base, "compile_seconds": runners[name][2]})
        print(f"{name:<26} {med * 1e3:>15.3f} {(q[2] - q[0]) * 1e3:>10.3f} {med / base:>12.2f} "
              f"{runners[name][2]:>10.2f}")
    result = {"batch": args.batch, "obs_dim": S, "action_dim": A, "device": jax.devices()[0].device_kind,
              "jax_version": jax.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
