"""What operators see: Flower, Prometheus metrics, one log line per attempt — and no secrets."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from eventrelay.worker.producer import enqueue, enqueue_many
from tests.conftest import SECRETS
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.support import Proc, free_port, wait_for


@pytest.fixture(scope="module")
def flower(database_url: str, logs_dir: Path) -> Iterator[str]:
    """The real Flower, against the real broker, started before any task runs."""
    from tests.conftest import _child_env

    port = free_port()
    proc = Proc(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "eventrelay.worker",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        _child_env(FLOWER_UNAUTHENTICATED_API="true"),
        logs_dir / "flower.log",
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, 30, what="flower")
    yield url
    proc.stop()


@pytest.mark.usefixtures("clean")
@pytest.mark.serial  # Flower polls the worker with short timeouts
def test_flower_shows_delivered_tasks_by_name_with_vendor_and_ids_only(
    flower: str, pipeline: Any, mock_vendors: Any
) -> None:
    receipt = enqueue("infobip", "send_event", jobs.infobip_event("flower@example.com"))
    wait_status(receipt.delivery_id, "delivered")

    def task_seen() -> Any:
        tasks = requests.get(f"{flower}/api/tasks", timeout=5).json()
        mine = [t for t in tasks.values() if str(receipt.delivery_id) in (t.get("args") or "")]
        return mine if mine and mine[0].get("state") == "SUCCESS" else None

    [task] = wait_for(task_seen, 30, what="the task in Flower")
    assert task["name"] == "eventrelay.deliver"
    assert "infobip" in task["args"]
    assert "'claimed': 1" in (task.get("result") or "")
    assert str(receipt.delivery_id) in task["result"]  # the claimed ids, for the operator
    assert "'in_flight'" in task["result"]  # how busy the process was
    dumped = json.dumps(task)
    assert "flower@example.com" not in dumped and "addToCart" not in dumped  # no payload
    assert not any(secret in dumped for secret in SECRETS)


@pytest.mark.usefixtures("clean", "pipeline")
def test_metrics_endpoint_reports_deliveries_attempts_latency_queues_and_circuits(
    mock_vendors: Any, child_env: Any, logs_dir: Path
) -> None:
    mock_vendors.set_faults("vtcdn", unknown_users=["ghost@example.com"])
    ok = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    dead = enqueue("vtcdn", "send_event", jobs.vtcdn_update(email="ghost@example.com"))
    wait_status(ok.delivery_id, "delivered")
    wait_status(dead.delivery_id, "dead")
    port = free_port()
    proc = Proc(
        [sys.executable, "-m", "eventrelay", "metrics", "--port", str(port), "--host", "127.0.0.1"],
        child_env(),
        logs_dir / "metrics.log",
    )
    try:

        def scrape() -> str | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except requests.ConnectionError:
                return None

        text = wait_for(scrape, 20, what="the metrics endpoint")
    finally:
        proc.stop()
    assert 'eventrelay_deliveries{state="delivered",vendor="vtcdn"} 1.0' in text
    assert 'eventrelay_deliveries{state="dead",vendor="vtcdn"} 1.0' in text
    assert 'eventrelay_dead_letters{vendor="vtcdn"} 1.0' in text
    assert 'eventrelay_attempts_total{outcome="dead",vendor="vtcdn"} 1.0' in text
    assert 'eventrelay_delivery_latency_seconds_count{vendor="vtcdn"} 1.0' in text
    assert 'eventrelay_queue_depth{queue="eventrelay.vtcdn.retry",vendor="vtcdn"} 0.0' in text
    assert 'eventrelay_circuit_state{state="closed",vendor="botsi"} 1.0' in text


@pytest.mark.usefixtures("clean", "pipeline")
def test_each_attempt_is_one_log_line_with_personal_data_masked(
    pipeline: dict[str, Proc], mock_vendors: Any
) -> None:
    mock_vendors.set_faults("infobip", fail_next=[500])
    receipts = enqueue_many(
        [
            {
                "vendor": "infobip",
                "operation": "send_event",
                "payload": jobs.infobip_event("loggy@example.com"),
            },
        ]
    )
    wait_status(receipts[0].delivery_id, "delivered")
    wait_for(
        lambda: pipeline["worker"].output().count(str(receipts[0].delivery_id)) >= 2,
        10,
        what="two attempt lines",
    )
    lines = [
        line
        for line in pipeline["worker"].output().splitlines()
        if f"delivery {receipts[0].delivery_id}" in line
    ]
    assert len(lines) == 2
    assert "attempt=1 outcome=retry status=500" in lines[0]
    assert "attempt=2 outcome=delivered status=201" in lines[1]
    assert all("vendor=infobip op=send_event" in line and "duration_ms=" in line for line in lines)
    assert "loggy@example.com" not in pipeline["worker"].output()
