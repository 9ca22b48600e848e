"""A heartbeat never holds the process that writes it: the worker's runs in its consumer's
event loop, so an unreachable Redis costs one short attempt, then none for a while."""

from __future__ import annotations

import time

from eventrelay.worker.fleet import liveness
from tests.support import free_port


def test_an_unreachable_redis_costs_one_short_attempt_then_none() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    liveness._quiet_until = 0.0
    try:
        t0 = time.perf_counter()
        liveness.worker_beat("w1@host", url)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(100):
            liveness.worker_beat("w1@host", url)
            liveness.scheduler_beat(url)
        rest = time.perf_counter() - t0
    finally:
        liveness._quiet_until = 0.0
    assert first < liveness.WRITE_TIMEOUT_SECONDS + 0.5
    assert rest < 0.05  # within BACKOFF_SECONDS nothing is tried
