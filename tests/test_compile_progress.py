"""Compilation that says what it does and can be stopped (issue 20.4): the lines printed while
compiling, the elapsed time on a terminal, and SIGINT / SIGTERM while XLA compiles a real
training program (experiments/train.py in a subprocess: exit status 130 within seconds, and a
run directory that a later run resumes or reuses)."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from diffrl_jax import compile_progress, experiment
from diffrl_jax.compile_progress import CompileReport, compile_programs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--algo", "ppo", "--env", "toy/bandit", "--num-seeds", "2", "--set",
        "total_env_steps=1024", "--progress", "lines"]


class _Slow:
    """Stands in for a `jax.stages.Lowered` whose compile takes `seconds`."""

    def __init__(self, seconds, result="compiled", error=None):
        self.seconds, self.result, self.error = seconds, result, error

    def compile(self):
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return self.result


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_sees_the_elapsed_seconds_tick_a_pipe_one_line(monkeypatch):
    monkeypatch.setattr(compile_progress, "cache_directory", lambda: None)
    programs = [("initial state", lambda: _Slow(0.2, "init")), ("interval", lambda: _Slow(1.4))]
    terminal = _Terminal()
    results, report = compile_programs(programs, "ppo toy/bandit", "the programs", stream=terminal,
                                       tick_seconds=0.5, poll_seconds=0.05)
    assert results == ["init", "compiled"] and 1.5 < report.seconds < 5
    # the time inside `compile()` (1.6 s of sleeps) is XLA's part; lowering here is instant
    assert 1.55 < report.backend_seconds <= report.seconds < report.backend_seconds + 0.5
    assert report.timing().startswith("tracing 0.") and "XLA 1." in report.timing()
    text = terminal.getvalue()
    assert text.startswith("[ppo toy/bandit] compiling the programs; persistent compilation "
                           "cache: off\n")
    ticks = [part for part in text.split("\r\x1b[K") if part.startswith("[ppo toy/bandit] compiling: ")]
    assert len(ticks) >= 2 and ticks[0] == "[ppo toy/bandit] compiling: 1 s", text
    assert text.endswith("\r\x1b[K")  # the ticking line is cleared for the "compiled in" line
    assert report.cache_summary() == "persistent cache off"

    pipe = io.StringIO()
    compile_programs(programs, "ppo toy/bandit", "the programs", stream=pipe, tick_seconds=0.5)
    assert pipe.getvalue() == ("[ppo toy/bandit] compiling the programs; persistent compilation "
                               "cache: off\n")
    quiet = _Terminal()
    compile_programs(programs, "x", "y", stream=quiet, show=False, tick_seconds=0.1)
    assert quiet.getvalue() == ""


def test_an_error_while_compiling_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="no such op"):
        compile_programs([("interval", lambda: _Slow(0.0, error=ValueError("no such op")))],
                         "x", "y", show=False)
    with pytest.raises(KeyError):
        compile_programs([("interval", lambda: {}["lowering fails"])], "x", "y", show=False)


def test_the_cache_summary_by_hand():
    def summary(outcomes, written=(), cache_dir="/c"):
        return CompileReport(1.0, outcomes, set(written), cache_dir).cache_summary()
    assert summary({"initial state": "hit", "interval": "hit"}) == "persistent cache hit"
    assert summary({"interval": "miss"}, ["interval"]) == "persistent cache miss (written)"
    assert summary({"interval": "miss"}) == "persistent cache miss (not written)"
    assert (summary({"initial state": "miss", "interval": "miss"}, ["interval"])
            == "persistent cache miss (interval written)")
    assert (summary({"initial state": "miss", "interval": "hit"})
            == "persistent cache: initial state miss, interval hit")
    assert summary({"interval": "miss"}, cache_dir=None) == "persistent cache off"


# ---- signals while XLA compiles a real program ------------------------------------------------

def _start(tmp_path, *argv):
    # XLA's full optimisations (conftest turns most off for subprocesses): the signal
    # must arrive while a compile is still running
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_DISABLE_MOST_OPTIMIZATIONS="0")
    return subprocess.Popen([sys.executable, str(ROOT / "experiments" / "train.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)


def _wait_for(proc, text, timeout=120.0):
    """The stdout lines up to the first that contains `text` (read in a thread: a deadline)."""
    lines, found = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if text in line:
                found.set()
                return
    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), (lines, proc.poll())
    return lines


def _interrupt(proc, signum):
    """Sends `signum`; (exit status, seconds until the exit, stderr)."""
    t = time.perf_counter()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, time.perf_counter() - t, err


def test_sigint_while_compiling_exits_130_at_once_and_the_run_resumes(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = _start(tmp_path, *TINY, "--compile-cache", str(cache), "--out", str(run))
    lines = _wait_for(proc, "persistent compilation cache miss: compiling the initial state")
    assert lines[0].startswith("[ppo toy/bandit] compiling the initial state and interval "
                               "programs (2 seed(s) on a 1 x 1 seed x data mesh); persistent "
                               "compilation cache: "), lines
    time.sleep(1.0)  # inside XLA's C++ compilation (about 3 s for this program on 2 cores)
    code, seconds, err = _interrupt(proc, signal.SIGINT)
    assert code == 130 and seconds < 20, (code, seconds, err)
    assert (f"[ppo toy/bandit] SIGINT while compiling: stopped; {run} holds no results yet: "
            f"--resume {run} starts its saved config afresh") in err, err
    assert "Traceback" not in err
    # the directory is resumable: its saved config is started afresh and runs to the end
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), "--resume",
                           str(run), "--compile-cache", str(cache), "--progress", "lines"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "starting that run afresh from its saved config" in done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["intervals_done"] == 4


def test_sigterm_while_compiling_exits_130_and_leaves_a_reusable_directory(tmp_path):
    run = tmp_path / "run"
    proc = _start(tmp_path, *TINY, "--no-compile-cache", "--seed", "5", "--out", str(run))
    lines = _wait_for(proc, "compiling the initial state and interval programs")
    assert "persistent compilation cache: off" in lines[-1]
    time.sleep(2.0)  # tracing, then XLA
    code, seconds, err = _interrupt(proc, signal.SIGTERM)
    assert code == 130 and seconds < 20, (code, seconds, err)
    assert "SIGTERM while compiling: stopped" in err
    # what a later run sees (checked here without compiling again): nothing recorded, the
    # saved config readable, so --resume starts it afresh and the same --out is reused
    assert experiment._recorded(run) == []
    saved = experiment._saved_run(run, None)
    assert (saved["algo"], saved["num_seeds"], saved["seed"]) == ("ppo", 2, 5)
    assert experiment._refuse_existing_run(run, main=False) is True
