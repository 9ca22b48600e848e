"""A vendor's 429 Retry-After pauses it fleet-wide, for no longer than the backoff cap, and
operators see the pause: `status`, `vendors list` and the metrics say "cooling"."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from eventrelay.worker.config import get_settings
from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.fleet import breaker, keys, ratelimit
from eventrelay.worker.ops.cli import cli
from eventrelay.worker.producer import enqueue
from eventrelay.worker.vendors import get_vendor, vendor_names
from tests.conftest import TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import attempts, delivery, wait_status
from tests.support import wait_for

URL = TEST_ENV["EVENTRELAY_REDIS_URL"]
CAP_SECONDS = float(TEST_ENV["EVENTRELAY_BACKOFF_CAP_SECONDS"])  # 10 s in the tests
THREE_YEARS = 100_000_000


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("retry_after", [THREE_YEARS, math.inf])
def test_a_retry_after_of_years_pauses_the_vendor_no_longer_than_the_backoff_cap(
    redis_client: Any, retry_after: float
) -> None:
    ratelimit.back_off("vtcdn", retry_after, URL)
    assert 0 < redis_client.pttl(keys.cooldown("vtcdn")) <= CAP_SECONDS * 1000
    gate = breaker.check("vtcdn", URL)
    assert not gate.allowed and gate.wait_seconds <= CAP_SECONDS


@pytest.mark.usefixtures("clean")
def test_a_caller_may_give_the_cooldown_cap_itself(redis_client: Any) -> None:
    ratelimit.back_off("infobip", THREE_YEARS, URL, cap_seconds=3)
    assert 0 < redis_client.pttl(keys.cooldown("infobip")) <= 3000


def test_the_cooldown_cap_is_the_retry_policys_backoff_cap_for_every_vendor() -> None:
    for name in vendor_names():
        policy = RetryPolicy.for_vendor(get_vendor(name), get_settings())
        assert ratelimit.cooldown_cap_seconds(name) == policy.backoff_cap_seconds


def test_a_retry_after_of_years_defers_a_delivery_no_longer_than_the_backoff_cap() -> None:
    policy = RetryPolicy.for_vendor(get_vendor("vtcdn"), get_settings())
    for retry_after in (THREE_YEARS, math.inf):
        assert policy.delay_seconds(1, retry_after) == CAP_SECONDS


@pytest.mark.usefixtures("clean")
def test_a_cooling_vendor_reads_cooling_with_its_seconds_left_and_parked_still_wins() -> None:
    ratelimit.back_off("botsi", 0.6, URL)
    health = breaker.health("botsi", URL)
    assert health.state == breaker.state("botsi", URL) == "cooling"
    assert health.cooling_seconds_left is not None and 0 < health.cooling_seconds_left <= 0.6
    assert breaker.state("vtcdn", URL) == "closed"  # only the vendor that said 429
    breaker.park("botsi", "credentials rejected (HTTP 401): test", URL)
    assert breaker.state("botsi", URL) == "parked"
    assert breaker.health("botsi", URL).cooling_seconds_left is None
    breaker.unpark("botsi", URL)
    assert breaker.state("botsi", URL) == "cooling"
    wait_for(lambda: breaker.state("botsi", URL) == "closed", 3, what="the cooldown to end")


@pytest.mark.usefixtures("clean")
def test_metrics_show_a_cooling_vendor_and_its_seconds_left() -> None:
    from eventrelay.worker.ops.metrics import EventRelayCollector

    ratelimit.back_off("vtcdn", 8, URL)
    registry = CollectorRegistry()
    registry.register(EventRelayCollector(get_settings()))
    text = generate_latest(registry).decode()
    assert 'eventrelay_circuit_state{state="cooling",vendor="vtcdn"} 1.0' in text
    assert 'eventrelay_circuit_state{state="closed",vendor="vtcdn"} 0.0' in text
    assert 'eventrelay_circuit_state{state="closed",vendor="botsi"} 1.0' in text
    [left] = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('eventrelay_cooldown_seconds{vendor="vtcdn"}')
    ]
    assert 0 < left <= 8
    assert 'eventrelay_cooldown_seconds{vendor="botsi"} 0.0' in text


def _run(*args: str) -> str:
    # In process: the cooldown lasts at most the tests' 10 s cap, too short for many
    # `eventrelay` process start-ups.
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.usefixtures("clean", "pipeline")
def test_a_429_of_years_shows_the_vendor_cooling_then_delivers_within_the_cap(
    mock_vendors: Any,
) -> None:
    mock_vendors.set_faults("vtcdn", retry_after=THREE_YEARS)  # once, then it accepts
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    answered = datetime.now(UTC)

    def cooling() -> Any:
        entry = json.loads(_run("status", "--json"))["vendors"]["vtcdn"]
        return entry if entry["circuit"] == "cooling" else None

    entry = wait_for(cooling, 10, interval=0.05, what="vtcdn to show as cooling")
    assert 0 < entry["cooling_seconds_left"] <= CAP_SECONDS
    listed = json.loads(_run("vendors", "list", "--json"))
    assert listed["vendors"]["vtcdn"] == ["send_event"]  # the operations, as before
    assert listed["circuits"]["vtcdn"]["circuit"] == "cooling"
    assert listed["circuits"]["botsi"]["circuit"] == "closed"
    assert "vtcdn: send_event (cooling " in _run("vendors", "list")
    table = _run("status")
    row = next(line for line in table.splitlines() if line.lstrip("│ ").startswith("vtcdn"))
    assert re.search(r"cooling \d+s\s*$", row), table
    waiting = delivery(receipt.delivery_id)
    assert waiting.next_attempt_at <= answered + timedelta(seconds=CAP_SECONDS + 1)

    row = wait_status(receipt.delivery_id, "delivered", timeout=CAP_SECONDS + 15)
    assert row.finished_at <= answered + timedelta(seconds=CAP_SECONDS + 10)
    assert [str(a.outcome) for a in attempts(receipt.delivery_id)] == ["retry", "delivered"]
