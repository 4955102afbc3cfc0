"""Compiling a run's programs where the user can see it and stop it.

XLA compiles in C++ and may not return to Python for minutes, so a Ctrl-C would wait for it.
`compile_programs` lowers and compiles in a worker thread while the main thread waits in a
short timeout loop: it prints what is being compiled at once, says whether JAX's persistent
compilation cache holds the program as soon as JAX has looked (from JAX's compiler log records,
confirmed by its monitoring events at the end), ticks the elapsed seconds on a terminal, and on
SIGINT / SIGTERM prints one line, flushes and leaves with `os._exit(130)` within a fraction of
a second (a run's directory holds nothing half-written while it compiles: see
`experiment._train`).

A program that contains a host callback (`jax.debug.callback`, `jax.debug.print`) is never
written to the persistent cache by JAX, so the programs compiled here must have none.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TextIO

import jax

__all__ = ["INTERRUPTED_EXIT_STATUS", "CacheWatch", "CompileReport", "add_exit_hook",
           "cache_directory", "compile_programs"]

INTERRUPTED_EXIT_STATUS = 130

# JAX's monitoring events of the persistent compilation cache (jax/_src/compiler.py and
# compilation_cache.py): a lookup, a hit (the executable was loaded), a write (a miss whose
# executable was compiled and stored).
LOOKUP_EVENT = "/jax/compilation_cache/compile_requests_use_cache"
HIT_EVENT = "/jax/compilation_cache/cache_hits"
WRITE_EVENT = "/jax/compilation_cache/cache_misses"
# The compiler's log records that name a lookup's outcome as soon as it is known (the miss
# before XLA starts compiling); logged at DEBUG unless JAX's explain/log flags raise them.
COMPILER_LOGGER = "jax._src.compiler"
MISS_RECORD = "PERSISTENT COMPILATION CACHE MISS"
HIT_RECORD = "Persistent compilation cache hit"

_exit_hooks: list[Callable[[], None]] = []


def add_exit_hook(hook: Callable[[], None]) -> None:
    """`hook()` runs (errors ignored) before an interrupted compilation's `os._exit`, which
    skips atexit handlers: e.g. draining a stderr filter (`diffrl_jax.cli`)."""
    if hook not in _exit_hooks:
        _exit_hooks.append(hook)


def cache_directory() -> str | None:
    """The persistent compilation cache's directory, None when the cache is off."""
    # JAX adds its options to `jax.config` as attributes at run time (unknown to a type
    # checker); `jax.config.read` refuses options that have a context manager, as these do.
    config: Any = jax.config
    if not config.jax_enable_compilation_cache:
        return None
    return config.jax_compilation_cache_dir or None


