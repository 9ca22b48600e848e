"""Two named webhooks, end to end: producer → PostgreSQL → Redis → a real worker → a real HTTP
receiver that verifies every request with the `standardwebhooks` reference library."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from eventrelay.models.session import get_engine
from eventrelay.worker.fleet import breaker
from eventrelay.worker.producer import enqueue, enqueue_many
from eventrelay.worker.vendors import refresh_vendors
from tests.conftest import TEST_ENV, _child_env
from tests.integration.helpers import attempts, wait_status
from tests.integration.receiver import Receiver
from tests.support import Proc, start_scheduler, start_worker, wait_for

PARTNER_SECRET = "whsec_" + base64.b64encode(b"e2e-partner-key-7f3a9c51b2e0c4d8").decode()
BILLING_SECRET = "whsec_" + base64.b64encode(b"e2e-billing-key-9e7b3d2a6f11aa42").decode()
SECRETS = [PARTNER_SECRET, BILLING_SECRET] + [
    s.removeprefix("whsec_") for s in (PARTNER_SECRET, BILLING_SECRET)
]
REDIS_URL = TEST_ENV["EVENTRELAY_REDIS_URL"]

pytestmark = pytest.mark.usefixtures("clean", "fleet")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver(secrets={"/partner": PARTNER_SECRET, "/billing": BILLING_SECRET}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def webhook_env(receiver: Receiver) -> Iterator[dict[str, str]]:
    env = {
        "WEBHOOK_PARTNER_URL": receiver.url("/partner"),
        "WEBHOOK_PARTNER_SECRET": PARTNER_SECRET,
        "WEBHOOK_PARTNER_RATE_LIMIT": "40",
        "WEBHOOK_BILLING_URL": receiver.url("/billing"),
        "WEBHOOK_BILLING_SECRET": BILLING_SECRET,
    }
    # The producer (this process) knows the endpoints by name too: the door checks the vendor.
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        refresh_vendors()
        yield env
    refresh_vendors()


@pytest.fixture(scope="module")
def fleet(
    database_url: str, webhook_env: dict[str, str], logs_dir: Path
) -> Iterator[dict[str, Proc]]:
    env = _child_env(**webhook_env)
    worker = start_worker(env, logs_dir / "webhook-worker.log", name="webhooks")
    scheduler = start_scheduler(env, logs_dir / "webhook-scheduler.log")
    yield {"worker": worker, "scheduler": scheduler}
    scheduler.kill()  # the module's checks are done: a warm stop only waits
    worker.kill()


@pytest.fixture(autouse=True)
def _fresh_receiver(receiver: Receiver) -> None:
    receiver.reset()


def test_two_named_webhooks_are_delivered_and_every_signature_verifies(
    receiver: Receiver,
) -> None:
    events = [{"type": "order.paid", "data": {"id": i, "note": "ünïcode ✓"}} for i in range(5)]
    receipts = enqueue_many(
        [{"vendor": "webhook_partner", "operation": "send_event", "payload": e} for e in events]
        + [{"vendor": "webhook_billing", "operation": "send_event", "payload": e} for e in events]
    )
    for r in receipts:
        wait_status(r.delivery_id, "delivered")
    partner, billing = receiver.at("/partner"), receiver.at("/billing")
    assert len(partner) == len(billing) == 5
    assert all(r.verified for r in partner + billing), [r.why_not for r in partner + billing]
    assert sorted(r.headers["webhook-id"] for r in partner + billing) == sorted(
        str(r.delivery_id) for r in receipts
    )
    assert sorted((r.json for r in partner), key=lambda e: e["data"]["id"]) == events
    for r in partner:
        assert r.headers["webhook-signature"].startswith("v1,")
        assert r.headers["content-type"] == "application/json"


def test_a_retried_webhook_keeps_its_webhook_id_and_honours_retry_after(
    receiver: Receiver,
) -> None:
    receiver.script("/partner", 503, retry_after=2)
    receipt = enqueue("webhook_partner", "send_event", {"type": "user.created", "data": {}})
    row = wait_status(receipt.delivery_id, "delivered")
    assert row.attempts == 2
    first, second = receiver.at("/partner")
    assert (first.status, second.status) == (503, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(receipt.delivery_id)
    assert first.verified and second.verified
    assert second.ts - first.ts >= 1.9  # the receiver's Retry-After, not the 0.2 s backoff


def test_other_4xx_is_dead_with_the_receivers_reason(receiver: Receiver) -> None:
    receiver.script("/billing", 422)
    receipt = enqueue("webhook_billing", "send_event", {"type": "invoice.bad"})
    row = wait_status(receipt.delivery_id, "dead")
    assert row.attempts == 1 and "HTTP 422" in row.reason and "no (422)" in row.reason


def test_410_gone_parks_the_endpoint_its_jobs_wait_and_resume_delivers_them(
    receiver: Receiver, cli: Any, webhook_env: dict[str, str]
) -> None:
    receiver.script("/billing", 410)
    receipt = enqueue("webhook_billing", "send_event", {"type": "invoice.paid"})
    wait_for(lambda: breaker.state("webhook_billing", REDIS_URL) == "parked", 20, what="parking")
    assert "endpoint gone (HTTP 410)" in (breaker.parked_reason("webhook_billing", REDIS_URL) or "")
    wait_status(receipt.delivery_id, "pending")  # waits, spends nothing of its budget
    assert [str(a.outcome) for a in attempts(receipt.delivery_id)] == ["parked"]
    # The other endpoint is a vendor of its own: it still delivers.
    other = enqueue("webhook_partner", "send_event", {"type": "still.flowing"})
    wait_status(other.delivery_id, "delivered")

    cli("vendors", "resume", "webhook_billing", env=_child_env(**webhook_env))
    wait_status(receipt.delivery_id, "delivered", timeout=45)
    assert [r.status for r in receiver.at("/billing")] == [410, 200]


def test_the_secrets_reach_no_table_no_redis_key_and_no_log(logs_dir: Path) -> None:
    receipt = enqueue("webhook_partner", "send_event", {"type": "secret.check"})
    wait_status(receipt.delivery_id, "delivered")
    with get_engine().connect() as conn:
        stored = json.dumps(
            [
                [str(v) for v in row]
                for table in ("deliveries", "delivery_attempts", "idempotency_keys")
                for row in conn.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
            ]
        )
    from eventrelay.worker.fleet.redis_client import get_redis

    client = get_redis(REDIS_URL)
    in_redis = " ".join(repr(client.dump(key)) + repr(key) for key in client.scan_iter(count=1000))
    logs = (logs_dir / "webhook-worker.log").read_text(errors="replace") + (
        logs_dir / "webhook-scheduler.log"
    ).read_text(errors="replace")
    for secret in SECRETS:
        assert secret not in stored and secret not in in_redis and secret not in logs
