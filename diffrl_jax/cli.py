"""What the command-line scripts in experiments/ share besides the library: the third-party
warnings they silence (each by its exact text and issuing module, nothing broader) and the
lines of XLA's C++ log that `filter_xla_noise` keeps off their stderr (each by its exact
text)."""

import atexit
import os
import subprocess
import sys
import warnings

__all__ = ["KNOWN_WARNINGS", "XLA_NOISE", "filter_known_warnings", "filter_xla_noise",
           "restore_stderr"]

# (message regex, category, issuing module regex): warnings that say nothing about the run.
KNOWN_WARNINGS = (
    # brax.io.mjcf.load, on every brax environment built: brax's pipelines are unmaintained
    # (ours run on its MJX pipeline by default; README says which backends are used)
    (r"Brax System, piplines and environments are not actively being maintained",
     UserWarning, r"brax\.io\.mjcf"),
)


def filter_known_warnings() -> None:
    """Silences KNOWN_WARNINGS (call at import in a command-line script)."""
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


# Lines (regexes over one line of XLA's C++ log on fd 2) that say nothing to the user. Every
# program loaded from the persistent compilation cache on a CPU logs, as errors, that the
# compiling CPU's tuning pseudo-features +prefer-no-gather and +prefer-no-scatter are "not
# supported on the host machine" (XLA cannot detect them on any host; a real instruction-set
# mismatch names another feature and is still shown, and the cache keeps one folder per CPU
# type: `experiment.enable_compilation_cache`), and warns that it assumes the executable's
# version is compatible (JAX's cache key includes the jaxlib version).
XLA_NOISE = (
    r"^E\d{4} \S+\s+\d+ cpu_aot_loader\.cc:\d+\] Loading XLA:CPU AOT result\. Target machine "
    r"feature \+prefer-no-(?:gather|scatter) is not\s+supported on the host machine\.",
    r"^W\d{4} \S+\s+\d+ pjrt_executable\.cc:\d+\] Assume version compatibility\. PjRt-IFRT does "
    r"not track XLA executable versions\.\s*$",
)

# The filter process: copies its stdin to its stdout (the original stderr) as it arrives,
# without the lines that match a pattern given as an argument; a line's start is held back
# only while it may still become one of those (an "E" or "W" and a log prefix so far).
# It ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group) and ends when every
# writer has closed the pipe, after passing on what it holds.
_FILTER_PROGRAM = r"""
import os, re, signal, sys
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
drop = [re.compile(p.encode()) for p in sys.argv[1:]]
may_drop = re.compile(rb"[EW](\d{1,4}( .*)?)?$", re.S)
def out(data):
    while data:
        data = data[os.write(1, data):]
held, midline = b"", False
while True:
    try:
        chunk = os.read(0, 65536)
    except InterruptedError:
        continue
    if not chunk:
        break
    *lines, tail = (held + chunk).split(b"\n")
    held, kept = b"", []
    for line in lines:
        if midline or not any(d.search(line) for d in drop):
            kept.append(line + b"\n")
        midline = False
    if tail:
        if not midline and may_drop.match(tail) and len(tail) < 8192:
            held = tail
        else:
            kept.append(tail)
            midline = True
    out(b"".join(kept))
out(held)
"""

_filter: "tuple[subprocess.Popen, int] | None" = None


def filter_xla_noise(patterns: "tuple[str, ...]" = XLA_NOISE) -> bool:
    """Routes this process's fd 2 (C++ logs and Python's stderr alike) through a small filter
    process that drops the lines matching `patterns` (default XLA_NOISE) and passes everything
    else on at once; True if installed (once per process; not when DIFFRL_JAX_RAW_STDERR is
    set). Call it in a script's `__main__`; `restore_stderr` (run at exit, and before an
    interrupted compilation's os._exit) puts fd 2 back and waits for the filter to pass on
    the rest. A separate process, not a thread, so that a crash of this one loses no line."""
    global _filter
    if _filter is not None or os.environ.get("DIFFRL_JAX_RAW_STDERR"):
        return False
    try:
        sys.stderr.flush()
        original = os.dup(2)
        proc = subprocess.Popen([sys.executable, "-S", "-c", _FILTER_PROGRAM, *patterns],
                                stdin=subprocess.PIPE, stdout=original)
        stdin = proc.stdin
        assert stdin is not None  # stdin=PIPE
        os.dup2(stdin.fileno(), 2)
        stdin.close()  # fd 2 is now this process's only end of the pipe
    except (OSError, ValueError):
        return False
    _filter = (proc, original)
    atexit.register(restore_stderr)
    from diffrl_jax.compile_progress import add_exit_hook
    add_exit_hook(restore_stderr)
    return True


def restore_stderr(timeout: float = 2.0) -> None:
    """Undoes `filter_xla_noise`: fd 2 is the original stderr again, and the filter process,
    its pipe closed, has passed on what it held (waited for up to `timeout` seconds)."""
    global _filter
    if _filter is None:
        return
    proc, original = _filter
    _filter = None
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(original, 2)
    os.close(original)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
