"""Typed command-line overrides of config fields: `--set FIELD=VALUE` and `--list-fields`.

An override is the text "field=value" or "nested.field=value" (e.g. `actor_lr=1e-3`,
`critic_hidden=256,256`, `diffusion.num_steps=16`, `episode_length=none`). The value text is
coerced to the field's declared type (its annotation, read with typing.get_type_hints):

  int                 "8", "50_000_000", "5e7" (a float text only if it is a whole number)
  float               "1e-3", "0.5", "1"
  bool                true/false, 1/0, yes/no (any case)
  str                 the text as given (surrounding quotes removed)
  X | None            "none" or "null" (any case) gives None, anything else is parsed as X
  tuple[int, ...]     "256,256", "(256, 256)", "[256,256]", "(256,)"
  nested dataclass    only through its fields: "diffusion.num_steps=16"

All overrides of one nested field are merged into one `dataclasses.replace` of the nested
value of the config passed in (normally the preset-resolved config), so
`diffusion.num_steps=16 diffusion.dt0=0.1` apply together and keep the preset's other
diffusion settings. The nested dataclass checks itself on construction; other values are
checked by the config's `.validate()` after `apply_overrides` (both raise ConfigError naming
the field and, for a fixed set of allowed values, the allowed ones).

Typical use (what `make_config` does with `--set`):

    config = apply_overrides(config_class(algo=..., env=...), preset)
    config = apply_overrides(config, parse_overrides(items, config)).validate()
"""

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from diffrl_jax.validation import ConfigError, closest_name

__all__ = ["config_fields", "describe_fields", "field_info", "override_config", "parse_overrides"]

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_NONE = ("none", "null")


# ---- parsing ---------------------------------------------------------------------------------


def parse_overrides(items: Sequence[str], base_config: Any) -> dict[str, Any]:
    """Parses "field=value" / "nested.field=value" items into {top-level field: typed value}.

    base_config is the config the overrides will be applied to (an instance; a class means
    its defaults): nested overrides replace fields of its nested values. The result is ready
    for `presets.apply_overrides(base_config, result)`. Raises ConfigError for a missing "=",
    an unknown field (listing the allowed ones), a value that does not parse as the field's
    type, a field given twice, or a nested value its own checks reject.
    """
    if isinstance(items, str):
        raise ConfigError(f"overrides must be a sequence of 'field=value' strings, got the "
                          f"single string {items!r}")
    base = _instance(base_config)
    parsed: dict[tuple[str, ...], tuple[Any, str]] = {}
    for item in items:
        path, text = _split_item(item)
        if path in parsed:
            raise ConfigError(
                f"config field '{'.'.join(path)}' is set twice: {parsed[path][1]!r} and {item!r}"
            )
        parsed[path] = (_parse_value(type(base), path, text, item), item)
    return _merge(base, {path: value for path, (value, _) in parsed.items()}, ())


def override_config(config: Any, items: Sequence[str]) -> Any:
    """config with the parsed overrides applied (not validated: call `.validate()`)."""
    from diffrl_jax.presets import apply_overrides

    return apply_overrides(config, parse_overrides(items, config))


def _instance(config: Any) -> Any:
    if isinstance(config, type):
        if not dataclasses.is_dataclass(config):
            raise ConfigError(f"{config.__name__} is not a config dataclass")
        return config()
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"expected a config dataclass instance, got {type(config).__name__}")
    return config


def _split_item(item: Any) -> tuple[tuple[str, ...], str]:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(
            f"override {item!r} is not of the form FIELD=VALUE or NESTED.FIELD=VALUE "
            f"(e.g. actor_lr=1e-3, diffusion.num_steps=16)"
        )
    name, text = item.split("=", 1)
    name = name.strip().replace("-", "_")
    path = tuple(part.strip() for part in name.split("."))
    if not name or any(not part for part in path):
        raise ConfigError(
            f"override {item!r} has no field name before '='; expected FIELD=VALUE or "
            f"NESTED.FIELD=VALUE (e.g. actor_lr=1e-3, diffusion.num_steps=16)"
        )
    return path, text.strip()


