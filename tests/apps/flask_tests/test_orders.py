"""The Flask shop's order routes, tested with `eventrelay_outbox` only: no Redis, no worker."""

from __future__ import annotations

from typing import Any

from eventrelay.testing import timeout


def order(client: Any, path: str = "/orders", **body: Any) -> Any:
    return client.post(path, json={"number": "F-1", "email": "bo@example.com", **body})


def test_order_enqueues_a_vtcdn_update_that_is_delivered_after_a_timeout(
    client: Any, eventrelay_outbox: Any
) -> None:
    response = order(client)

    assert response.status_code == 201
    job = eventrelay_outbox.assert_enqueued(
        "vtcdn", "send_event", {"user": {"email": "bo@example.com"}}, idempotency_key="order-F-1"
    )
    assert str(job.delivery_id) == response.get_json()["delivery_id"]

    report = eventrelay_outbox.drain({"vtcdn": [timeout(), 200]})

    (result,) = report
    assert result.status == "delivered"
    assert [a.error_class for a in result.attempt_history] == ["ReadTimeout", None]
    sent = report.sent_to("vtcdn")[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/event")
    assert sent.json == {
        "user": {"email": "bo@example.com"},
        "event": {"update": {"firstname": "F-1"}},
    }


def test_rolled_back_order_enqueues_nothing(client: Any, eventrelay_outbox: Any) -> None:
    assert order(client, decline="rollback").status_code == 402
    assert order(client, decline="raise").status_code == 500

    eventrelay_outbox.assert_not_enqueued()


def test_gift_rolled_back_in_its_savepoint_takes_only_its_own_job(
    client: Any, eventrelay_outbox: Any
) -> None:
    assert order(client, "/orders-with-gift").status_code == 201

    eventrelay_outbox.assert_enqueued("vtcdn", "send_event")
    eventrelay_outbox.assert_not_enqueued("gravityfield")


def test_order_on_a_separate_database_is_enqueued_after_the_commit(
    client: Any, eventrelay_outbox: Any
) -> None:
    assert order(client, "/orders-elsewhere").status_code == 201
    assert order(client, "/orders-elsewhere", number="F-2", decline="rollback").status_code == 402

    eventrelay_outbox.assert_enqueued("vtcdn", "send_event", idempotency_key="order-F-1")
    assert len(eventrelay_outbox) == 1
    assert eventrelay_outbox.drain().delivered[0].vendor == "vtcdn"
