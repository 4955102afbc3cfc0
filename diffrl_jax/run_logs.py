"""Run logs: per-interval metric rows written to files (CSV, JSONL, TensorBoard, W&B) and a
progress display (a rich bar on a terminal, one line per interval otherwise).

A compiled run trains S seeds together; once per evaluation interval each seed's metrics reach
Python through `jax.debug.callback` as `IntervalReporter.record(seed_index, metrics)`, in any
seed order and possibly from another thread. The reporter groups the reports by "env_steps"
and, once every seed has reported an interval, hands one row per seed to every sink:

    {"interval": i, "env_steps": n, "seed": s, "eval_return": ..., "train_return": ..., ...}

Row keys: "interval", "env_steps", "seed" first, then the metric names sorted. Array metrics
(such as "eval_mode_counts") stay lists in JSONL and become `name_0`, `name_1`, ... columns in
CSV, TensorBoard and W&B. Intervals are numbered from `start_interval` (0 for a fresh run) in
env-steps order.

Files under the output folder (`make_sinks`): metrics.csv, metrics.jsonl, tensorboard/.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import numpy as np

__all__ = [
    "METRIC_FORMATS",
    "PROGRESS_MODES",
    "CsvSink",
    "IntervalReporter",
    "JsonlSink",
    "MetricSink",
    "TensorBoardSink",
    "WandbSink",
    "flatten_row",
    "make_sinks",
]

METRIC_FORMATS = ("csv", "jsonl", "tensorboard", "wandb")
PROGRESS_MODES = ("bar", "lines", "none")
INDEX_KEYS = ("interval", "env_steps", "seed")


@runtime_checkable
class MetricSink(Protocol):
    """Where finished intervals go: `write` gets one row per seed (dicts as described in the
    module docstring), in interval order; `close` flushes and releases the destination."""

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Row helpers


def _to_python(value: Any) -> Any:
    """numpy (or JAX) scalars -> int/float/bool; arrays -> (nested) lists of those."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return array.item()
    return array.tolist()


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    """Index keys first (those present), then metric names sorted."""
    out = {k: row[k] for k in INDEX_KEYS if k in row}
    for key in sorted(k for k in row if k not in INDEX_KEYS):
        out[key] = row[key]
    return out


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every list/array metric spread over `name_0`, `name_1`, ... (row-major for
    arrays of several dimensions), in the row's key order."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        value = _to_python(value)
        if isinstance(value, list):
            for i, item in enumerate(np.asarray(value).ravel().tolist()):
                out[f"{key}_{i}"] = item
        else:
            out[key] = value
    return out


def _scalar_metrics(rows: list[dict[str, Any]]) -> dict[int, dict[str, dict[int, float]]]:
    """{env_steps: {metric: {seed: value}}} over the flattened numeric metrics of `rows`."""
    grouped: dict[int, dict[str, dict[int, float]]] = {}
    for row in rows:
        flat = flatten_row(row)
        per_metric = grouped.setdefault(int(flat["env_steps"]), {})
        for key, value in flat.items():
            if key in INDEX_KEYS or isinstance(value, str) or value is None:
                continue
            per_metric.setdefault(key, {})[int(flat["seed"])] = float(value)
    return grouped


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


# ---------------------------------------------------------------------------------------------
# File sinks