def _parse_value(cls: type, path: tuple[str, ...], text: str, item: str) -> Any:
    """Walks the dotted path through the dataclass types and coerces text to the leaf type."""
    hints = _hints(cls)
    for depth, part in enumerate(path):
        dotted = ".".join(path[: depth + 1])
        prefix = ".".join(path[:depth])
        if part not in hints:
            allowed = sorted(hints)
            close = closest_name(part, allowed)
            hint = f" (did you mean '{_join(prefix, close)}'?)" if close else ""
            where = f" of '{prefix}' ({cls.__name__})" if prefix else f" of {cls.__name__}"
            raise ConfigError(
                f"unknown config field '{dotted}' in {item!r}{hint}; allowed fields{where}: "
                f"{allowed}"
            )
        tp = hints[part]
        last = depth == len(path) - 1
        if _is_config_class(tp):
            if last:
                raise ConfigError(
                    f"config field '{dotted}' is a nested {tp.__name__}; set its fields one by "
                    f"one as {dotted}.FIELD=VALUE; its fields: {sorted(_hints(tp))}"
                )
            cls, hints = tp, _hints(tp)
            continue
        if not last:
            raise ConfigError(
                f"config field '{dotted}' ({_type_name(tp)}) has no fields, so '{'.'.join(path)}' "
                f"in {item!r} does not exist"
            )
        try:
            return _coerce(text, tp)
        except _ParseError as err:
            raise ConfigError(
                f"config field '{dotted}' expects {_type_name(tp)}, could not parse {text!r} "
                f"(from {item!r}): {err}"
            ) from None
    raise AssertionError("unreachable")


