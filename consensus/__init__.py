"""The consensus core: pure state machines (no I/O, clocks, threads, asyncio or torch)."""
