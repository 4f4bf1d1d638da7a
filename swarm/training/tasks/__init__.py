"""Tasks: what a node trains (model, data, loss, inner optimizer, metrics). See base.py for the interface."""
from .base import DataSource, InnerOptimizer, NonFiniteLoss, Task, TaskData, TaskError
from .registry import TASKS, make_task, register, task_class

__all__ = ["DataSource", "InnerOptimizer", "NonFiniteLoss", "TASKS", "Task", "TaskData", "TaskError",
           "make_task", "register", "task_class"]
