"""Diff vs Gaussian at equal environment-step budgets (`experiments/reproduce.py`).

Named task lists (`TASK_LISTS`); per (task, algorithm) one `run_experiment` of all seeds as
one vmapped program into OUT/<env>/<algo>/ (a normal run directory: evaluate, plot and resume
work on it), skipped when a finished run is there; then, from the run directories alone,
per-seed curves on a common grid of env steps, IQMs with stratified-bootstrap confidence
intervals of the final return and the area under the curve, Diff - Gaussian differences
with a verdict, and IQMs of normalised scores across tasks. `reproduction_report` renders
the result as markdown tables and figures.
"""

import dataclasses
import datetime
import json
import math
import shutil
import subprocess
import traceback
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from diffrl_jax.checkpoints import CHECKPOINT_SUBDIR, CheckpointError, CheckpointStore, library_versions
from diffrl_jax.experiment import (
    RunOptions,
    config_differences,
    config_to_dict,
    make_config,
    run_experiment,
)
from diffrl_jax.presets import PAPER_TASKS
from diffrl_jax.score_stats import (
    ConfidenceInterval,
    area_under_curve,
    common_grid,
    interpolate_curves,
    iqm,
    normalize_scores,
    stratified_bootstrap_ci,
)
from diffrl_jax.training import ALGOS

