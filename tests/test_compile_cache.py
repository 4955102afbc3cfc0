"""The persistent compilation cache (issue 20.5): a resume and an identical rerun load the
training programs instead of compiling them (measured: the reported compile time of a second
run against the first's, in one test with a fresh cache folder), and XLA's loading noise stays
off stderr while every other line, a crash's included, gets through."""

import os
import re
import subprocess
import sys
from pathlib import Path

from diffrl_jax import experiment
from diffrl_jax.cli import XLA_NOISE

ROOT = Path(__file__).resolve().parents[1]
# DiffPPO's denoising chain makes XLA's compilation long (about 15 s on 2 shared cores). The
# cache saves XLA's part only: tracing and lowering (3-5 s on loaded cores) are paid by every
# run, so the checks compare XLA's part (loading against compiling), and the total loosely.
SMALL = ["--algo", "diffppo", "--env", "toy/bandit", "--num-seeds", "1", "--set",
         "total_env_steps=2048", "--progress", "lines", "--no-plots"]
COMPILED = re.compile(
    r"compiled in ([\d.]+) s; (persistent cache [^;]*?) \(tracing [\d.]+ s, XLA ([\d.]+) s\);")

NOISE = [
    "E1206 02:07:28.836198    7560 cpu_aot_loader.cc:220] Loading XLA:CPU AOT result. Target "
    "machine feature +prefer-no-gather is not  supported on the host machine. Machine type used "
    "for XLA:CPU compilation doesn't match the machine type for execution. Compile machine "
    "features: [+64bit,+avx2]. Host machine features: [+64bit,+avx2]. could lead to SIGILL",
    "E1206 02:07:28.836244    7560 cpu_aot_loader.cc:220] Loading XLA:CPU AOT result. Target "
    "machine feature +prefer-no-scatter is not  supported on the host machine. Machine type",
    "W1206 02:07:28.760053    7505 pjrt_executable.cc:642] Assume version compatibility. PjRt-IFRT "
    "does not track XLA executable versions.",
]
KEPT = [
    # a real instruction-set mismatch is still shown
    "E1206 02:07:28.836244    7560 cpu_aot_loader.cc:220] Loading XLA:CPU AOT result. Target "
    "machine feature +avx512f is not  supported on the host machine. could lead to SIGILL",
    "E1206 02:07:29.000000    7560 pjrt_client.cc:12] a real error",
    "W1206 02:07:29.000001    7505 pjrt_executable.cc:642] Assume version compatibility of X",
    "Traceback (most recent call last):",
]


def _train(tmp_path, *argv):
    # XLA's full optimisations (conftest turns most off for subprocesses): compiling is then
    # what the cache saves in a real run
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="0")
    run = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), *argv],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    found = COMPILED.findall(run.stdout)
    assert len(found) == 1, run.stdout
    total, said, xla = found[0]
    return (float(total), float(xla)), said, run


def _saved_most_of_the_time(cached, fresh):
    """(total, XLA) seconds of a run that loaded its programs against the first run's: XLA's
    part (loading) is a small fraction of compiling, and the whole well under the first's."""
    (total, xla), (fresh_total, fresh_xla) = cached, fresh
    assert fresh_xla > 0.5 * fresh_total, fresh  # XLA's compiling dominated the first run
    assert xla < 0.15 * fresh_xla and total < 0.6 * fresh_total, (cached, fresh)


def test_a_resume_and_an_identical_rerun_load_the_programs_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first_run, other_run = tmp_path / "run", tmp_path / "rerun"
    fresh, said, first = _train(tmp_path, *SMALL, "--compile-cache", str(cache),
                                "--stop-after-steps", "1024", "--out", str(first_run))
    assert said == "persistent cache miss (written)", first.stdout
    assert ("persistent compilation cache miss: compiling the interval program (it can take "
            "minutes; Ctrl-C stops)") in first.stdout
    folder = cache / experiment.host_cpu_tag()  # one folder per CPU type
    assert {"jit_init", "jit_run"} <= {p.name.split("-")[0] for p in folder.iterdir()}

    resumed, said, second = _train(tmp_path, "--resume", str(first_run), "--compile-cache",
                                   str(cache))
    assert said == "persistent cache hit", second.stdout
    assert "persistent compilation cache hit: loaded the interval program" in second.stdout
    _saved_most_of_the_time(resumed, fresh)

    rerun, said, third = _train(tmp_path, *SMALL, "--compile-cache", str(cache),
                                "--stop-after-steps", "1024", "--out", str(other_run))
    assert said == "persistent cache hit", third.stdout
    _saved_most_of_the_time(rerun, fresh)
    for run in (second, third):  # loaded from the cache, without XLA's loader noise
        assert "cpu_aot_loader" not in run.stderr and "Assume version" not in run.stderr


def test_the_stderr_filter_drops_only_the_noise_and_loses_nothing_in_a_crash():
    lines = [NOISE[0], KEPT[0], NOISE[1], KEPT[1], NOISE[2], KEPT[2], KEPT[3]]
    program = f"""
import os, sys
from diffrl_jax.cli import filter_xla_noise
assert filter_xla_noise()
for line in {lines!r}:
    os.write(2, (line + "\\n").encode())
print("python's stderr", file=sys.stderr, flush=True)
os.write(2, b"E1206 a partial")  # a line's start that may be noise: held until more comes
os.write(2, b" line, then a crash")
os._exit(7)  # no atexit: the filter process still passes everything on
"""
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 7
    assert run.stderr == "\n".join([*KEPT, "python's stderr", "E1206 a partial line, then a crash"])
    assert [bool(re.search(p, NOISE[i])) for i, p in ((0, XLA_NOISE[0]), (1, XLA_NOISE[0]),
                                                      (2, XLA_NOISE[1]))] == [True] * 3
