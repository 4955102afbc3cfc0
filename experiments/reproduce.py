r"""Diff vs Gaussian at equal environment-step budgets, many seeds per run, on a named task list.

    python experiments/reproduce.py --tasks cpu --out runs/reproduce_cpu
    python experiments/reproduce.py --tasks brax/inverted_pendulum --algos sac,diffsac \
        --num-seeds 5 --out runs/repro_pendulum
    python experiments/reproduce.py --tasks gpu --out runs/reproduce_gpu    # paper scale
    python experiments/reproduce.py --tasks brax/inverted_pendulum --pairing both \
        --num-seeds 5 --out runs/repro_pendulum    # matched verdicts and the presets table

--tasks is a list of diffrl_jax/reproduction.py's TASK_LISTS ("cpu": brax inverted_pendulum
and reacher, playground CartpoleSwingup and PendulumSwingup; "gpu": the paper's 11 DM
Control tasks on MuJoCo Playground and brax ant, halfcheetah, hopper, walker2d, humanoid, with
the authors' settings) or a comma list of task names from them. Each task fixes an env-step
budget that every algorithm gets, the seeds (--num-seeds overrides), a preset and its
settings, and a score range for normalisation where the task has one. --algos chooses a
subset of sac, diffsac, wpo, diffwpo, ppo, diffppo (default all six; the pairs are diffsac
vs sac, diffwpo vs wpo, diffppo vs ppo).

Each (task, algorithm) is one run of experiments/train.py's kind, all seeds vmapped in one
compiled program, written to OUT/<env>/<algo>/ (summary.json, metrics, learning_curve.png,
checkpoints: evaluate.py, plot.py and train.py --resume work on it). A run that fails or
diverges is recorded as such and the reproduction goes on. --resume continues an
interrupted reproduction: finished runs (summary.json status completed or diverged) are
skipped, interrupted ones resumed from their checkpoint, failed ones set aside (moved to
<algo>.attempt-<k>) and run again. --steps-scale S multiplies every budget (and, for S < 1,
the off-policy learning_starts), e.g. 0.05 for a smoke run; --set FIELD=VALUE overrides a
config field of every run, --set ALGO:FIELD=VALUE of one algorithm's runs.

Both algorithms of a pair run the same env steps (settings under which their schedules
differ are refused) and the same seeds. --pairing chooses what the Gaussian of a pair runs
besides its policy: "matched" (default; the verdicts) its Diff partner's settings (its own
policy network, the policy-kind fields estimator and entropy_chains, and in discount mode
"diffusion" the same discount per env step; the Diff's target-entropy multiplier on its own
estimate, which has no prior entropy: diffrl_jax/reproduction.py says why), written to
OUT/<env>/<gaussian>.matched/; "presets" its own (algo, env) preset, in OUT/<env>/<algo>/ (as
reproductions before --pairing); "both" runs both. The Diff runs are the same in both. The
report shows the tables of every pairing whose runs are in OUT, matched first, the other as a
second table; under each pair table the config fields in which the pair's runs differ
besides the policy (in matched pairs: none, or only policy-kind fields, marked so). --resume
of a reproduction made before --pairing: its runs are the "presets" ones (give --pairing
presets to continue exactly it; the default adds the matched Gaussians beside them).

Then, from the run directories (--aggregate-only: only this): per task and algorithm the
final return and the area under the curve (mean return over the env steps common to the
pair's two runs), each as the interquartile mean (IQM) over seeds with a 95 %
stratified-bootstrap interval; per pair the difference Diff - Gaussian with its interval and
the verdict "Diff wins / ties / loses"; across the tasks with a score range, the IQM of
normalised scores. Writes OUT/results.json (per-seed curves, all tables, the command,
versions, device, date), OUT/results.md (markdown tables, also printed) and OUT/plots/
(learning curves per task, IQM intervals). A task whose analysis fails (a broken run
directory) is reported and marked in the tables; the other tasks' results are written.

Exit status: 0 done (even when some runs failed or diverged: see the tables), 1 the analysis
of some task failed (reported; the rest written), 2 bad arguments (before anything
compiles), 130 interrupted (continue with --resume; also after a Ctrl-C that came during a
run's last interval: that run finishes, the next one is not started).
"""

import argparse
import math
import shlex
import sys

