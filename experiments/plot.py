"""Plot the learning curves of one or several runs on one figure.

    python experiments/plot.py --runs runs/ppo_bandit runs/diffppo_bandit --out compare.png

Each run directory (written by train.py, or a sweep member under OUT/members/<i>) holds a
summary.json; each run gets one colour: its seeds as thin lines, their mean, a band of one
standard error and the deterministic policy's mean dashed. train.py already writes each
run's own learning_curve.png (and action_histogram.png on toy environments).
"""

import argparse
import json
import sys
from pathlib import Path

from diffrl_jax.cli import filter_known_warnings
from diffrl_jax.plots import plot_learning_curves
from diffrl_jax.validation import require_writable_file

filter_known_warnings()  # third-party noise (diffrl_jax.cli)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR")
    p.add_argument("--labels", nargs="+", default=None, help="legend names (default: the algorithms)")
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    try:
        require_writable_file("--out", args.out)
        summaries = []
        for run in args.runs:
            path = Path(run) / "summary.json"
            if not path.is_file():
                raise ValueError(f"{run} has no summary.json (is it a train.py output directory?)")
            summaries.append(json.loads(path.read_text()))
        if args.labels is not None and len(args.labels) != len(summaries):
            raise ValueError(f"{len(args.labels)} labels for {len(summaries)} runs")
        out = plot_learning_curves(summaries, args.out, title=args.title, labels=args.labels)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
