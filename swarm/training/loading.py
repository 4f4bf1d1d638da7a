"""Resolve a user's ``"package.module:function"`` string with importlib (never eval)."""
from __future__ import annotations

import importlib
import re

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_import_spec(name: str) -> bool:
    return isinstance(name, str) and bool(_SPEC.match(name))


def load_callable(spec: str):
    if not is_import_spec(spec):
        raise ValueError(f"expected 'module:function', got {spec!r}")
    module_name, function_name = spec.split(":")
    function = getattr(importlib.import_module(module_name), function_name, None)
    if not callable(function):
        raise ValueError(f"{spec!r} does not name a callable")
    return function