def _drop_partial_last_line(path: Path) -> None:
    """A run killed in the middle of a write leaves a last line without its newline: cut it,
    so that appending starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
    with open(path, "r+b") as f:
        f.truncate(cut)


def _rewrite(path: Path, lines: list[str]) -> None:
    """Replace path's contents by `lines` (each with its newline) atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _AppendFileSink:
    """Shared by the CSV and JSONL sinks: append mode, flush per write, resume truncation."""

    def __init__(self, path: str | Path, resume_from_env_steps: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = None
        _drop_partial_last_line(self.path)
        if resume_from_env_steps is not None:
            self._truncate(int(resume_from_env_steps))
        self._open()

    def _open(self) -> None:
        self._file = open(self.path, "a", encoding="utf-8", newline="")

    def _truncate(self, env_steps: int) -> None:
        raise NotImplementedError

    def truncate_after(self, env_steps: int) -> None:
        """Drop the rows with env_steps > `env_steps` (a run resumed from the checkpoint taken
        at `env_steps` writes the later intervals again); later writes append after the rest."""
        if self._file is not None:
            self._file.close()
            self._file = None
        _drop_partial_last_line(self.path)
        self._truncate(int(env_steps))
        self._open()

    def _write_text(self, text: str) -> None:
        if self._file is None:
            raise ValueError(f"{type(self).__name__}({str(self.path)!r}) is closed")
        self._file.write(text)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlSink(_AppendFileSink):
    """One JSON object per line and row, appended and flushed at every write, so a crashed run
    keeps every finished interval. Array metrics stay lists; NaN and infinities are written as
    Python's json writes them (NaN, Infinity), which `json.loads` and pandas read back.

    `resume_from_env_steps=n` (or `truncate_after(n)`) first drops the lines with env_steps > n,
    so a run resumed from a checkpoint at n continues the file without duplicate intervals."""

    def _truncate(self, env_steps: int) -> None:
        if not self.path.exists():
            return
        kept = []
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    steps = int(json.loads(line)["env_steps"])
                except (ValueError, KeyError, TypeError):
                    warnings.warn(f"{self.path}:{number}: dropping a line that is not a metrics "
                                  f"row: {line[:80]!r}", stacklevel=3)
                    continue
                if steps <= env_steps:
                    kept.append(line)
        _rewrite(self.path, kept)

    def write(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(
            json.dumps({k: _to_python(v) for k, v in _ordered(row).items()}) + "\n"
            for row in rows)
        self._write_text(text)


class CsvSink(_AppendFileSink):
    """A CSV table, one line per row, appended and flushed at every write.

    Columns: interval, env_steps, seed, then the first row's metrics sorted by name (arrays
    spread over name_0, name_1, ...). When the file already has a header (a resumed run), that
    header is kept. Later rows are written against these columns: keys the header lacks are
    ignored (one warning names them), missing ones are left empty. `resume_from_env_steps` and
    `truncate_after` as in `JsonlSink`."""

    def __init__(self, path: str | Path, resume_from_env_steps: int | None = None):
        self.fieldnames: list[str] | None = None
        self._warned_extra: set[str] = set()
        super().__init__(path, resume_from_env_steps)

    def _read(self) -> tuple[list[str] | None, list[str]]:
        """(header, data lines) of the existing file."""
        if not self.path.exists():
            return None, []
        with open(self.path, encoding="utf-8", newline="") as f:
            lines = f.readlines()
        if not lines:
            return None, []
        return next(csv.reader([lines[0]])), lines[1:]

    def _open(self) -> None:
        header, _ = self._read()
        self.fieldnames = header
        super()._open()

    def _truncate(self, env_steps: int) -> None:
        header, data = self._read()
        if header is None:
            return
        column = header.index("env_steps") if "env_steps" in header else None
        kept = []
        for line in data:
            if not line.strip():
                continue
            cells = next(csv.reader([line]))
            try:
                steps = int(float(cells[column])) if column is not None else None
            except (IndexError, ValueError):
                steps = None
            if steps is None:
                warnings.warn(f"{self.path}: dropping a line without env_steps: {line[:80]!r}",
                              stacklevel=3)
            elif steps <= env_steps:
                kept.append(line)
        header_line = io.StringIO()
        csv.writer(header_line).writerow(header)
        _rewrite(self.path, [header_line.getvalue()] + kept)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        flat = [flatten_row(_ordered(row)) for row in rows]
        buffer = io.StringIO()
        if self.fieldnames is None:
            self.fieldnames = list(flat[0])
            csv.writer(buffer).writerow(self.fieldnames)
        extra = {k for row in flat for k in row} - set(self.fieldnames) - self._warned_extra
        if extra:
            self._warned_extra |= extra
            warnings.warn(f"{self.path}: metrics {sorted(extra)} are not columns of the CSV "
                          f"header (set by the first row); they are left out of the CSV",
                          stacklevel=2)
        writer = csv.DictWriter(buffer, self.fieldnames, restval="", extrasaction="ignore")
        writer.writerows(flat)
        self._write_text(buffer.getvalue())


class TensorBoardSink:
    """TensorBoard event files (tensorboardX) under `logdir`: for every numeric metric a scalar
    `<metric>/seed_<s>` per seed and `<metric>/mean` over the seeds, at global step env_steps.
    Flushed at every write. `resume_from_env_steps=n` makes TensorBoard discard the events of
    earlier files with step > n (tensorboardX's purge_step)."""

    def __init__(self, logdir: str | Path, resume_from_env_steps: int | None = None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise ImportError("TensorBoard logging needs `pip install tensorboardX`") from error
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        purge = None if resume_from_env_steps is None else int(resume_from_env_steps) + 1
        self.writer = SummaryWriter(logdir=str(self.logdir), purge_step=purge)
        self._closed = False

    def write(self, rows: list[dict[str, Any]]) -> None:
        for env_steps, metrics in sorted(_scalar_metrics(rows).items()):
            for name, per_seed in metrics.items():
                for seed, value in sorted(per_seed.items()):
                    self.writer.add_scalar(f"{name}/seed_{seed}", value, env_steps)
                self.writer.add_scalar(f"{name}/mean", _mean(per_seed.values()), env_steps)
        self.writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()


class WandbSink:
    """Weights & Biases: `wandb.init(project, name=run_name, config=config, **init_kwargs)`, then
    per interval one `log` call at step env_steps with `<metric>/mean` and `<metric>/seed_<s>`.
    wandb is imported only here (it is not a dependency); pass e.g. `id=..., resume="allow"`
    through init_kwargs to continue a W&B run."""

    def __init__(self, project: str, run_name: str | None = None,
                 config: dict[str, Any] | None = None, **init_kwargs: Any):
        try:
            import wandb  # pyright: ignore[reportMissingImports] - optional, not a dependency
        except ImportError as error:
            raise ImportError("W&B logging needs `pip install wandb` (the 'wandb' metrics "
                              "format is optional and wandb is not installed)") from error
        self.wandb = wandb
        self.run = wandb.init(project=project, name=run_name, config=dict(config or {}),
                              **init_kwargs)
        self._closed = False

    def write(self, rows: list[dict[str, Any]]) -> None:
        for env_steps, metrics in sorted(_scalar_metrics(rows).items()):
            payload: dict[str, float] = {}
            for name, per_seed in metrics.items():
                payload[f"{name}/mean"] = _mean(per_seed.values())
                for seed, value in sorted(per_seed.items()):
                    payload[f"{name}/seed_{seed}"] = value
            self.run.log(payload, step=env_steps)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.run.finish()


def make_sinks(out_dir: str | Path, formats: Sequence[str], *,
               resume_from_env_steps: int | None = None, wandb_project: str = "diffrl_jax",
               wandb_run_name: str | None = None, wandb_config: dict[str, Any] | None = None,
               **wandb_init_kwargs: Any) -> list[MetricSink]:
    """The sinks named in `formats` (from METRIC_FORMATS; repeats count once), writing to
    OUT/metrics.csv, OUT/metrics.jsonl, OUT/tensorboard/ and W&B (run name: OUT's folder
    name unless given). `resume_from_env_steps` is handed to every file sink."""
    if isinstance(formats, str):
        formats = [formats]
    unknown = [f for f in formats if f not in METRIC_FORMATS]
    if unknown:
        raise ValueError(f"unknown metrics format(s) {unknown}; allowed: "
                         f"{', '.join(METRIC_FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sinks: list[MetricSink] = []
    try:
        for name in dict.fromkeys(formats):
            if name == "csv":
                sinks.append(CsvSink(out / "metrics.csv", resume_from_env_steps))
            elif name == "jsonl":
                sinks.append(JsonlSink(out / "metrics.jsonl", resume_from_env_steps))
            elif name == "tensorboard":
                sinks.append(TensorBoardSink(out / "tensorboard", resume_from_env_steps))
            else:
                sinks.append(WandbSink(wandb_project, wandb_run_name or out.resolve().name,
                                       wandb_config, **wandb_init_kwargs))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


# ---------------------------------------------------------------------------------------------
# Progress


def format_duration(seconds: float) -> str:
    """42.0s, 3m05s, 1h02m."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _compact(value: float) -> str:
    """950, 12.3k, 4.56M."""
    if not math.isfinite(value):
        return "?"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class IntervalReporter:
    """Collects the per-seed interval reports of a running program, writes each finished
    interval (all seeds reported) to the sinks in env-steps order and shows progress.

    progress: "bar" -- a rich progress bar when `stream` is a terminal (interval lines are
    printed above it, so the history stays on screen), else as "lines";
    "lines" -- one line per interval; "none" -- nothing printed. Whatever the mode, the text of
    every interval line (and of `compile_report`) is kept in `lines`.

    Rates and ETA count only the env steps run since `start()` (call it after compilation) and
    beyond `start_env_steps` (where a resumed run begins): "env steps/s" sums all seeds, "/seed"
    is one seed's rate, ETA = remaining steps of one seed / per-seed rate. The eval return shown
    is the stochastic one ("eval_return"), the mean over seeds and, for 2 to
    `max_listed_seeds` seeds, each seed's ("seeds: a, b").

    `record` may be called from any thread (a lock guards the state, the sinks and the display).
    An interval that completes while an earlier one is still waiting for some seed is held back
    until that one completes (or `close()` runs), so sinks always see env-steps order."""

    def __init__(self, num_seeds: int, total_env_steps: int, label: str = "",
                 sinks: Sequence[MetricSink] = (), progress: str = "lines",
                 start_env_steps: int = 0, stream: TextIO | None = None,
                 start_interval: int = 0, max_listed_seeds: int = 8):
        if not isinstance(num_seeds, (int, np.integer)) or num_seeds < 1:
            raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
        if progress not in PROGRESS_MODES:
            raise ValueError(f"unknown progress mode {progress!r}; allowed: "
                             f"{', '.join(PROGRESS_MODES)}")
        self.num_seeds = int(num_seeds)
        self.total_env_steps = int(total_env_steps)
        self.label = label
        self.sinks = list(sinks)
        self.start_env_steps = int(start_env_steps)
        self.stream = sys.stdout if stream is None else stream
        self.next_interval = int(start_interval)
        self.max_listed_seeds = max_listed_seeds
        if progress == "bar" and not _is_terminal(self.stream):
            progress = "lines"
        self.mode = progress
        self.lines: list[str] = []
        self.pending: dict[int, dict[int, dict[str, Any]]] = {}  # env_steps -> seed -> metrics
        self.done_env_steps = self.start_env_steps
        self.intervals_written = 0
        self._written_steps: set[int] = set()
        self._lock = threading.RLock()
        self._bar: Any = None
        self._task: Any = None
        self._closed = False
        self.t0 = time.perf_counter()
        if self.mode == "bar":
            self._make_bar()

    # -- display ---------------------------------------------------------------------------

    @property
    def _prefix(self) -> str:
        return f"[{self.label}] " if self.label else ""

    def _make_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.stream, force_terminal=True)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} env steps/seed"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[ret]}"),
            TextColumn("elapsed"), TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console, auto_refresh=True, transient=False)
        self._task = self._bar.add_task(
            self.label or "training", total=max(self.total_env_steps, 1),
            completed=self.start_env_steps, start=False, rate="compiling", ret="", eta="?")

    def _emit(self, line: str) -> None:
        """Record `line` and print it the way the mode prints."""
        self.lines.append(line)
        if self.mode == "lines":
            print(line, file=self.stream, flush=True)
        elif self.mode == "bar":
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def start(self) -> None:
        """Reset the clock (call once compilation is done, so rates exclude it)."""
        with self._lock:
            self.t0 = time.perf_counter()
            if self._bar is not None:
                self._bar.start()
                self._bar.reset(self._task, start=True, completed=self.start_env_steps,
                                rate="", ret="", eta="?")

    def compile_report(self, seconds: float, detail: str = "") -> None:
        """Prints `[label] compiled in X s[; detail]` through the progress channel."""
        with self._lock:
            line = f"{self._prefix}compiled in {seconds:.1f} s" + (f"; {detail}" if detail else "")
            self._emit(line)

    # -- reports ---------------------------------------------------------------------------

    def record(self, seed_index: Any, metrics: dict[str, Any]) -> None:
        """One seed's metrics of one interval (a dict with "env_steps"; numpy values)."""
        seed = int(np.asarray(seed_index))
        if not 0 <= seed < self.num_seeds:
            raise ValueError(f"seed_index {seed} out of range for {self.num_seeds} seed(s)")
        if "env_steps" not in metrics:
            raise ValueError(f"metrics need 'env_steps'; got keys {sorted(metrics)}")
        values = {k: _to_python(v) for k, v in metrics.items()}
        steps = int(values.pop("env_steps"))
        with self._lock:
            if self._closed:
                warnings.warn("IntervalReporter.record after close(); report dropped",
                              stacklevel=2)
                return
            if steps in self._written_steps:
                warnings.warn(f"seed {seed} reported env_steps {steps} after that interval was "
                              f"written; report dropped", stacklevel=2)
                return
            self.pending.setdefault(steps, {})[seed] = values
            self._flush_ready(final=False)

    def _flush_ready(self, final: bool) -> None:
        """Write the complete intervals that no incomplete earlier interval holds back (with
        final=True: every complete interval)."""
        for steps in sorted(self.pending):
            seeds = self.pending[steps]
            if len(seeds) < self.num_seeds:
                if final:
                    continue
                break
            del self.pending[steps]
            self._write_interval(steps, seeds)

    def _write_interval(self, steps: int, seeds: dict[int, dict[str, Any]]) -> None:
        interval = self.next_interval
        self.next_interval += 1
        self._written_steps.add(steps)
        rows = [{"interval": interval, "env_steps": steps, "seed": s, **seeds[s]}
                for s in range(self.num_seeds)]
        for sink in self.sinks:
            sink.write(rows)
        self.intervals_written += 1
        self.done_env_steps = max(self.done_env_steps, steps)
        returns = [float(seeds[s]["eval_return"]) for s in range(self.num_seeds)
                   if "eval_return" in seeds[s]]
        self._show(steps, returns)

    def _show(self, steps: int, returns: list[float]) -> None:
        elapsed = time.perf_counter() - self.t0
        run = max(steps - self.start_env_steps, 0)
        per_seed = run / elapsed if elapsed > 0 else math.nan
        total_rate = per_seed * self.num_seeds
        remaining = max(self.total_env_steps - steps, 0)
        eta = remaining / per_seed if per_seed > 0 else (0.0 if remaining == 0 else math.inf)
        rate_text = (f"{total_rate:,.0f} env steps/s ({self.num_seeds} seeds; "
                     f"{per_seed:,.0f}/s per seed)")
        if returns:
            ret_text = f"eval return (stochastic) mean {np.mean(returns):.2f}"
            if 1 < len(returns) <= self.max_listed_seeds:
                ret_text += " (seeds: " + ", ".join(f"{r:.1f}" for r in returns) + ")"
        else:
            ret_text = "eval return n/a"
        line = (f"{self._prefix}env steps {steps:,d}/{self.total_env_steps:,d}  {rate_text}  "
                f"{ret_text}  elapsed {format_duration(elapsed)}  ETA {format_duration(eta)}")
        self._emit(line)
        if self._bar is not None:
            if not self._bar.live.is_started:
                self._bar.start()
                self._bar.start_task(self._task)
            bar_ret = f"eval return {np.mean(returns):.1f}" if returns else ""
            bar_rate = (f"{_compact(total_rate)} env steps/s all seeds "
                        f"({_compact(per_seed)}/s per seed)")
            self._bar.update(self._task, completed=steps, rate=bar_rate, ret=bar_ret,
                             eta=format_duration(eta))

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Write the complete intervals still held back, stop the bar, close the sinks (all of
        them, then re-raise the first error). Reports of intervals some seed never finished are
        dropped with a warning. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            errors: list[BaseException] = []
            try:
                self._flush_ready(final=True)
            except Exception as error:  # noqa: BLE001 -- still stop the bar and close sinks
                errors.append(error)
            if self.pending:
                warnings.warn(
                    f"{len(self.pending)} interval(s) not reported by every seed were not "
                    f"written (env_steps {sorted(self.pending)})", stacklevel=2)
            if self._bar is not None:
                self._bar.stop()
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as error:  # noqa: BLE001
                    errors.append(error)
            if errors:
                raise errors[0]

    def __enter__(self) -> IntervalReporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