__all__ = [
    "DEFAULT_ALGOS", "EVAL_MODE", "PAIRS", "TASK_LISTS", "RunPlan", "Task",
    "aggregate", "analyse_task", "check_run_dirs", "difference_ci", "dir_state", "execute",
    "iqm_ci", "load_run_result", "pairs_of", "parse_algos", "plan_runs", "reproduce",
    "resolve_tasks", "results_of", "run_dir", "run_plans", "verdict",
]


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a reproduction: every algorithm runs `budget` env steps per seed on env
    (with its `preset` and then `settings`, "field=value" strings as --set takes them).
    score_range: the (low, high) returns that normalise to 0 and 1 (None: no natural range;
    the task then stays out of the across-task aggregate)."""

    env: str
    budget: int
    num_seeds: int
    score_range: tuple[float, float] | None = None
    preset: str = "default"
    settings: tuple[str, ...] = ()
    backend: str = "mjx"

    @property
    def name(self) -> str:
        return self.env


# Diff variant -> the Gaussian algorithm it extends.
PAIRS: tuple[tuple[str, str], ...] = (("diffsac", "sac"), ("diffwpo", "wpo"), ("diffppo", "ppo"))
DEFAULT_ALGOS: tuple[str, ...] = ("sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo")

# DM Control returns: rewards in [0, 1] for 1000 steps. Brax inverted_pendulum: 1 per step
# upright, 1000 steps.
DMC_RANGE = (0.0, 1000.0)
BRAX_GPU_TASKS = ("ant", "halfcheetah", "hopper", "walker2d", "humanoid")

# Budgets are whole numbers of the on-policy presets' rollouts x evaluations, so PPO runs
# the budget exactly and the off-policy algorithms within num_evals iterations of it (each
# trainer runs whole iterations per interval: `schedule_of`); a Diff algorithm and its
# Gaussian always run the same env steps (their presets share num_envs, unroll_length and
# learning_starts).
# CPU: every algorithm with its (algo, env) preset (on playground tasks the "cpu" preset,
# presets.CPU_PLAYGROUND_PRESETS) at the task's budget, and the same number of evaluations
# for every algorithm so their curves have the same resolution. The playground budget is the
# off-policy "cpu" presets' ~200k env steps (the slower kind per step; PPO's preset has 300k).
# brax/reacher has no presets (the algorithms' defaults); ~50k env steps keep it to about 1-2
# hours for all six algorithms x 5 seeds on 2 CPU cores (measured: 2 seeds, sac ~230,
# diffsac ~180, ppo ~1700, diffppo ~1400 env steps/s over both seeds, evaluation included).
_CPU = ("num_evals=8",)
_CPU_PLAYGROUND = ("num_evals=10",)
# GPU: the authors' settings (presets.AUTHORS_PRESETS, 50M env steps, 8 seeds); 20
# evaluations per run for the curves.
_GPU = ("num_evals=20",)
_AUTHORS_STEPS, _AUTHORS_SEEDS = 50_000_000, 8

TASK_LISTS: dict[str, tuple[Task, ...]] = {
    "cpu": (
        # rollouts of 32 envs x 16 steps: 10 and 12 per evaluation x 8 evaluations
        Task("brax/inverted_pendulum", 40_960, 5, DMC_RANGE, settings=_CPU),
        Task("brax/reacher", 49_152, 5, None, settings=_CPU),
        # rollouts of 32 envs x 32 steps: 20 per evaluation x 10 evaluations
        Task("playground/CartpoleSwingup", 204_800, 5, DMC_RANGE, "cpu", _CPU_PLAYGROUND),
        Task("playground/PendulumSwingup", 204_800, 5, DMC_RANGE, "cpu", _CPU_PLAYGROUND),
    ),
    "gpu": tuple(
        [Task(f"playground/{t}", _AUTHORS_STEPS, _AUTHORS_SEEDS, DMC_RANGE, "authors", _GPU)
         for t in PAPER_TASKS]
        + [Task(f"brax/{t}", _AUTHORS_STEPS, _AUTHORS_SEEDS, None, "authors", _GPU)
           for t in BRAX_GPU_TASKS]),
}

EVAL_MODE = ("stochastic: summary.json's final_eval_return / eval_curve return_per_seed, each "
             "seed's mean return over its num_eval_envs evaluation episodes with actions "
             "sampled from the policy")
FAILURE_FILE = "failure.json"
FINISHED = ("completed", "diverged")  # a run in either state is not run again


# ---- choosing what to run ---------------------------------------------------------------------

def resolve_tasks(spec: str, lists: Mapping[str, Sequence[Task]] | None = None) -> list[Task]:
    """The tasks of `spec`: a list name ("cpu", "gpu"), or a comma list of task names from the
    lists (a name in several lists with different settings as "LIST:NAME"). ValueError for an
    unknown or ambiguous name, a duplicate, or two tasks on one environment."""
    lists = TASK_LISTS if lists is None else lists
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--tasks must be a list name ({', '.join(lists)}) or a comma list of "
                         f"task names, got {spec!r}")
    spec = spec.strip()
    if spec in lists:
        return list(lists[spec])
    tasks = []
    for name in (n.strip() for n in spec.split(",")):
        if ":" in name and name.split(":", 1)[0] in lists:
            where, bare = name.split(":", 1)
            found = [t for t in lists[where] if t.name == bare]
        else:
            found = list(dict.fromkeys(t for tasks_ in lists.values() for t in tasks_ if t.name == name))
        if not found:
            known = sorted({t.name for tasks_ in lists.values() for t in tasks_})
            raise ValueError(f"unknown task {name!r}; give a list ({', '.join(lists)}) or names "
                             f"from them: {', '.join(known)}")
        if len(found) > 1:
            where = [w for w, ts in lists.items() if any(t.name == name for t in ts)]
            raise ValueError(f"task {name!r} is in several lists with different settings; "
                             f"name one as {' or '.join(f'{w}:{name}' for w in where)}")
        tasks.append(found[0])
    envs = [t.env for t in tasks]
    doubled = sorted({e for e in envs if envs.count(e) > 1})
    if doubled:
        raise ValueError(f"--tasks names {', '.join(doubled)} twice (runs go to OUT/<env>/<algo>)")
    return tasks


def parse_algos(spec: str | None) -> list[str]:
    """A comma list of algorithms (None: all six), in the order given; ValueError for unknown
    or repeated ones."""
    if spec is None:
        return list(DEFAULT_ALGOS)
    algos = [a.strip() for a in spec.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGOS]
    if unknown or not algos:
        raise ValueError(f"unknown algorithm(s) {unknown or [spec]} in --algos; allowed: "
                         f"{', '.join(ALGOS)}")
    if len(set(algos)) != len(algos):
        raise ValueError(f"--algos lists an algorithm twice: {spec}")
    return algos


def pairs_of(algos: Sequence[str]) -> list[tuple[str, str]]:
    """The (diff, gaussian) pairs both of whose algorithms are among algos."""
    return [(d, g) for d, g in PAIRS if d in algos and g in algos]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One (task, algorithm) run: its resolved, validated config and where it goes."""

    task: Task
    algo: str
    total_steps: int
    num_seeds: int
    seed: int
    settings: tuple[str, ...]
    config: Any
    run_dir: Path


def run_dir(out: str | Path, task: Task, algo: str) -> Path:
    """OUT/<env>/<algo>."""
    return Path(out) / task.env / algo


