"""A reproduction's results (`diffrl_jax.reproduction.reproduce`) as files: results.json,
results.md (markdown tables ready to paste) and figures (per-task learning curves: IQM line
and confidence band per algorithm over env steps; IQM intervals per task and across tasks).

Figures are drawn on `matplotlib.figure.Figure` with an explicit Agg canvas (no pyplot), as
in `diffrl_jax.plots`. results.json is strict JSON: a non-finite number is written as null.
"""

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diffrl_jax.training.algorithms import gaussian_pairs

__all__ = ["format_interval", "format_number", "interval_figure", "learning_curves_figure",
           "markdown_tables", "strict_json", "write_results"]

RESULTS_JSON, RESULTS_MD, PLOTS_DIR = "results.json", "results.md", "plots"
INTERVALS_FILE = "iqm_intervals.png"


# Styling: a Diff algorithm and the Gaussian algorithm it extends (`gaussian_pairs`) share a
# colour; the Diff one is drawn solid, the Gaussian one dashed.
def _is_diff(algo: str) -> bool:
    return algo in dict(gaussian_pairs())


def _family(algo: str) -> str:
    """The Gaussian algorithm of algo's pair (algo itself when it is Gaussian or unpaired)."""
    return dict(gaussian_pairs()).get(algo, algo)


# ---- numbers ----------------------------------------------------------------------------------

def format_number(x: float | None, signed: bool = False) -> str:
    """4 significant digits without an exponent for |x| in [1e-3, 1e4), whole numbers above,
    "-" for None or non-finite; signed: a leading "+" on positive numbers."""
    if x is None or not math.isfinite(x):
        return "-"
    sign = "+" if signed and x > 0 else ""
    if x == 0:
        return "0"
    if abs(x) >= 1e4:
        return f"{sign}{x:.0f}"
    if abs(x) >= 1e-3:
        return f"{sign}{x:.4g}"
    return f"{sign}{x:.2e}"


def format_interval(stat: Mapping[str, Any] | None, signed: bool = False) -> str:
    """"IQM [low, high]" of an {"iqm", "ci_low", "ci_high"} entry."""
    if not stat:
        return "-"
    return (f"{format_number(stat['iqm'], signed)} [{format_number(stat['ci_low'], signed)}, "
            f"{format_number(stat['ci_high'], signed)}]")


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]


def _cell(entry: Mapping[str, Any], metric: str) -> str:
    return format_interval(entry[metric]) if entry.get("usable") else entry["status"]


def _steps_run(task: Mapping[str, Any]) -> str:
    steps = sorted({e["total_env_steps"] for e in task["algos"].values() if "total_env_steps" in e})
    if not steps:
        return "-"
    return f"{steps[0]:,d}" if len(steps) == 1 else f"{steps[0]:,d}–{steps[-1]:,d}"


def _seeds(task: Mapping[str, Any]) -> str:
    seeds = sorted({e["num_seeds"] for e in task["algos"].values() if "num_seeds" in e})
    return ", ".join(map(str, seeds)) or "-"


def _value(x: Any) -> str:
    if isinstance(x, float):
        return format_number(x)
    if isinstance(x, list):
        return "(" + ", ".join(_value(v) for v in x) + ")"
    return str(x)


def _settings_differ(pair: Mapping[str, Any]) -> str:
    """"field Diff vs Gaussian, ..." of a pair's `settings_differ` (those the policy kind
    explains after "; policy kind only: "), "none", or "unknown"."""
    differ = pair.get("settings_differ")
    if differ is None:
        return "unknown (no config of both runs)"
    show = lambda ds: ", ".join(f"{d['field']} {_value(d['diff'])} vs {_value(d['base'])}" for d in ds)
    settings = [d for d in differ if not d.get("policy_kind")]
    kinds = [d for d in differ if d.get("policy_kind")]
    text = show(settings) if settings else "none"
    return text + (f"; policy kind only: {show(kinds)}" if kinds else "")


