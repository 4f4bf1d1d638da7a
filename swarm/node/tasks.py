"""The node's asyncio tasks: a few long-lived ones (state worker, ticker) and many short background ones (training,
pushes, snapshots, evaluations). A failure is logged, never lost; shutdown cancels them all and waits a bounded
time, so a task that ignores its cancellation is named in the log instead of keeping the process alive."""
from __future__ import annotations

import asyncio
import logging
from typing import Coroutine

log = logging.getLogger("swarm.node")

SHUTDOWN_TASK_TIMEOUT_S = 5.0


class NodeTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self.stopping = asyncio.Event()

    def spawn(self, coroutine: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.stopping.is_set():
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self, timeout_s: float = SHUTDOWN_TASK_TIMEOUT_S) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            log.error("task %s did not stop within %.0f s of its cancellation; exiting without it",
                      task.get_name(), timeout_s)
