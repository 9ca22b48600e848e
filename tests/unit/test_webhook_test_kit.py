"""An app's tests drain webhook jobs with eventrelay.testing like any vendor's: the requests
are signed (verified here with `standardwebhooks`), `webhook-id` is the delivery id on every
retry, and an app that sets only the endpoint's URL gets a test secret of the right form."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Receiver

from eventrelay import enqueue
from tests.unit.test_testing_kit import no_services  # noqa: F401 (no database, no Redis)

SECRET = "whsec_" + base64.b64encode(b"app-test-suite-signing-key-0001").decode()


def test_drained_webhooks_are_signed_and_keep_their_id_across_a_retry(
    eventrelay_outbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_PARTNER_URL", "https://partner.example/hooks")
    monkeypatch.setenv("WEBHOOK_PARTNER_SECRET", SECRET)
    receipt = enqueue("webhook_partner", "send_event", {"type": "order.paid", "data": {"id": 1}})

    report = eventrelay_outbox.drain({"webhook_partner": [503, 204]})

    assert report.job(receipt).status == "delivered"
    first, second = report.sent_to("webhook_partner")
    assert first.url == "https://partner.example/hooks"
    for sent in (first, second):
        assert sent.headers["webhook-id"] == str(receipt.delivery_id)
        assert Receiver(SECRET).verify(sent.body, dict(sent.headers)) == {
            "type": "order.paid",
            "data": {"id": 1},
        }


def test_an_app_that_sets_only_the_url_still_drains(
    eventrelay_outbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_PARTNER_URL", "https://partner.example/hooks")
    monkeypatch.delenv("WEBHOOK_PARTNER_SECRET", raising=False)
    receipt = enqueue("webhook_partner", "send_event", {"type": "x"})
    report = eventrelay_outbox.drain()
    assert report.job(receipt).status == "delivered"
    [sent] = report.sent_to("webhook_partner")
    assert sent.headers["webhook-signature"].startswith("v1,")
