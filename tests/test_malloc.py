"""A node gives freed heap pages back to the OS (swarm.node.heap), so that RSS does not creep over long runs."""
import subprocess
import sys

import pytest

SCENARIO = """
from swarm.node.heap import release_free_memory
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
start = rss()
keep = []
for i in range(200):  # what rounds do: big buffers of varying size freed, small survivors between them
    big = bytearray(8 * 1024 * 1024 + 4096 * (i % 7))
    keep.append(bytearray(2048))
    del big
TRIM
print(rss() - start)
"""


def _growth_kib(trim: bool) -> int:
    code = SCENARIO.replace("TRIM", "assert release_free_memory()" if trim else "pass")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_trimming_returns_the_fragmented_heap_to_the_os():
    untrimmed, trimmed = _growth_kib(False), _growth_kib(True)
    assert untrimmed > 8 * 1024, f"the scenario no longer fragments the heap ({untrimmed} KiB): fix the test"
    assert trimmed < 2 * 1024, f"RSS still {trimmed} KiB above the start after trimming"