# What each pairing's tables compare (results "pairing"; results.json files written before
# the pairings were introduced have none: their runs are per-algorithm presets).
PAIRING_TITLES = {"matched": "Matched pairs", "presets": "Per-algorithm presets"}
PAIRING_NOTES = {
    "matched": ("Matched pairs: each Gaussian runs its Diff partner's settings besides the "
                "policy (its own policy network; runs in `OUT/<env>/<gaussian>.matched`), so "
                "a verdict is about the policy. Policy-kind fields are the Gaussian's own "
                "(estimator, entropy_chains) or, in discount mode 'diffusion', the same "
                "discount and GAE λ per env step. The target-entropy multiplier m is the Diff's: "
                "each temperature aims at its own reference − m·A, H(prior) − m·A for the Diff "
                "(on a lower bound of its pre-tanh entropy), −m·A for the Gaussian."),
    "presets": ("Per-algorithm presets: every algorithm runs its own (algo, env) preset, so a "
                "pair may differ in settings besides the policy (listed under the pair "
                "table): each method with its own tuned settings."),
}


def _pairing(results: Mapping[str, Any]) -> str:
    return results.get("pairing") or "presets"


def _pair_cells(pair: Mapping[str, Any]) -> list[str]:
    if "unavailable" in pair:
        return ["-", f"n/a ({pair['unavailable']})", "-", "n/a"]
    return [format_interval(pair["final"], signed=True), f"Diff {pair['final']['verdict']}",
            format_interval(pair["auc"], signed=True), f"Diff {pair['auc']['verdict']}"]


def _pairing_section(results: Mapping[str, Any], algos: Sequence[str], level: str) -> list[str]:
    """One pairing's tables: final return, AUC, Diff − Gaussian per task with the settings
    that differ, and the normalised aggregate; headings of `level` ("##" or "###")."""
    lines = []
    tasks = results["tasks"]
    for metric, title, note in (
            ("final", "Final return (last evaluation, raw)", None),
            ("auc", "Area under the curve (mean return over training, raw)",
             "Each algorithm's AUC is over its pair's common grid of env steps (the Diff and "
             "the Gaussian run's evaluation steps within the span both cover; without a usable "
             "partner: its own evaluation steps), so it does not depend on the other "
             "algorithms; AUCs of different pairs cover nearly, not exactly, the same steps.")):
        lines += [f"{level} {title}", ""]
        if note:
            lines += [note, ""]
        lines += _table(["task", "env steps", "seeds"] + list(algos),
                        [[t["task"], _steps_run(t), _seeds(t)]
                         + [_cell(t["algos"][a], metric) for a in algos] for t in tasks])
        lines.append("")
    pair_rows = [[t["task"], f"{p['diff']} − {p['base']}"] + _pair_cells(p)
                 for t in tasks for p in t["pairs"]]
    if pair_rows:
        lines += [f"{level} Diff − Gaussian per task (raw returns)", ""]
        lines += _table(["task", "pair", "Δ final IQM", "final", "Δ AUC IQM", "AUC"], pair_rows)
        lines += ["", "Settings that differ besides the policy (Diff vs Gaussian; the algorithm "
                      "and its policy sub-config not compared):", ""]
        lines += [f"- {t['task']} {p['diff']} − {p['base']}: {_settings_differ(p)}"
                  for t in tasks for p in t["pairs"]]
        lines.append("")
    agg = results["aggregate"]
    lines += [f"{level} Across tasks (normalised: (return − low) / (high − low))", ""]
    if agg.get("error"):
        lines.append(f"The aggregate failed: {agg['error']}.  ")
    elif agg["tasks"]:
        ranges = ", ".join(f"{t} [{format_number(lo)}, {format_number(hi)}]"
                           for t, (lo, hi) in agg["normalisation"].items())
        lines.append(f"Tasks (range): {ranges}.  ")
    else:
        lines.append("No task has a score range and usable runs of every algorithm: no aggregate.  ")
    if agg["excluded"]:
        lines.append("Excluded: " + "; ".join(f"{e['task']} ({e['reason']})" for e in agg["excluded"]) + ".")
    lines.append("")
    if agg["tasks"]:
        lines += _table(["algo", "final IQM", "AUC IQM"],
                        [[a, format_interval(agg["algos"][a]["final"]),
                          format_interval(agg["algos"][a]["auc"])] for a in algos])
        lines.append("")
        if agg["pairs"]:
            lines += _table(["pair", "Δ final IQM", "final", "Δ AUC IQM", "AUC"],
                            [[f"{p['diff']} − {p['base']}"] + _pair_cells(p) for p in agg["pairs"]])
            lines.append("")
    return lines


