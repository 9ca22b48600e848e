"""The webhook vendor: named endpoints from the environment, Standard Webhooks signatures
(verified with the `standardwebhooks` reference library, never with eventrelay's own code),
and the spec's answers."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Receiver
from standardwebhooks.webhooks import WebhookVerificationError

from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.errors import ConfigurationError, InvalidJob
from eventrelay.worker.fleet.queues import all_queues
from eventrelay.worker.redact import redact
from eventrelay.worker.vendors import get_vendor, refresh_vendors, vendor_names
from eventrelay.worker.vendors.base import Verdict
from eventrelay.worker.vendors.webhook import endpoint_names

PARTNER_SECRET = "whsec_" + base64.b64encode(b"partner-signing-key-0123456789ab").decode()
BILLING_SECRET = "whsec_" + base64.b64encode(b"billing-signing-key-abcdefghijkl").decode()
ORDER = {"type": "order.paid", "data": {"id": 991, "total": 10.5, "items": ["a", "ü"]}}


@pytest.fixture
def webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WEBHOOK_PARTNER_URL", "https://partner.example/hooks/eventrelay")
    monkeypatch.setenv("WEBHOOK_PARTNER_SECRET", PARTNER_SECRET)
    monkeypatch.setenv("WEBHOOK_PARTNER_RATE_LIMIT", "5")
    monkeypatch.setenv("WEBHOOK_BILLING_URL", "https://billing.example/in")
    monkeypatch.setenv("WEBHOOK_BILLING_SECRET", BILLING_SECRET)
    monkeypatch.setenv("WEBHOOK_BILLING_MAX_ATTEMPTS", "7")
    refresh_vendors()
    yield
    monkeypatch.undo()
    refresh_vendors()


def _verify(secret: str, request: Any) -> Any:
    return Receiver(secret).verify(request.body(), dict(request.headers))


@pytest.mark.usefixtures("webhooks")
def test_each_named_endpoint_is_a_vendor_of_its_own_with_queues_and_settings() -> None:
    names = vendor_names()
    assert {"webhook_partner", "webhook_billing"} <= set(names) and "webhook" not in names
    assert {"eventrelay.webhook_partner", "eventrelay.webhook_partner.retry"} <= set(all_queues())
    partner, billing = get_vendor("webhook_partner"), get_vendor("webhook_billing")
    assert partner.settings.rate_limit == 5 and billing.settings.rate_limit is None
    from eventrelay.worker.config import get_settings

    assert RetryPolicy.for_vendor(billing, get_settings()).max_attempts == 7
    assert set(partner.operations) == {"send_event"}


def test_endpoint_names_come_from_url_and_secret_variables_only() -> None:
    env = {
        "WEBHOOK_URL": "x",
        "WEBHOOK_PARTNER_URL": "x",
        "WEBHOOK_CRM_EU_SECRET": "x",
        "webhook_lower_url": "x",
        "WEBHOOK_PARTNER_RATE_LIMIT": "5",
        "WEBHOOK_RATE_LIMIT": "5",
        "WEBHOOK_BASE_URL": "x",  # the `webhook` vendor's base_url setting, not an endpoint
        "WEBHOOK__URL": "x",
    }
    assert endpoint_names(env) == [None, "CRM_EU", "LOWER", "PARTNER"]


@pytest.mark.usefixtures("webhooks")
def test_a_signed_request_verifies_with_the_standardwebhooks_library() -> None:
    delivery_id = uuid.uuid4()
    request = get_vendor("webhook_partner").build_request_for("send_event", [delivery_id], [ORDER])
    assert request.method == "POST" and request.url == "https://partner.example/hooks/eventrelay"
    assert request.headers["webhook-id"] == str(delivery_id)
    assert request.headers["webhook-signature"].startswith("v1,")
    assert _verify(PARTNER_SECRET, request) == ORDER  # the payload, unchanged, is the body
    with pytest.raises(WebhookVerificationError):
        _verify(BILLING_SECRET, request)  # each endpoint signs with its own secret


@pytest.mark.usefixtures("webhooks")
def test_build_request_without_a_delivery_id_still_verifies() -> None:
    request = get_vendor("webhook_billing").build_request("send_event", [{"a": [1, {"b": None}]}])
    assert _verify(BILLING_SECRET, request) == {"a": [1, {"b": None}]}


@pytest.mark.usefixtures("webhooks")
def test_a_retry_keeps_the_webhook_id_and_signs_its_new_timestamp() -> None:
    vendor, delivery_id = get_vendor("webhook_partner"), uuid.uuid4()
    first = vendor.build_request("send_event", [ORDER], [delivery_id], timestamp=1_700_000_000)
    again = vendor.build_request_for("send_event", [delivery_id], [ORDER])
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == str(delivery_id)
    assert first.headers["webhook-signature"] != again.headers["webhook-signature"]
    _verify(PARTNER_SECRET, again)
    with pytest.raises(WebhookVerificationError, match="too old"):
        _verify(PARTNER_SECRET, first)  # the receiver's replay check sees the old timestamp


def test_while_rotating_both_secrets_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("WEBHOOK_SECRET", f"{BILLING_SECRET} {PARTNER_SECRET}")
    refresh_vendors()
    try:
        request = get_vendor("webhook").build_request("send_event", [ORDER])
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        _verify(BILLING_SECRET, request)
        _verify(PARTNER_SECRET, request)
    finally:
        monkeypatch.undo()
        refresh_vendors()


@pytest.mark.parametrize(
    "bad", ["not-a-secret", "whsec_", "whsec_not*base64!", "c2VjcmV0", "whsec_ok+ whsec_%%"]
)
def test_a_bad_secret_is_reported_naming_the_variable_never_its_value(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("WEBHOOK_PARTNER_URL", "https://partner.example/in")
    monkeypatch.setenv("WEBHOOK_PARTNER_SECRET", bad)
    refresh_vendors()
    try:
        assert "webhook_partner" in vendor_names()
        with pytest.raises(ConfigurationError) as err:
            get_vendor("webhook_partner")
        assert err.value.env_var == "WEBHOOK_PARTNER_SECRET"
        assert "WEBHOOK_PARTNER_SECRET" in str(err.value) and "whsec_" in str(err.value)
        assert all(part not in str(err.value) for part in bad.split() if part != "whsec_")
    finally:
        monkeypatch.undo()
        refresh_vendors()


def test_a_missing_secret_holds_the_endpoint_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_PARTNER_URL", "https://partner.example/in")
    monkeypatch.delenv("WEBHOOK_PARTNER_SECRET", raising=False)
    refresh_vendors()
    try:
        with pytest.raises(ConfigurationError) as err:
            get_vendor("webhook_partner").build_request("send_event", [ORDER])
        assert err.value.env_var == "WEBHOOK_PARTNER_SECRET"
    finally:
        monkeypatch.undo()
        refresh_vendors()


def test_a_url_that_is_not_http_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_PARTNER_URL", "file:///etc/passwd")
    monkeypatch.setenv("WEBHOOK_PARTNER_SECRET", PARTNER_SECRET)
    refresh_vendors()
    try:
        with pytest.raises(ConfigurationError) as err:
            get_vendor("webhook_partner")
        assert err.value.env_var == "WEBHOOK_PARTNER_URL"
    finally:
        monkeypatch.undo()
        refresh_vendors()


@pytest.mark.usefixtures("webhooks")
def test_the_secret_is_registered_for_redaction() -> None:
    get_vendor("webhook_partner")
    encoded = PARTNER_SECRET.removeprefix("whsec_")
    text = redact(f"echo {PARTNER_SECRET} and {encoded}", None)
    assert PARTNER_SECRET not in text and encoded not in text


@pytest.mark.usefixtures("webhooks")
@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (410, Verdict.CREDENTIALS),  # parks the endpoint: the spec's "disable the endpoint"
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (301, Verdict.DEAD),
        (400, Verdict.DEAD),
        (401, Verdict.DEAD),
        (403, Verdict.DEAD),
        (404, Verdict.DEAD),
        (422, Verdict.DEAD),
    ],
)
def test_answers_follow_the_standard_webhooks_status_handling(
    status: int, verdict: Verdict
) -> None:
    got, reason = get_vendor("webhook_partner").classify(status, {"error": "why"}, {})
    assert got is verdict
    if status == 410:
        assert reason and "eventrelay vendors resume webhook_partner" in reason


@pytest.mark.usefixtures("webhooks")
def test_any_json_object_is_a_payload_and_is_stored_unchanged() -> None:
    job = get_vendor("webhook_partner").prepare("send_event", ORDER, None)
    assert job.payload == ORDER and job.vendor == "webhook_partner"
    with pytest.raises(InvalidJob, match="must be a JSON object"):
        get_vendor("webhook_partner").prepare("send_event", [ORDER], None)
    with pytest.raises(InvalidJob, match="valid operations: send_event"):
        get_vendor("webhook_partner").prepare("create_profile", ORDER, None)


@pytest.mark.usefixtures("webhooks")
def test_the_body_is_the_payload_as_json() -> None:
    request = get_vendor("webhook_partner").build_request("send_event", [ORDER])
    assert json.loads(request.body()) == ORDER
    assert request.headers["Content-Type"] == "application/json"


def test_a_worker_refuses_to_start_with_a_bad_secret_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eventrelay.worker.engine.startup import check_settings

    monkeypatch.setenv("WEBHOOK_PARTNER_URL", "https://partner.example/in")
    monkeypatch.setenv("WEBHOOK_PARTNER_SECRET", "whsec_not*base64!")
    monkeypatch.setenv("WEBHOOK_BILLING_URL", "https://billing.example/in")
    monkeypatch.delenv("WEBHOOK_BILLING_SECRET", raising=False)
    refresh_vendors()
    try:
        found = check_settings()
        assert [line for line in found.refused if "WEBHOOK_PARTNER_SECRET" in line]
        assert not any("not*base64" in line for line in found.refused + found.waiting)
        assert [line for line in found.waiting if line.startswith("WEBHOOK_BILLING_SECRET")]
        assert not [line for line in found.waiting if "BASE_URL" in line and "WEBHOOK" in line]
    finally:
        monkeypatch.undo()
        refresh_vendors()


def test_an_endpoint_set_after_the_registry_was_read_is_known_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "webhook_late" not in vendor_names()  # the registry has been read by now
    monkeypatch.setenv("WEBHOOK_LATE_URL", "https://late.example/in")
    monkeypatch.setenv("WEBHOOK_LATE_SECRET", PARTNER_SECRET)
    try:
        assert "webhook_late" in vendor_names()
        request = get_vendor("webhook_late").build_request("send_event", [ORDER])
        assert _verify(PARTNER_SECRET, request) == ORDER
    finally:
        monkeypatch.undo()
        refresh_vendors()
    assert "webhook_late" not in vendor_names()


def test_an_unknown_webhook_endpoint_says_which_variable_names_it() -> None:
    with pytest.raises(InvalidJob, match="WEBHOOK_NOWHERE_URL names that endpoint"):
        get_vendor("webhook_nowhere")


def test_a_secret_set_anew_signs_at_once_and_a_bad_one_is_reported_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_RENEW_URL", "https://renew.example/in")
    monkeypatch.setenv("WEBHOOK_RENEW_SECRET", PARTNER_SECRET)
    try:
        first = get_vendor("webhook_renew").build_request("send_event", [ORDER])
        _verify(PARTNER_SECRET, first)
        monkeypatch.setenv("WEBHOOK_RENEW_SECRET", BILLING_SECRET)
        _verify(BILLING_SECRET, get_vendor("webhook_renew").build_request("send_event", [ORDER]))
        monkeypatch.setenv("WEBHOOK_RENEW_SECRET", "whsec_!!")
        with pytest.raises(ConfigurationError, match="WEBHOOK_RENEW_SECRET"):
            get_vendor("webhook_renew")
    finally:
        monkeypatch.undo()
        refresh_vendors()
