"""Train one algorithm on one environment for several seeds in one compiled program.

    python experiments/train.py --algo diffsac --env brax/inverted_pendulum \
        --total-steps 20000 --num-seeds 2 --seed 0 --out runs/diffsac_pendulum

--algo is one of sac, diffsac, wpo, diffwpo, ppo, diffppo; every (algorithm, environment) pair has a preset
(diffrl_jax/presets.py). Prints progress per evaluation interval and writes OUT/summary.json.

Several devices: --mesh SEEDSxDATA splits the seeds over SEEDS devices and each seed's
environments over DATA devices (e.g. --num-seeds 8 --mesh 4x2 on 8 GPUs). Several hosts:
start the same command on every host with --distributed (the cluster is auto-detected on
SLURM, Open MPI, Kubernetes and TPU pods; otherwise add --coordinator HOST:PORT
--num-processes P --process-id I); the mesh then spans every host's devices and only
process 0 prints and writes.
"""

import argparse
import sys

from diffrl_jax.experiment import ALGOS, experiment_mesh, run_experiment
from diffrl_jax.parallel import initialize, is_main_process, parse_mesh_shape


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
    parser.add_argument("--mesh", default=None, metavar="SEEDSxDATA",
                        help="device mesh, e.g. 4x2 (default: one device; all devices on the "
                             "seed axis with --distributed)")
    parser.add_argument("--distributed", action="store_true",
                        help="one process of a multi-process run (jax.distributed)")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (--distributed)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.distributed:
            initialize(args.coordinator, args.num_processes, args.process_id)
        elif args.coordinator or args.num_processes is not None or args.process_id is not None:
            raise ValueError("--coordinator, --num-processes and --process-id need --distributed")
        mesh = experiment_mesh(parse_mesh_shape(args.mesh) if args.mesh else None)
        summary = run_experiment(
            algo=args.algo, env=args.env, total_steps=args.total_steps, num_seeds=args.num_seeds,
            seed=args.seed, out=args.out, backend=args.backend, progress=not args.quiet,
            mesh=mesh,
        )
    except ValueError as err:  # includes ConfigError: bad names or values
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main_process():
        print(f"final eval return per seed: {summary['final_eval_return']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