from diffrl_jax.checkpoints import CheckpointError
from diffrl_jax.cli import filter_known_warnings
from diffrl_jax.experiment import RunOptions, enable_compilation_cache
from diffrl_jax.reproduction import (
    DEFAULT_PAIRING,
    PAIRINGS,
    TASK_LISTS,
    carry_out,
    parse_algos,
    prepare,
    resolve_tasks,
)
from diffrl_jax.reproduction_report import write_results
from diffrl_jax.run_logs import PROGRESS_MODES
from diffrl_jax.validation import require_writable_dir

filter_known_warnings()  # third-party noise (diffrl_jax.cli)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", required=True,
                   help=f"a task list ({', '.join(TASK_LISTS)}) or a comma list of task names")
    p.add_argument("--algos", default=None, help="comma list (default: all six)")
    p.add_argument("--out", required=True, help="output directory (runs, results, plots)")
    p.add_argument("--num-seeds", type=int, default=None, help="seeds per run (default: the task's)")
    p.add_argument("--seed", type=int, default=0, help="base seed of every run (default 0)")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="multiply every env-step budget (default 1; e.g. 0.05 for a smoke run)")
    p.add_argument("--set", dest="settings", action="append", default=[],
                   metavar="[ALGO:]FIELD=VALUE", help="config override for every run, or for "
                   "one algorithm's runs (repeatable)")
    p.add_argument("--pairing", default=DEFAULT_PAIRING, choices=PAIRINGS + ("both",),
                   help="what a pair's Gaussian runs besides its policy: matched (default, the "
                   "verdicts): its Diff partner's settings; presets: its own preset; both")
    p.add_argument("--resume", action="store_true",
                   help="continue a reproduction in OUT: skip finished runs, resume interrupted ones")
    p.add_argument("--aggregate-only", action="store_true",
                   help="train nothing: recompute results and plots from the runs in OUT")
    p.add_argument("--bootstrap-resamples", type=int, default=2000, help="default 2000")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="default 0")
    p.add_argument("--checkpoint-every", type=int, default=1,
                   help="intervals between checkpoints of each run (0: only at the end)")
    p.add_argument("--progress", default="bar", choices=PROGRESS_MODES)
    p.add_argument("--no-compile-cache", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    try:
        if args.aggregate_only and args.resume:
            raise ValueError("--aggregate-only trains nothing; leave out --resume")
        if not math.isfinite(args.steps_scale) or args.steps_scale <= 0:
            raise ValueError(f"--steps-scale must be a finite number > 0, got {args.steps_scale}")
        if args.bootstrap_resamples < 1:
            raise ValueError(f"--bootstrap-resamples must be >= 1, got {args.bootstrap_resamples}")
        if args.num_seeds is not None and args.num_seeds < 1:
            raise ValueError(f"--num-seeds must be >= 1, got {args.num_seeds}")
        if args.seed < 0 or args.bootstrap_seed < 0:
            raise ValueError("--seed and --bootstrap-seed must be >= 0")
        require_writable_dir("--out", args.out)
        tasks = resolve_tasks(args.tasks)
        algos = parse_algos(args.algos)
        options = RunOptions(checkpoint_every=args.checkpoint_every, max_to_keep=1,
                             progress=args.progress).validate()
        prepared = prepare(
            tasks, algos, args.out, num_seeds=args.num_seeds, seed=args.seed,
            steps_scale=args.steps_scale, settings=args.settings, resume=args.resume,
            aggregate_only=args.aggregate_only, bootstrap_resamples=args.bootstrap_resamples,
            bootstrap_seed=args.bootstrap_seed, options=options, pairing=args.pairing)
    except (ValueError, CheckpointError, ImportError) as err:  # ImportError: mujoco_playground
        print(f"error: {err}", file=sys.stderr)
        return 2
    # From here on no error is an argument error: failed runs and analyses are reported.
    if not args.no_compile_cache and not args.aggregate_only:
        enable_compilation_cache()
    try:
        results = carry_out(prepared, progress=args.progress,
                            command=shlex.join(["python", "experiments/reproduce.py", *argv]))
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with --resume (same options, --out {args.out})",
              file=sys.stderr)
        return 130
    written = write_results(results, args.out)
    print(written["markdown"])
    print(f"wrote {written['json']}, {written['markdown_path']} and {len(written['figures'])} "
          f"figure(s) in {args.out}/plots")
    for error in results["analysis_errors"]:
        print(f"error: the analysis of {error['task']} failed: {error['error']} (its cells say "
              f"'analysis failed'; the other results are written)", file=sys.stderr)
    if results["interrupted"]:
        print("interrupted: continue with the same command and --resume", file=sys.stderr)
        return 130
    return 1 if results["analysis_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
