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
from tests.integration.netfaults import TcpProxy
from tests.support import REDIS_HOST, TEST_REDIS_DB

# Sends per second, timed: measured alone (`serial`), not beside a parallel test.
pytestmark = pytest.mark.serial

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


def _send_all(threads: int, url: str = URL) -> list[float]:
    """Each of `threads` threads takes sends from one pool; returns when each was let go."""
    todo = iter(range(SENDS))
    lock = threading.Lock()
    sent: list[float] = []

    def run() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            while not ratelimit.acquire("infobip", LIMIT, 5.0, url):
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


@pytest.mark.usefixtures("clean")
def test_a_redis_20_ms_away_still_gives_every_sender_its_slot() -> None:
    # The round trip to Redis is not lateness: every process pays it alike, so it moves the
    # whole schedule and crowds no second. Counting it gave every slot up (a 5 s loop, then no
    # send at all).
    proxy = TcpProxy(int(REDIS_HOST.rsplit(":", 1)[1]), delay_seconds=0.01)
    proxy.open()
    try:
        started = time.monotonic()
        results = [
            ratelimit.acquire(
                "infobip", LIMIT, 5.0, f"redis://127.0.0.1:{proxy.port}/{TEST_REDIS_DB}"
            )
            for _ in range(3)
        ]
        assert results == [True, True, True]
        assert time.monotonic() - started < 1.0
        sent = _send_all(threads=8, url=f"redis://127.0.0.1:{proxy.port}/{TEST_REDIS_DB}")
    finally:
        proxy.close()
    assert len(sent) == SENDS
    assert _busiest_second(sent) <= LIMIT
    assert max(sent) - min(sent) <= SENDS / LIMIT * ratelimit.HEADROOM + 1.0
