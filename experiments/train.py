r"""Train one algorithm on one environment for several seeds in one compiled program.

    python experiments/train.py --algo diffsac --env brax/inverted_pendulum --num-seeds 2 \
        --out runs/diffsac_pendulum

--algo is one of sac, diffsac, wpo, diffwpo, ppo, diffppo; every (algorithm, environment)
pair has a preset (diffrl_jax/presets.py; --preset authors: the paper authors' settings).
Any config field can be overridden with --set FIELD=VALUE (repeatable; nested fields as
diffusion.num_steps=16; --list-fields shows them all with their resolved values). The
config is checked before anything compiles.

The run trains in chunks of --checkpoint-every intervals and writes a full-state Orbax
checkpoint (parameters, optimiser states, temperatures, normaliser statistics, replay buffer,
environment states, RNG keys) after each, keeping the last --max-to-keep. Ctrl-C stops after
the current chunk with a checkpoint; `--resume OUT` continues exactly where it stopped
(flags given with it must agree with the run's config; flags left out are taken from it).
A run stopped before its first checkpoint (e.g. while compiling) is started afresh from its
saved config (OUT/run_config.json) by --resume. --stop-after-steps N stops at the first
evaluation interval boundary at or after N env steps per seed (a run is num_evals intervals
of total_env_steps / num_evals steps each; the line before compiling says where it stops).
Writes OUT/summary.json, OUT/metrics.csv and .jsonl (add --metrics tensorboard, --wandb
PROJECT), OUT/learning_curve.png (and action_histogram.png on toy environments).

Several devices: --mesh SEEDSxDATA splits the seeds over SEEDS devices and each seed's
environments over DATA devices (e.g. --num-seeds 8 --mesh 4x2 on 8 GPUs). Several hosts:
start the same command on every host with --distributed (the cluster is auto-detected on
SLURM, Open MPI, Kubernetes and TPU pods; otherwise add --coordinator HOST:PORT
--num-processes P --process-id I); the mesh then spans every host's devices and only
process 0 prints and writes.

Your own environment: `--import my_envs` (repeatable; a module importable from the working
directory or PYTHONPATH, or a path to a .py file) imports a module that registers
environments with `diffrl_jax.envs.register_env` before --env is checked, e.g.
`--import my_envs.py --env user/three_peaks`. The run records its imports in
OUT/run_config.json and --resume imports them again.

Exit status: 0 done (or stopped by --stop-after-steps), 2 bad arguments, config or
checkpoint, 3 stopped for non-finite updates, 130 interrupted.
"""

import argparse
import sys

from diffrl_jax.checkpoints import CheckpointError
from diffrl_jax.cli import filter_known_warnings, filter_xla_noise
from diffrl_jax.config_overrides import describe_fields
from diffrl_jax.envs import import_env_modules
from diffrl_jax.experiment import (
    ALGOS,
    DEFAULT_ENV,
    RunOptions,
    enable_compilation_cache,
    experiment_mesh,
    make_config,
    run_experiment,
)
from diffrl_jax.parallel import initialize, is_main_process, parse_mesh_shape
from diffrl_jax.presets import preset_names
from diffrl_jax.run_logs import METRIC_FORMATS, PROGRESS_MODES

filter_known_warnings()  # third-party noise (diffrl_jax.cli)