def _scoped_settings(settings: Sequence[str], algo: str) -> list[str]:
    """The "field=value" settings that apply to algo: unscoped ones, and "ALGO:field=value"
    for this algo (scope removed)."""
    out = []
    for item in settings:
        key, sep, value = str(item).partition("=")
        if ":" in key:
            scope, key = key.split(":", 1)
            if scope.strip() not in ALGOS:
                raise ValueError(f"--set {item!r}: {scope.strip()!r} is not an algorithm "
                                 f"(scoped settings are ALGO:FIELD=VALUE, ALGO one of {', '.join(ALGOS)})")
            if scope.strip() != algo:
                continue
        if key.strip() == "total_env_steps":
            raise ValueError(f"--set {item!r}: a task's env-step budget is the same for every "
                             f"algorithm; scale it with --steps-scale instead")
        out.append(f"{key}{sep}{value}")
    return out


def plan_runs(tasks: Sequence[Task], algos: Sequence[str], out: str | Path,
              num_seeds: int | None = None, seed: int = 0, steps_scale: float = 1.0,
              settings: Sequence[str] = ()) -> list[RunPlan]:
    """Every (task, algo) run, its config resolved and validated (nothing compiles):
    total_env_steps = round(budget * steps_scale); with steps_scale < 1 the off-policy
    learning_starts is scaled too (unless --set), so a shortened run keeps its prefill
    share. settings: "field=value" for every run, "ALGO:field=value" for one algorithm;
    they apply after the task's own. ValueError (ConfigError), or ImportError for an
    environment whose simulator is not installed, naming the task and algorithm."""
    if isinstance(steps_scale, bool) or not isinstance(steps_scale, (int, float)) or not (
            math.isfinite(steps_scale) and steps_scale > 0):
        raise ValueError(f"--steps-scale must be a finite number > 0, got {steps_scale!r}")
    if num_seeds is not None and (isinstance(num_seeds, bool) or not isinstance(num_seeds, int)
                                  or num_seeds < 1):
        raise ValueError(f"--num-seeds must be a positive integer, got {num_seeds!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
    plans = []
    for task in tasks:
        total = max(1, int(round(task.budget * steps_scale)))
        for algo in algos:
            try:
                mine = list(task.settings) + _scoped_settings(settings, algo)
                config = make_config(algo, task.env, task.backend, total, task.preset, mine)
                user_sets_start = any(s.split("=", 1)[0].strip() == "learning_starts" for s in mine)
                if steps_scale < 1 and hasattr(config, "learning_starts") and not user_sets_start:
                    mine.append(f"learning_starts={max(1, round(config.learning_starts * steps_scale))}")
                    config = make_config(algo, task.env, task.backend, total, task.preset, mine)
            except (ValueError, ImportError) as err:  # ImportError: an optional simulator
                raise type(err)(f"task {task.name}, algo {algo}: {err}") from err
            plans.append(RunPlan(task, algo, total, num_seeds or task.num_seeds, seed,
                                 tuple(mine), config, run_dir(out, task, algo)))
    return plans


# ---- the state of a run directory ---------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _checkpoint_steps(directory: Path) -> list[int]:
    if not (directory / CHECKPOINT_SUBDIR).is_dir():
        return []
    store = CheckpointStore(directory, None, read_only=True)
    try:
        return store.steps()
    finally:
        store.close()


def dir_state(directory: Path) -> str:
    """"completed" / "diverged" (summary.json says so), "resumable" (a complete checkpoint),
    "failed" (failure.json), "leftover" (other files), or "none"."""
    summary = _read_json(directory / "summary.json")
    if summary is not None and summary.get("status") in FINISHED:
        return summary["status"]
    if _checkpoint_steps(directory):
        return "resumable"
    if (directory / FAILURE_FILE).exists():
        return "failed"
    if directory.exists() and any(directory.iterdir()):
        return "leftover"
    return "none"


def _config_mismatch(plan: RunPlan, saved_config: dict[str, Any], num_seeds: int,
                     seed: int) -> list[str]:
    diff = config_differences(saved_config, config_to_dict(plan.config))
    if num_seeds != plan.num_seeds:
        diff.append(f"num_seeds: {num_seeds} vs {plan.num_seeds}")
    if seed != plan.seed:
        diff.append(f"seed: {seed} vs {plan.seed}")
    return diff


def check_run_dirs(plans: Sequence[RunPlan], resume: bool) -> dict[Path, str]:
    """The state (`dir_state`) of each plan's run directory, checked before anything runs:
    without resume every directory must be empty; with resume a finished or resumable run
    must have been made with the plan's config, seeds and seed. CheckpointError otherwise."""
    states = {}
    for plan in plans:
        state = dir_state(plan.run_dir)
        states[plan.run_dir] = state
        if state == "none":
            continue
        if not resume:
            raise CheckpointError(f"{plan.run_dir} already holds a run ({state}); continue the "
                                  f"reproduction with --resume, or give another --out")
        if state in FINISHED:
            summary = _read_json(plan.run_dir / "summary.json")
            saved = (summary["config"], summary["num_seeds"], summary["seed"])
        elif state == "resumable":
            store = CheckpointStore(plan.run_dir, None, read_only=True)
            try:
                _, meta = store.read_meta()
            finally:
                store.close()
            saved = (meta["config"], meta["num_seeds"], meta["seed"])
        else:
            continue  # failed or leftover: set aside and run again
        diff = _config_mismatch(plan, *saved)
        if diff:
            raise CheckpointError(f"{plan.run_dir} holds a run made with other settings "
                                  f"(there vs now): {diff}; give the same options or another --out")
    return states


def _set_aside(directory: Path) -> Path:
    """Moves a failed or half-written run directory to a free sibling "<name>.attempt-<k>"."""
    k = 1
    while (target := directory.with_name(f"{directory.name}.attempt-{k}")).exists():
        k += 1
    shutil.move(str(directory), str(target))
    return target


# ---- running ----------------------------------------------------------------------------------

def execute(plan: RunPlan, state: str, options: RunOptions, progress: str | bool) -> dict[str, Any]:
    """Runs (or resumes, or skips when finished) one plan; a run that raises is recorded in
    RUN/failure.json and returned as status "failed", never raised."""
    record: dict[str, Any] = {"task": plan.task.name, "algo": plan.algo, "run_dir": str(plan.run_dir)}
    if state in FINISHED:
        return dict(record, status=state, skipped=True)
    if state in ("failed", "leftover"):
        record["set_aside"] = str(_set_aside(plan.run_dir))
    try:
        summary = run_experiment(
            plan.algo, plan.task.env, plan.total_steps, plan.num_seeds, plan.seed, plan.run_dir,
            backend=plan.task.backend, progress=progress, preset=plan.task.preset,
            settings=plan.settings, options=options, resume=state == "resumable")
    except Exception as err:  # noqa: BLE001 - one broken run must not end the reproduction
        failure = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc(), "algo": plan.algo, "env": plan.task.env}
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        (plan.run_dir / FAILURE_FILE).write_text(json.dumps(failure, indent=2))
        return dict(record, status="failed", message=failure["error"])
    return dict(record, status=summary["status"], message=summary.get("message"), skipped=False,
                train_seconds=summary["train_seconds"], compile_seconds=summary["compile_seconds"])


