"""Hyperparameter sweeps: a grid of traced hyperparameter values x seeds as one vmapped program.

Every numeric hyperparameter of a trainer config (the fields not declared `static(...)`) is a
pytree leaf, so `jax.vmap(train)` over a config whose traced fields are arrays [M] trains M
members (grid points x seeds) in one compiled program. `run_sweep` does that in chunks sized
to the device's memory:

    members:  the Cartesian product grid values x seeds, in a fixed order: grid fields in the
              order given, each field's values in the order given, seeds innermost; member
              i = point * num_seeds + seed_index (`grid_members`).
    keys:     member with seed index j trains with jax.random.split(PRNGKey(seed),
              num_seeds)[j], the key of seed j of `experiments/train.py --seed SEED
              --num-seeds num_seeds`, so every grid point sees the same seeds.
    memory:   `estimate_member_bytes` compiles the vmapped program for 1 and 2 members and
              reads XLA's planned memory (`compiled.memory_analysis()`: argument + output
              + temp - alias bytes); the difference is one member's bytes, the rest fixed.
              `plan_chunks` fits as many members per chunk as fraction x the device's memory
              (`device_memory_bytes`: the allocator's bytes_limit, or the host's available RAM
              on CPU) allows, evened out over the chunks (`balance_chunks`); the compiled
              chunk program's own plan is checked against the budget too. These are XLA's
              static plans (extrapolated linearly for the estimate), not measurements.
    compiles: one program per chunk size: every chunk has the same size (the last one padded
              by repeating its last member; padded results are dropped), so the chunk
              program is compiled once (and not at all when the chunk size is one of the
              estimate's sizes, whose compiled programs are reused).

Outputs: OUT/members/<i>/summary.json (`experiment.build_summary` of that member, plus
"sweep_member"), OUT/sweep.json (grid, members, chunking plan, timings, per-grid-point
aggregates) and OUT/sweep.csv (the aggregate table).

    from diffrl_jax.sweep import run_sweep
    result = run_sweep("sac", "toy/bandit", ["actor_lr=1e-3,3e-4", "tau=0.005,0.05"],
                       num_seeds=4, seed=0, out="runs/sac_bandit_sweep")
"""

import csv
import dataclasses
import itertools
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffrl_jax.experiment import build_summary, config_to_dict, make_config
from diffrl_jax.training import schedule_of, train, trainer_for
from diffrl_jax.validation import ConfigError, require_writable_dir

__all__ = [
    "ChunkProgram",
    "IntervalPrinter",
    "SweepSpec",
    "aggregate_table",
    "balance_chunks",
    "batched_config",
    "device_memory_bytes",
    "estimate_member_bytes",
    "format_table",
    "grid_members",
    "member_config",
    "member_keys",
    "member_policy",
    "member_state",
    "parse_grid",
    "plan_chunks",
    "run_sweep",
    "traced_fields",
]

ESTIMATE_SIZES = (1, 2)


# ---- the grid ---------------------------------------------------------------------------

def traced_fields(config: Any) -> list[str]:
    """The names of config's traced (pytree-leaf, batchable) fields, in declaration order."""
    return [f.name for f in dataclasses.fields(config) if f.metadata.get("pytree_node", True)]


def _static_fields(config: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(config) if not f.metadata.get("pytree_node", True)]