class CacheWatch:
    """The persistent-cache outcome of each program compiled by one thread while `program`
    names it: "hit" (loaded from the cache), "miss" (compiled), None (no lookup: the cache is
    off). `written` holds the programs whose compiled executable JAX stored. `on_outcome(name,
    outcome)` is called (in the compiling thread) when a lookup's outcome is first known."""

    _lock = threading.Lock()
    _active: ClassVar[dict[int, CacheWatch]] = {}
    _installed = False
    _saved_level: int | None = None
    _logger_level: int = logging.NOTSET

    def __init__(self, on_outcome: Callable[[str, str], None] | None = None):
        self.thread: int | None = None
        self.program: str | None = None
        self.outcomes: dict[str, str | None] = {}
        self.written: set[str] = set()
        self.backend_seconds = 0.0  # in `lowered.compile()`: XLA compiling or cache loading
        self.on_outcome = on_outcome
        self._announced: set[tuple[str, str]] = set()

    # -- routing of JAX's events and log records to the watch of the thread that compiles ---

    @classmethod
    def _install(cls) -> None:
        if not cls._installed:
            jax.monitoring.register_event_listener(cls._event)
            logging.getLogger(COMPILER_LOGGER).addFilter(cls._record)
            cls._installed = True

    @classmethod
    def _event(cls, event: str, **kwargs: Any) -> None:
        watch = cls._active.get(threading.get_ident())
        if watch is None or watch.program is None:
            return
        if event == LOOKUP_EVENT:
            watch.outcomes.setdefault(watch.program, "miss")  # until a hit says otherwise
        elif event == HIT_EVENT:
            watch._set(watch.program, "hit")
        elif event == WRITE_EVENT:
            watch.written.add(watch.program)

    @classmethod
    def _record(cls, record: logging.LogRecord) -> bool:
        """A filter on JAX's compiler logger: notes the lookup outcomes; passes a record on
        only at the level the logger had before the watch lowered it to DEBUG."""
        watch = cls._active.get(threading.get_ident())
        if watch is not None and watch.program is not None and isinstance(record.msg, str):
            if record.msg.startswith(MISS_RECORD):
                watch._set(watch.program, "miss")
            elif record.msg.startswith(HIT_RECORD):
                watch._set(watch.program, "hit")
        return cls._saved_level is None or record.levelno >= cls._saved_level

    def _set(self, program: str, outcome: str) -> None:
        """Records `outcome` of `program` (the one being compiled: `self.program`)."""
        self.outcomes[program] = outcome
        if (program, outcome) not in self._announced:
            self._announced.add((program, outcome))
            if self.on_outcome is not None:
                self.on_outcome(program, outcome)

    def __enter__(self) -> CacheWatch:
        cls = type(self)
        with cls._lock:
            cls._install()
            if not cls._active:  # the compiler's DEBUG records name each lookup's outcome
                logger = logging.getLogger(COMPILER_LOGGER)
                cls._saved_level = logger.getEffectiveLevel()
                cls._logger_level = logger.level
                logger.setLevel(logging.DEBUG)
            self.thread = threading.get_ident()
            cls._active[self.thread] = self
        return self

    def __exit__(self, *exc: Any) -> None:
        cls = type(self)
        with cls._lock:
            if self.thread is not None:  # None only when __enter__ did not run
                cls._active.pop(self.thread, None)
            if not cls._active:
                logging.getLogger(COMPILER_LOGGER).setLevel(cls._logger_level)
                cls._saved_level = None

    def compile(self, name: str, lowered: Any) -> Any:
        """`lowered.compile()`, its lookup outcome recorded under `name` and its wall time
        added to `backend_seconds`."""
        self.program = name
        t0 = time.perf_counter()
        try:
            return lowered.compile()
        finally:
            self.backend_seconds += time.perf_counter() - t0
            self.program = None


