"""The shop's checkout, tested with eventrelay's `eventrelay_outbox` fixture only: no Redis,
no worker, no mock vendor server."""

from __future__ import annotations

import json
import time
from typing import Any

from eventrelay.testing import rate_limited


def checkout(client: Any, path: str = "/checkout", **body: Any) -> Any:
    body = {"number": "A-100", "email": "ana@example.com", "total": 49, **body}
    return client.post(path, json.dumps(body), content_type="application/json")


def test_checkout_enqueues_the_purchase_and_infobip_gets_it_once_after_a_429(
    client: Any, eventrelay_outbox: Any, same_database: None
) -> None:
    started = time.perf_counter()

    response = checkout(client)

    assert response.status_code == 201
    purchase = eventrelay_outbox.assert_enqueued(
        "infobip",
        "send_event",
        {"personId": "ana@example.com", "definitionId": "purchase", "properties": {"total": 49}},
        idempotency_key="purchase-A-100",
    )
    eventrelay_outbox.assert_enqueued(
        "vtcdn", "send_event", {"event": {"confirmation": {"orderId": "A-100"}}}
    )

    viewed = time.perf_counter() - started
    report = eventrelay_outbox.drain({"infobip": [rate_limited(retry_after=30), 201]})

    elapsed = time.perf_counter() - started
    result = report.job(purchase.delivery_id)
    assert result.status == "delivered"
    assert [a.outcome for a in result.attempt_history] == ["retry", "delivered"]
    assert [r.answer.status for r in report.sent_to("infobip")] == [429, 201]
    assert report.sent_to("infobip")[-1].json == {
        "properties": {"orderNumber": "A-100", "total": 49}
    }
    assert len(report.delivered) == 2  # vtcdn's confirmation too
    assert elapsed < 1.0, f"view, assertions and drain took {elapsed:.3f}s"
    print(f"checkout test: view {viewed * 1000:.0f} ms, with drain {elapsed * 1000:.0f} ms")


def test_declined_checkout_rolls_back_and_enqueues_nothing(
    client: Any, eventrelay_outbox: Any, same_database: None
) -> None:
    response = checkout(client, decline=True)

    assert response.status_code == 500
    eventrelay_outbox.assert_not_enqueued()
    assert eventrelay_outbox.drain().requests == []


def test_checkout_on_a_separate_database_enqueues_after_the_commit_only(
    client: Any, eventrelay_outbox: Any
) -> None:
    assert checkout(client, "/checkout-elsewhere", number="B-1", decline=True).status_code == 500
    eventrelay_outbox.assert_not_enqueued()

    assert checkout(client, "/checkout-elsewhere", number="B-2").status_code == 201

    job = eventrelay_outbox.assert_enqueued(
        "infobip", "send_event", {"properties": {"orderNumber": "B-2"}}
    )
    report = eventrelay_outbox.drain({"infobip": [500, 201]})
    assert report.job(job.delivery_id).status == "delivered"
    assert report.job(job.delivery_id).attempts == 2


def test_the_same_order_confirmed_twice_reaches_vtcdn_once(
    client: Any, eventrelay_outbox: Any, same_database: None
) -> None:
    from eventrelay.worker.integrations.django import enqueue

    checkout(client)
    # A retried request handler confirms the same order again: vtcdn's rule keys it by order.
    enqueue(
        "vtcdn",
        "send_event",
        {
            "user": {"email": "ana@example.com"},
            "event": {"confirmation": {"orderId": "A-100", "total": 49}},
        },
    )

    eventrelay_outbox.assert_enqueued("vtcdn", "send_event", count=1)
    report = eventrelay_outbox.drain({"vtcdn": [500]})
    assert len([r for r in report.sent_to("vtcdn") if r.answer.status == 200]) == 1
