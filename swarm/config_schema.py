"""Load plain YAML data into typed dataclasses, rejecting anything unexpected with a precise message.

A config error names the file, the dotted key and what was expected, so an operator can fix it without reading
code. Types come from the dataclass annotations; extra constraints (ranges, choices) from field metadata:
``field(default=..., metadata={"min": 0, "choices": (...)})``.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config file is wrong; the message names the file, the key and what is expected."""

    def __init__(self, source: str, key: str, expected: str):
        self.source, self.key, self.expected = source, key, expected
        super().__init__(f"{source}: {key or '<top level>'}: {expected}")


def build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """Construct dataclass ``cls`` from ``data`` (a dict from YAML), validating every key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, prefix, f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        raise ConfigError(source, _join(prefix, unknown[0]), f"unknown key (known keys: {', '.join(sorted(known))})")
    values = {}
    for name, spec in known.items():
        key = _join(prefix, name)
        if name in data:
            values[name] = _convert(hints[name], data[name], source, key, spec.metadata)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(source, key, "required key is missing")
    return cls(**values)


def _convert(hint: Any, value: Any, source: str, key: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        non_none = [h for h in options if h is not type(None)]
        return _convert(non_none[0], value, source, key, meta)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, source, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected a list, got {_describe(value)}")
        (item,) = get_args(hint)
        return [_convert(item, v, source, f"{key}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {_describe(value)}")
        return {str(k): _scalar_any(v, source, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {_describe(value)}")
        return _check_range(value, source, key, meta)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ConfigError(source, key, f"expected a number, got {_describe(value)}")
        return _check_range(float(value), source, key, meta)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {_describe(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(source, key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {key}")


MAX_OPTION_LIST = 64


def _scalar_any(value: Any, source: str, key: str) -> Any:
    """An option value: a number, string, boolean or null, or a short list of numbers (a shape)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(source, key, f"expected a finite number, got {value}")
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if (isinstance(value, list) and len(value) <= MAX_OPTION_LIST
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        return list(value)
    raise ConfigError(source, key, f"expected a number, string, boolean or a list of at most {MAX_OPTION_LIST} "
                                   f"numbers, got {_describe(value)}")


def _check_range(value: float, source: str, key: str, meta: typing.Mapping[str, Any]) -> Any:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(source, key, f"must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(source, key, f"must be <= {high}, got {value}")
    return value


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 60, 60
_SHORT.maxdict = _SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = 4


def _describe(value: Any) -> str:
    """A short description of a wrong value: bounded work whatever its size (never the repr of it all)."""
    return "nothing" if value is None else f"{type(value).__name__} {_SHORT.repr(value)}"[:80]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