@dataclasses.dataclass
class CompileReport:
    """seconds: wall time of lowering and compiling (or loading) all programs; outcomes:
    program name -> "hit" / "miss" / None (cache off); written: programs JAX stored;
    backend_seconds: the part of `seconds` spent in XLA (compiling, or loading from the
    cache), the rest being tracing and lowering, which the cache cannot save."""

    seconds: float
    outcomes: dict[str, str | None]
    written: set[str]
    cache_dir: str | None
    backend_seconds: float = 0.0

    def timing(self) -> str:
        """E.g. "tracing 3.1 s, XLA 15.5 s" (XLA: compiling, or loading from the cache)."""
        return (f"tracing {max(self.seconds - self.backend_seconds, 0.0):.1f} s, "
                f"XLA {self.backend_seconds:.1f} s")

    def cache_summary(self) -> str:
        """E.g. "persistent cache hit", "persistent cache miss (written)",
        "persistent cache: init miss, interval hit", "persistent cache off"."""
        if self.cache_dir is None or not self.outcomes:
            return "persistent cache off"
        values = set(self.outcomes.values())
        if values == {"hit"}:
            return "persistent cache hit"
        if values == {"miss"}:
            stored = ("written" if self.written == set(self.outcomes) else
                      "not written" if not self.written else
                      f"{', '.join(sorted(self.written))} written")
            return f"persistent cache miss ({stored})"
        parts = [f"{name} {outcome or 'not looked up'}" for name, outcome in self.outcomes.items()]
        return f"persistent cache: {', '.join(parts)}"


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def compile_programs(programs: Sequence[tuple[str, Callable[[], Any]]], label: str, what: str,
                     *, show: bool = True, stream: TextIO | None = None,
                     interrupt_hint: str = "", poll_seconds: float = 0.2,
                     tick_seconds: float = 1.0) -> tuple[list[Any], CompileReport]:
    """Compiles `programs` ((name, lower) pairs; `lower()` returns a `jax.stages.Lowered`) in
    order in a worker thread: (compiled executables, report).

    With `show`, prints to `stream` (default stdout) at once "[label] compiling {what};
    persistent compilation cache: DIR|off", then per program one line when JAX has looked it
    up in the cache ("persistent compilation cache hit: loaded NAME" / "... miss: compiling
    NAME"), and on a terminal a line that ticks the elapsed seconds every `tick_seconds`.
    Called in the main thread, SIGINT and SIGTERM end the process within `poll_seconds`:
    "[label] SIGINT while compiling: stopped{interrupt_hint}" on stderr, flushed, the exit
    hooks run, `os._exit(130)`. Errors of lowering or compiling are raised here."""
    out: TextIO = sys.stdout if stream is None else stream
    prefix = f"[{label}] " if label else ""
    tty = show and _is_terminal(out)
    cache_dir = cache_directory()
    lines: list[str] = []  # lines for the main thread to print (the worker only queues them)
    lines_lock = threading.Lock()

    def queue(line: str) -> None:
        with lines_lock:
            lines.append(line)

    def on_outcome(name: str, outcome: str) -> None:
        queue(f"{prefix}persistent compilation cache {outcome}: "
              + (f"loaded the {name} program" if outcome == "hit" else
                 f"compiling the {name} program (it can take minutes; Ctrl-C stops)"))

    # (with no cache folder JAX still looks up and misses: nothing worth a line)
    watch = CacheWatch(on_outcome if show and cache_dir else None)
    results: list[Any] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def work() -> None:
        try:
            with watch:
                for name, lower in programs:
                    results.append(watch.compile(name, lower()))
        except BaseException as error:  # noqa: BLE001 -- re-raised in the calling thread
            failure.append(error)
        finally:
            finished.set()

    if show:
        print(f"{prefix}compiling {what}; persistent compilation cache: {cache_dir or 'off'}",
              file=out, flush=True)
    t0 = time.perf_counter()
    signals: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        def handle(signum, frame):
            signals.append(signum)
        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(target=work, name="diffrl_jax-compile", daemon=True)
    ticking = False
    try:
        worker.start()
        next_tick = t0 + tick_seconds
        while True:
            finished.wait(poll_seconds)
            with lines_lock:
                pending, lines[:] = list(lines), []
            if pending:
                if ticking:
                    out.write("\r\x1b[K")
                for line in pending:
                    print(line, file=out)
                out.flush()
                ticking = False
            if signals:
                _exit_interrupted(signals[0], prefix, interrupt_hint, out, ticking)
            if finished.is_set():
                break
            now = time.perf_counter()
            if tty and now >= next_tick:
                out.write(f"\r\x1b[K{prefix}compiling: {now - t0:.0f} s")
                out.flush()
                ticking = True
                next_tick = now + tick_seconds
    finally:
        if ticking:
            out.write("\r\x1b[K")
            out.flush()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if failure:
        raise failure[0]
    report = CompileReport(time.perf_counter() - t0, dict(watch.outcomes), set(watch.written),
                           cache_dir, watch.backend_seconds)
    for name, _ in programs:
        report.outcomes.setdefault(name, None)
    return results, report


def _exit_interrupted(signum: int, prefix: str, hint: str, stream: TextIO,
                      ticking: bool) -> None:
    if ticking:
        stream.write("\r\x1b[K")
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
    print(f"{prefix}{signal.Signals(signum).name} while compiling: stopped{hint}",
          file=sys.stderr, flush=True)
    for hook in list(_exit_hooks):
        try:
            hook()
        except Exception:  # noqa: BLE001 -- leaving anyway
            pass
    os._exit(INTERRUPTED_EXIT_STATUS)