def parse_grid(items: Sequence[str], config: Any) -> dict[str, list[float]]:
    """"FIELD=V1,V2,..." items -> {field: [values]} (fields and values in the order given).

    Only traced fields of config's dataclass can be swept: a static field (shapes, code
    paths: num_envs, hidden sizes, algo, ...) or an unknown one raises ValueError listing the
    traced fields; a value that is not a finite number raises ValueError naming the field;
    each value is checked by config.replace(field=value).validate(), so an out-of-range
    value raises the validator's ConfigError (prefixed with the grid item).
    """
    traced = traced_fields(config)
    static = _static_fields(config)
    owner = type(config).__name__
    grid: dict[str, list[float]] = {}
    for item in items:
        name, sep, raw_values = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"grid item {item!r} must look like FIELD=V1,V2,... "
                             f"(e.g. actor_lr=1e-3,3e-4); sweepable fields of {owner}: {traced}")
        if name in static:
            raise ValueError(f"{owner}.{name} is a static field (it fixes shapes or code paths "
                             f"and is compiled into the program), so it cannot be swept in one "
                             f"program; traced fields that can be swept: {traced}")
        if name not in traced:
            raise ValueError(f"unknown field {name!r} in grid item {item!r}; traced fields of "
                             f"{owner} that can be swept: {traced}")
        if name in grid:
            raise ValueError(f"grid field {name!r} is given twice; list all its values in one "
                             f"item: {name}=V1,V2,...")
        texts = [v.strip() for v in raw_values.split(",")]
        if not raw_values.strip() or any(not t for t in texts):
            raise ValueError(f"grid field {name!r} needs a comma-separated list of numbers, "
                             f"got {raw_values!r}")
        values: list[float] = []
        for text in texts:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"grid field {name!r}: {text!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"grid field {name!r}: values must be finite numbers, got {text!r}")
            try:
                config.replace(**{name: value}).validate()
            except ConfigError as err:
                raise ConfigError(f"grid {name}={text}: {err}") from None
            values.append(value)
        if len(set(values)) != len(values):
            raise ValueError(f"grid field {name!r} lists a value twice: {raw_values!r}")
        grid[name] = values
    return grid


def grid_members(grid: Mapping[str, Sequence[float]], num_seeds: int) -> list[dict[str, Any]]:
    """The Cartesian product of the grid's values x seeds, seeds innermost: member i has
    {"index": i, "point": i // num_seeds, "hyperparameters": {field: value}, "seed_index":
    i % num_seeds}. An empty grid gives num_seeds members of one point."""
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    names = list(grid)
    members = []
    for point, values in enumerate(itertools.product(*(grid[n] for n in names))):
        for seed_index in range(num_seeds):
            members.append({"index": len(members), "point": point,
                            "hyperparameters": {n: float(v) for n, v in zip(names, values, strict=True)},
                            "seed_index": seed_index})
    return members


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: the grid, the seeds, and the members they give."""

    grid: dict[str, list[float]]
    num_seeds: int
    seed: int = 0

    @classmethod
    def parse(cls, items: Sequence[str], config: Any, num_seeds: int, seed: int = 0) -> "SweepSpec":
        return cls(parse_grid(items, config), num_seeds, seed)

    @property
    def members(self) -> list[dict[str, Any]]:
        return grid_members(self.grid, self.num_seeds)

    @property
    def num_points(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    @property
    def num_members(self) -> int:
        return self.num_points * self.num_seeds

    def keys(self) -> jax.Array:
        """[num_members, 2] keys, member by member (see `member_keys`)."""
        return member_keys(self.seed, self.num_seeds, self.members)


def member_keys(seed: int, num_seeds: int, members: Sequence[dict[str, Any]]) -> jax.Array:
    """Member i's key is jax.random.split(PRNGKey(seed), num_seeds)[seed_index of i]: the key
    of that seed in `experiments/train.py --seed SEED --num-seeds num_seeds`."""
    seeds = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    return seeds[jnp.asarray([m["seed_index"] for m in members], jnp.int32)]


def member_config(config: Any, hyperparameters: dict[str, float]) -> Any:
    """config with the member's hyperparameters as plain floats, validated."""
    return config.replace(**{k: float(v) for k, v in hyperparameters.items()}).validate()


def batched_config(config: Any, members: Sequence[dict[str, Any]]) -> Any:
    """config with every traced field a float32 array [M]: the members' grid values where
    swept, config's value broadcast elsewhere (static fields unchanged)."""
    if not members:
        raise ValueError("batched_config needs at least one member")
    updates = {}
    for name in traced_fields(config):
        base = getattr(config, name)
        if np.ndim(base) != 0:
            raise ValueError(f"{type(config).__name__}.{name} is already batched "
                             f"(shape {np.shape(base)}); pass a plain config")
        values = [m["hyperparameters"].get(name, base) for m in members]
        updates[name] = jnp.asarray(np.asarray(values, np.float32))
    return config.replace(**updates)


