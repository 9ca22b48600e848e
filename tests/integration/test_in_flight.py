"""Many requests in flight per worker process: latency is hidden, one slow vendor does not
hold the others back, outcomes land as answers arrive, leases follow the worker's life."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.producer import enqueue_many
from tests.integration import jobs
from tests.support import start_scheduler, start_worker, wait_for

# Ratios of throughput and time: measured alone (`serial`), not beside a parallel test.
pytestmark = [pytest.mark.usefixtures("clean"), pytest.mark.serial]


def _vtcdn_jobs(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(email=f"{tag}{i}@example.com", name=f"{tag}-{i}"),
        }
        for i in range(n)
    ]


def _gravityfield_jobs(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "vendor": "gravityfield",
            "operation": "send_event",
            "payload": jobs.gravityfield_event(uid=f"{tag}-{i}"),
        }
        for i in range(n)
    ]


def _count(vendor: str, status: str) -> int:
    with get_engine().connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.vendor == vendor, Delivery.status == status)
            ).scalar_one()
        )


def _vendor_rate(mock_vendors: Any, vendor: str, tag: str) -> float:
    """Deliveries per second the vendor saw for jobs tagged `tag` (first to last answer)."""
    times = sorted(
        r["ts"]
        for r in mock_vendors.received(vendor)
        if tag in str(r["body"]) and 200 <= r["status"] < 300
    )
    return (len(times) - 1) / max(1e-9, times[-1] - times[0])


@pytest.fixture
def worker(child_env: Any, logs_dir: Path, request: Any) -> Any:
    procs = []

    def start(**env: str) -> Any:
        proc = start_worker(
            child_env(**env), logs_dir / f"{request.node.name}-{len(procs)}.log", name="inflight"
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def test_latency_is_hidden_by_many_requests_in_flight(worker: Any, mock_vendors: Any) -> None:
    # 200 ms answers: one request at a time per process (2 processes) would take 40 s for 400.
    mock_vendors.set_faults("vtcdn", latency_ms=200)
    enqueue_many(_vtcdn_jobs(400, "hidden"))
    started = time.monotonic()
    worker()
    wait_for(lambda: _count("vtcdn", "delivered") == 400, 60, what="400 deliveries")
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"400 deliveries at 200 ms took {elapsed:.1f}s"
    # Every answer was recorded, each attempt once.
    assert len(mock_vendors.received("vtcdn")) == 400


def _best_vtcdn_rate(mock_vendors: Any, tag: str, done_before: int) -> float:
    """vtcdn's best pace over three rounds of 300 jobs: other work on this shared machine only
    ever slows a round down, so the best round is the one least disturbed."""
    rates = []
    for n in range(3):
        enqueue_many(_vtcdn_jobs(300, f"{tag}{n}-"))
        done = done_before + 300 * (n + 1)
        wait_for(
            lambda done=done: _count("vtcdn", "delivered") == done,
            60,
            what=f"vtcdn round {tag}{n}",
        )
        rates.append(_vendor_rate(mock_vendors, "vtcdn", f"{tag}{n}-"))
    return max(rates)


def test_hundreds_of_requests_waiting_on_a_slow_vendor_cost_another_at_most_20_percent(
    worker: Any, mock_vendors: Any
) -> None:
    # vtcdn answers in 100 ms and may hold 10 requests per process: its pace is set by its
    # slots, not by this 2-core machine's CPU, so what a stuck slot would cost shows.
    # Gravity Field then holds its whole share of slots (192 per process, a thread each) with
    # requests that wait 30 s: none completes while vtcdn is measured, so what is measured is
    # the cost of waiting requests alone. A slow vendor that also completes hundreds of requests
    # a second (2 s answers with 384 in flight: ~190/s) costs the others the CPU that work
    # takes, like any busy vendor: CPU sharing, not a slot held (docs/isolation.md).
    worker(EVENTRELAY_READ_TIMEOUT_SECONDS="40", VTCDN_MAX_IN_FLIGHT="10")
    mock_vendors.set_faults("vtcdn", latency_ms=100)
    enqueue_many(_vtcdn_jobs(200, "warm"))  # threads, connections, slow start: not measured
    enqueue_many(_gravityfield_jobs(600, "warm"))  # its window opens to its cap
    wait_for(lambda: _count("vtcdn", "delivered") == 200, 60, what="the vtcdn warm-up")
    wait_for(
        lambda: _count("gravityfield", "delivered") == 600, 60, what="the gravityfield warm-up"
    )
    alone = _best_vtcdn_rate(mock_vendors, "alone", 200)

    mock_vendors.set_faults("gravityfield", latency_ms=30000)
    enqueue_many(_gravityfield_jobs(1000, "slow"))
    wait_for(lambda: _count("gravityfield", "delivering") >= 350, 30, what="slow requests waiting")
    beside = _best_vtcdn_rate(mock_vendors, "beside", 1100)
    waiting = _count("gravityfield", "delivering")
    mock_vendors.reset()  # the waiting requests end unanswered: the worker stops quickly
    assert waiting >= 350  # they were waiting the whole time
    assert beside >= 0.8 * alone, (
        f"vtcdn alone {alone:.0f}/s, beside {waiting} waiting requests {beside:.0f}/s"
    )


def test_a_vendor_max_in_flight_caps_its_requests_per_process(
    worker: Any, mock_vendors: Any
) -> None:
    worker(VTCDN_MAX_IN_FLIGHT="3")
    mock_vendors.set_faults("vtcdn", latency_ms=300)
    enqueue_many(_vtcdn_jobs(40, "capped"))
    wait_for(lambda: _count("vtcdn", "delivered") == 40, 30, what="the capped backlog")
    # Each request is held 300 ms: those arriving within 290 ms of each other were open at once.
    arrivals = sorted(r["ts"] for r in mock_vendors.received("vtcdn"))
    open_at_once = max(sum(1 for t in arrivals if first <= t < first + 0.29) for first in arrivals)
    assert 3 <= open_at_once <= 2 * 3  # two worker processes, three each


def test_outcomes_are_recorded_as_answers_arrive_not_at_the_end(
    worker: Any, mock_vendors: Any
) -> None:
    # Half the requests are answered at once, half after 3 s: the fast half is recorded while
    # the slow half is still in flight.
    enqueue_many(_vtcdn_jobs(30, "fast"))
    worker(EVENTRELAY_READ_TIMEOUT_SECONDS="10")
    wait_for(lambda: _count("vtcdn", "delivered") == 30, 30, what="the fast jobs")
    mock_vendors.set_faults("vtcdn", latency_ms=3000)
    enqueue_many(_vtcdn_jobs(30, "slow"))
    wait_for(lambda: _count("vtcdn", "delivering") == 30, 10, what="30 slow requests in flight")
    mock_vendors.set_faults("vtcdn", latency_ms=0)
    enqueue_many(_vtcdn_jobs(30, "quick"))
    wait_for(lambda: _count("vtcdn", "delivered") == 60, 3, what="quick ones recorded first")
    assert _count("vtcdn", "delivering") == 30  # the slow ones are still out
    wait_for(lambda: _count("vtcdn", "delivered") == 90, 15, what="the slow ones")


def test_a_live_workers_slow_request_keeps_its_lease(worker: Any, mock_vendors: Any) -> None:
    # Leases of 2 s, answers after 6 s: the heartbeat renews them, so nobody takes them over.
    mock_vendors.set_faults("vtcdn", latency_ms=6000)
    enqueue_many(_vtcdn_jobs(10, "long"))
    worker(EVENTRELAY_LEASE_SECONDS="2", EVENTRELAY_READ_TIMEOUT_SECONDS="10")
    wait_for(lambda: _count("vtcdn", "delivered") == 10, 30, what="the long requests")
    assert len(mock_vendors.received("vtcdn")) == 10  # each sent once


def test_deliveries_of_a_killed_worker_go_out_again_within_15s(
    worker: Any, mock_vendors: Any, child_env: Any, logs_dir: Path
) -> None:
    scheduler = start_scheduler(
        child_env(EVENTRELAY_LEASE_SECONDS="10"), logs_dir / "inflight-scheduler.log"
    )
    try:
        doomed = worker(EVENTRELAY_LEASE_SECONDS="10", EVENTRELAY_READ_TIMEOUT_SECONDS="90")
        enqueue_many(_vtcdn_jobs(40, "warm"))  # the vendor answers: the worker opens up
        wait_for(lambda: _count("vtcdn", "delivered") == 40, 20, what="the warm-up")
        mock_vendors.set_faults("vtcdn", latency_ms=60_000)  # never answered while it lives
        enqueue_many(_vtcdn_jobs(60, "killed"))
        wait_for(lambda: _count("vtcdn", "delivering") == 60, 20, what="60 requests in flight")
        doomed.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        mock_vendors.set_faults("vtcdn", latency_ms=0)
        worker(EVENTRELAY_LEASE_SECONDS="10")
        wait_for(lambda: _count("vtcdn", "delivered") == 100, 30, what="the killed worker's work")
        assert time.monotonic() - killed_at <= 15
    finally:
        scheduler.kill()