def _merge(base: Any, values: dict[tuple[str, ...], Any], prefix: tuple[str, ...]) -> dict[str, Any]:
    """{top-level name: value} of base's level; nested paths become one replaced dataclass."""
    out: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            out[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, sub in nested.items():
        current = getattr(base, name)
        changes = _merge(current, sub, prefix + (name,))
        try:
            out[name] = dataclasses.replace(current, **changes)
        except ConfigError as err:
            given = ", ".join(f"{'.'.join(prefix + (name,) + p)}={v!r}" for p, v in sub.items())
            raise ConfigError(f"invalid override of '{'.'.join(prefix + (name,))}' "
                              f"({given}): {err}") from err
    return out


class _ParseError(Exception):
    pass


def _coerce(text: str, tp: Any) -> Any:
    """text as a value of type tp; raises _ParseError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and text.lower() in _NONE:
            return None
        rest = [a for a in args if a is not type(None)]
        errors = []
        for arg in rest:
            try:
                return _coerce(text, arg)
            except _ParseError as err:
                errors.append(str(err))
        raise _ParseError("; ".join(errors))
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        for value in allowed:
            if text == str(value):
                return value
        raise _ParseError(f"must be one of {list(allowed)}")
    if origin is tuple:
        args = typing.get_args(tp)
        inner = text.strip()
        if inner[:1] + inner[-1:] in ("()", "[]"):
            inner = inner[1:-1]
        parts = [p.strip() for p in inner.split(",")]
        if parts and parts[-1] == "":  # "(256,)" or "256,"
            parts = parts[:-1]
        if any(p == "" for p in parts):
            raise _ParseError("empty element in a comma-separated list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(p, args[0]) for p in parts)
        if len(parts) != len(args):
            raise _ParseError(f"expected {len(args)} comma-separated values, got {len(parts)}")
        return tuple(_coerce(p, a) for p, a in zip(parts, args, strict=True))
    if tp is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _ParseError(f"a bool is one of {list(_TRUE + _FALSE)}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            raise _ParseError("not an integer") from None
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise _ParseError("not an integer")
        return int(value)
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise _ParseError("not a number") from None
    if tp is str:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        return text
    if tp is Any:
        return text
    raise _ParseError(f"fields of type {_type_name(tp)} cannot be set from the command line")


# ---- listing ---------------------------------------------------------------------------------


def config_fields(config_class: Any) -> list[str]:
    """Every overridable dotted field name of a config class (or instance), in declaration
    order, nested dataclasses expanded (e.g. "diffusion.num_steps")."""
    return [name for name, _, _ in field_info(config_class)]


def field_info(config: Any) -> list[tuple[str, str, Any]]:
    """(dotted name, type as text, value) of every overridable field: the defaults of a config
    class, or the values of a config instance."""
    return _field_info(_instance(config), "")


def describe_fields(config: Any) -> str:
    """One line per overridable field, "name: type = value  # what it is" (from
    `diffrl_jax.field_docs`), plus the allowed values of fields that have a fixed set; for
    `--list-fields` (a class shows defaults, an instance its values)."""
    from diffrl_jax.field_docs import field_doc

    instance = _instance(config)
    choices = _field_choices(type(instance))
    rows = _field_info(instance, "")
    width = max(len(name) for name, _, _ in rows)
    lines = []
    for name, type_name, value in rows:
        *parents, leaf = name.split(".")
        owner = instance
        for part in parents:
            owner = getattr(owner, part)
        line = f"{name}:{' ' * (width - len(name))} {type_name} = {_show(value)}"
        doc = field_doc(owner, leaf)
        if doc:
            line += f"  # {doc}"
        if name.split(".")[-1] in choices:
            line += f"  (one of: {', '.join(choices[name.split('.')[-1]])})"
        lines.append(line)
    return "\n".join(lines)


def _field_info(instance: Any, prefix: str) -> list[tuple[str, str, Any]]:
    hints = _hints(type(instance))
    rows = []
    for field in dataclasses.fields(instance):
        tp = hints[field.name]
        value = getattr(instance, field.name)
        name = _join(prefix, field.name)
        if _is_config_class(tp):
            rows.extend(_field_info(value, name))
        else:
            rows.append((name, _type_name(tp), value))
    return rows


def _field_choices(cls: type) -> dict[str, tuple[str, ...]]:
    """Allowed values of the string fields with a fixed set (leaf name -> values)."""
    from diffrl_jax.algorithms.ppo import ADVANTAGE_NORMALIZATIONS
    from diffrl_jax.envs import list_envs
    from diffrl_jax.envs.brax_core import BRAX_BACKENDS
    from diffrl_jax.networks.activations import ACTIVATIONS
    from diffrl_jax.policies import policy_kinds
    from diffrl_jax.policies.diffusion import DETERMINISTIC_SAMPLERS
    from diffrl_jax.policies.schedules import SCHEDULES
    from diffrl_jax.training import OffPolicyConfig, OnPolicyConfig, algorithm_names
    from diffrl_jax.transforms.damdp import DISCOUNT_MODES
    from diffrl_jax.transforms.diffusion_loss import ESTIMATORS

    choices = {
        "env": tuple(list_envs()), "backend": tuple(BRAX_BACKENDS), "estimator": ESTIMATORS,
        "discount_mode": DISCOUNT_MODES, "advantage_normalization": ADVANTAGE_NORMALIZATIONS,
        "schedule": SCHEDULES, "activation": tuple(ACTIVATIONS),
        "deterministic_sampler": tuple(DETERMINISTIC_SAMPLERS), "policy_kind": policy_kinds(),
    }
    if cls is OffPolicyConfig:
        choices["algo"] = algorithm_names("off_policy")
    elif cls is OnPolicyConfig:
        choices["algo"] = algorithm_names("on_policy")
    return {k: tuple(str(v) for v in vals) for k, vals in choices.items()}


# ---- helpers ---------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    """Declared field types of a dataclass (only its dataclass fields)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{_type_name(args[0])}, ...]"
        return f"tuple[{', '.join(_type_name(a) for a in args)}]"
    if origin is typing.Literal:
        return f"Literal{list(typing.get_args(tp))}"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "()"
    if isinstance(value, str):
        return repr(value)
    return str(value)