# ---- memory and chunking ----------------------------------------------------------------

def _host_available_bytes() -> tuple[int, str]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host MemAvailable (/proc/meminfo)"
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available), "host available RAM (psutil)"


def _memory_budget(device: Any = None) -> tuple[int, str]:
    device = jax.devices()[0] if device is None else device
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without allocator statistics
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory_stats()['bytes_limit']"
    return _host_available_bytes()


def device_memory_bytes(device: Any = None) -> int:
    """The memory a sweep may plan with on `device` (default: the first device): the
    allocator's bytes_limit where the device reports one (GPU, TPU), else the host's
    available RAM (MemAvailable, or psutil's)."""
    return _memory_budget(device)[0]


def _footprint(compiled: Any) -> dict[str, Any]:
    """XLA's memory plan of a compiled program: argument + output + temp - alias bytes."""
    try:
        stats = compiled.memory_analysis()
    except Exception as err:  # noqa: BLE001 - e.g. NotImplementedError on some backends
        return {"available": False, "reason": f"memory_analysis() raised {err!r}"}
    if stats is None:
        return {"available": False, "reason": "memory_analysis() returned None"}
    out: dict[str, Any] = {"available": True}
    for name, attr in (("argument_bytes", "argument_size_in_bytes"),
                       ("output_bytes", "output_size_in_bytes"),
                       ("temp_bytes", "temp_size_in_bytes"),
                       ("alias_bytes", "alias_size_in_bytes")):
        value = getattr(stats, attr, None)
        out[name] = None if value is None else int(value)
    parts = [out["argument_bytes"], out["output_bytes"], out["temp_bytes"]]
    if any(p is None for p in parts):
        return {**out, "available": False, "reason": "the analysis lacks argument, output or temp sizes"}
    out["footprint_bytes"] = sum(parts) - (out["alias_bytes"] or 0)
    return out


class IntervalPrinter:
    """Collects the members' interval reports from a running chunk and prints one line per
    evaluation interval once all of the chunk's members have reported it (the returns and
    steps/s of its first `real_members` only, the rest being padding)."""

    def __init__(self, label: str, num_members: int, total_steps: int, enabled: bool = True,
                 real_members: int | None = None):
        self.label, self.num_members, self.total_steps = label, num_members, total_steps
        self.real_members = num_members if real_members is None else real_members
        self.enabled = enabled
        self.pending: dict[int, dict[int, float]] = {}
        self.lines: list[str] = []
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def record(self, member, env_steps, eval_return) -> None:
        steps = int(env_steps)
        reports = self.pending.setdefault(steps, {})
        reports[int(member)] = float(eval_return)
        if len(reports) < self.num_members:
            return
        del self.pending[steps]
        elapsed = time.perf_counter() - self.t0
        rate = steps * self.real_members / max(elapsed, 1e-9)
        returns = [reports[i] for i in range(self.real_members)]
        line = (f"[{self.label}] env steps {steps:>9,d}/{self.total_steps:,d}  {rate:11,.0f} "
                f"steps/s  eval return mean {np.mean(returns):9.3f}  min {np.min(returns):9.3f}  "
                f"max {np.max(returns):9.3f}  elapsed {elapsed:6.1f}s")
        self.lines.append(line)
        if self.enabled:
            print(line, flush=True)


