"""Train one algorithm on one environment for several seeds in one compiled program.

    python experiments/train.py --algo diffsac --env brax/inverted_pendulum \
        --total-steps 20000 --num-seeds 2 --seed 0 --out runs/diffsac_pendulum

--algo is one of sac, diffsac, wpo, diffwpo, ppo, diffppo; every (algorithm, environment) pair has a preset
(diffrl_jax/presets.py). Prints progress per evaluation interval and writes OUT/summary.json.
"""

import argparse
import sys

from diffrl_jax.experiment import ALGOS, run_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, choices=ALGOS)
    parser.add_argument("--env", default="brax/inverted_pendulum")
    parser.add_argument("--total-steps", type=int, default=None,
                        help="environment steps per seed (default: the preset's)")
    parser.add_argument("--num-seeds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--backend", default="mjx", help="brax backend: mjx, spring, positional, generalized")
    parser.add_argument("--quiet", action="store_true", help="no per-interval progress lines")
    args = parser.parse_args(argv)
    try:
        summary = run_experiment(
            algo=args.algo, env=args.env, total_steps=args.total_steps, num_seeds=args.num_seeds,
            seed=args.seed, out=args.out, backend=args.backend, progress=not args.quiet,
        )
    except ValueError as err:  # includes ConfigError: bad names or values
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"final eval return per seed: {summary['final_eval_return']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
