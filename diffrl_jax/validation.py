"""Small helpers for validating configuration fields with errors that name the field."""

import difflib
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and what is allowed."""


def require_positive(owner: str, name: str, value: Any) -> None:
    """Raises ConfigError unless value is a finite number > 0."""
    if not _is_number(value) or not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{owner}.{name} must be a finite number > 0, got {value!r}")


def require_int_at_least(owner: str, name: str, value: Any, minimum: int) -> None:
    """Raises ConfigError unless value is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


def require_in_range(
    owner: str, name: str, value: Any, low: float, high: float, *, closed: bool = False
) -> None:
    """Raises ConfigError unless low < value < high (low <= value <= high if closed)."""
    ok = _is_number(value) and (low <= value <= high if closed else low < value < high)
    if not ok:
        bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise ConfigError(f"{owner}.{name} must lie in {bounds}, got {value!r}")


def require_choice(owner: str, name: str, value: Any, allowed: Iterable[str]) -> None:
    """Raises ConfigError unless value is one of allowed."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{owner}.{name} must be one of {allowed}, got {value!r}")


def require_bool(owner: str, name: str, value: Any) -> None:
    """Raises ConfigError unless value is a bool."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be a bool, got {value!r}")


def require_layer_sizes(owner: str, name: str, value: Any) -> None:
    """Raises ConfigError unless value is a non-empty tuple of positive ints."""
    ok = (
        isinstance(value, tuple)
        and len(value) > 0
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise ConfigError(
            f"{owner}.{name} must be a non-empty tuple of positive integers, got {value!r}"
        )


def closest_name(name: str, allowed: Iterable[str]) -> str | None:
    """The allowed name that `name` most likely meant: one that differs only in case, else
    the closest by `difflib.get_close_matches`; None when nothing is close. For "did you mean"
    hints (config fields, environment names)."""
    allowed = list(allowed)
    same_case = [a for a in allowed if a.lower() == name.lower()]
    if same_case:
        return same_case[0]
    close = difflib.get_close_matches(name, allowed, n=1)
    return close[0] if close else None


def require_writable_dir(what: str, path: str | Path) -> Path:
    """Raises ConfigError (one line naming `what` and path) unless path is a directory this
    process can create files in, or one that can be created (its nearest existing ancestor
    is a directory it can write into). Checked by creating and removing a temporary
    directory, so it holds whatever the permissions say (root, read-only mounts, /proc).
    Nothing is left behind. Returns path."""
    path = Path(path)
    reason = _unwritable_dir_reason(path)
    if reason:
        raise ConfigError(f"{what} {str(path)!r} is unusable: {reason}")
    return path


def require_writable_file(what: str, path: str | Path) -> Path:
    """Raises ConfigError (one line naming `what` and path) unless a file can be written at
    path: it is not a directory, and its folder is (or can be created as) a writable
    directory (`require_writable_dir`). Returns path."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is unusable: it is a directory, not a file")
    reason = _unwritable_dir_reason(path.absolute().parent)
    if reason:
        raise ConfigError(f"{what} {str(path)!r} is unusable: {reason}")
    return path


def _unwritable_dir_reason(path: Path) -> str | None:
    """Why no file can be written into the directory path (None: it can)."""
    absolute = path.absolute()
    try:
        if absolute.exists():
            if not absolute.is_dir():
                return f"{str(absolute)!r} is not a directory"
            probe_in = absolute
        else:
            probe_in = absolute.parent
            while not probe_in.exists() and probe_in != probe_in.parent:
                probe_in = probe_in.parent
            if not probe_in.is_dir():
                return f"{str(probe_in)!r} is a file, so no directory can be created under it"
    except OSError as err:
        return f"{str(absolute)!r} cannot be inspected ({err.strerror or err})"
    try:
        with tempfile.TemporaryDirectory(dir=probe_in, prefix=".diffrl_jax_write_check_"):
            pass
    except OSError as err:
        what = (f"{str(probe_in)!r} is not writable" if probe_in == absolute else
                f"no directory can be created in {str(probe_in)!r}")
        return f"{what} ({err.strerror or err})"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