class ChunkProgram:
    """jax.jit(jax.vmap(train)) over (keys [c], batched config [c]), compiled once per chunk
    size c and cached. progress: each member reports its evaluation intervals to
    `self.printer` (set it before running) via jax.debug.callback."""

    def __init__(self, config: Any, progress: bool = False):
        self.config = config
        self.progress = progress
        self.printer: IntervalPrinter | None = None
        self.compiled: dict[int, Any] = {}
        self.compile_seconds: dict[int, float] = {}

        def record(index, env_steps, eval_return):
            if self.printer is not None:
                self.printer.record(index, env_steps, eval_return)

        def one(key, cfg, index):
            def report(metrics):
                jax.debug.callback(record, index, metrics["env_steps"], metrics["eval_return"])

            return train(key, cfg, report if progress else None)

        def run(keys, cfg):
            return jax.vmap(one)(keys, cfg, jnp.arange(keys.shape[0]))

        self._jitted = jax.jit(run)

    def example_args(self, size: int) -> tuple[jax.Array, Any]:
        keys = jax.random.split(jax.random.PRNGKey(0), size)
        members = [{"hyperparameters": {}}] * size
        return keys, batched_config(self.config, members)

    def compile(self, size: int) -> Any:
        """The compiled program for chunks of `size` members (compiled on first use)."""
        if size not in self.compiled:
            t0 = time.perf_counter()
            self.compiled[size] = self._jitted.lower(*self.example_args(size)).compile()
            self.compile_seconds[size] = time.perf_counter() - t0
        return self.compiled[size]


def estimate_member_bytes(config: Any, sizes: Sequence[int] = ESTIMATE_SIZES,
                          program: ChunkProgram | None = None) -> dict[str, Any]:
    """XLA's planned bytes of the vmapped train program per member and fixed.

    Compiles the program for each of `sizes` members (two sizes a < b; one size a: a
    conservative per-member = footprint(a) / a, fixed = 0) and reads
    `compiled.memory_analysis()`; per_member_bytes = (F(b) - F(a)) / (b - a), fixed_bytes =
    F(a) - a * per_member (at least 0), F = argument + output + temp - alias bytes. If the
    difference is not positive, falls back to the conservative estimate. Returns
    {"available", "per_member_bytes", "fixed_bytes", "sizes", "analyses", "compile_seconds"}
    ("reason" when the backend gives no analysis). Pass `program` to reuse its compiles.
    """
    program = ChunkProgram(config) if program is None else program
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 1 or len(sizes) > 2:
        raise ValueError(f"sizes must be one or two positive member counts, got {sizes}")
    analyses = {}
    for size in sizes:
        analyses[size] = _footprint(program.compile(size))
    out: dict[str, Any] = {
        "sizes": sizes,
        "analyses": {str(s): a for s, a in analyses.items()},
        "compile_seconds": {str(s): program.compile_seconds[s] for s in sizes},
    }
    missing = [a for a in analyses.values() if not a["available"]]
    if missing:
        return {**out, "available": False, "reason": missing[0]["reason"],
                "per_member_bytes": None, "fixed_bytes": None}
    a = sizes[0]
    fa = analyses[a]["footprint_bytes"]
    per, fixed = math.ceil(fa / a), 0
    if len(sizes) == 2:
        b = sizes[1]
        diff = analyses[b]["footprint_bytes"] - fa
        if diff > 0:
            per = math.ceil(diff / (b - a))
            fixed = max(fa - a * per, 0)
    return {**out, "available": True, "per_member_bytes": int(per), "fixed_bytes": int(fixed)}