def _run_rows(results: Mapping[str, Any], algos: Sequence[str], only_gaussians: bool) -> list[list[Any]]:
    """The runs table's rows of one pairing (only_gaussians: just its paired Gaussians, whose
    runs are its own; the Diff runs are shared), matched Gaussians labelled so."""
    rows = []
    matched = _pairing(results) == "matched"
    for t in results["tasks"]:
        paired = {p["base"] for p in t["pairs"]}
        for a in algos:
            if only_gaussians and a not in paired:
                continue
            e = t["algos"][a]
            label = f"{a} (matched)" if matched and a in paired else a
            rows.append([t["task"], label, e["status"], e.get("num_seeds", "-"),
                         f"{e['total_env_steps']:,d}" if "total_env_steps" in e else "-",
                         format_number(e.get("compile_seconds")), format_number(e.get("train_seconds")),
                         format_number(e.get("env_steps_per_second"))])
    return rows


def markdown_tables(results: Mapping[str, Any]) -> str:
    """results.md: final-return and AUC tables (raw returns, IQM over seeds [CI]), Diff -
    Gaussian per task and pair, the normalised aggregate across tasks, first of the
    verdicts' pairing (results "pairing", matched when its runs exist) and then, when the
    results hold one, of the other pairing ("other_pairing", as a second table); then the
    runs (status, env steps, seconds) of both."""
    algos = results["options"]["algos"]
    conf = f"{results['options']['confidence']:.0%}"
    device = results.get("device", {})
    lines = [
        "# Diff vs Gaussian at equal environment-step budgets", "",
        f"Command: `{results.get('command') or '(from Python)'}`  ",
        f"Date {results.get('date')}, commit {results.get('git_commit') or 'unknown'}, device "
        f"{device.get('kind')} ({device.get('platform')}), jax "
        f"{results.get('versions', {}).get('jax')}.  ",
        f"Cells: interquartile mean (IQM) over seeds [{conf} stratified-bootstrap percentile "
        f"interval, {results['options']['bootstrap_resamples']} resamples]. Returns are "
        f"stochastic-policy evaluation returns (summary.json final_eval_return). A verdict "
        f"'Diff wins' means the interval of IQM(Diff) − IQM(Gaussian) lies above 0, 'loses' "
        f"below, 'ties' otherwise.", "",
    ]
    other = results.get("other_pairing")
    first = _pairing(results)
    lines += [f"Verdicts: {PAIRING_NOTES[first]}"
              + (f" A second table below: {PAIRING_TITLES[_pairing(other)].lower()}."
                 if other else ""), ""]
    errors = results.get("analysis_errors") or []
    if errors:
        lines += ["## Analysis errors", ""]
        lines += [f"- {e['task']}" + (f" ({e['pairing']})" if other and e.get("pairing") else "")
                  + f": {e['error']}" for e in errors]
        lines += ["", "These tasks' cells read 'analysis failed'; the other results stand.", ""]
    lines += _pairing_section(results, algos, "##")
    if other:
        name = _pairing(other)
        lines += [f"## Second table: {PAIRING_TITLES[name].lower()}", "", PAIRING_NOTES[name],
                  "The Diff runs are the same as above.", ""]
        lines += _pairing_section(other, algos, "###")
    lines += ["## Runs", ""]
    rows = _run_rows(results, algos, False) + (_run_rows(other, algos, True) if other else [])
    lines += _table(["task", "algo", "status", "seeds", "env steps", "compile s", "train s",
                     "env steps/s (all seeds)"], rows)
    tasks = results["tasks"]
    lines += ["", "Seconds and steps/s are those of each run's last session (summary.json).  ",
              "Budgets (env steps per seed each algorithm was asked for; the env steps column is "
              "what its schedule ran): " + "; ".join(
                  f"{t['task']} {'-' if t.get('budget') is None else format(t['budget'], ',d')}"
                  f" ({t.get('budget_source')})" for t in tasks) + "."]
    return "\n".join(lines) + "\n"


# ---- figures ----------------------------------------------------------------------------------

def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(algo: str, algos: Sequence[str]) -> dict[str, Any]:
    """One colour per pair (Diff solid, Gaussian dashed) and per unpaired algorithm."""
    families = list(dict.fromkeys(_family(a) for a in algos))
    return {"color": f"C{families.index(_family(algo)) % 10}",
            "ls": "-" if _is_diff(algo) else "--"}


