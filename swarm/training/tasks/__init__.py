"""Tasks: what a node trains (model, data, loss, inner optimizer, metrics). See base.py for the interface."""
from .base import DataSource, InnerOptimizer, NonFiniteLoss, Task, TaskData, TaskError
from .registry import TASKS, make_task, register, task_class

__all__ = [
           "TASKS",
           "DataSource",
           "InnerOptimizer",
           "NonFiniteLoss",
           "Task",
           "TaskData",
           "TaskError",
           "make_task",
           "register",
           "task_class",
]