def plan_chunks(num_members: int, per_member: int, fixed: int, budget: int,
                fraction: float = 0.8) -> int:
    """Members per chunk: as many as fit in fraction * budget bytes, given fixed bytes plus
    per_member bytes per member, at most num_members. ValueError (naming the numbers) when
    not even one member fits."""
    if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1:
        raise ValueError(f"num_members must be a positive integer, got {num_members!r}")
    if not (0 < fraction <= 1):
        raise ValueError(f"memory fraction must lie in (0, 1], got {fraction!r}")
    if per_member < 0 or fixed < 0 or budget <= 0:
        raise ValueError(f"byte counts must be >= 0 and the budget > 0, got per_member="
                         f"{per_member}, fixed={fixed}, budget={budget}")
    usable = fraction * budget
    if fixed + per_member > usable:
        raise ValueError(
            f"not even one sweep member fits: it needs about {fixed + per_member:,} bytes "
            f"({fixed:,} fixed + {per_member:,} per member) but memory fraction {fraction} of "
            f"the {budget:,}-byte budget is {usable:,.0f} bytes; use a smaller configuration "
            f"(num_envs, batch_size, buffer_size, networks) or a larger memory fraction")
    if per_member == 0:
        return num_members
    return int(min(num_members, (usable - fixed) // per_member))


def balance_chunks(num_members: int, max_chunk: int) -> int:
    """The smallest chunk size that keeps the number of chunks of max_chunk members
    (ceil(num_members / max_chunk)): the same compiled runs, the least padding."""
    num_chunks = math.ceil(num_members / max_chunk)
    return math.ceil(num_members / num_chunks)


# ---- results ------------------------------------------------------------------------------

def member_state(batched_state: Any, i: int) -> Any:
    """Member i's slice of a batched training state (every leaf x[i])."""
    return jax.tree.map(lambda x: x[i], batched_state)


def member_policy(config: Any, batched_state: Any, i: int) -> tuple[Any, Any, Any]:
    """(policy, params, obs_stats) of member i: the policy object of config's trainer
    (`build(config)`; config may be the plain or the batched config, only static fields
    matter), member i's policy parameters and observation statistics. Act with
    policy.sample_chain(params, policy_obs(obs_stats, obs, config.normalize_obs), key)
    (`diffrl_jax.training.collection.policy_obs`; without normalize_obs the statistics are
    unused and obs go in raw)."""
    policy = trainer_for(config.algo).build(config)[1]
    state = member_state(batched_state, i)
    return policy, state.policy_params, state.obs_stats


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max())}


def aggregate_table(grid: Mapping[str, Sequence[float]], members: Sequence[dict[str, Any]],
                    final_returns: Sequence[float],
                    final_returns_deterministic: Sequence[float]) -> list[dict[str, Any]]:
    """One row per grid point: its hyperparameters, seeds, and mean / std (population,
    ddof=0) / min / max over its seeds of the final stochastic and deterministic eval
    returns (lists indexed by member)."""
    rows: dict[int, dict[str, Any]] = {}
    for m in members:
        row = rows.setdefault(m["point"], {"point": m["point"],
                                           "hyperparameters": dict(m["hyperparameters"]),
                                           "members": [], "returns": [], "det": []})
        row["members"].append(m["index"])
        row["returns"].append(final_returns[m["index"]])
        row["det"].append(final_returns_deterministic[m["index"]])
    table = []
    for point in sorted(rows):
        row = rows[point]
        table.append({"point": point, "hyperparameters": row["hyperparameters"],
                      "num_seeds": len(row["members"]), "members": row["members"],
                      "final_eval_return": _stats(row["returns"]),
                      "final_eval_return_deterministic": _stats(row["det"])})
    return table


def _table_columns(grid: Mapping[str, Sequence[float]], table: Sequence[dict[str, Any]]):
    header = ["point", *grid, "seeds"]
    for label in ("return", "det"):
        header += [f"{label}_mean", f"{label}_std", f"{label}_min", f"{label}_max"]
    rows = []
    for row in table:
        cells = [row["point"], *(row["hyperparameters"][n] for n in grid), row["num_seeds"]]
        for key in ("final_eval_return", "final_eval_return_deterministic"):
            s = row[key]
            cells += [s["mean"], s["std"], s["min"], s["max"]]
        rows.append(cells)
    return header, rows


