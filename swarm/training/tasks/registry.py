"""Task names: built-ins under short names, a user's task as ``"module:Class"`` (imported with importlib, never
eval). Unknown names and imports that fail are refused with the genesis key ``model.task`` and the reason."""
from __future__ import annotations

import importlib
from typing import Any

from swarm.training.loading import is_import_spec

from .base import Task, TaskError

TASKS: dict[str, type[Task]] = {}
DEFAULT_TASK = "classification"


def register(name: str):
    """Class decorator: make a Task available under a short name."""
    def add(cls: type[Task]) -> type[Task]:
        TASKS[name] = cls
        cls.name = name
        return cls
    return add


def task_class(name: str | None) -> type[Task]:
    name = name or DEFAULT_TASK
    _load_builtins()
    if name in TASKS:
        return TASKS[name]
    if not is_import_spec(name):
        raise TaskError("model.task", f"unknown task {name!r}; built in: {', '.join(sorted(TASKS))}, "
                                      f"or a user's 'module:Class'")
    module_name, class_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, SyntaxError, or anything its top level raises
        raise TaskError("model.task", f"cannot import {module_name!r} for task {name!r}: "
                                      f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskError("model.task", f"{name!r} is not a subclass of swarm.training.tasks.Task")
    return cls


def make_task(name: str | None, options: dict[str, Any] | None = None, seed: int = 0) -> Task:
    cls = task_class(name)
    try:
        task = cls(options or {}, seed=seed)
        task.name = name or DEFAULT_TASK  # as the genesis names it, for messages
        return task
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's constructor may raise anything: refuse it with the key
        raise TaskError("model.options", f"task {name or DEFAULT_TASK!r} refused its hyper-parameters: "
                                         f"{type(exc).__name__}: {exc}") from None


def _load_builtins() -> None:
    from . import classification, lm  # noqa: F401 - they register themselves on first import
