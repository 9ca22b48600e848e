"""A worker process's garbage collection: what lives as long as the process is frozen, and
the youngest generation is collected less often; cycles are still collected."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_CHILD = """
import gc
from eventrelay.worker.engine.pump import YOUNG_COLLECTION_THRESHOLD, collect_less

assert gc.get_freeze_count() == 0
collect_less()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD

import weakref

class Node:
    other: object

probe = Node()
probe.other = probe  # a cycle only the collector can free
gone = weakref.ref(probe)
del probe
for _ in range(2 * YOUNG_COLLECTION_THRESHOLD):  # garbage cycles, as failed requests leave
    a, b = Node(), Node()
    a.other, b.other = b, a
assert gone() is None, "a cycle outlived two young collections' worth of allocations"
print("ok")
"""


def test_a_worker_process_freezes_what_lives_long_and_still_collects_cycles() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
