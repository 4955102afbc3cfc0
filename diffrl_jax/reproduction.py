"""Diff vs Gaussian at equal environment-step budgets (`experiments/reproduce.py`).

Named task lists (`TASK_LISTS`); per (task, algorithm) one `run_experiment` of all seeds as
one vmapped program into OUT/<env>/<algo>/ (a normal run directory: evaluate, plot and resume
work on it), skipped when a finished run is there; then, from the run directories alone,
IQMs with stratified-bootstrap confidence intervals of the final return and the area under
the curve, Diff - Gaussian differences with a verdict, and IQMs of normalised scores across
tasks. `reproduction_report` renders the result as markdown tables and figures.

What a comparison holds fixed, and what not:
- Budgets: both algorithms of a pair run the same env steps. `plan_runs` refuses settings
  under which their schedules differ, and `analyse_task` reports a pair whose runs'
  summaries differ in total_env_steps as unavailable ("unequal budgets").
- Settings, two pairings (`PAIRINGS`; `plan_runs`'s pairing):
  "matched" (the default, and the verdicts' table): the Gaussian runs its Diff partner's
  settings besides the policy (`matched_config`), into OUT/<env>/<gaussian>.matched, so a
  verdict is about the policy alone. "presets": every algorithm runs its own (algo, env)
  preset (each method with its own tuned settings), so a pair may differ in more than the
  policy (e.g. tau, updates_per_step). The Diff run is the same in both (OUT/<env>/<diff>);
  "both" runs both Gaussians. The report shows a table per pairing whose runs are in OUT
  (matched first). Each pair records the config fields in which its two runs differ
  (`settings_differences`; `METHOD_FIELDS` left out), each marked whether the policy kind
  explains it (`policy_kind_fields`): in matched pairs only such fields differ.
- AUC grid: a pair's two runs are compared on their own common grid of env steps
  (`common_grid` of the two runs' evaluation steps), and each algorithm's reported AUC is on
  its pair's grid (an algorithm without a usable partner: on its own evaluation steps), so no
  number depends on which other algorithms ran.
- Seeds: both algorithms of a pair run the same seeds (seed, ..., seed + n - 1), so their runs
  are paired, not independent. The Diff - Gaussian interval resamples the two groups
  independently (an unpaired bootstrap), which ignores the pairing; when paired outcomes
  correlate positively, as a shared seed can make them, that interval is conservative
  (wider than a paired one).
- IQM: the interquartile mean of n runs is 2 x the integral of the empirical quantile
  function over [1/4, 3/4] (`score_stats.iqm_weights`). When n is not a multiple of 4 the
  runs straddling a quartile count with fractional weights: for n = 5 the sorted runs weigh
  0, 0.3, 0.4, 0.3, 0, where rliable's scipy.stats.trim_mean(x, 0.25) cuts whole runs
  (0, 1/3, 1/3, 1/3, 0). For n a multiple of 4 the two agree.
"""

import dataclasses
import datetime
import functools
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

from diffrl_jax.checkpoints import (
    CheckpointError,
    CheckpointStore,
    complete_checkpoint_steps,
    library_versions,
)
from diffrl_jax.config_overrides import parse_overrides
from diffrl_jax.experiment import (
    RunOptions,
    config_differences,
    config_to_dict,
    make_config,
    run_experiment,
)
from diffrl_jax.presets import PAPER_TASKS, apply_overrides
from diffrl_jax.score_stats import (
    ConfidenceInterval,
    area_under_curve,
    common_grid,
    interpolate_curves,
    iqm,
    normalize_scores,
    stratified_bootstrap_ci,
)
from diffrl_jax.training import ALGOS, gaussian_pairs, schedule_of

