"""The fleet-wide rate limiter against the real Redis: no one-second window of sends goes over
the limit, even when the threads that wait for their slots wake up late."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from eventrelay.worker.fleet import ratelimit
from tests.conftest import TEST_ENV

URL = TEST_ENV["EVENTRELAY_REDIS_URL"]
LIMIT = 20  # per second
SENDS = 50


class _LateSleeper:
    """`time` as ratelimit sees it, in a process too busy to wake its threads on time: every
    third sleep ends 90 ms late (more than the 50 ms of slack the headroom leaves a window)."""

    LATE_SECONDS = 0.09

    def __init__(self) -> None:
        self._calls = itertools.count()
        self._lock = threading.Lock()
        self.late = 0

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            late = next(self._calls) % 3 == 0
            self.late += late
        time.sleep(seconds + (self.LATE_SECONDS if late else 0.0))


def _busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def _send_all(threads: int) -> list[float]:
    """Each of `threads` threads takes sends from one pool; returns when each was let go."""
    todo = iter(range(SENDS))
    lock = threading.Lock()
    sent: list[float] = []

    def run() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            while not ratelimit.acquire("infobip", LIMIT, 5.0, URL):
                pass
            sent.append(time.monotonic())

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    return sent


@pytest.mark.usefixtures("clean")
def test_sends_stay_within_the_limit_in_every_second() -> None:
    sent = _send_all(threads=16)
    assert len(sent) == SENDS
    assert _busiest_second(sent) <= LIMIT
    # ... and the limiter does not hold them back much more than the limit asks.
    assert max(sent) - min(sent) <= SENDS / LIMIT * ratelimit.HEADROOM + 1.0


@pytest.mark.usefixtures("clean")
def test_a_thread_that_wakes_late_for_its_slot_does_not_crowd_the_next_second(
    monkeypatch: Any,
) -> None:
    sleeper = _LateSleeper()
    monkeypatch.setattr(ratelimit, "time", sleeper)
    sent = _send_all(threads=16)
    assert sleeper.late > 5  # the late wake-ups happened
    assert len(sent) == SENDS
    assert _busiest_second(sent) <= LIMIT
