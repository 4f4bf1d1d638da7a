"""Runnable examples for swarm (a regular package, so that `examples.tiny_task` is found here first, before any
unrelated `examples` package another library installs into site-packages)."""
