"""With no worker and no scheduler running, the exporter says so (the alerts' quiet input is
a live fleet, their firing input this)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from eventrelay.worker.producer import enqueue
from tests.integration import jobs
from tests.integration.test_metrics_served import _scrape


@pytest.mark.usefixtures("clean")
def test_without_workers_or_scheduler_the_exporter_says_so(
    child_env: Any, logs_dir: Path, mock_vendors: Any
) -> None:
    # No pipeline in this module: a pending delivery only ages, and no process beats (a
    # worker of an earlier module removed its heartbeat when it shut down).
    receipt = enqueue("botsi", "send_event", jobs.botsi_event())
    time.sleep(1.2)
    samples = _scrape(child_env, logs_dir)
    assert samples["eventrelay_workers_alive"][0].value == 0
    assert samples["eventrelay_scheduler_last_tick_timestamp_seconds"][0].value == 0
    ages = {s.labels["vendor"]: s.value for s in samples["eventrelay_oldest_pending_age_seconds"]}
    assert ages["botsi"] >= 1.0, receipt


@pytest.mark.usefixtures("clean")
def test_a_worker_beats_while_it_runs_and_is_forgotten_when_it_stops(
    child_env: Any, logs_dir: Path
) -> None:
    from eventrelay.worker.fleet import liveness
    from tests.conftest import TEST_ENV
    from tests.support import start_worker, wait_for

    url = TEST_ENV["EVENTRELAY_REDIS_URL"]
    worker = start_worker(child_env(), logs_dir / "liveness-worker.log", concurrency=1, name="beat")
    try:
        beats = wait_for(lambda: liveness.worker_beats(url) or None, 30, what="a heartbeat")
        (name,) = beats
        assert name.startswith("beat@") and time.time() - beats[name] < 10
    finally:
        worker.stop()
    assert liveness.worker_beats(url) == {}
