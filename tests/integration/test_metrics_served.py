"""Every metric the alert rules and the dashboard name is one `eventrelay metrics` serves, and
the heartbeats come from the workers and the scheduler through Redis."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from eventrelay.worker.producer import enqueue
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.support import Proc, free_port, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\beventrelay_[a-z_]+")


def _named_in_deploy() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "eventrelay.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return {m for e in exprs for m in METRIC.findall(e)}


def _scrape(child_env: Any, logs_dir: Path) -> dict[str, list[Any]]:
    port = free_port()
    proc = Proc(
        [sys.executable, "-m", "eventrelay", "metrics", "--port", str(port), "--host", "127.0.0.1"],
        child_env(),
        logs_dir / "metrics-served.log",
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
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


@pytest.mark.usefixtures("clean", "pipeline")
def test_every_metric_in_the_rules_and_dashboard_is_served(
    child_env: Any, logs_dir: Path, mock_vendors: Any
) -> None:
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    wait_status(receipt.delivery_id, "delivered")  # so the latency histogram has a vendor
    from eventrelay.worker.fleet import liveness
    from tests.conftest import TEST_ENV

    url = TEST_ENV["EVENTRELAY_REDIS_URL"]
    # `clean` emptied Redis: wait for the worker's next heartbeat (every 2 s) and a tick.
    wait_for(lambda: liveness.worker_beats(url) or None, 20, what="a worker heartbeat")
    wait_for(lambda: liveness.scheduler_last_tick(url), 20, what="a scheduler tick")
    samples = _scrape(child_env, logs_dir)
    named = _named_in_deploy()
    assert len(named) >= 10
    missing = sorted(n for n in named if n not in samples)
    assert missing == [], f"named in deploy/ but not served: {missing}"

    assert samples["eventrelay_workers_alive"][0].value >= 1
    worker_beats = samples["eventrelay_worker_last_heartbeat_timestamp_seconds"]
    assert all(time.time() - s.value < 30 for s in worker_beats)
    (tick,) = samples["eventrelay_scheduler_last_tick_timestamp_seconds"]
    assert time.time() - tick.value < 10
    ages = {s.labels["vendor"]: s.value for s in samples["eventrelay_oldest_pending_age_seconds"]}
    assert set(ages) == {"botsi", "vtcdn", "infobip", "gravityfield"} and ages["vtcdn"] == 0
