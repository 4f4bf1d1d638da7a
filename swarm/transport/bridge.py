"""Run a trio program in its own thread and hand work across to and from the node's asyncio loop.

py-libp2p only runs under trio, the node runs asyncio. Each hand-off is one thread-safe wake-up (trio token's
run_sync_soon one way, call_soon_threadsafe / run_coroutine_threadsafe the other), never one per chunk of data.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable, Coroutine

import trio

log = logging.getLogger(__name__)


class BridgeClosed(RuntimeError):
    """The trio thread is not running (not started yet, or stopped)."""


class TrioThread:
    """A trio event loop in a daemon thread, running ``main(nursery, ready)`` until ``stop()``."""

    def __init__(self, main: Callable[[trio.Nursery, Callable[[], None]], Awaitable[None]], name: str = "trio-transport") -> None:
        self._main = main
        self._name = name
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    # ---- lifecycle, called from asyncio -------------------------------------------------------------------
    async def start(self, timeout: float = 15.0) -> None:
        self.loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        ok = await asyncio.to_thread(self._ready.wait, timeout)
        if self.error is not None:
            raise self.error
        if not ok:
            raise BridgeClosed("trio thread did not start in time")

    def _run(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:  # noqa: BLE001 - reported to the starter / logged, the node lives on
            self.error = exc
            log.exception("transport trio thread died")
        finally:
            self._token = None
            self._ready.set()

    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop_event = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            started = trio.Event()

            async def body() -> None:
                await self._main(nursery, started.set)

            nursery.start_soon(body)
            with trio.move_on_after(30):
                await started.wait()
            self._ready.set()
            await self._stop_event.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    async def stop(self, timeout: float = 3.0) -> None:
        token = self._token
        if token is not None:
            try:
                token.run_sync_soon(self._stop_event.set)  # type: ignore[union-attr]
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)

    @property
    def running(self) -> bool:
        return self._token is not None and self._thread is not None and self._thread.is_alive()

    # ---- asyncio -> trio ------------------------------------------------------------------------------------
    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a plain function in the trio thread soon (fire and forget)."""
        token = self._token
        if token is None:
            raise BridgeClosed("transport is not running")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise BridgeClosed("transport is not running") from None

    def run(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> "asyncio.Future[Any]":
        """Start ``async_fn(*args)`` in the trio nursery; its result (or exception) lands in an asyncio future.

        Cancelling the returned future cancels the trio task.
        """
        loop = self.loop
        assert loop is not None
        fut: asyncio.Future[Any] = loop.create_future()
        scope = trio.CancelScope()

        def settle(value: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(value)

        async def wrapper() -> None:
            value, error = None, None
            with scope:
                try:
                    value = await async_fn(*args)
                except Exception as exc:  # noqa: BLE001 - handed to the awaiting asyncio side
                    error = exc
            if scope.cancelled_caught and error is None:
                error = BridgeClosed("cancelled in the transport thread")
            try:
                loop.call_soon_threadsafe(settle, value, error)
            except RuntimeError:
                pass  # the asyncio loop is closed: nobody is waiting any more

        def starter() -> None:
            if self._nursery is None:
                loop.call_soon_threadsafe(settle, None, BridgeClosed("transport is not running"))
                return
            self._nursery.start_soon(wrapper)

        def on_done(f: "asyncio.Future[Any]") -> None:
            if f.cancelled():
                try:
                    self.call_soon(scope.cancel)
                except BridgeClosed:
                    pass

        fut.add_done_callback(on_done)
        try:
            self.call_soon(starter)
        except BridgeClosed as exc:
            fut.set_exception(exc)
        return fut

    # ---- trio -> asyncio ------------------------------------------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, Any]) -> "asyncio.Future[Any] | None":
        """From trio: schedule ``coro`` on the asyncio loop without waiting (errors are logged)."""
        loop = self.loop
        try:
            cfut = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]
        except RuntimeError:
            coro.close()
            return None
        cfut.add_done_callback(_log_failure)
        return cfut

    async def await_asyncio(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """From trio: run ``coro`` on the asyncio loop and wait for its result without blocking trio."""
        cfut = self.submit(coro)
        if cfut is None:
            raise BridgeClosed("the asyncio loop is closed")
        return await wait_in_trio(cfut, cancel=True)


async def wait_in_trio(future: Any, cancel: bool = False) -> Any:
    """From trio: wait for a concurrent.futures result without blocking the trio loop; with ``cancel``, a trio
    cancellation cancels the future too."""
    if not future.done():
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: Any) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            if cancel:
                future.cancel()
            raise
    return future.result()


def _log_failure(cfut: Any) -> None:
    if cfut.cancelled():
        return
    exc = cfut.exception()
    if exc is not None:
        log.error("transport callback failed: %r", exc, exc_info=exc)