__all__ = [
    "DEFAULT_ALGOS", "DEFAULT_PAIRING", "EVAL_MODE", "METHOD_FIELDS", "PAIRINGS", "PAIRS",
    "POLICY_KIND_FIELDS", "TASK_LISTS", "Reproduction", "RunPlan", "Task", "aggregate",
    "analyse", "analyse_task", "carry_out", "check_run_dirs", "difference_ci", "dir_state",
    "execute", "iqm_ci", "load_run_result", "matched_config", "pairings_in", "pairs_of",
    "parse_algos", "parse_pairing", "per_env_step_discount", "plan_runs", "planned_budget",
    "policy_kind_fields", "prepare", "reproduce", "resolve_tasks", "results_of", "run_dir",
    "run_dirs", "run_plans", "settings_differences", "verdict",
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
# the default reproduction: the three pairs with learning checks (REPPO joins once it has
# them); `--algos` takes any algorithm of the table, paired by `gaussian_pairs()`
DEFAULT_ALGOS: tuple[str, ...] = ("sac", "diffsac", "wpo", "diffwpo", "ppo", "diffppo")
PAIRS: tuple[tuple[str, str], ...] = tuple(
    (d, g) for d, g in gaussian_pairs() if d in DEFAULT_ALGOS and g in DEFAULT_ALGOS)

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
# presets.CPU_PLAYGROUND_PRESETS; a matched Gaussian with its Diff partner's) at the task's
# budget, and the same number of evaluations for every algorithm so their curves have the
# same resolution. The playground budget is the
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
# Config fields that define the method rather than a setting of it, left out of a pair's
# `settings_differences`: the algorithm, and the two policy sub-configs (a Diff algorithm's
# policy is `diffusion` and its `gaussian` is unused; the other way round for a Gaussian one).
METHOD_FIELDS = ("algo", "diffusion", "gaussian")

# ---- pairings: what a Gaussian runs besides its policy --------------------------------------
#
# "presets": its own (algo, env) preset. "matched": its Diff partner's resolved config, except
# what belongs to the policy (`matched_config`):
#   - the policy itself: `gaussian` stays the Gaussian's own (its preset's network), and the
#     unused `diffusion` too (METHOD_FIELDS: never compared);
#   - POLICY_KIND_FIELDS, settings of the diffusion chain that a one-step policy reads
#     differently: `estimator` (per-step vs full-chain terms; with K = 1 they are the same) and
#     `entropy_chains` (fresh chains for the temperature: n chains are n * K step terms for the
#     Diff, n terms for the Gaussian; None means "about batch_size step terms" for both, so
#     each keeps its own);
#   - the discount: in discount_mode "diffusion" the Diff's discount (and gae_lambda) are per
#     augmented step, K per environment step, where a Gaussian's (K = 1) are per environment
#     step: the matched Gaussian runs discount_mode "env" with the Diff's per-env-step values
#     discount^K and gae_lambda^K (`per_env_step_discount`; in "env" mode they are copied).
# Everything else is copied: budgets and schedule, replay, learning rates, tau, grad clip,
# critic and value networks, updates per step, the temperature (init, learning rate, learned
# or not) and the WPO / PPO settings (num_action_samples, natural_gradient, KL bound,
# entropy_coef, clip_eps, ...).
#
# The target entropy: target_entropy_multiplier m is copied as it is, so each policy's
# temperature aims at its own H_ref - m * A (transform.target_entropy), where H_ref is the
# policy's prior entropy: H(prior) = A * 0.5 * log(2 pi e sigma_p^2) for the Diff (2.52 nats
# per dimension at sigma_p = 3; a property of the policy, set by diffusion.prior_std), 0 for
# the Gaussian, whose estimate -E[log pi] has no prior term. So the same m is the same target
# in the authors' convention (spec 7: their Gaussian and Diff baselines share m, on estimates
# without H(prior)), and the matched Gaussian aims at H(prior) / A nats per dimension less
# than the Diff's bound. Matching the nats instead (m_Gauss = m - H(prior) / A) is not equal
# entropy either: the Diff's H_hat is a lower bound, of the pre-tanh latent (unless
# diffusion.squash_log_det), the Gaussian's exact, of the squashed action (at most log 2 per
# dimension), so for m < H(prior) / A + log 2 (e.g. 3.2 at sigma_p = 3, as the authors'
# DiffSAC m = 1) it asks the tanh-Gaussian for an entropy it cannot reach and its temperature
# grows without bound. A different choice for the Gaussian is a scoped setting
# (--set sac:target_entropy_multiplier=...), listed among the pair's differences.
PAIRINGS = ("matched", "presets")
DEFAULT_PAIRING = "matched"
POLICY_KIND_FIELDS = ("estimator", "entropy_chains")
DISCOUNT_FIELDS = ("discount_mode", "discount", "gae_lambda")
MATCHED_SUFFIX = ".matched"  # OUT/<env>/<gaussian>.matched: never a per-preset run's directory


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
    return [(d, g) for d, g in gaussian_pairs() if d in algos and g in algos]


def parse_pairing(spec: str) -> tuple[str, ...]:
    """The pairings to run for --pairing: "matched", "presets" or "both" (both, matched
    first). ValueError otherwise."""
    if spec == "both":
        return PAIRINGS
    if spec in PAIRINGS:
        return (spec,)
    raise ValueError(f"--pairing must be one of {', '.join(PAIRINGS)}, both; got {spec!r}")


def _partner(algo: str, algos: Sequence[str]) -> str | None:
    """The Diff algorithm a Gaussian algo is paired with among algos (None: algo is a Diff
    one or unpaired)."""
    return next((d for d, g in pairs_of(algos) if g == algo), None)


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
    matched_to: str | None = None  # the Diff whose settings a matched Gaussian runs


def run_dir(out: str | Path, task: Task, algo: str, matched: bool = False) -> Path:
    """OUT/<env>/<algo>, or for a matched Gaussian OUT/<env>/<algo>.matched."""
    return Path(out) / task.env / (algo + MATCHED_SUFFIX if matched else algo)


def run_dirs(out: str | Path, task: Task, algos: Sequence[str], pairing: str) -> dict[str, Path]:
    """Per algo the run directory of its run in `pairing`: a Gaussian paired among algos in
    "matched" its matched run's, every other algo (Diff ones, unpaired ones, every one in
    "presets") OUT/<env>/<algo>."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; allowed: {', '.join(PAIRINGS)}")
    return {a: run_dir(out, task, a, pairing == "matched" and _partner(a, algos) is not None)
            for a in algos}


def per_env_step_discount(config: Mapping[str, Any]) -> tuple[float, float | None] | None:
    """(discount, gae_lambda) per environment step of a config (`config_to_dict` view):
    in discount_mode "diffusion" the per-augmented-step values to the power K (the Diff's
    diffusion.num_steps, 1 for a Gaussian), else as they are; gae_lambda None for an
    off-policy config. None when the config lacks the fields."""
    try:
        mode, gamma = config["discount_mode"], float(config["discount"])
        is_diff = config["algo"] in {d for d, _ in gaussian_pairs()}
        k = int(config["diffusion"]["num_steps"]) if is_diff and mode == "diffusion" else 1
    except (KeyError, TypeError, ValueError):
        return None
    lam = config.get("gae_lambda")
    return gamma ** k, None if lam is None else float(lam) ** k


def policy_kind_fields(diff_config: Mapping[str, Any], base_config: Mapping[str, Any]) -> set[str]:
    """The top-level fields in which a Diff and a Gaussian config may differ because of the
    policy kind alone: POLICY_KIND_FIELDS, and DISCOUNT_FIELDS when the two discount (and
    trace decay) the same per environment step (`per_env_step_discount`, to 1e-12)."""
    fields: set[str] = set(POLICY_KIND_FIELDS)
    a, b = per_env_step_discount(diff_config), per_env_step_discount(base_config)
    if a is not None and b is not None and all(
            (x is None and y is None) or (x is not None and y is not None
                                          and math.isclose(x, y, rel_tol=1e-12))
            for x, y in zip(a, b, strict=True)):
        fields |= set(DISCOUNT_FIELDS)
    return fields


def matched_config(diff_config: Any, own_config: Any) -> Any:
    """The config a Gaussian runs when matched to its Diff partner (see PAIRINGS above):
    diff_config (the Diff's resolved config) with algo, the policy sub-configs (gaussian,
    diffusion) and POLICY_KIND_FIELDS from own_config (the Gaussian's own resolved config),
    and in discount_mode "diffusion" the per-env-step discount and gae_lambda in "env" mode.
    Validated (ConfigError)."""
    if type(diff_config) is not type(own_config):
        raise ValueError(f"cannot match {own_config.algo} to {diff_config.algo}: their configs "
                         f"are {type(own_config).__name__} and {type(diff_config).__name__}")
    kept = {"algo", "diffusion", "gaussian", *POLICY_KIND_FIELDS}
    values = {f.name: getattr(diff_config, f.name) for f in dataclasses.fields(diff_config)
              if f.name not in kept}
    if diff_config.discount_mode == "diffusion":
        discounts = per_env_step_discount(config_to_dict(diff_config))
        assert discounts is not None  # a complete config has every field it reads
        gamma, lam = discounts
        values.update(discount_mode="env", discount=gamma)
        if lam is not None:
            values["gae_lambda"] = lam
    return own_config.replace(**values).validate()


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


def _own_scoped_settings(settings: Sequence[str], algo: str) -> list[str]:
    """The "ALGO:field=value" settings of algo (scope removed), without the unscoped ones."""
    return _scoped_settings([s for s in settings if ":" in str(s).partition("=")[0]], algo)


def planned_budget(task: Task, steps_scale: float = 1.0) -> int:
    """The env steps per seed that every algorithm of task is asked to run:
    round(budget * steps_scale), at least 1."""
    return max(1, round(task.budget * steps_scale))


def plan_runs(tasks: Sequence[Task], algos: Sequence[str], out: str | Path,
              num_seeds: int | None = None, seed: int = 0, steps_scale: float = 1.0,
              settings: Sequence[str] = (), pairing: str = DEFAULT_PAIRING) -> list[RunPlan]:
    """Every (task, algo) run, its config resolved and validated (nothing compiles):
    total_env_steps = round(budget * steps_scale); with steps_scale < 1 the off-policy
    learning_starts is scaled too (unless --set), so a shortened run keeps its prefill
    share. settings: "field=value" for every run, "ALGO:field=value" for one algorithm;
    they apply after the task's own. pairing ("matched", "presets", "both"; `PAIRINGS`):
    which run(s) a Gaussian with its Diff partner among algos gets: "presets" its own
    preset and settings into OUT/<env>/<algo>, "matched" `matched_config` of its partner's
    config and its own, then its own scoped "ALGO:field=value" settings, into
    OUT/<env>/<algo>.matched (RunPlan.matched_to: the partner); Diff and unpaired algorithms
    run their own preset either way. ValueError (ConfigError), or ImportError for an
    environment whose simulator is not installed, naming the task and algorithm; ValueError
    too when the two algorithms of a pair would run different env steps (their schedules,
    `schedule_of`, e.g. after a scoped setting of one's num_envs or unroll_length)."""
    pairings = parse_pairing(pairing)
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
        total = planned_budget(task, steps_scale)
        own: dict[str, RunPlan] = {}
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
            own[algo] = RunPlan(task, algo, total, num_seeds or task.num_seeds, seed,
                                tuple(mine), config, run_dir(out, task, algo))
        task_plans = []
        for algo in algos:
            diff = _partner(algo, algos)
            if diff is None or "presets" in pairings:
                task_plans.append(own[algo])
            if diff is not None and "matched" in pairings:
                scoped = _own_scoped_settings(settings, algo)
                try:
                    config = matched_config(own[diff].config, own[algo].config)
                    config = apply_overrides(config, parse_overrides(scoped, config)).validate()
                except ValueError as err:
                    raise type(err)(f"task {task.name}, algo {algo} matched to {diff}: {err}") from err
                task_plans.append(dataclasses.replace(
                    own[algo], settings=own[diff].settings + tuple(scoped), config=config,
                    run_dir=run_dir(out, task, algo, matched=True), matched_to=diff))
        scheduled = {(p.algo, p.matched_to is not None): schedule_of(p.config)["total_env_steps"]
                     for p in task_plans}
        for diff, base in pairs_of(algos):
            for matched in (False, True):
                if (base, matched) not in scheduled:
                    continue
                if scheduled[diff, False] != scheduled[base, matched]:
                    what = f"{base} matched to {diff}" if matched else base
                    raise ValueError(
                        f"task {task.name}: unequal budgets: {diff} would run "
                        f"{scheduled[diff, False]:,d} env steps per seed and {what} "
                        f"{scheduled[base, matched]:,d} (their schedules of the {total:,d}-step "
                        f"budget differ); a pair must run the same env steps, so give settings "
                        f"that change the rollout (num_envs, unroll_length, learning_starts, "
                        f"num_evals) to both algorithms of the pair")
        plans += task_plans
    return plans


# ---- the state of a run directory ---------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _latest_record(directory: Path) -> tuple[str | None, dict[str, Any]]:
    """("summary", summary.json) or ("failure", failure.json), whichever of the two readable
    files was written last (modification time; failure.json on a tie: a failure is only
    ever recorded after the session that wrote the summary), or (None, {}). A resume that
    fails after an earlier interrupted session leaves both: the failure is the news."""
    found = []
    for kind, name in (("failure", FAILURE_FILE), ("summary", "summary.json")):
        path = directory / name
        data = _read_json(path)
        if data is not None:
            found.append((path.stat().st_mtime_ns, kind == "failure", kind, data))
    if not found:
        return None, {}
    _, _, kind, data = max(found, key=lambda f: f[:2])
    return kind, data


def dir_state(directory: Path) -> str:
    """"completed" / "diverged" (summary.json says so, and no failure.json came after it),
    "resumable" (a complete checkpoint), "failed" (failure.json), "leftover" (other files),
    or "none"."""
    kind, record = _latest_record(directory)
    if kind == "summary" and record.get("status") in FINISHED:
        return record["status"]
    if complete_checkpoint_steps(directory):
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
            assert summary is not None  # dir_state read it
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
    RUN/failure.json and returned as status "failed", never raised. "stop_requested": a
    Ctrl-C / SIGTERM came during the run, also one too late to stop it (its last interval):
    the reproduction stops after it."""
    record: dict[str, Any] = {"task": plan.task.name, "algo": plan.algo, "run_dir": str(plan.run_dir),
                              "matched_to": plan.matched_to}
    if state in FINISHED:
        return dict(record, status=state, skipped=True)
    now = dir_state(plan.run_dir)
    if now != state:  # e.g. another reproduction writing into the same OUT ran it meanwhile
        return dict(record, status="conflict", skipped=True,
                    message=f"{plan.run_dir} changed since planning ({state} -> {now}): left "
                            f"as it is; do not run two reproductions on one run directory")
    if state in ("failed", "leftover"):
        record["set_aside"] = str(_set_aside(plan.run_dir))
    settings, overrides = plan.settings, {}
    if plan.matched_to is not None:  # no preset and settings give this config: pass it whole
        settings = ()
        overrides = {f.name: getattr(plan.config, f.name) for f in dataclasses.fields(plan.config)
                     if f.name not in ("algo", "env", "backend", "total_env_steps")}
    try:
        summary = run_experiment(
            plan.algo, plan.task.env, plan.total_steps, plan.num_seeds, plan.seed, plan.run_dir,
            backend=plan.task.backend, progress=progress, preset=plan.task.preset,
            settings=settings, options=options, resume=state == "resumable", **overrides)
    except Exception as err:  # noqa: BLE001 - one broken run must not end the reproduction
        failure = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc(), "algo": plan.algo, "env": plan.task.env}
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        (plan.run_dir / FAILURE_FILE).write_text(json.dumps(failure, indent=2))
        return dict(record, status="failed", message=failure["error"])
    return dict(record, status=summary["status"], message=summary.get("message"), skipped=False,
                train_seconds=summary["train_seconds"], compile_seconds=summary["compile_seconds"],
                stop_requested=bool(summary.get("stop_requested", False)))


def run_plans(plans: Sequence[RunPlan], states: Mapping[Path, str], options: RunOptions,
              progress: str | bool = "bar", log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Executes the plans in order; stops early when a run was interrupted (Ctrl-C, SIGTERM;
    the last record's status "interrupted") or completed although a stop was requested during
    it (the last record's "stop_requested"), so --resume continues there."""
    records = []
    for i, plan in enumerate(plans):
        matched = f" (matched to {plan.matched_to})" if plan.matched_to else ""
        log(f"[{i + 1}/{len(plans)}] {plan.task.name} {plan.algo}{matched}: {plan.num_seeds} "
            f"seeds x {plan.total_steps:,d} env steps -> {plan.run_dir}")
        record = execute(plan, states.get(plan.run_dir, "none"), options, progress)
        records.append(record)
        log(f"[{i + 1}/{len(plans)}] {plan.task.name} {plan.algo}{matched}: {record['status']}"
            + (" (already finished, skipped)" if record.get("skipped") else "")
            + (f": {record['message']}" if record.get("message") else ""))
        if record["status"] == "interrupted":
            break
        if record.get("stop_requested") and i + 1 < len(plans):
            log(f"a stop was requested during {plan.task.name} {plan.algo} (too late to stop "
                f"that run, which finished): not starting the next run; continue with --resume")
            break
    return records


# ---- reading runs back ------------------------------------------------------------------------

def _nonfinite_returns(summary: Mapping[str, Any]) -> list[str]:
    """The returns of summary (stochastic and deterministic, final and along the curve)
    that hold NaN/inf (or nulls), by name."""
    curve = summary["eval_curve"]
    values = {
        "final_eval_return": summary["final_eval_return"],
        "final_eval_return_deterministic": summary["final_eval_return_deterministic"],
        "eval_curve return_per_seed": [p["return_per_seed"] for p in curve],
        "eval_curve return_deterministic_per_seed": [p["return_deterministic_per_seed"] for p in curve],
    }
    return [name for name, v in values.items() if not np.all(np.isfinite(np.asarray(v, float)))]


def load_run_result(directory: str | Path) -> dict[str, Any]:
    """What a run directory holds: {"status", "message", "summary" (or None), "usable"}.
    usable: completed with finite stochastic and deterministic returns (final and along the
    eval curve) for every seed. Status "missing" for an empty directory, "failed" when
    failure.json is the newest record (`_latest_record`: a failed resume after an earlier
    session's summary), "non-finite" for a completed run with NaN/inf returns, "no
    evaluations" for one without an eval curve."""
    directory = Path(directory)
    kind, record = _latest_record(directory)
    if kind is None:
        return {"status": "missing", "message": None, "summary": None, "usable": False}
    if kind == "failure":
        return {"status": "failed", "message": record.get("error"), "summary": None, "usable": False}
    summary = record
    status, message = summary.get("status", "unknown"), summary.get("message")
    usable = status == "completed"
    if usable and not summary["eval_curve"]:
        status, message, usable = "no evaluations", "the run has no eval curve", False
    elif usable:
        bad = _nonfinite_returns(summary)
        if bad:
            status, message, usable = "non-finite", f"non-finite evaluation returns: {', '.join(bad)}", False
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


def settings_differences(diff_config: Mapping[str, Any] | None, base_config: Mapping[str, Any] | None,
                         exclude: Sequence[str] = METHOD_FIELDS) -> list[dict[str, Any]] | None:
    """The config fields (nested ones dotted, e.g. "diffusion.num_steps") in which a Diff
    run's resolved config (summary.json "config") differs from its Gaussian's, as
    [{"field", "diff", "base", "policy_kind"}] sorted by field, leaving out the fields in
    `exclude` (top-level names; default `METHOD_FIELDS`, the ones that define the method).
    policy_kind: the field is one that the policy kind alone may make differ
    (`policy_kind_fields`: POLICY_KIND_FIELDS, or the discount fields where both discount
    the same per environment step); in a matched pair every difference is one. None when
    either config is unknown. A field only one config has shows "<missing>" on the other
    side."""
    if not isinstance(diff_config, Mapping) or not isinstance(base_config, Mapping):
        return None
    keep = lambda config: {k: v for k, v in config.items() if k not in exclude}
    kinds = policy_kind_fields(diff_config, base_config)
    out = []
    for line in config_differences(keep(diff_config), keep(base_config)):
        field = line.split(":", 1)[0]
        out.append({"field": field, "diff": _nested(diff_config, field),
                    "base": _nested(base_config, field),
                    "policy_kind": field.split(".", 1)[0] in kinds})
    return out


def _nested(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for name in dotted.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return "<missing>"
        value = value[name]
    return value


def _auc_grids(algos: Sequence[str], curves: Mapping[str, tuple[np.ndarray, ...]]
               ) -> dict[str, tuple[np.ndarray, str]]:
    """Per usable algorithm, the env steps its AUC is taken over and what they are: its
    pair's `common_grid` (both runs usable) or else its own evaluation steps. Nothing here
    depends on the runs of algorithms outside the pair."""
    grids: dict[str, tuple[np.ndarray, str]] = {}
    for diff, base in pairs_of(algos):
        if diff in curves and base in curves:
            grid = common_grid([curves[diff][0], curves[base][0]])
            grids[diff] = grids[base] = (grid, f"common grid of {diff} and {base}")
    for algo, (steps, *_) in curves.items():
        grids.setdefault(algo, (steps, "own evaluation steps"))
    return grids


def _task_budget(budget: int | None, runs: Mapping[str, Mapping[str, Any]]) -> tuple[int | None, str]:
    """(budget, where it comes from): the planned one, or else the env steps the runs were
    asked for (summary.json config.total_env_steps) when they agree."""
    if budget is not None:
        return budget, "planned: the task's budget x --steps-scale"
    asked = sorted({run["summary"]["config"]["total_env_steps"] for run in runs.values()
                    if run["summary"] is not None
                    and isinstance(run["summary"].get("config"), Mapping)
                    and "total_env_steps" in run["summary"]["config"]})
    if len(asked) == 1:
        return asked[0], "the runs' summary.json config.total_env_steps"
    if not asked:
        return None, "unknown: no run records its budget"
    return None, f"the runs disagree: config.total_env_steps {', '.join(map(str, asked))}"


def analyse_task(task: Task, algos: Sequence[str], runs: Mapping[str, Mapping[str, Any]],
                 resamples: int, confidence: float, seed: int,
                 budget: int | None = None) -> dict[str, Any]:
    """One task's results from its runs (`load_run_result` per algo): per algo the final
    return and the AUC per seed with IQM and interval over seeds (the AUC on its pair's
    grid, `_auc_grids`), the IQM curve with its pointwise band at the run's own eval steps;
    per pair the Diff - Gaussian differences on the pair's grid (unavailable when a run is
    not usable or the two ran different env steps), and the config fields in which the two
    runs differ besides the policy (`settings_differences`). budget: the planned env steps
    per seed (None: from the runs' summaries)."""
    budget, budget_source = _task_budget(budget, runs)
    result: dict[str, Any] = {
        "task": task.name, "env": task.env, "budget": budget, "budget_source": budget_source,
        "task_budget": task.budget, "preset": task.preset, "settings": list(task.settings),
        "score_range": list(task.score_range) if task.score_range else None,
        "algos": {}, "pairs": [],
    }
    usable = {a: runs[a]["summary"] for a in algos if runs[a]["usable"]}
    curves = {a: _curve(s) for a, s in usable.items()}
    grids = _auc_grids(algos, curves)
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
        if summary is not None and algo in curves:  # (a run in curves has a summary)
            steps, returns, det = curves[algo]
            grid, grid_of = grids[algo]
            on_grid = interpolate_curves(steps, returns, grid)  # [seeds, G]
            final = np.asarray(summary["final_eval_return"], dtype=np.float64)
            auc = np.atleast_1d(area_under_curve(grid, on_grid))
            rng = functools.partial(_rng, seed, task.name, algo)  # rng(metric)
            entry.update(
                eval_steps=steps.tolist(), eval_returns_per_seed=returns.tolist(),
                eval_returns_deterministic_per_seed=det.tolist(),
                auc_grid=grid.tolist(), auc_grid_of=grid_of,
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
        summaries = [runs[x]["summary"] for x in (diff, base)]
        configs = [s.get("config") if s is not None else None for s in summaries]
        pair: dict[str, Any] = {
            "diff": diff, "base": base,
            "settings_differ": settings_differences(configs[0], configs[1]),
        }
        if diff in curves and base in curves:
            a, b = result["algos"][diff], result["algos"][base]
            pair["grid"] = a["auc_grid"]
            if a["total_env_steps"] != b["total_env_steps"]:
                pair["unavailable"] = (f"unequal budgets: {a['total_env_steps']} vs "
                                       f"{b['total_env_steps']} env steps")
            else:
                for metric in ("final", "auc"):
                    pair[metric] = difference_ci([a[f"{metric}_per_seed"]], [b[f"{metric}_per_seed"]],
                                                 resamples, confidence,
                                                 _rng(seed, task.name, diff, base, metric))
        else:
            missing = [f"{x} {runs[x]['status']}" for x in (diff, base) if x not in curves]
            pair["unavailable"] = ", ".join(missing)
        result["pairs"].append(pair)
    return result


def _failed_analysis(task: Task, algos: Sequence[str], error: str, budget: int | None) -> dict[str, Any]:
    """A task whose analysis raised: every table cell of it says so."""
    status = "analysis failed"
    return {
        "task": task.name, "env": task.env, "budget": budget,
        "budget_source": "planned: the task's budget x --steps-scale" if budget is not None else "unknown",
        "task_budget": task.budget, "preset": task.preset, "settings": list(task.settings),
        "score_range": list(task.score_range) if task.score_range else None, "error": error,
        "algos": {a: {"status": status, "message": error, "usable": False} for a in algos},
        "pairs": [{"diff": d, "base": b, "settings_differ": None, "unavailable": status}
                  for d, b in pairs_of(algos)],
    }


def aggregate(tasks: Sequence[Task], algos: Sequence[str], task_results: Sequence[Mapping[str, Any]],
              resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """Across tasks, on normalised scores ((return - low) / (high - low) per task): per algo
    the pooled IQM of the final return and the AUC over all (task, seed) runs with its
    stratified bootstrap interval (strata: tasks), per pair the difference with a verdict.
    Tasks enter when they have a score range, every algorithm has usable runs on them (the
    same tasks for every algorithm) and every pair is comparable (equal budgets); the others
    are listed with the reason."""
    included, excluded = [], []
    for task, res in zip(tasks, task_results, strict=True):
        bad = [f"{a} {res['algos'][a]['status']}" for a in algos if not res["algos"][a]["usable"]]
        unequal = [f"{p['diff']} − {p['base']} {p['unavailable']}" for p in res["pairs"]
                   if "unavailable" in p]
        if "error" in res:
            excluded.append({"task": task.name, "reason": f"analysis failed: {res['error']}"})
        elif task.score_range is None:
            excluded.append({"task": task.name, "reason": "no score range"})
        elif bad:
            excluded.append({"task": task.name, "reason": ", ".join(bad)})
        elif unequal:
            excluded.append({"task": task.name, "reason": "; ".join(unequal)})
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
        pair: dict[str, Any] = {"diff": diff, "base": base}
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


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def results_of(tasks: Sequence[Task], algos: Sequence[str], out: str | Path, resamples: int = 2000,
               confidence: float = 0.95, bootstrap_seed: int = 0,
               budgets: Mapping[str, int] | None = None,
               pairing: str = DEFAULT_PAIRING) -> dict[str, Any]:
    """The analysis of one pairing's runs under out (read from their directories,
    `run_dirs`): per task (`analyse_task`) and across tasks (`aggregate`), as {"pairing",
    "tasks", "aggregate", "analysis_errors"}. budgets: the planned env steps per task name
    (None: each task's from its runs' summaries). The analysis of one task that raises (a
    broken run directory) does not stop the others: that task is marked "error" (every cell
    of it "analysis failed"), left out of the aggregate and listed, with the error, traceback
    and pairing, in "analysis_errors"."""
    _check_resamples(resamples)
    per_task, errors = [], []
    for task in tasks:
        budget = None if budgets is None else budgets.get(task.name)
        try:
            runs = {a: load_run_result(d) for a, d in run_dirs(out, task, algos, pairing).items()}
            per_task.append(analyse_task(task, algos, runs, resamples, confidence,
                                         bootstrap_seed, budget))
        except Exception as err:  # noqa: BLE001 - one broken task must not hide the others
            errors.append({"task": task.name, "pairing": pairing, "error": _error_text(err),
                           "traceback": traceback.format_exc()})
            per_task.append(_failed_analysis(task, algos, _error_text(err), budget))
    try:
        across = aggregate(tasks, algos, per_task, resamples, confidence, bootstrap_seed)
    except Exception as err:  # noqa: BLE001
        errors.append({"task": "(across tasks)", "pairing": pairing, "error": _error_text(err),
                       "traceback": traceback.format_exc()})
        across = {"tasks": [], "excluded": [], "normalisation": {}, "algos": {}, "pairs": [],
                  "error": _error_text(err)}
    return {"pairing": pairing, "tasks": per_task, "aggregate": across, "analysis_errors": errors}


def pairings_in(tasks: Sequence[Task], algos: Sequence[str], out: str | Path) -> list[str]:
    """The pairings (in `PAIRINGS` order) of which out holds a run: a Gaussian run
    directory of the pairing (`run_dirs`) that is not empty (`dir_state`)."""
    pairs = pairs_of(algos)
    return [p for p in PAIRINGS
            if any(dir_state(run_dirs(out, t, algos, p)[base]) != "none"
                   for t in tasks for _, base in pairs)]


def analyse(tasks: Sequence[Task], algos: Sequence[str], out: str | Path,
            pairings: Sequence[str] = (DEFAULT_PAIRING,), resamples: int = 2000,
            confidence: float = 0.95, bootstrap_seed: int = 0,
            budgets: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The results of the given pairings and of every other one whose runs are in out
    (`pairings_in`), in `PAIRINGS` order (matched first): the first's `results_of` at the
    top level (its "pairing", "tasks", "aggregate": the verdicts), the second's (without its
    errors) under "other_pairing" (None when there is none), "analysis_errors" of both.
    Without a pair among algos the pairings coincide: only the first given is analysed."""
    for p in pairings:
        if p not in PAIRINGS:
            raise ValueError(f"unknown pairing {p!r}; allowed: {', '.join(PAIRINGS)}")
    shown = [p for p in PAIRINGS if p in pairings or p in pairings_in(tasks, algos, out)]
    if not pairs_of(algos):
        shown = list(pairings[:1])
    tables = [results_of(tasks, algos, out, resamples, confidence, bootstrap_seed, budgets, p)
              for p in shown]
    results = dict(tables[0])
    results["analysis_errors"] = [e for t in tables for e in t["analysis_errors"]]
    results["other_pairing"] = ({k: tables[1][k] for k in ("pairing", "tasks", "aggregate")}
                                if len(tables) > 1 else None)
    return results


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """A reproduction planned and checked by `prepare` (nothing compiled or run yet), for
    `carry_out`."""

    tasks: tuple[Task, ...]
    algos: tuple[str, ...]
    out: Path
    plans: tuple[RunPlan, ...]
    states: Mapping[Path, str]
    run_options: RunOptions
    budgets: Mapping[str, int] | None  # None: aggregate-only (the runs' own budgets)
    options: Mapping[str, Any]  # the reproduction's options, as results.json records them
    pairings: tuple[str, ...] = (DEFAULT_PAIRING,)  # run (and always analysed), matched first


def prepare(tasks: Sequence[Task], algos: Sequence[str], out: str | Path, *,
            num_seeds: int | None = None, seed: int = 0, steps_scale: float = 1.0,
            settings: Sequence[str] = (), resume: bool = False, aggregate_only: bool = False,
            bootstrap_resamples: int = 2000, confidence: float = 0.95, bootstrap_seed: int = 0,
            options: RunOptions | None = None, pairing: str = DEFAULT_PAIRING) -> Reproduction:
    """Checks the options, plans every run (`plan_runs`, with `pairing`: "matched",
    "presets" or "both") and checks its directory (`check_run_dirs`); nothing compiles.
    ValueError / CheckpointError (ImportError for a simulator that is not installed): the
    reproduction's arguments are wrong. aggregate_only: no plans (the analysis reads
    whatever runs are in out: the pairing's, and any other pairing's found there)."""
    pairings = parse_pairing(pairing)
    if not tasks:
        raise ValueError("no tasks to run")
    if not algos:
        raise ValueError("no algorithms to run")
    _check_resamples(bootstrap_resamples)
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    run_options = (options or RunOptions(max_to_keep=1)).validate()
    plans, states, budgets = [], {}, None
    if not aggregate_only:
        plans = plan_runs(tasks, algos, out, num_seeds, seed, steps_scale, settings, pairing)
        states = check_run_dirs(plans, resume)
        budgets = {t.name: planned_budget(t, steps_scale) for t in tasks}
    record = {"tasks": [t.name for t in tasks], "algos": list(algos), "num_seeds": num_seeds,
              "seed": seed, "steps_scale": steps_scale, "settings": list(settings),
              "pairing": pairing, "resume": resume, "aggregate_only": aggregate_only,
              "bootstrap_resamples": bootstrap_resamples, "confidence": confidence,
              "bootstrap_seed": bootstrap_seed}
    return Reproduction(tuple(tasks), tuple(algos), Path(out), tuple(plans), states, run_options,
                        budgets, record, pairings)


def carry_out(prepared: Reproduction, *, progress: str | bool = "bar", command: str | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the missing runs of a `prepare`d reproduction and returns the results
    (`results_of`) with their provenance (command, versions, device, date, options) and the
    run records. A run that fails is recorded (failure.json), not raised, and an analysis
    error of a task is reported in "analysis_errors"; only KeyboardInterrupt (a second
    Ctrl-C) escapes. Writes nothing outside the run directories:
    `reproduction_report.write_results` does. "interrupted": True when a stop was requested
    (Ctrl-C, SIGTERM) before every run was done (the rest not run)."""
    tasks, algos, options = list(prepared.tasks), list(prepared.algos), prepared.options
    plans, records = list(prepared.plans), []
    if plans:
        records = run_plans(plans, prepared.states, prepared.run_options, progress, log)
    interrupted = bool(records) and (records[-1]["status"] == "interrupted"
                                     or len(records) < len(plans))
    results = analyse(tasks, algos, prepared.out, prepared.pairings, options["bootstrap_resamples"],
                      options["confidence"], options["bootstrap_seed"], prepared.budgets)
    device = jax.devices()[0]
    results.update(
        command=command, date=datetime.datetime.now().isoformat(timespec="seconds"),
        git_commit=_git_commit(), versions=library_versions(),
        device={"kind": device.device_kind, "platform": device.platform,
                "count": jax.device_count()},
        options=dict(options),
        task_definitions=[dataclasses.asdict(t) for t in tasks],
        plans=[{"task": p.task.name, "algo": p.algo, "total_env_steps_requested": p.total_steps,
                "total_env_steps_scheduled": schedule_of(p.config)["total_env_steps"],
                "num_seeds": p.num_seeds, "seed": p.seed, "settings": list(p.settings),
                "matched_to": p.matched_to, "run_dir": str(p.run_dir)} for p in plans],
        runs=records, interrupted=interrupted,
        definitions={
            "eval_mode": EVAL_MODE,
            "budget": "per task, the env steps per seed every algorithm was asked to run: the "
                      "task's budget x --steps-scale as planned, or in --aggregate-only mode "
                      "the runs' own (summary.json config.total_env_steps); the env steps "
                      "actually run (the trainers' schedules) are each run's total_env_steps",
            "final": "the return of each seed's last evaluation; IQM over seeds",
            "auc": "each seed's mean return over training: its eval curve linearly interpolated "
                   "onto its pair's common grid (the union of the Diff and the Gaussian run's "
                   "evaluation steps within the span both cover; an algorithm without a usable "
                   "partner: its own evaluation steps), trapezoid integral / span; IQM over "
                   "seeds. No AUC depends on which other algorithms ran",
            "iqm": "interquartile mean: 2 * integral over quantile levels [1/4, 3/4] of the "
                   "empirical quantile function (boundary runs weighted by their share: for 5 "
                   "runs 0, 0.3, 0.4, 0.3, 0, where rliable's trim_mean has 0, 1/3, 1/3, 1/3, 0)",
            "ci": f"{options['confidence']:.0%} percentile interval of "
                  f"{options['bootstrap_resamples']} bootstrap resamples of the runs, with "
                  f"replacement within each stratum (task; for differences, task x algorithm)",
            "difference": "IQM(Diff) - IQM(Gaussian), the two algorithms' runs resampled "
                          "independently, although both ran the same seeds (an unpaired "
                          "interval: conservative when paired outcomes correlate positively); "
                          "only for runs of equal env steps",
            "verdict": "Diff wins if the difference's interval lies above 0, loses if below, "
                       "ties otherwise",
            "pairing": "which Gaussian run a pair compares with its Diff run (the Diff run, "
                       "OUT/<env>/<diff>, is the same in both). matched: the Gaussian runs the "
                       "Diff's resolved config except the policy (its own gaussian sub-config), "
                       f"the policy-kind fields ({', '.join(POLICY_KIND_FIELDS)}: its own) and, "
                       "in discount_mode diffusion, the discount (and gae_lambda) as the same "
                       "values per env step in env mode; target_entropy_multiplier is copied, "
                       "each policy's target being its own prior entropy - m * A (0 for the "
                       "Gaussian); runs in OUT/<env>/<gaussian>.matched. presets: every "
                       "algorithm its own (algo, env) preset, in OUT/<env>/<algo>. The top-level "
                       "tables are the first pairing shown (matched when its runs are there: "
                       "the verdicts), other_pairing the second",
            "settings_differ": "per pair, the config fields (summary.json config) in which the "
                               "Diff run differs from the Gaussian run; not compared: "
                               f"{', '.join(METHOD_FIELDS)} (the algorithm and its policy). "
                               "policy_kind: a field the policy kind alone may make differ "
                               f"({', '.join(POLICY_KIND_FIELDS)}, and {', '.join(DISCOUNT_FIELDS)} "
                               "where both runs discount the same per env step); in a matched "
                               "pair every listed field is one",
            "aggregate": "pooled IQM over (task, seed) of normalised scores (return - low) / "
                         "(high - low), tasks with a score range where every algorithm has "
                         "usable runs and every pair equal budgets; strata: tasks",
            "usable": "a run counts when its summary.json status is completed and every "
                      "return (stochastic and deterministic) is finite; diverged, failed, "
                      "interrupted or missing runs are reported, not scored",
        },
    )
    return results


def reproduce(tasks: Sequence[Task], algos: Sequence[str], out: str | Path, *,
              num_seeds: int | None = None, seed: int = 0, steps_scale: float = 1.0,
              settings: Sequence[str] = (), resume: bool = False, aggregate_only: bool = False,
              bootstrap_resamples: int = 2000, confidence: float = 0.95,
              bootstrap_seed: int = 0, options: RunOptions | None = None,
              progress: str | bool = "bar", command: str | None = None,
              log: Callable[[str], None] = print, pairing: str = DEFAULT_PAIRING) -> dict[str, Any]:
    """`prepare` (ValueError / CheckpointError before anything compiles) and `carry_out`."""
    prepared = prepare(tasks, algos, out, num_seeds=num_seeds, seed=seed, steps_scale=steps_scale,
                       settings=settings, resume=resume, aggregate_only=aggregate_only,
                       bootstrap_resamples=bootstrap_resamples, confidence=confidence,
                       bootstrap_seed=bootstrap_seed, options=options, pairing=pairing)
    return carry_out(prepared, progress=progress, command=command, log=log)