def learning_curves_figure(task: Mapping[str, Any], algos: Sequence[str]) -> Figure:
    """One task: per usable algorithm the IQM over seeds of the stochastic eval return at
    its evaluation steps, with its pointwise bootstrap band."""
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    drawn = False
    for algo in algos:
        e = task["algos"][algo]
        if not e.get("usable"):
            continue
        style = _style(algo, algos)
        curve = e["curve"]
        steps = e["eval_steps"]
        ax.plot(steps, curve["iqm"], lw=2.0, label=f"{algo} (n={e['num_seeds']})", **style)
        ax.fill_between(steps, curve["ci_low"], curve["ci_high"], color=style["color"],
                        alpha=0.15 if _is_diff(algo) else 0.25, lw=0)
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no usable runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (stochastic), IQM over seeds")
    ax.set_title(f"{task['task']}: IQM and bootstrap interval")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize="small", loc="best")
    return fig


def _interval_panel(ax: Any, stats: Mapping[str, Mapping[str, Any] | None], algos: Sequence[str],
                    title: str, xlabel: str) -> None:
    for i, algo in enumerate(algos):
        stat = stats.get(algo)
        if not stat:
            ax.text(0.0, i, f"  {algo}: no result", va="center", fontsize="x-small",
                    transform=ax.get_yaxis_transform())
            continue
        style = _style(algo, algos)
        ax.plot([stat["ci_low"], stat["ci_high"]], [i, i], color=style["color"], lw=4,
                alpha=0.5 if _is_diff(algo) else 0.3, solid_capstyle="butt")
        ax.plot([stat["iqm"]], [i], marker="o" if _is_diff(algo) else "s",
                color=style["color"], ms=6)
    ax.set_yticks(range(len(algos)), list(algos))
    ax.set_ylim(len(algos) - 0.5, -0.5)
    ax.set_title(title, fontsize="small")
    ax.set_xlabel(xlabel, fontsize="small")
    ax.grid(True, axis="x", alpha=0.3)


def interval_figure(results: Mapping[str, Any]) -> Figure:
    """IQM (marker) and interval (bar) of the final return per algorithm: one panel per task
    (raw returns), and the normalised aggregate (final return and AUC) when there is one."""
    algos = results["options"]["algos"]
    agg = results["aggregate"]
    panels = [(t["task"], {a: t["algos"][a].get("final") if t["algos"][a].get("usable") else None
                           for a in algos}, "final return (raw)") for t in results["tasks"]]
    if agg["tasks"] and agg["algos"]:
        for metric, name in (("final", "final return"), ("auc", "AUC")):
            panels.append((f"across {len(agg['tasks'])} task(s), normalised",
                           {a: agg["algos"][a][metric] for a in algos}, f"{name} (normalised)"))
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = _new_figure(4.0 * columns, 0.35 * len(algos) * rows + 1.2 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, (title, stats, xlabel) in zip(axes, panels, strict=False):  # axes may outnumber panels
        _interval_panel(ax, stats, algos, title, xlabel)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"IQM over seeds and {results['options']['confidence']:.0%} bootstrap intervals")
    return fig


def _file_name(task: str) -> str:
    return "learning_curves_" + "".join(c if c.isalnum() else "_" for c in task) + ".png"


def strict_json(value: Any) -> Any:
    """value with every non-finite float (NaN, inf) replaced by None and numpy scalars and
    arrays as Python numbers and lists, so json.dumps(allow_nan=False) accepts it."""
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(results: Mapping[str, Any], out: str | Path, dpi: int = 110) -> dict[str, Any]:
    """Writes OUT/results.json (results and, under "markdown", the tables; strict JSON,
    `strict_json`), OUT/results.md and OUT/plots/ (a learning-curve figure per task,
    iqm_intervals.png); returns their paths and the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = markdown_tables(results)
    (out / RESULTS_JSON).write_text(json.dumps(strict_json(dict(results, markdown=markdown)),
                                               indent=1, allow_nan=False))
    (out / RESULTS_MD).write_text(markdown)
    plots = out / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    figures = []
    tables = [(results, "")]
    if results.get("other_pairing"):  # the second table's figures: "<name>_<pairing>.png"
        other = results["other_pairing"]
        tables.append((dict(other, options=results["options"]), f"_{_pairing(other)}"))
    for table, suffix in tables:
        for task in table["tasks"]:
            path = plots / _file_name(task["task"] + suffix)
            learning_curves_figure(task, results["options"]["algos"]).savefig(path, format="png", dpi=dpi)
            figures.append(path)
        path = plots / INTERVALS_FILE.replace(".png", f"{suffix}.png")
        interval_figure(table).savefig(path, format="png", dpi=dpi)
        figures.append(path)
    return {"json": out / RESULTS_JSON, "markdown_path": out / RESULTS_MD, "markdown": markdown,
            "figures": figures}
