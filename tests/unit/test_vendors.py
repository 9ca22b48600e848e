"""Each vendor's requests, response rules and validation, exactly as its documentation says."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from eventrelay.worker.errors import InvalidJob, Unsendable
from eventrelay.worker.producer import validate_job
from eventrelay.worker.vendors import get_vendor, vendor_names
from eventrelay.worker.vendors.base import REASON_MAX_CHARS, SendResult, Verdict, storable
from eventrelay.worker.vendors.botsi import Botsi, BotsiSettings
from eventrelay.worker.vendors.gravityfield import GravityField, GravityFieldSettings
from eventrelay.worker.vendors.infobip import Infobip, InfobipSettings
from eventrelay.worker.vendors.vtcdn import Vtcdn, VtcdnSettings
from tests.integration import jobs


# model_construct: the class defaults (production base URLs) without the test environment.
def botsi() -> Botsi:
    return Botsi(BotsiSettings.model_construct(secret_key=SecretStr("sk_live_1")))


def vtcdn() -> Vtcdn:
    return Vtcdn(VtcdnSettings.model_construct(api_key=SecretStr("vt_key_1")))


def infobip() -> Infobip:
    return Infobip(
        InfobipSettings.model_construct(
            base_url="https://xyz.api.infobip.com", api_key=SecretStr("ib_key_1")
        )
    )


def gravityfield() -> GravityField:
    return GravityField(
        GravityFieldSettings.model_construct(
            base_url="https://gf.example",
            token=SecretStr("gf_tok_1"),
            site_key=SecretStr("site-key-1"),
        )
    )


# ---- the exact requests ------------------------------------------------------------------------


def test_botsi_create_profile_request() -> None:
    req = botsi().build_request("create_profile", [jobs.botsi_profile()])
    assert (req.method, req.url) == ("POST", "https://app.botsi.com/api/v1/web-api/profiles")
    assert req.headers == {"Authorization": "sk_live_1", "Content-Type": "application/json"}
    assert req.json_body == jobs.botsi_profile()


def test_botsi_events_are_sent_as_a_json_array() -> None:
    events = [jobs.botsi_event("a"), jobs.botsi_event("b")]
    req = botsi().build_request("send_event", events)
    assert req.url == "https://app.botsi.com/api/v1/web-api/events"
    assert req.headers["Authorization"] == "sk_live_1"  # the key itself, no scheme word
    assert req.json_body == events


def test_vtcdn_event_request_has_no_trailing_slash_and_bare_key() -> None:
    req = vtcdn().build_request("send_event", [jobs.vtcdn_generic()])
    assert req.url == "https://api.vtcdn.net/v1/event"
    assert req.headers["Authorization"] == "vt_key_1"
    assert req.json_body == jobs.vtcdn_generic()


def test_infobip_moves_person_and_definition_into_the_url_encoded_path() -> None:
    req = infobip().build_request("send_event", [jobs.infobip_event("jane+tag@example.com")])
    assert req.url == (
        "https://xyz.api.infobip.com/peopleevents/2/persons/jane%2Btag%40example.com"
        "/definitions/addToCart/events?identifierType=EMAIL"
    )
    assert req.headers["Authorization"] == "App ib_key_1"
    assert req.json_body == {"properties": jobs.infobip_event()["properties"]}


def test_infobip_null_properties_are_sent_as_null() -> None:
    payload = {
        "personId": "+385 91 123",
        "identifierType": "PHONE",
        "definitionId": "login",
        "properties": None,
    }
    req = infobip().build_request("send_event", [payload])
    assert "/persons/%2B385%2091%20123/" in req.url
    assert req.json_body == {"properties": None}


def test_gravityfield_fills_sec_from_the_site_key_and_uses_bearer_auth() -> None:
    req = gravityfield().build_request("send_event", [jobs.gravityfield_event()])
    assert req.url == "https://gf.example/event"
    assert req.headers["Authorization"] == "Bearer gf_tok_1"
    assert req.json_body["sec"] == "site-key-1"
    assert req.json_body["data"] == jobs.gravityfield_event()["data"]


def test_gravityfield_sends_the_workers_site_key_even_if_a_stored_job_holds_a_sec() -> None:
    req = gravityfield().build_request(
        "send_event", [{**jobs.gravityfield_event(), "sec": "stored-before-the-fix"}]
    )
    assert req.json_body["sec"] == "site-key-1"


@pytest.mark.parametrize("producer_site_key", [None, "site-key-1", "another-site-key"])
def test_a_gravityfield_sec_is_never_stored_whatever_the_producers_environment(
    producer_site_key: str | None,
) -> None:
    # Producers usually lack GRAVITYFIELD_SITE_KEY: the key a job carries is dropped all the same.
    settings = GravityFieldSettings.model_construct(
        site_key=None if producer_site_key is None else SecretStr(producer_site_key)
    )
    job = GravityField(settings).prepare(
        "send_event", {**jobs.gravityfield_event(), "sec": "site-key-1"}, None
    )
    assert job.payload == jobs.gravityfield_event()


def test_secrets_do_not_show_in_the_request_repr() -> None:
    req = botsi().build_request("create_profile", [jobs.botsi_profile()])
    assert "sk_live_1" not in repr(req)
    assert "sk_live_1" not in repr(BotsiSettings(secret_key="sk_live_1"))


# ---- documented status codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "status", "verdict"),
    [
        (botsi, 200, Verdict.DELIVERED),
        (vtcdn, 200, Verdict.DELIVERED),
        (vtcdn, 400, Verdict.DEAD),
        (infobip, 201, Verdict.DELIVERED),
        (infobip, 400, Verdict.DEAD),
        (infobip, 401, Verdict.CREDENTIALS),  # parks the vendor instead of killing every job
        (infobip, 403, Verdict.DEAD),
        (infobip, 404, Verdict.DEAD),
        (infobip, 429, Verdict.RETRY),
        (infobip, 500, Verdict.RETRY),
        (gravityfield, 200, Verdict.DELIVERED),
        (gravityfield, 204, Verdict.DELIVERED),
        (gravityfield, 403, Verdict.CREDENTIALS),  # its answer to a wrong token: park
        (gravityfield, 401, Verdict.CREDENTIALS),
        (gravityfield, 422, Verdict.DEAD),
        (gravityfield, 500, Verdict.RETRY),
        (botsi, 408, Verdict.RETRY),
        (botsi, 425, Verdict.RETRY),
        (botsi, 503, Verdict.RETRY),
        (botsi, 302, Verdict.DEAD),
    ],
)
def test_status_codes_are_classified_as_documented(
    vendor: Any, status: int, verdict: Verdict
) -> None:
    assert vendor().classify(status, None, {})[0] is verdict


def test_a_gravityfield_403_parks_with_a_reason_naming_the_token_and_site_key() -> None:
    verdict, reason = gravityfield().classify(403, {"error": "Forbidden"}, {})
    assert verdict is Verdict.CREDENTIALS
    assert "GRAVITYFIELD_TOKEN" in (reason or "") and "Forbidden" in (reason or "")


def test_vtcdn_errors_become_the_dead_letter_reason() -> None:
    body = {
        "errors": [
            {
                "message": "Missing event information",
                "description": "Please send event information along with user",
            }
        ]
    }
    verdict, reason = vtcdn().classify(400, body, {})
    assert verdict is Verdict.DEAD
    assert (
        reason
        == "HTTP 400: Missing event information: Please send event information along with user"
    )


def test_infobip_service_exception_text_becomes_the_reason() -> None:
    body = {
        "requestError": {
            "serviceException": {"messageId": "BAD_REQUEST", "text": "Invalid definition"}
        }
    }
    assert vtcdn().classify(400, {"x": 1}, {})[0] is Verdict.DEAD
    assert infobip().classify(404, body, {})[1] == "HTTP 404: BAD_REQUEST: Invalid definition"


# ---- validation at the door --------------------------------------------------------------------


def _errors(vendor: str, operation: str, payload: Any) -> dict[str, str]:
    with pytest.raises(InvalidJob) as info:
        validate_job(vendor, operation, payload)
    return {e.loc: e.msg for e in info.value.errors}


@pytest.mark.parametrize("field", ["country", "device", "os", "platform"])
def test_botsi_profile_requires_each_documented_field(field: str) -> None:
    payload = jobs.botsi_profile()
    del payload[field]
    assert f"payload.{field}" in _errors("botsi", "create_profile", payload)


def test_botsi_profile_country_must_be_iso_alpha2() -> None:
    assert "payload.country" in _errors(
        "botsi", "create_profile", jobs.botsi_profile() | {"country": "USA"}
    )


@pytest.mark.parametrize(
    "field", ["eventType", "paywallId", "placementId", "isExperiment", "aiPricingModelId"]
)
def test_botsi_event_requires_each_documented_field(field: str) -> None:
    payload = jobs.botsi_event()
    del payload[field]
    assert f"payload.{field}" in _errors("botsi", "send_event", payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("paywallId", "42"),
        ("paywallId", True),
        ("aiPricingModelId", 32.5),
        ("isExperiment", "true"),
        ("isExperiment", 1),
        ("placementId", 7),
    ],
)
def test_botsi_experiment_attribution_with_the_wrong_type_is_refused(
    field: str, value: Any
) -> None:
    assert f"payload.{field}" in _errors("botsi", "send_event", jobs.botsi_event() | {field: value})


def test_botsi_event_needs_profile_id_or_customer_user_id() -> None:
    payload = jobs.botsi_event()
    del payload["customerUserId"]
    assert "profileId or customerUserId" in json.dumps(_errors("botsi", "send_event", payload))
    validate_job("botsi", "send_event", payload | {"profileId": "0072102a"})


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"event": {"update": {}}}, "payload.user"),
        ({"user": {"email": "a@b.io"}}, "payload.event"),
        ({"user": {}, "event": {"update": {}}}, "payload.user"),
        ({"user": {"email": "a@b.io", "_id": "1"}, "event": {"update": {}}}, "payload.user"),
        (
            {"user": {"email": "a@b.io"}, "event": {"generic": {"generic": {}}}},
            "payload.event.generic.generic.event_name",
        ),
        (
            {"user": {"email": "a@b.io"}, "event": {"confirmation": {"total": 3}}},
            "payload.event.confirmation.orderId",
        ),
        ({"user": {"email": "a@b.io"}, "event": {"update": {}, "login": {}}}, "payload.event"),
    ],
)
def test_vtcdn_refuses_incomplete_events(payload: dict[str, Any], loc: str) -> None:
    assert loc in _errors("vtcdn", "send_event", payload)


@pytest.mark.parametrize("event", [{"update": {"firstname": "Ana"}}, {"email_open": {}}])
def test_vtcdn_refuses_a_user_id_without_its_underscore(event: dict[str, Any]) -> None:
    # vtcdn's identifiers are `email` and `_id` ("User: object with email or _id as
    # identifier"); an `id` would reach vtcdn as an unknown attribute and the user unnamed.
    errors = _errors("vtcdn", "send_event", {"user": {"id": "u1"}, "event": event})
    assert "_id" in errors["payload.user.id"]
    errors = _errors("vtcdn", "send_event", {"user": {"id": "u1", "_id": "u1"}, "event": event})
    assert "payload.user.id" in errors


def test_vtcdn_email_open_by_id_is_throttled_per_user() -> None:
    job = validate_job("vtcdn", "send_event", {"user": {"_id": 7}, "event": {"email_open": {}}})
    assert job.throttle is not None and job.payload["user"] == {"_id": 7}


def test_vtcdn_passes_other_standard_events_through() -> None:
    job = validate_job(
        "vtcdn", "send_event", {"user": {"_id": "u1"}, "event": {"cart_add": {"sku": "1"}}}
    )
    assert job.payload["event"] == {"cart_add": {"sku": "1"}}


@pytest.mark.parametrize("field", ["personId", "identifierType", "definitionId"])
def test_infobip_requires_person_type_and_definition(field: str) -> None:
    payload = jobs.infobip_event()
    del payload[field]
    assert f"payload.{field}" in _errors("infobip", "send_event", payload)


@pytest.mark.parametrize("value", [".", ".."])
@pytest.mark.parametrize("field", ["personId", "definitionId"])
def test_infobip_refuses_a_dot_segment_that_would_post_elsewhere_with_the_account_key(
    field: str, value: str
) -> None:
    # urllib3 removes "." and ".." path segments: "/persons/../definitions/../events" would
    # reach "/peopleevents/2/events", another endpoint, with the account's key.
    errors = _errors("infobip", "send_event", jobs.infobip_event() | {field: value})
    assert f"payload.{field}" in errors
    assert "path" in errors[f"payload.{field}"]


def test_infobip_builds_no_request_from_a_stored_dot_segment() -> None:
    # A row stored before the door refused them must not go out either.
    with pytest.raises(Unsendable, match="personId"):
        infobip().build_request("send_event", [jobs.infobip_event() | {"personId": ".."}])


def test_infobip_accepts_dots_inside_an_identifier() -> None:
    validate_job("infobip", "send_event", jobs.infobip_event("a.b@x.io") | {"definitionId": "v1.2"})
    req = infobip().build_request("send_event", [jobs.infobip_event("...")])
    assert "/persons/.../definitions/" in req.url  # not a dot segment: sent as it is


def test_infobip_identifier_type_must_be_one_of_the_documented_values() -> None:
    assert "payload.identifierType" in _errors(
        "infobip", "send_event", jobs.infobip_event() | {"identifierType": "email"}
    )


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"user": {}}, "payload.user.uid"),
        ({"data": []}, "payload.data"),
        ({"data": [{"name": "x"}]}, "payload.data.0.type"),
    ],
)
def test_gravityfield_requires_uid_and_typed_data(change: dict[str, Any], loc: str) -> None:
    assert loc in _errors("gravityfield", "send_event", jobs.gravityfield_event() | change)


def test_unknown_vendor_and_operation_list_the_valid_ones() -> None:
    assert "botsi, gravityfield, infobip, vtcdn" in _errors("nope", "x", {})["vendor"]
    assert "create_profile, send_event" in _errors("botsi", "delete", {})["operation"]


def test_payload_size_is_capped() -> None:
    big = jobs.gravityfield_event() | {"ctx": {"blob": "x" * 300_000}}
    assert "262144" in _errors("gravityfield", "send_event", big)["payload"]


# ---- vendor rules ------------------------------------------------------------------------------


def test_botsi_impression_key_is_derived_from_user_event_paywall_and_placement() -> None:
    a = validate_job("botsi", "send_event", jobs.botsi_event("u1"))
    b = validate_job("botsi", "send_event", jobs.botsi_event("u1"))
    c = validate_job("botsi", "send_event", jobs.botsi_event("u1", paywall=43))
    assert a.idempotency_key == b.idempotency_key != c.idempotency_key
    assert "u1" not in (a.idempotency_key or "")
    given = validate_job("botsi", "send_event", jobs.botsi_event("u1"), idempotency_key="mine")
    assert given.idempotency_key == "mine"


def test_vtcdn_confirmation_key_comes_from_the_order_id_whatever_the_producer_says() -> None:
    body = {"user": {"email": "a@b.io"}, "event": {"confirmation": {"orderId": "o-1"}}}
    a = validate_job("vtcdn", "send_event", body, idempotency_key="k1")
    b = validate_job("vtcdn", "send_event", body | {"user": {"_id": "x"}}, idempotency_key="k2")
    assert a.idempotency_key == b.idempotency_key


def test_every_vendor_is_registered_with_its_operations() -> None:
    assert vendor_names() == ["botsi", "gravityfield", "infobip", "vtcdn"]
    assert set(get_vendor("botsi").operations) == {"create_profile", "send_event"}


# ---- what a vendor sends back is stored -------------------------------------------------------


def test_vendor_text_is_made_storable_wherever_a_send_result_is_built() -> None:
    result = SendResult(
        Verdict.DEAD,
        400,
        3,
        reason="HTTP 400: bad\x00 name \ud83d" + "x" * 1000,
        error_class="Weird\x00Error",
        excerpt='{"e": "\x00\udc00"}',
    )
    assert result.reason is not None and result.reason.startswith("HTTP 400: bad name \ufffdx")
    assert len(result.reason) == REASON_MAX_CHARS and result.reason.endswith("…")
    assert result.error_class == "WeirdError" and result.excerpt == '{"e": "\ufffd"}'
    # A whole surrogate pair is one character in Python: it is kept.
    assert storable("ok \U0001f600", 10) == "ok \U0001f600"
    assert storable(None, 10) is None


def test_vtcdn_error_with_a_nul_and_a_lone_surrogate_becomes_a_storable_reason() -> None:
    body = json.loads('{"errors": [{"message": "Bad\\u0000 user", "description": "\\ud83d"}]}')
    verdict, reason = vtcdn().classify(400, body, {})
    result = SendResult(verdict, 400, 1, reason=reason)
    assert result.reason == "HTTP 400: Bad user: \ufffd"
    assert result.reason.encode("utf-8")  # PostgreSQL can take it