EXIT_STATUS = {"completed": 0, "stopped": 0, "diverged": 3, "interrupted": 130}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=ALGOS, help="required unless --resume")
    p.add_argument("--env", default=None, help=f"default {DEFAULT_ENV} (with --resume: the run's)")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE_OR_FILE",
                   help="import a module (or .py file) that registers environments with "
                        "diffrl_jax.envs.register_env, before --env is checked (repeatable)")
    p.add_argument("--backend", default=None, help="brax backend: mjx (default), spring, positional, generalized")
    p.add_argument("--preset", default=None, choices=preset_names(), help="named preset (default: default)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field (repeatable), e.g. --set actor_lr=1e-3")
    p.add_argument("--list-fields", action="store_true",
                   help="print the resolved config's fields (type, value, what it is) and exit")
    p.add_argument("--total-steps", type=int, default=None,
                   help="environment steps per seed (default: the preset's)")
    p.add_argument("--num-seeds", type=int, default=None, help="default 1")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--out", default=None, help="output directory (required unless --resume)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    p.add_argument("--resume-step", type=int, default=None, help="with --resume: this checkpoint instead of the latest")
    p.add_argument("--checkpoint-every", type=int, default=1, help="intervals between checkpoints (0: only at the end)")
    p.add_argument("--max-to-keep", type=int, default=2, help="checkpoints kept")
    p.add_argument("--no-checkpoints", action="store_true")
    p.add_argument("--stop-after-steps", type=int, default=None,
                   help="stop with a checkpoint at the first evaluation interval boundary at or "
                        "after this many env steps per seed (intervals: total_env_steps / "
                        "num_evals); continue later with --resume")
    p.add_argument("--metrics", default="csv,jsonl", help=f"comma-separated, of {','.join(METRIC_FORMATS)}")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log to Weights & Biases (needs wandb)")
    p.add_argument("--progress", default="bar", choices=PROGRESS_MODES)
    p.add_argument("--quiet", action="store_true", help="same as --progress none")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="persistent compilation cache (default ~/.cache/diffrl_jax/xla or $DIFFRL_JAX_CACHE)")
    p.add_argument("--no-compile-cache", action="store_true")
    p.add_argument("--mesh", default=None, metavar="SEEDSxDATA",
                   help="device mesh, e.g. 4x2 (default: one device; all devices on the "
                        "seed axis with --distributed)")
    p.add_argument("--distributed", action="store_true",
                   help="one process of a multi-process run (jax.distributed)")
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (--distributed)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.resume is None and args.algo is None:
            raise ValueError("--algo is required (or --resume DIR to continue a run)")
        if args.resume is None and args.out is None and not args.list_fields:
            raise ValueError("--out is required (or --resume DIR to continue a run)")
        if args.resume is not None and args.out is not None and args.out != args.resume:
            raise ValueError("--resume continues the run in its own directory; leave out --out")
        if args.resume_step is not None and args.resume is None:
            raise ValueError("--resume-step needs --resume DIR")
        if args.list_fields and args.resume is not None:
            raise ValueError("--list-fields shows the config of --algo/--env/--preset/--set; a "
                             "checkpoint's config is in DIR/summary.json and its meta")
        # flags left out stay None: a fresh run takes the defaults, a resume the run's own
        config_args = dict(env=args.env, backend=args.backend, total_steps=args.total_steps,
                           preset=args.preset, settings=args.settings)
        if args.list_fields:
            import_env_modules(args.imports)
            config = make_config(args.algo or "diffsac", args.env or DEFAULT_ENV,
                                 args.backend or "mjx", args.total_steps,
                                 preset=args.preset or "default", settings=args.settings)
            print(describe_fields(config))
            return 0
        if args.resume is not None and args.algo is None and (
                args.env or args.backend or args.preset or args.settings or args.total_steps):
            raise ValueError("--env/--backend/--preset/--set/--total-steps with --resume need "
                             "--algo too (they are checked against the checkpoint's config)")
        formats = tuple(f for f in args.metrics.split(",") if f) + (("wandb",) if args.wandb else ())
        options = RunOptions(
            checkpoint_every=args.checkpoint_every, max_to_keep=args.max_to_keep,
            checkpoints=not args.no_checkpoints, metrics_formats=formats,
            progress="none" if args.quiet else args.progress,
            stop_after_steps=args.stop_after_steps, plots=not args.no_plots,
            wandb_project=args.wandb or "diffrl_jax",
        ).validate()
        if args.distributed:
            initialize(args.coordinator, args.num_processes, args.process_id)
        elif args.coordinator or args.num_processes is not None or args.process_id is not None:
            raise ValueError("--coordinator, --num-processes and --process-id need --distributed")
        if not args.no_compile_cache:
            enable_compilation_cache(args.compile_cache)
        mesh = experiment_mesh(parse_mesh_shape(args.mesh) if args.mesh else None)
        resume = args.resume is not None
        summary = run_experiment(
            algo=args.algo, out=args.resume if resume else args.out, mesh=mesh,
            num_seeds=args.num_seeds if args.num_seeds is not None else (None if resume else 1),
            seed=args.seed,
            progress=options.progress, options=options, resume=resume,
            resume_step=args.resume_step, imports=args.imports, **config_args,
        )
    except (ValueError, CheckpointError, ImportError) as err:  # bad input, missing wandb
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main_process():
        print(final_returns_line(summary))
    return EXIT_STATUS[summary["status"]]


def final_returns_line(summary: dict) -> str:
    """The closing line: the last evaluation's return per seed, said to be final only when
    the run completed."""
    if summary["status"] == "completed":
        return f"final eval return per seed: {summary['final_eval_return']}"
    curve = summary.get("eval_curve") or []
    if not curve:
        return f"no evaluation yet ({summary['status']})"
    return (f"eval return per seed at step {curve[-1]['env_steps']:,d} ({summary['status']}): "
            f"{summary['final_eval_return']}")


if __name__ == "__main__":
    filter_xla_noise()  # XLA's cache-loading noise off stderr (diffrl_jax.cli)
    sys.exit(main())
