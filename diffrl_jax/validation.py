"""Small helpers for validating configuration fields with errors that name the field."""

from collections.abc import Iterable
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
