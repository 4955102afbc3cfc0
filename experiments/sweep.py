r"""Sweep numeric hyperparameters x seeds of one algorithm on one environment as one vmapped
program (in memory-sized chunks).

    python experiments/sweep.py --algo sac --env toy/bandit \
        --grid actor_lr=1e-3,3e-4 --grid tau=0.005,0.05 --num-seeds 4 --seed 0 \
        --out runs/sac_bandit_sweep

trains 2 x 2 grid points x 4 seeds = 16 members. Only traced hyperparameters (learning
rates, tau, discount, entropy targets, ...) can be swept; static fields (num_envs, network
sizes, ...) change the compiled program and are refused with the list of sweepable fields.
Seed j of every grid point uses the key of seed j of `experiments/train.py --seed SEED
--num-seeds N`. The members per chunk are fitted to --memory-fraction of the device's memory
from XLA's compiled memory plan (or set with --max-members-per-chunk).

Writes OUT/members/<i>/summary.json (as train.py's summary, plus "sweep_member"),
OUT/sweep.json (grid, members, chunking plan, timings, per-grid-point aggregates) and
OUT/sweep.csv, and prints the per-grid-point table of final eval returns (mean, std, min,
max over seeds; stochastic and deterministic). --import MODULE_OR_FILE (repeatable) imports
a module that registers environments (`diffrl_jax.envs.register_env`) before --env is checked.
"""

import argparse
import sys

from diffrl_jax.cli import filter_known_warnings
from diffrl_jax.envs import import_env_modules
from diffrl_jax.experiment import ALGOS, enable_compilation_cache
from diffrl_jax.presets import preset_names
from diffrl_jax.sweep import run_sweep

filter_known_warnings()  # third-party noise (diffrl_jax.cli)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, choices=ALGOS)
    parser.add_argument("--env", default="brax/inverted_pendulum")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE_OR_FILE",
                        help="import a module (or .py file) that registers environments with "
                             "diffrl_jax.envs.register_env, before --env is checked (repeatable)")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                        help="a traced hyperparameter and its values (repeatable; the grid is "
                             "the Cartesian product)")
    parser.add_argument("--preset", default="default", choices=preset_names())
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field for every member (repeatable)")
    parser.add_argument("--num-seeds", type=int, default=1, help="seeds per grid point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-steps", type=int, default=None,
                        help="environment steps per member (default: the preset's)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--backend", default="mjx",
                        help="brax backend: mjx, spring, positional, generalized")
    parser.add_argument("--max-members-per-chunk", type=int, default=None,
                        help="members per compiled chunk (default: as many as fit in memory)")
    parser.add_argument("--memory-fraction", type=float, default=0.8,
                        help="fraction of the device memory a chunk may plan with (default 0.8)")
    parser.add_argument("--quiet", action="store_true",
                        help="no per-interval or per-chunk progress lines")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not use the persistent compilation cache (see train.py)")
    args = parser.parse_args(argv)
    try:
        if not args.no_compile_cache:
            enable_compilation_cache()
        import_env_modules(args.imports)
        run_sweep(algo=args.algo, env=args.env, grid_items=args.grid, num_seeds=args.num_seeds,
                  seed=args.seed, out=args.out, backend=args.backend,
                  total_steps=args.total_steps, max_members_per_chunk=args.max_members_per_chunk,
                  memory_fraction=args.memory_fraction, progress=not args.quiet,
                  preset=args.preset, settings=args.settings)
    except (ValueError, ImportError) as err:  # ConfigError: bad names or values; ImportError: a
        # missing optional package (mujoco_playground)
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/sweep.json, {args.out}/sweep.csv and {args.out}/members/*/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