def format_table(grid: Mapping[str, Sequence[float]], table: Sequence[dict[str, Any]]) -> str:
    """The aggregate table as aligned text (return: stochastic eval, det: deterministic)."""
    header, rows = _table_columns(grid, table)
    texts = [[c if isinstance(c, (int, str)) else f"{c:.6g}" for c in row] for row in rows]
    texts = [[str(c) for c in row] for row in texts]
    widths = [max(len(h), *(len(r[i]) for r in texts)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in texts]
    return "\n".join(lines)


def _write_csv(path: Path, grid: Mapping[str, Sequence[float]], table: Sequence[dict[str, Any]]) -> None:
    header, rows = _table_columns(grid, table)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ---- the sweep -----------------------------------------------------------------------------

def _log(enabled: bool, message: str) -> None:
    if enabled:
        print(message, flush=True)


def run_sweep(algo: str, env: str, grid_items: Sequence[str], num_seeds: int, seed: int,
              out: str | Path, backend: str = "mjx", total_steps: int | None = None,
              overrides: dict[str, Any] | None = None,
              max_members_per_chunk: int | None = None, memory_fraction: float = 0.8,
              progress: bool = True, print_table: bool = True, estimate_memory: bool = True,
              keep_state: bool = False, preset: str = "default",
              settings: Sequence[str] = ()) -> dict[str, Any]:
    """Trains every member (grid point x seed) of the sweep, one vmapped program per chunk.

    The config is `make_config(algo, env, backend, total_steps, preset, settings,
    **overrides)`; grid_items
    are "FIELD=V1,V2,..." over its traced fields (`parse_grid`). Chunk size: by default the
    members that fit in memory_fraction of `device_memory_bytes()` by
    `estimate_member_bytes` (`plan_chunks`; ValueError if not one fits), evened out over the
    chunks (`balance_chunks`), then checked against the compiled chunk program's own memory
    plan (shrunk and recompiled if that exceeds the budget). max_members_per_chunk, when
    given, is used as the chunk size (at most the member count) whatever the estimate says
    (a warning on stderr if the compiled program exceeds the budget);
    estimate_memory=False then skips the estimate's two compiles. Writes
    OUT/members/<i>/summary.json, OUT/sweep.json and OUT/sweep.csv (see the module
    docstring) and returns the sweep.json content; keep_state=True adds result["state"],
    the final training states of all members stacked on the host (NumPy arrays with a
    leading member axis; they include the replay buffers, so they can be large; see
    `member_state`, `member_policy`). progress: per-interval and per-chunk lines;
    print_table: print the aggregate table.
    """
    t_start = time.perf_counter()
    if not isinstance(memory_fraction, (int, float)) or not (0 < memory_fraction <= 1):
        raise ValueError(f"memory_fraction must lie in (0, 1], got {memory_fraction!r}")
    if max_members_per_chunk is not None and (
            isinstance(max_members_per_chunk, bool) or not isinstance(max_members_per_chunk, int)
            or max_members_per_chunk < 1):
        raise ValueError(f"max_members_per_chunk must be a positive integer, got "
                         f"{max_members_per_chunk!r}")
    if not estimate_memory and max_members_per_chunk is None:
        raise ValueError("without the memory estimate, max_members_per_chunk must be given")
    config = make_config(algo, env, backend, total_steps, preset=preset, settings=settings,
                         **(overrides or {}))
    spec = SweepSpec.parse(list(grid_items), config, num_seeds, seed)
    members = spec.members
    member_configs = [member_config(config, m["hyperparameters"]) for m in members]
    num_members = len(members)
    sched = schedule_of(config)
    keys = spec.keys()
    label = f"{algo} {env}"
    out = require_writable_dir("output directory", out)  # before anything compiles
    out.mkdir(parents=True, exist_ok=True)

    # ---- plan -------------------------------------------------------------------------
    program = ChunkProgram(config, progress=progress)
    device = jax.devices()[0]  # where jit runs the program
    budget, budget_source = _memory_budget(device)
    plan: dict[str, Any] = {"num_members": num_members, "memory_fraction": memory_fraction,
                            "budget_bytes": budget, "budget_source": budget_source,
                            "max_members_per_chunk": max_members_per_chunk,
                            "budget_device": str(device.device_kind),
                            "bytes_model": "XLA memory_analysis(): argument + output + temp - "
                                           "alias bytes, linear in the member count"}
    estimate: dict[str, Any] | None = None
    fits: int | None = None
    if estimate_memory:
        sizes = ESTIMATE_SIZES if num_members > 1 else ESTIMATE_SIZES[:1]
        _log(progress, f"[{label}] estimating memory: compiling the sweep program for "
                       f"{' and '.join(map(str, sizes))} member(s)")
        estimate = estimate_member_bytes(config, sizes, program)
        plan["estimate"] = estimate
        plan["per_member_bytes"] = estimate["per_member_bytes"]
        plan["fixed_bytes"] = estimate["fixed_bytes"]
        if estimate["available"]:
            try:
                fits = plan_chunks(num_members, estimate["per_member_bytes"],
                                   estimate["fixed_bytes"], budget, memory_fraction)
            except ValueError:
                if max_members_per_chunk is None:
                    raise
                fits = 0
    if max_members_per_chunk is not None:
        chunk = min(max_members_per_chunk, num_members)
        plan["chunk_size_source"] = "max_members_per_chunk"
    elif fits is not None:
        chunk = balance_chunks(num_members, fits)
        plan["chunk_size_source"] = "memory estimate (balanced over the chunks)"
    else:
        chunk = num_members
        plan["chunk_size_source"] = "all members (the backend gives no memory analysis: "
        plan["chunk_size_source"] += f"{estimate['reason'] if estimate else 'no estimate'})"
        print(f"warning: no memory estimate on this backend; running all {num_members} "
              f"members in one chunk", file=sys.stderr, flush=True)
    plan["max_members_fitting"] = fits

    # The chunk program's own plan checks the extrapolation: a planned chunk size whose
    # compiled footprint exceeds the budget is shrunk (and recompiled), at most 3 times.
    usable = memory_fraction * budget
    plan["replanned_from"] = []
    while True:
        reused = chunk in program.compiled
        compiled = program.compile(chunk)
        footprint = _footprint(compiled)
        actual = footprint.get("footprint_bytes") if footprint["available"] else None
        if (actual is None or actual <= usable or max_members_per_chunk is not None
                or chunk == 1 or len(plan["replanned_from"]) >= 3):
            break
        plan["replanned_from"].append({"chunk_size": chunk, "chunk_program_bytes": actual})
        _log(progress, f"[{label}] the program for {chunk} members plans {actual:,} bytes, "
                       f"over {memory_fraction} x {budget:,}; shrinking the chunks")
        chunk = balance_chunks(num_members, max(1, int(chunk * usable / actual)))
    num_chunks = math.ceil(num_members / chunk)
    plan.update(chunk_size=chunk, num_chunks=num_chunks,
                padded_members=num_chunks * chunk - num_members,
                estimated_chunk_bytes=(None if plan.get("per_member_bytes") is None else
                                       plan["fixed_bytes"] + chunk * plan["per_member_bytes"]),
                chunk_program_bytes=actual, chunk_program_memory=footprint)
    plan["fits_in_budget"] = None if actual is None else actual <= usable
    if max_members_per_chunk is not None and actual is not None and actual > usable:
        print(f"warning: the program for max_members_per_chunk={chunk} plans {actual:,} bytes, "
              f"more than {memory_fraction} x {budget:,} bytes", file=sys.stderr, flush=True)
    if progress:
        est = ""
        if plan.get("per_member_bytes") is not None:
            est = (f"; estimated {plan['per_member_bytes'] / 2**20:,.1f} MiB per member + "
                   f"{plan['fixed_bytes'] / 2**20:,.1f} MiB fixed, budget "
                   f"{memory_fraction} x {budget / 2**20:,.0f} MiB ({budget_source})")
        print(f"[{label}] {num_members} members ({spec.num_points} grid point(s) x "
              f"{num_seeds} seed(s)) in {num_chunks} chunk(s) of {chunk}{est}", flush=True)

    estimate_compile = sum(program.compile_seconds[s] for s in (estimate["sizes"] if estimate else []))
    compile_seconds = sum(program.compile_seconds.values())
    chunk_compile = compile_seconds - estimate_compile
    _log(progress, f"[{label}] chunk program for {chunk} member(s) "
                   f"{'reused from the estimate' if reused else f'compiled in {chunk_compile:.1f}s'}")

    # ---- run --------------------------------------------------------------------------
    train_seconds = 0.0
    chunk_seconds = []
    final_returns = [0.0] * num_members
    final_det = [0.0] * num_members
    states = []
    member_dir = out / "members"
    for c in range(num_chunks):
        idx = list(range(c * chunk, min((c + 1) * chunk, num_members)))
        padded = idx + [idx[-1]] * (chunk - len(idx))
        chunk_members = [members[i] for i in padded]
        cfg = batched_config(config, chunk_members)
        chunk_keys = keys[jnp.asarray(padded)]
        program.printer = IntervalPrinter(f"{label} chunk {c + 1}/{num_chunks}", chunk,
                                          sched["total_env_steps"], progress, len(idx))
        t0 = time.perf_counter()
        program.printer.start()
        state, metrics = jax.block_until_ready(compiled(chunk_keys, cfg))
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        chunk_seconds.append(seconds)
        metrics = jax.tree.map(np.asarray, metrics)
        if keep_state:
            n = len(idx)
            states.append(jax.tree.map(lambda x, n=n: np.asarray(x)[:n], state))
        del state
        for pos, i in enumerate(idx):
            m = members[i]
            one = jax.tree.map(lambda x, pos=pos: x[pos:pos + 1], metrics)
            summary = build_summary(member_configs[i], one, 1, sched, compile_seconds, seconds,
                                    time.perf_counter() - t_start)
            summary["sweep_member"] = {
                "index": i, "hyperparameters": m["hyperparameters"], "seed_index": m["seed_index"],
                "point": m["point"], "chunk": c, "chunk_size": chunk,
                "timing": "compile_seconds: the sweep's; train_seconds and "
                          "env_steps_per_second: the member's chunk, shared by chunk_size members",
            }
            final_returns[i] = summary["final_eval_return"][0]
            final_det[i] = summary["final_eval_return_deterministic"][0]
            path = member_dir / str(i)
            path.mkdir(parents=True, exist_ok=True)
            (path / "summary.json").write_text(json.dumps(summary, indent=2))
        _log(progress, f"[{label}] chunk {c + 1}/{num_chunks}: members {idx[0]}-{idx[-1]}"
                       f"{f' (+{chunk - len(idx)} padding)' if len(idx) < chunk else ''} "
                       f"trained in {seconds:.1f}s")
    program.printer = None

    # ---- aggregate and write ------------------------------------------------------------
    table = aggregate_table(spec.grid, members, final_returns, final_det)
    result: dict[str, Any] = {
        "algo": algo, "env": env, "backend": backend,
        "total_env_steps": sched["total_env_steps"],
        "num_seeds": num_seeds, "seed": seed,
        "seed_keys": f"member with seed_index j: jax.random.split(PRNGKey({seed}), {num_seeds})[j]",
        "grid": spec.grid,
        "num_points": spec.num_points,
        "num_members": num_members,
        "members": [{**m, "summary": str(Path("members") / str(m["index"]) / "summary.json"),
                     "final_eval_return": final_returns[m["index"]],
                     "final_eval_return_deterministic": final_det[m["index"]]} for m in members],
        "chunking": plan,
        "compile_seconds": compile_seconds,
        "compile_seconds_detail": {"estimate": estimate_compile, "chunk_program": chunk_compile,
                                   "chunk_program_reused": reused},
        "train_seconds": train_seconds,
        "chunk_train_seconds": chunk_seconds,
        "wall_seconds": time.perf_counter() - t_start,
        "env_steps_per_second": sched["total_env_steps"] * num_members / train_seconds,
        "aggregate": table,
        "aggregate_notes": "per grid point over its seeds: mean, std (population, ddof=0), "
                           "min, max of the final stochastic (final_eval_return) and "
                           "deterministic (final_eval_return_deterministic) eval returns",
        "jax_version": jax.__version__,
        "device": str(device.device_kind),
        "config": config_to_dict(config),
    }
    (out / "sweep.json").write_text(json.dumps(result, indent=2))
    _write_csv(out / "sweep.csv", spec.grid, table)
    if print_table:
        print(f"[{label}] final eval return over {num_seeds} seed(s) per grid point "
              f"(return: stochastic, det: deterministic):")
        print(format_table(spec.grid, table), flush=True)
    if keep_state:
        result["state"] = jax.tree.map(lambda *xs: np.concatenate(xs), *states)
    return result