def run_plans(plans: Sequence[RunPlan], states: Mapping[Path, str], options: RunOptions,
              progress: str | bool = "bar", log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Executes the plans in order; stops early (the last record's status "interrupted") when
    a run was interrupted (Ctrl-C, SIGTERM), so --resume continues there."""
    records = []
    for i, plan in enumerate(plans):
        log(f"[{i + 1}/{len(plans)}] {plan.task.name} {plan.algo}: {plan.num_seeds} seeds x "
            f"{plan.total_steps:,d} env steps -> {plan.run_dir}")
        record = execute(plan, states.get(plan.run_dir, "none"), options, progress)
        records.append(record)
        log(f"[{i + 1}/{len(plans)}] {plan.task.name} {plan.algo}: {record['status']}"
            + (" (already finished, skipped)" if record.get("skipped") else "")
            + (f": {record['message']}" if record.get("message") else ""))
        if record["status"] == "interrupted":
            break
    return records


# ---- reading runs back ------------------------------------------------------------------------

def load_run_result(directory: str | Path) -> dict[str, Any]:
    """What a run directory holds: {"status", "message", "summary" (or None), "usable"}.
    usable: completed with a finite final return and eval curve for every seed. Status
    "missing" for an empty directory, "failed" with failure.json, "non-finite" for a
    completed run with NaN/inf returns."""
    directory = Path(directory)
    summary = _read_json(directory / "summary.json")
    if summary is None:
        failure = _read_json(directory / FAILURE_FILE)
        if failure is not None:
            return {"status": "failed", "message": failure.get("error"), "summary": None, "usable": False}
        return {"status": "missing", "message": None, "summary": None, "usable": False}
    status, message = summary.get("status", "unknown"), summary.get("message")
    usable = status == "completed"
    if usable:
        values = [summary["final_eval_return"]] + [p["return_per_seed"] for p in summary["eval_curve"]]
        if not summary["eval_curve"] or not all(np.all(np.isfinite(np.asarray(v, float))) for v in values):
            status, message, usable = "non-finite", "non-finite evaluation returns", False
    return {"status": status, "message": message, "summary": summary, "usable": usable}


def _curve(summary: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps [T], stochastic returns [seeds, T], deterministic returns [seeds, T])."""
    curve = summary["eval_curve"]
    steps = np.asarray([p["env_steps"] for p in curve], dtype=np.float64)
    returns = np.asarray([p["return_per_seed"] for p in curve], dtype=np.float64).T
    det = np.asarray([p["return_deterministic_per_seed"] for p in curve], dtype=np.float64).T
    return steps, returns, det


# ---- statistics -----------------------------------------------------------------------------

def _rng(seed: int, *labels: str) -> np.random.Generator:
    """A generator for one statistic, the same whichever other tasks and algorithms run."""
    return np.random.default_rng([seed, zlib.crc32("|".join(labels).encode())])


def _iqm_of_group(samples: list[np.ndarray]) -> np.ndarray:
    return iqm(np.concatenate(samples, axis=1), axis=1)


def _ci_dict(ci: ConfidenceInterval) -> dict[str, Any]:
    as_json = lambda x: x.tolist() if isinstance(x, np.ndarray) else float(x)
    return {"iqm": as_json(ci.estimate), "ci_low": as_json(ci.low), "ci_high": as_json(ci.high)}


def iqm_ci(groups: Sequence[Any], resamples: int, confidence: float,
           rng: np.random.Generator) -> dict[str, Any]:
    """The pooled IQM of groups (strata: tasks) [n_t] or [n_t, G] and its stratified
    bootstrap interval, as {"iqm", "ci_low", "ci_high"}."""
    return _ci_dict(stratified_bootstrap_ci(list(groups), _iqm_of_group, resamples, confidence, rng))


def difference_ci(diff_groups: Sequence[Any], base_groups: Sequence[Any], resamples: int,
                  confidence: float, rng: np.random.Generator) -> dict[str, Any]:
    """IQM(pooled diff_groups) - IQM(pooled base_groups), every group its own stratum
    (resampled independently), with its percentile interval and `verdict`."""
    k = len(diff_groups)
    statistic = lambda s: _iqm_of_group(s[:k]) - _iqm_of_group(s[k:])
    ci = stratified_bootstrap_ci(list(diff_groups) + list(base_groups), statistic, resamples,
                                 confidence, rng)
    return dict(_ci_dict(ci), verdict=verdict(ci))


def verdict(ci: ConfidenceInterval) -> str:
    """Of the difference Diff - Gaussian: "wins" when its whole interval is above 0, "loses"
    when below, "ties" otherwise."""
    if ci.low > 0:
        return "wins"
    if ci.high < 0:
        return "loses"
    return "ties"


def analyse_task(task: Task, algos: Sequence[str], runs: Mapping[str, Mapping[str, Any]],
                 resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """One task's results from its runs (`load_run_result` per algo): the usable runs'
    curves on their common grid (`common_grid` of their eval steps), per algo the final
    return and AUC (on that grid) per seed with IQM and interval over seeds, the IQM curve
    with its pointwise band at the run's own eval steps, and per pair the Diff - Gaussian
    differences."""
    result: dict[str, Any] = {
        "task": task.name, "env": task.env, "budget": task.budget, "preset": task.preset,
        "settings": list(task.settings), "score_range": list(task.score_range) if task.score_range else None,
        "algos": {}, "pairs": [], "grid": None,
    }
    usable = {a: runs[a]["summary"] for a in algos if runs[a]["usable"]}
    curves = {a: _curve(s) for a, s in usable.items()}
    grid = common_grid([c[0] for c in curves.values()]) if curves else None
    result["grid"] = None if grid is None else grid.tolist()
    for algo in algos:
        run = runs[algo]
        entry: dict[str, Any] = {"status": run["status"], "message": run["message"],
                                 "usable": run["usable"]}
        summary = run["summary"]
        if summary is not None:
            entry.update(num_seeds=summary["num_seeds"], total_env_steps=summary["total_env_steps"],
                         train_seconds=summary.get("train_seconds"),
                         compile_seconds=summary.get("compile_seconds"),
                         env_steps_per_second=summary.get("env_steps_per_second"))
        if algo in curves:
            steps, returns, det = curves[algo]
            on_grid = interpolate_curves(steps, returns, grid)  # [seeds, G]
            final = np.asarray(summary["final_eval_return"], dtype=np.float64)
            auc = np.atleast_1d(area_under_curve(grid, on_grid))
            rng = lambda metric: _rng(seed, task.name, algo, metric)
            entry.update(
                eval_steps=steps.tolist(), eval_returns_per_seed=returns.tolist(),
                eval_returns_deterministic_per_seed=det.tolist(),
                grid_returns_per_seed=on_grid.tolist(),
                final_per_seed=final.tolist(),
                final_deterministic_per_seed=[float(x) for x in summary["final_eval_return_deterministic"]],
                auc_per_seed=auc.tolist(), final_mean=float(final.mean()),
                final=iqm_ci([final], resamples, confidence, rng("final")),
                auc=iqm_ci([auc], resamples, confidence, rng("auc")),
                curve=iqm_ci([returns], resamples, confidence, rng("curve")),
            )
        result["algos"][algo] = entry
    for diff, base in pairs_of(algos):
        pair: dict[str, Any] = {"diff": diff, "base": base}
        if diff in curves and base in curves:
            a, b = result["algos"][diff], result["algos"][base]
            for metric in ("final", "auc"):
                pair[metric] = difference_ci([a[f"{metric}_per_seed"]], [b[f"{metric}_per_seed"]],
                                             resamples, confidence,
                                             _rng(seed, task.name, diff, base, metric))
        else:
            missing = [f"{x} {runs[x]['status']}" for x in (diff, base) if x not in curves]
            pair["unavailable"] = ", ".join(missing)
        result["pairs"].append(pair)
    return result


def aggregate(tasks: Sequence[Task], algos: Sequence[str], task_results: Sequence[Mapping[str, Any]],
              resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """Across tasks, on normalised scores ((return - low) / (high - low) per task): per algo
    the pooled IQM of the final return and the AUC over all (task, seed) runs with its
    stratified bootstrap interval (strata: tasks), per pair the difference with a verdict.
    Tasks enter when they have a score range and every algorithm has usable runs on them
    (the same tasks for every algorithm); the others are listed with the reason."""
    included, excluded = [], []
    for task, res in zip(tasks, task_results):
        bad = [f"{a} {res['algos'][a]['status']}" for a in algos if not res["algos"][a]["usable"]]
        if task.score_range is None:
            excluded.append({"task": task.name, "reason": "no score range"})
        elif bad:
            excluded.append({"task": task.name, "reason": ", ".join(bad)})
        else:
            included.append((task, res))
    out: dict[str, Any] = {"tasks": [t.name for t, _ in included], "excluded": excluded,
                           "normalisation": {t.name: list(t.score_range) for t, _ in included},
                           "algos": {}, "pairs": []}
    if not included:
        return out
    label = ",".join(t.name for t, _ in included)

    def normalised(algo: str, metric: str) -> list[np.ndarray]:
        return [normalize_scores(res["algos"][algo][f"{metric}_per_seed"], task.score_range)
                for task, res in included]

    for algo in algos:
        out["algos"][algo] = {metric: iqm_ci(normalised(algo, metric), resamples, confidence,
                                             _rng(seed, "aggregate", label, algo, metric))
                              for metric in ("final", "auc")}
    for diff, base in pairs_of(algos):
        pair = {"diff": diff, "base": base}
        for metric in ("final", "auc"):
            pair[metric] = difference_ci(normalised(diff, metric), normalised(base, metric),
                                         resamples, confidence,
                                         _rng(seed, "aggregate", label, diff, base, metric))
        out["pairs"].append(pair)
    return out


# ---- the whole reproduction ---------------------------------------------------------------------

def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _check_resamples(resamples: Any) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"--bootstrap-resamples must be a positive integer, got {resamples!r}")


def results_of(tasks: Sequence[Task], algos: Sequence[str], out: str | Path, resamples: int = 2000,
               confidence: float = 0.95, bootstrap_seed: int = 0) -> dict[str, Any]:
    """The analysis of the runs under out (read from their directories): per task
    (`analyse_task`) and across tasks (`aggregate`)."""
    _check_resamples(resamples)
    per_task = [analyse_task(t, algos, {a: load_run_result(run_dir(out, t, a)) for a in algos},
                             resamples, confidence, bootstrap_seed) for t in tasks]
    return {
        "tasks": per_task,
        "aggregate": aggregate(tasks, algos, per_task, resamples, confidence, bootstrap_seed),
    }


def reproduce(tasks: Sequence[Task], algos: Sequence[str], out: str | Path, *,
              num_seeds: int | None = None, seed: int = 0, steps_scale: float = 1.0,
              settings: Sequence[str] = (), resume: bool = False, aggregate_only: bool = False,
              bootstrap_resamples: int = 2000, confidence: float = 0.95,
              bootstrap_seed: int = 0, options: RunOptions | None = None,
              progress: str | bool = "bar", command: str | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Plans and checks every run (ValueError / CheckpointError before anything compiles),
    runs the missing ones (unless aggregate_only), and returns the results with their
    provenance (command, versions, device, date, options) and the run records. Writes
    nothing outside the run directories: `reproduction_report.write_results` does.
    "interrupted": True in the result when a run was interrupted (the rest not run)."""
    if not tasks:
        raise ValueError("no tasks to run")
    if not algos:
        raise ValueError("no algorithms to run")
    _check_resamples(bootstrap_resamples)
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    options = (options or RunOptions(max_to_keep=1)).validate()
    records, interrupted, plans = [], False, []
    if not aggregate_only:
        plans = plan_runs(tasks, algos, out, num_seeds, seed, steps_scale, settings)
        states = check_run_dirs(plans, resume)
        records = run_plans(plans, states, options, progress, log)
        interrupted = bool(records) and records[-1]["status"] == "interrupted"
    results = results_of(tasks, algos, out, bootstrap_resamples, confidence, bootstrap_seed)
    device = jax.devices()[0]
    results.update(
        command=command, date=datetime.datetime.now().isoformat(timespec="seconds"),
        git_commit=_git_commit(), versions=library_versions(),
        device={"kind": device.device_kind, "platform": device.platform,
                "count": jax.device_count()},
        options={"tasks": [t.name for t in tasks], "algos": list(algos), "num_seeds": num_seeds,
                 "seed": seed, "steps_scale": steps_scale, "settings": list(settings),
                 "resume": resume, "aggregate_only": aggregate_only,
                 "bootstrap_resamples": bootstrap_resamples, "confidence": confidence,
                 "bootstrap_seed": bootstrap_seed},
        task_definitions=[dataclasses.asdict(t) for t in tasks],
        plans=[{"task": p.task.name, "algo": p.algo, "total_env_steps_requested": p.total_steps,
                "num_seeds": p.num_seeds, "seed": p.seed, "settings": list(p.settings),
                "run_dir": str(p.run_dir)} for p in plans],
        runs=records, interrupted=interrupted,
        definitions={
            "eval_mode": EVAL_MODE,
            "final": "the return of each seed's last evaluation; IQM over seeds",
            "auc": "each seed's mean return over training: its eval curve linearly interpolated "
                   "onto the task's common grid (the union of all usable algorithms' evaluation "
                   "steps within the span they all cover), trapezoid integral / span; IQM over seeds",
            "iqm": "interquartile mean: 2 * integral over quantile levels [1/4, 3/4] of the "
                   "empirical quantile function (boundary runs weighted by their share)",
            "ci": f"{confidence:.0%} percentile interval of {bootstrap_resamples} bootstrap "
                  f"resamples of the runs, with replacement within each stratum (task; "
                  f"for differences, task x algorithm)",
            "difference": "IQM(Diff) - IQM(Gaussian), the two algorithms' runs resampled "
                          "independently",
            "verdict": "Diff wins if the difference's interval lies above 0, loses if below, "
                       "ties otherwise",
            "aggregate": "pooled IQM over (task, seed) of normalised scores (return - low) / "
                         "(high - low), tasks with a score range where every algorithm has "
                         "usable runs; strata: tasks",
            "usable": "a run counts when its summary.json status is completed and every "
                      "return is finite; diverged, failed, interrupted or missing runs are "
                      "reported, not scored",
        },
    )
    return results
