"""Evaluate a run's checkpoint: fresh episodes with the stochastic and the deterministic policy.

    python experiments/evaluate.py --checkpoint runs/diffsac_pendulum --episodes 16

--checkpoint is the run directory that experiments/train.py wrote (its checkpoints/ folder);
--step picks a checkpoint (default: the latest). Prints the mean return per seed and mode and
writes DIR/evaluation_<step>.json (or --out FILE). A run on an environment of your own
imports the modules it recorded (DIR/run_config.json) again; --import MODULE_OR_FILE
(repeatable) imports others first. Exit status 2 on a missing, corrupt or mismatched
checkpoint, or an environment not registered.
"""

import argparse
import json
import sys
from pathlib import Path

import jax

from diffrl_jax.checkpoint_eval import evaluate_run, load_run
from diffrl_jax.checkpoints import CheckpointError
from diffrl_jax.cli import filter_known_warnings, filter_xla_noise
from diffrl_jax.envs import import_env_modules
from diffrl_jax.experiment import RUN_CONFIG_FILE, enable_compilation_cache
from diffrl_jax.validation import require_writable_dir, require_writable_file

filter_known_warnings()  # third-party noise (diffrl_jax.cli)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory of train.py")
    p.add_argument("--step", type=int, default=None, help="checkpoint (env steps); default the latest")
    p.add_argument("--episodes", type=int, default=16, help="episodes per seed and mode")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument("--out", default=None, help="output JSON (default DIR/evaluation_<step>.json)")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   metavar="MODULE_OR_FILE",
                   help="import a module (or .py file) that registers environments with "
                        "diffrl_jax.envs.register_env (repeatable); the run's recorded ones "
                        "are imported too")
    p.add_argument("--no-compile-cache", action="store_true")
    args = p.parse_args(argv)
    try:
        if not args.no_compile_cache:
            enable_compilation_cache()
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
        if args.out is not None:
            require_writable_file("--out", args.out)
        elif Path(args.checkpoint).is_dir():  # where evaluation_<step>.json goes
            require_writable_dir("--checkpoint (evaluation_<step>.json is written there; or "
                                 "give --out)", args.checkpoint)
        import_run_modules(Path(args.checkpoint), args.imports)
        run = load_run(args.checkpoint, args.step)
        result = evaluate_run(run, args.episodes, jax.random.PRNGKey(args.seed))
    except (ValueError, CheckpointError, ImportError) as err:  # ImportError: mujoco_playground
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"evaluation_{run.step}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{result['algo']} {result['env']} checkpoint {run.step:,d} env steps, "
          f"{args.episodes} episodes per seed and mode")
    for mode in ("stochastic", "deterministic"):
        per_seed = ", ".join(f"{x:.2f}" for x in result[mode]["return_mean_per_seed"])
        print(f"  {mode:13s} return {result[mode]['return_mean']:9.2f}   per seed [{per_seed}]")
    print(f"wrote {out}")
    return 0


def import_run_modules(run_dir: Path, imports: list[str]) -> None:
    """Imports `imports` (ImportError if one fails), then the modules the run recorded in
    run_dir/run_config.json (a failure there is a note: the environment may be registered
    by the others)."""
    given = import_env_modules(imports)
    try:
        recorded = json.loads((run_dir / RUN_CONFIG_FILE).read_text()).get("imports") or []
    except (OSError, ValueError, AttributeError):
        return
    for spec in recorded:
        if spec not in given:
            try:
                import_env_modules([str(spec)])
            except ImportError as err:
                print(f"note: {err} (recorded in {run_dir / RUN_CONFIG_FILE})", file=sys.stderr)


if __name__ == "__main__":
    filter_xla_noise()  # XLA's cache-loading noise off stderr (diffrl_jax.cli)
    sys.exit(main())
