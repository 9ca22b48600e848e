"""Without Redis (a filesystem broker, no EVENTRELAY_REDIS_URL) a worker still keeps a vendor's
rate limit, in each process, and says once at start that fleet-wide state is off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration import jobs
from tests.support import start_worker, wait_for

pytestmark = pytest.mark.usefixtures("clean")

JOBS = 45
LIMIT = 20  # INFOBIP_RATE_LIMIT in the tests' environment


def _busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_a_worker_without_redis_keeps_the_rate_limit_and_says_fleet_state_is_off(
    tmp_path: Path, mock_vendors: Any, child_env: Any, cli: Any
) -> None:
    env = child_env(
        EVENTRELAY_BROKER_URL="filesystem://",
        EVENTRELAY_BROKER_FOLDER=str(tmp_path / "broker"),
        EVENTRELAY_REDIS_URL="",
    )
    worker = start_worker(env, tmp_path / "worker.log", concurrency=1)
    try:
        lines = "\n".join(
            json.dumps(
                {
                    "vendor": "infobip",
                    "operation": "send_event",
                    "payload": jobs.infobip_event(f"p{i}@example.com"),
                }
            )
            for i in range(JOBS)
        )
        cli("send", "--file", "-", input=lines, env=env)
        wait_for(lambda: len(mock_vendors.received("infobip")) >= JOBS, 30, what="every send")
        log = worker.output()
    finally:
        worker.stop()
    arrivals = [r["ts"] for r in mock_vendors.received("infobip")]
    assert _busiest_second(arrivals) <= LIMIT
    assert [r["status"] for r in mock_vendors.received("infobip")] == [201] * JOBS
    warnings = [line for line in log.splitlines() if "no Redis for fleet-wide state" in line]
    assert len(warnings) == 1 and "EVENTRELAY_REDIS_URL" in warnings[0]
