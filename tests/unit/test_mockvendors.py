"""The mock vendor server answers the way the vendors' documentation says they do.

One in-process server per module (port 0); every test starts from `reset()`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from eventrelay.worker.dev.mock.cli import main
from eventrelay.worker.dev.mock.server import DEFAULT_CREDENTIALS, MockVendors

REPO = Path(__file__).resolve().parents[2]

PERSON_PATH = "/infobip/peopleevents/2/persons/{person}/definitions/{definition}/events"
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

BOTSI_AUTH = {"Authorization": DEFAULT_CREDENTIALS["botsi_secret_key"]}
VTCDN_AUTH = {"Authorization": DEFAULT_CREDENTIALS["vtcdn_api_key"]}
INFOBIP_AUTH = {"Authorization": f"App {DEFAULT_CREDENTIALS['infobip_api_key']}"}
GF_AUTH = {"Authorization": f"Bearer {DEFAULT_CREDENTIALS['gravityfield_token']}"}
ENV_NAMES = {
    "BOTSI_BASE_URL", "VTCDN_BASE_URL", "INFOBIP_BASE_URL", "GRAVITYFIELD_BASE_URL",
    "BOTSI_SECRET_KEY", "VTCDN_API_KEY", "INFOBIP_API_KEY", "GRAVITYFIELD_TOKEN",
    "GRAVITYFIELD_SITE_KEY",
}  # fmt: skip

PROFILE: dict[str, Any] = {
    "country": "US",
    "device": "iPhone 15 Pro Max",
    "os": "iOS 17.0",
    "platform": "ios",
    "customerUserId": "user-123",
    "locale": "en_US",
    "currency": "USD",
}
PAYWALL_EVENT: dict[str, Any] = {
    "eventType": "paywall_shown",
    "paywallId": 42,
    "placementId": "ai-placement-id",
    "isExperiment": True,
    "aiPricingModelId": 32,
    "profileId": "0072102a-c00c-4ea5-9271-1b6e975f2d63",
}
GF_EVENT: dict[str, Any] = {
    "sec": DEFAULT_CREDENTIALS["gravityfield_site_key"],
    "user": {"uid": "uid-1"},
    "data": [{"type": "add-to-cart-v1", "productId": "p1", "quantity": 1}],
}


@pytest.fixture(scope="module")
def server() -> Iterator[MockVendors]:
    with MockVendors() as mock:
        yield mock


@pytest.fixture()
def mock(server: MockVendors) -> MockVendors:
    server.reset()
    return server


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# ----------------------------------------------------------------------------- helpers


def botsi(
    mock: MockVendors, http: requests.Session, route: str, body: Any, **headers: str
) -> requests.Response:
    sent = {**BOTSI_AUTH, "Content-Type": "application/json", **headers}
    return http.post(f"{mock.url}/botsi/{route}", data=json.dumps(body), headers=sent)


def vtcdn(
    mock: MockVendors, http: requests.Session, body: Any, path: str = "/vtcdn/v1/event"
) -> requests.Response:
    return http.post(f"{mock.url}{path}", json=body, headers=VTCDN_AUTH)


def infobip(
    mock: MockVendors,
    http: requests.Session,
    body: Any = None,
    *,
    person: str = "42",
    identifier_type: str | None = "EXTERNAL_ID",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    url = mock.url + PERSON_PATH.format(person=person, definition="addToCart")
    params = {} if identifier_type is None else {"identifierType": identifier_type}
    payload = {"properties": {"totalCost": 100}} if body is None else body
    return http.post(url, params=params, json=payload, headers=INFOBIP_AUTH | (headers or {}))


def gravityfield(
    mock: MockVendors, http: requests.Session, body: Any, **headers: str
) -> requests.Response:
    return http.post(f"{mock.url}/gravityfield/event", json=body, headers={**GF_AUTH, **headers})


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


# ----------------------------------------------------------------------------- wiring


def test_urls_env_and_health(mock: MockVendors, http: requests.Session) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", mock.url)
    assert mock.base_urls() == {
        "BOTSI_BASE_URL": mock.url + "/botsi",
        "VTCDN_BASE_URL": mock.url + "/vtcdn/v1",
        "INFOBIP_BASE_URL": mock.url + "/infobip",
        "GRAVITYFIELD_BASE_URL": mock.url + "/gravityfield",
    }
    env = mock.env()
    assert env["BOTSI_SECRET_KEY"] == "mock-botsi-secret"
    assert env["VTCDN_API_KEY"] == "mock-vtcdn-key"
    assert env["INFOBIP_API_KEY"] == "mock-infobip-key"
    assert env["GRAVITYFIELD_TOKEN"] == "mock-gf-token"
    assert env["GRAVITYFIELD_SITE_KEY"] == "mock-gf-site-key"
    response = http.get(f"{mock.url}/_mock/health")
    assert (response.status_code, response.json()) == (200, {"ok": True})


def test_custom_credentials_are_enforced(http: requests.Session) -> None:
    with MockVendors(credentials={"vtcdn_api_key": "other"}) as mock:
        assert mock.env()["VTCDN_API_KEY"] == "other"
        body: dict[str, Any] = {"user": {"email": "a@x.io"}, "event": {"update": {}}}
        assert vtcdn(mock, http, body).status_code == 401
        ok = http.post(f"{mock.url}/vtcdn/v1/event", json=body, headers={"Authorization": "other"})
        assert ok.status_code == 200


# ----------------------------------------------------------------------------- Botsi


def test_botsi_create_profile(mock: MockVendors, http: requests.Session) -> None:
    response = botsi(mock, http, "profiles", PROFILE)
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    data = body["data"]
    assert UUID4.fullmatch(data["profileId"])
    assert data["customerUserId"] == "user-123"
    assert data["paid"] is False
    for name in ("country", "device", "os", "platform", "locale", "currency"):
        assert data[name] == PROFILE[name]
    assert ISO_MS.fullmatch(data["createdAt"]) and ISO_MS.fullmatch(data["updatedAt"])
    second = botsi(mock, http, "profiles", PROFILE).json()["data"]["profileId"]
    assert second != data["profileId"]


def test_botsi_profile_without_customer_user_id(mock: MockVendors, http: requests.Session) -> None:
    response = botsi(mock, http, "profiles", without(PROFILE, "customerUserId"))
    assert response.status_code == 200
    assert response.json()["data"]["customerUserId"] is None


@pytest.mark.parametrize(
    "auth", [None, "wrong", f"Bearer {DEFAULT_CREDENTIALS['botsi_secret_key']}"]
)
def test_botsi_rejects_bad_auth(
    mock: MockVendors, http: requests.Session, auth: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    for route, body in (("profiles", PROFILE), ("events", [PAYWALL_EVENT])):
        response = http.post(f"{mock.url}/botsi/{route}", data=json.dumps(body), headers=headers)
        assert response.status_code == 401
        assert response.json() == {"ok": False, "error": "Unauthorized"}


def test_botsi_requires_json_content_type(mock: MockVendors, http: requests.Session) -> None:
    response = botsi(mock, http, "events", [PAYWALL_EVENT], **{"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["ok"] is False
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    charset = botsi(mock, http, "events", [PAYWALL_EVENT], **with_charset)
    assert charset.status_code == 200


@pytest.mark.parametrize("field", ["country", "device", "os", "platform"])
def test_botsi_profile_required_fields(
    mock: MockVendors, http: requests.Session, field: str
) -> None:
    response = botsi(mock, http, "profiles", without(PROFILE, field))
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert field in response.json()["error"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"country": "USA"}, "country"),
        ({"country": "us"}, "country"),
        ({"device": 15}, "device"),
        ({"locale": 1}, "locale"),
        ({"customerUserId": None}, "customerUserId"),
        ({"pushToken": ["x"]}, "pushToken"),
    ],
)
def test_botsi_profile_field_types(
    mock: MockVendors, http: requests.Session, change: dict[str, Any], field: str
) -> None:
    response = botsi(mock, http, "profiles", PROFILE | change)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_botsi_profile_body_must_be_object(mock: MockVendors, http: requests.Session) -> None:
    assert botsi(mock, http, "profiles", [PROFILE]).status_code == 400


def test_botsi_send_events(mock: MockVendors, http: requests.Session) -> None:
    response = botsi(mock, http, "events", [PAYWALL_EVENT])
    assert (response.status_code, response.json()) == (200, {"ok": True})
    by_customer = without(PAYWALL_EVENT, "profileId") | {"customerUserId": "user-123"}
    assert botsi(mock, http, "events", [PAYWALL_EVENT, by_customer]).status_code == 200


@pytest.mark.parametrize("body", [PAYWALL_EVENT, [], "x", [["nested"]]])
def test_botsi_events_body_must_be_array_of_objects(
    mock: MockVendors, http: requests.Session, body: Any
) -> None:
    response = botsi(mock, http, "events", body)
    assert response.status_code == 400
    assert response.json()["ok"] is False


@pytest.mark.parametrize(
    "field", ["eventType", "paywallId", "placementId", "isExperiment", "aiPricingModelId"]
)
def test_botsi_event_required_fields_name_index_and_field(
    mock: MockVendors, http: requests.Session, field: str
) -> None:
    response = botsi(mock, http, "events", [PAYWALL_EVENT, without(PAYWALL_EVENT, field)])
    assert response.status_code == 400
    assert response.json()["error"] == f"events[1].{field} is required"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"paywallId": True}, "paywallId"),
        ({"paywallId": "42"}, "paywallId"),
        ({"aiPricingModelId": False}, "aiPricingModelId"),
        ({"aiPricingModelId": 3.5}, "aiPricingModelId"),
        ({"isExperiment": "true"}, "isExperiment"),
        ({"isExperiment": 1}, "isExperiment"),
        ({"placementId": 7}, "placementId"),
        ({"profileId": 7}, "profileId"),
    ],
)
def test_botsi_event_field_types(
    mock: MockVendors, http: requests.Session, change: dict[str, Any], field: str
) -> None:
    response = botsi(mock, http, "events", [PAYWALL_EVENT | change])
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"events[0].{field} ")


def test_botsi_event_needs_a_user_identifier(mock: MockVendors, http: requests.Session) -> None:
    response = botsi(mock, http, "events", [without(PAYWALL_EVENT, "profileId")])
    assert response.status_code == 400
    assert "profileId or customerUserId" in response.json()["error"]


# ----------------------------------------------------------------------------- vtcdn


@pytest.mark.parametrize(
    "body",
    [
        {"user": {"email": "alex@x.io"}, "event": {"update": {"firstname": "alexandru"}}},
        {
            "user": {"email": "alex@x.io"},
            "event": {"generic": {"generic": {"event_name": "my_event", "firstname": "a"}}},
        },
        {"user": {"_id": "u-1"}, "event": {"confirmation": {"orderId": "o-1", "total": 10}}},
        {"user": {"_id": "u-1"}, "event": {"login": {}}, "unexpected": {"is": "ignored"}},
    ],
)
def test_vtcdn_event_created(mock: MockVendors, http: requests.Session, body: Any) -> None:
    response = vtcdn(mock, http, body)
    assert response.status_code == 200
    assert response.json() == {
        "results": {"message": "Event created", "email": "Event was created for the specified user"}
    }
    assert mock.received("vtcdn")[-1]["discarded"] is False


@pytest.mark.parametrize("path", ["/vtcdn/v1/event/", "/vtcdn/v1/Event", "/vtcdn/v1/events"])
def test_vtcdn_paths_are_exact(mock: MockVendors, http: requests.Session, path: str) -> None:
    body = {"user": {"email": "alex@x.io"}, "event": {"update": {}}}
    response = vtcdn(mock, http, body, path=path)
    assert response.status_code == 404
    assert "errors" in response.json()
    assert mock.stats()["vtcdn"]["by_status"] == {"404": 1}


@pytest.mark.parametrize("auth", [None, "wrong", f"Bearer {DEFAULT_CREDENTIALS['vtcdn_api_key']}"])
def test_vtcdn_rejects_bad_auth(
    mock: MockVendors, http: requests.Session, auth: str | None
) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    body: dict[str, Any] = {"user": {"email": "alex@x.io"}, "event": {"update": {}}}
    response = http.post(f"{mock.url}/vtcdn/v1/event", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "errors": [{"message": "Unauthorized", "description": "Invalid API key"}]
    }


def test_vtcdn_missing_event(mock: MockVendors, http: requests.Session) -> None:
    for body in ({"user": {"email": "alex@x.io"}}, {"user": {"email": "a@x.io"}, "event": {}}):
        response = vtcdn(mock, http, body)
        assert response.status_code == 400
        assert response.json() == {
            "errors": [
                {
                    "message": "Missing event information",
                    "description": "Please send event information along with user",
                }
            ]
        }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"event": {"update": {}}}, "Missing user information"),
        ({"user": "alex@x.io", "event": {"update": {}}}, "Invalid user information"),
        ({"user": {}, "event": {"update": {}}}, "Invalid user information"),
        ({"user": {"email": "a@x.io", "_id": "1"}, "event": {"update": {}}}, "Invalid user"),
        ({"user": {"email": "not-an-email"}, "event": {"update": {}}}, "Invalid user"),
        ({"user": {"_id": 5}, "event": {"update": {}}}, "Invalid user"),
        ({"user": {"_id": "1"}, "event": {"update": {}, "login": {}}}, "Invalid event"),
        ({"user": {"_id": "1"}, "event": {"update": "x"}}, "Invalid event"),
        ({"user": {"_id": "1"}, "event": {"generic": {"generic": {}}}}, "Invalid generic event"),
        ({"user": {"_id": "1"}, "event": {"generic": {"event_name": "x"}}}, "Invalid generic"),
        ({"user": {"_id": "1"}, "event": {"confirmation": {"total": 3}}}, "Invalid confirmation"),
        (["not", "an", "object"], "Invalid request"),
    ],
)
def test_vtcdn_invalid_requests(
    mock: MockVendors, http: requests.Session, body: Any, message: str
) -> None:
    response = vtcdn(mock, http, body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors[0]["message"].startswith(message)
    assert errors[0]["description"]


def test_vtcdn_user_must_exist(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("vtcdn", unknown_users=["ghost@x.io", "ghost-id"])
    for user in ({"email": "ghost@x.io"}, {"_id": "ghost-id"}):
        response = vtcdn(mock, http, {"user": user, "event": {"update": {}}})
        assert response.status_code == 400
        assert response.json() == {
            "errors": [
                {
                    "message": "User not found",
                    "description": "User must exist before events are sent",
                }
            ]
        }
    assert vtcdn(mock, http, {"user": {"_id": "known"}, "event": {"update": {}}}).status_code == 200


def test_vtcdn_second_confirmation_with_same_order_is_discarded(
    mock: MockVendors, http: requests.Session
) -> None:
    first = {"user": {"_id": "u-1"}, "event": {"confirmation": {"orderId": "o-1"}}}
    other_order = {"user": {"_id": "u-1"}, "event": {"confirmation": {"orderId": "o-2"}}}
    again = {"user": {"_id": "u-2"}, "event": {"confirmation": {"orderId": "o-1", "x": 1}}}
    statuses = [vtcdn(mock, http, body).status_code for body in (first, other_order, again)]
    assert statuses == [200, 200, 200]
    assert [r["discarded"] for r in mock.received("vtcdn")] == [False, False, True]
    assert mock.stats()["vtcdn"]["discarded"] == 1


def test_vtcdn_email_open_limited_per_user_per_window(
    mock: MockVendors, http: requests.Session
) -> None:
    def email_open(user: str) -> None:
        body = {"user": {"email": user}, "event": {"email_open": {"campaign": "c"}}}
        assert vtcdn(mock, http, body).status_code == 200

    email_open("a@x.io")
    email_open("a@x.io")
    email_open("b@x.io")
    assert [r["discarded"] for r in mock.received("vtcdn")] == [False, True, False]

    mock.email_open_window = 0.05  # the real window is 20 minutes
    try:
        time.sleep(0.06)
        email_open("a@x.io")
    finally:
        mock.email_open_window = 20 * 60
    assert mock.received("vtcdn")[-1]["discarded"] is False


# ----------------------------------------------------------------------------- Infobip


def test_infobip_send_event(mock: MockVendors, http: requests.Session) -> None:
    properties = {"transactionId": "my-transaction-1", "totalCost": 100, "items": [{"id": 1}]}
    response = infobip(mock, http, {"properties": properties})
    assert response.status_code == 201
    body = response.json()
    assert body["eventId"] == body["eventId"].upper()
    assert uuid.UUID(body["eventId"]).version == 4
    assert body["definitionId"] == "addToCart"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", body["occurredTime"])
    assert body["properties"] == properties
    assert body["metadata"] == {"source": "API"}


def test_infobip_null_or_absent_properties(mock: MockVendors, http: requests.Session) -> None:
    assert infobip(mock, http, {"properties": None}).json()["properties"] is None
    assert infobip(mock, http, {}).status_code == 201


@pytest.mark.parametrize(
    "auth", [None, DEFAULT_CREDENTIALS["infobip_api_key"], "App wrong", "Basic abc"]
)
def test_infobip_rejects_bad_auth(
    mock: MockVendors, http: requests.Session, auth: str | None
) -> None:
    url = mock.url + PERSON_PATH.format(person="42", definition="addToCart")
    headers = {} if auth is None else {"Authorization": auth}
    response = http.post(url, params={"identifierType": "ID"}, json={}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "requestError": {
            "serviceException": {"messageId": "UNAUTHORIZED", "text": "Invalid login details"}
        }
    }


@pytest.mark.parametrize("identifier_type", [None, "", "email", "NICKNAME"])
def test_infobip_identifier_type_is_required_and_enumerated(
    mock: MockVendors, http: requests.Session, identifier_type: str | None
) -> None:
    response = infobip(mock, http, identifier_type=identifier_type)
    assert response.status_code == 400
    exception = response.json()["requestError"]["serviceException"]
    assert exception["messageId"] == "BAD_REQUEST"
    assert "identifierType" in exception["text"]


@pytest.mark.parametrize("body", [{"properties": "x"}, {"properties": [1]}, ["x"], "x"])
def test_infobip_properties_must_be_object_or_null(
    mock: MockVendors, http: requests.Session, body: Any
) -> None:
    response = infobip(mock, http, body)
    assert response.status_code == 400
    assert response.json()["requestError"]["serviceException"]["messageId"] == "BAD_REQUEST"


def test_infobip_path_params_are_decoded_in_the_log(
    mock: MockVendors, http: requests.Session
) -> None:
    assert infobip(mock, http, person="a%2Bb%40x.io", identifier_type="EMAIL").status_code == 201
    record = mock.received("infobip")[0]
    assert record["params"] == {"personId": "a+b@x.io", "definitionId": "addToCart"}
    assert record["path"] == PERSON_PATH.format(person="a+b@x.io", definition="addToCart")
    assert record["raw_path"] == PERSON_PATH.format(person="a%2Bb%40x.io", definition="addToCart")
    assert record["query"] == {"identifierType": "EMAIL"}


def test_infobip_unknown_person_is_404(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("infobip", unknown_users=["nobody"])
    response = infobip(mock, http, person="nobody")
    assert response.status_code == 404
    assert response.json()["requestError"]["serviceException"]["messageId"] == "NOT_FOUND"


def test_infobip_rate_limit(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("infobip", rate_limit=5)
    responses = [infobip(mock, http) for _ in range(8)]
    assert [r.status_code for r in responses] == [201] * 5 + [429] * 3
    limited = responses[-1]
    assert limited.headers["Retry-After"] == "1"
    assert limited.json() == {
        "requestError": {
            "serviceException": {"messageId": "TOO_MANY_REQUESTS", "text": "Too many requests"}
        }
    }
    stats = mock.stats()["infobip"]
    assert stats["rate_limited"] == 3
    assert stats["by_status"] == {"201": 5, "429": 3}


def test_infobip_rate_limit_window_slides(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("infobip", rate_limit=2)
    assert [infobip(mock, http).status_code for _ in range(3)] == [201, 201, 429]
    time.sleep(1.05)  # the window is one second long
    assert infobip(mock, http).status_code == 201


# ----------------------------------------------------------------------------- Gravity Field


def test_gravityfield_store_event(mock: MockVendors, http: requests.Session) -> None:
    response = gravityfield(mock, http, GF_EVENT)
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["uid"] == "uid-1"
    assert UUID4.fullmatch(body["user"]["ses"])
    assert body["user"]["segments"] == []
    assert body["campaigns"] == []


def test_gravityfield_respond_204(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("gravityfield", respond_204=True)
    response = gravityfield(mock, http, GF_EVENT)
    assert response.status_code == 204
    assert response.content == b""
    assert gravityfield(mock, http, GF_EVENT | {"sec": "bad"}).status_code == 403


@pytest.mark.parametrize(
    "auth", [None, DEFAULT_CREDENTIALS["gravityfield_token"], "Bearer wrong", "Token x"]
)
def test_gravityfield_rejects_bad_auth_with_403(
    mock: MockVendors, http: requests.Session, auth: str | None
) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    response = http.post(f"{mock.url}/gravityfield/event", json=GF_EVENT, headers=headers)
    assert response.status_code == 403
    assert "error" in response.json()


@pytest.mark.parametrize("sec", [None, "wrong"])
def test_gravityfield_sec_must_be_site_key(
    mock: MockVendors, http: requests.Session, sec: str | None
) -> None:
    body = without(GF_EVENT, "sec") if sec is None else GF_EVENT | {"sec": sec}
    assert gravityfield(mock, http, body).status_code == 403


@pytest.mark.parametrize(
    "change",
    [
        {"user": {}},
        {"user": {"uid": 5}},
        {"user": None},
        {"data": []},
        {"data": {"type": "x"}},
        {"data": [{"name": "no type"}]},
        {"data": [{"type": "ok"}, {"type": 3}]},
    ],
)
def test_gravityfield_parameter_errors_are_422(
    mock: MockVendors, http: requests.Session, change: dict[str, Any]
) -> None:
    response = gravityfield(mock, http, GF_EVENT | change)
    assert response.status_code == 422
    assert isinstance(response.json()["error"], str)


def test_gravityfield_missing_data_is_422(mock: MockVendors, http: requests.Session) -> None:
    assert gravityfield(mock, http, without(GF_EVENT, "data")).status_code == 422


# ----------------------------------------------------------------------------- HTTP-level rules


def test_unknown_routes_and_methods(mock: MockVendors, http: requests.Session) -> None:
    unknown = http.post(f"{mock.url}/nowhere", json={})
    assert unknown.status_code == 404 and "error" in unknown.json()
    wrong_method = http.get(f"{mock.url}/botsi/events", headers=BOTSI_AUTH)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert http.put(f"{mock.url}/gravityfield/event", json=GF_EVENT).status_code == 405


def test_body_over_one_mib_is_413(mock: MockVendors, http: requests.Session) -> None:
    big = [PAYWALL_EVENT | {"placementId": "x" * (1024 * 1024)}]
    response = botsi(mock, http, "events", big)
    assert response.status_code == 413
    assert mock.received("botsi")[-1]["status"] == 413


@pytest.mark.parametrize("vendor", ["botsi", "vtcdn", "infobip", "gravityfield"])
def test_non_json_body_is_400(mock: MockVendors, http: requests.Session, vendor: str) -> None:
    targets = {
        "botsi": (f"{mock.url}/botsi/events", BOTSI_AUTH | {"Content-Type": "application/json"}),
        "vtcdn": (f"{mock.url}/vtcdn/v1/event", VTCDN_AUTH),
        "infobip": (
            mock.url + PERSON_PATH.format(person="1", definition="d") + "?identifierType=ID",
            INFOBIP_AUTH,
        ),
        "gravityfield": (f"{mock.url}/gravityfield/event", GF_AUTH),
    }
    url, headers = targets[vendor]
    assert http.post(url, data=b"{not json", headers=headers).status_code == 400
    assert mock.received(vendor)[-1]["body"] is None


def test_chunked_request_body(mock: MockVendors, http: requests.Session) -> None:
    payload = json.dumps([PAYWALL_EVENT]).encode()
    parts = iter([payload[:20], payload[20:]])  # a generator makes requests send it chunked
    headers = BOTSI_AUTH | {"Content-Type": "application/json"}
    response = http.post(f"{mock.url}/botsi/events", data=parts, headers=headers)
    assert response.status_code == 200, response.text
    record = mock.received("botsi")[-1]
    assert record["headers"]["transfer-encoding"] == "chunked"
    assert record["body"] == [PAYWALL_EVENT]


# ----------------------------------------------------------------------------- fault knobs


def test_error_rate_one_fails_everything(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("botsi", error_rate=1.0)
    for _ in range(3):
        response = botsi(mock, http, "events", [PAYWALL_EVENT])
        assert (response.status_code, response.json()) == (500, {"error": "injected"})
    mock.set_faults("botsi", error_status=503)
    assert botsi(mock, http, "events", [PAYWALL_EVENT]).status_code == 503
    # Other vendors are unaffected.
    assert gravityfield(mock, http, GF_EVENT).status_code == 200


def test_error_rate_fraction_is_reproducible(mock: MockVendors, http: requests.Session) -> None:
    def run() -> list[int]:
        mock.reset()
        mock.set_faults("gravityfield", error_rate=0.5)
        return [gravityfield(mock, http, GF_EVENT).status_code for _ in range(40)]

    first = run()
    assert 5 < first.count(500) < 35
    assert set(first) == {200, 500}
    assert run() == first


def test_fail_next_answers_in_order(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("infobip", fail_next=[503, 500, 429])
    statuses = [infobip(mock, http).status_code for _ in range(4)]
    assert statuses == [503, 500, 429, 201]
    assert [r["fault"] for r in mock.received("infobip")] == ["fail_next"] * 3 + [None]


def test_retry_after_seconds_and_http_date(mock: MockVendors, http: requests.Session) -> None:
    body = {"user": {"_id": "u"}, "event": {"update": {}}}
    mock.set_faults("vtcdn", retry_after=7, retry_after_count=2)
    for _ in range(2):
        response = vtcdn(mock, http, body)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
    assert vtcdn(mock, http, body).status_code == 200

    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    mock.set_faults("vtcdn", retry_after=date)  # count defaults to 1
    assert vtcdn(mock, http, body).headers["Retry-After"] == date
    assert vtcdn(mock, http, body).status_code == 200
    assert mock.stats()["vtcdn"]["rate_limited"] == 3


def test_success_body_replaces_the_body_of_accepted_answers_only(
    mock: MockVendors, http: requests.Session
) -> None:
    mock.set_faults("gravityfield", success_body="[" * 100_000)
    accepted = gravityfield(mock, http, GF_EVENT)
    assert accepted.status_code == 200 and accepted.content == b"[" * 100_000
    refused = gravityfield(mock, http, GF_EVENT | {"data": []})
    assert refused.status_code == 422 and "data" in refused.json()["error"]
    assert [r["fault"] for r in mock.received("gravityfield")] == ["success_body", None]
    assert infobip(mock, http).json() is not None  # other vendors answer as usual
    with pytest.raises(ValueError, match="success_body"):
        mock.set_faults("gravityfield", success_body=5)


def test_latency(mock: MockVendors, http: requests.Session) -> None:
    mock.set_faults("gravityfield", latency_ms=150)
    started = time.monotonic()
    assert gravityfield(mock, http, GF_EVENT).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_hang_does_not_block_other_requests(http: requests.Session) -> None:
    # Own server: stopping it wakes the hung handler, so nothing leaks into other tests.
    with MockVendors() as mock:
        mock.set_faults("botsi", hang_seconds=5)
        started = time.monotonic()
        headers = BOTSI_AUTH | {"Content-Type": "application/json"}
        with pytest.raises(requests.Timeout):
            requests.post(
                f"{mock.url}/botsi/events", json=[PAYWALL_EVENT], headers=headers, timeout=0.3
            )
        assert time.monotonic() - started < 2
        assert gravityfield(mock, http, GF_EVENT).status_code == 200
        mock.set_faults("botsi", hang_seconds=1000)
        assert mock.faults()["botsi"]["hang_seconds"] == 60  # bounded


def test_reset_ends_requests_still_in_progress(mock: MockVendors) -> None:
    """A hang one test leaves behind never lands in the next test's log, counters or
    duplicates (the fault suite shares one server: a scenario's hung requests, answered 30 s
    later, were counted as the next scenario's duplicate sends)."""
    import threading

    mock.set_faults("gravityfield", hang_seconds=1.0)

    def send() -> None:
        with pytest.raises(requests.RequestException):  # the client gives up, as workers do
            requests.post(
                f"{mock.url}/gravityfield/event", json=GF_EVENT, headers=GF_AUTH, timeout=0.2
            )

    clients = [threading.Thread(target=send) for _ in range(2)]  # the same job twice
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    time.sleep(0.1)  # both handlers are asleep in their hang
    mock.reset()  # the next test starts
    time.sleep(1.5)  # past the hang: the old handlers have had every chance to record
    assert mock.received() == []
    assert mock.stats()["gravityfield"] == {
        "requests": 0,
        "accepted": 0,
        "by_status": {},
        "duplicates": 0,
        "rate_limited": 0,
        "discarded": 0,
    }
    with requests.Session() as http:  # the new epoch counts as usual
        assert gravityfield(mock, http, GF_EVENT).status_code == 200
    assert mock.stats()["gravityfield"]["duplicates"] == 0
    assert len(mock.received("gravityfield")) == 1


def test_faults_over_http(mock: MockVendors, http: requests.Session) -> None:
    response = http.post(f"{mock.url}/_mock/faults", json={"vendor": "botsi", "fail_next": [502]})
    assert response.status_code == 200
    assert response.json()["faults"]["fail_next"] == [502]
    assert botsi(mock, http, "events", [PAYWALL_EVENT]).status_code == 502

    http.post(f"{mock.url}/_mock/faults", json={"vendor": "botsi", "error_rate": 1.0})
    cleared = http.post(f"{mock.url}/_mock/faults", json={"vendor": "botsi", "clear": True})
    assert cleared.json()["faults"]["error_rate"] == 0
    assert botsi(mock, http, "events", [PAYWALL_EVENT]).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"vendor": "botsi", "eror_rate": 1},
        {"vendor": "nope", "error_rate": 1},
        {"error_rate": 1},
        {"vendor": "botsi", "error_rate": 2},
        {"vendor": "botsi", "rate_limit": 5},
        {"vendor": "infobip", "fail_next": [42]},
    ],
)
def test_bad_fault_settings_are_rejected(
    mock: MockVendors, http: requests.Session, payload: dict[str, Any]
) -> None:
    response = http.post(f"{mock.url}/_mock/faults", json=payload)
    assert response.status_code == 400
    assert response.json()["error"]
    assert mock.faults()["botsi"]["error_rate"] == 0


# ----------------------------------------------------------------------------- log and stats


def test_duplicates_are_counted_per_body_and_per_botsi_element(
    mock: MockVendors, http: requests.Session
) -> None:
    a, b, c = (PAYWALL_EVENT | {"paywallId": n} for n in (1, 2, 3))
    assert botsi(mock, http, "events", [a, b]).status_code == 200
    assert botsi(mock, http, "events", [b, c]).status_code == 200
    assert botsi(mock, http, "events", [c, c]).status_code == 200
    assert mock.stats()["botsi"]["duplicates"] == 3
    assert [r["duplicates"] for r in mock.received("botsi")] == [0, 1, 2]

    body = {"user": {"_id": "u"}, "event": {"update": {"a": 1, "b": 2}}}
    same_reordered = {"event": {"update": {"b": 2, "a": 1}}, "user": {"_id": "u"}}
    vtcdn(mock, http, body)
    vtcdn(mock, http, same_reordered)
    mock.set_faults("vtcdn", fail_next=[500])
    vtcdn(mock, http, body)  # rejected requests are never duplicates
    assert mock.stats()["vtcdn"]["duplicates"] == 1


def test_received_endpoint_and_reset(mock: MockVendors, http: requests.Session) -> None:
    gravityfield(mock, http, GF_EVENT)
    infobip(mock, http)
    records = http.get(f"{mock.url}/_mock/received", params={"vendor": "gravityfield"}).json()
    assert len(records) == 1
    record = records[0]
    assert set(record) >= {
        "seq", "vendor", "method", "path", "query", "headers", "body", "status", "discarded", "ts"
    }  # fmt: skip
    assert record["vendor"] == "gravityfield"
    assert record["method"] == "POST"
    assert record["path"] == "/gravityfield/event"
    assert record["body"] == GF_EVENT
    assert record["status"] == 200
    assert record["headers"]["authorization"] == GF_AUTH["Authorization"]
    assert all(name == name.lower() for name in record["headers"])
    assert abs(record["ts"] - time.time()) < 10
    assert len(http.get(f"{mock.url}/_mock/received").json()) == 2
    assert http.get(f"{mock.url}/_mock/received", params={"vendor": "x"}).status_code == 400

    mock.set_faults("botsi", error_rate=1.0)
    assert http.delete(f"{mock.url}/_mock/received").status_code == 200
    assert mock.received() == []
    assert mock.stats()["gravityfield"]["requests"] == 0
    assert mock.faults()["botsi"]["error_rate"] == 1.0  # faults survive without ?faults=1
    http.delete(f"{mock.url}/_mock/received", params={"faults": "1"})
    assert mock.faults()["botsi"]["error_rate"] == 0


def test_stats_endpoint(mock: MockVendors, http: requests.Session) -> None:
    botsi(mock, http, "events", [PAYWALL_EVENT])
    botsi(mock, http, "events", [PAYWALL_EVENT])
    botsi(mock, http, "events", [], Authorization="wrong")
    stats = http.get(f"{mock.url}/_mock/stats").json()
    assert set(stats) == {"botsi", "vtcdn", "infobip", "gravityfield"}
    assert stats["botsi"] == {
        "requests": 3,
        "accepted": 2,
        "by_status": {"200": 2, "401": 1},
        "duplicates": 1,
        "rate_limited": 0,
        "discarded": 0,
    }
    assert stats["infobip"]["requests"] == 0


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_env_and_stops_on_sigterm(http: requests.Session) -> None:
    assert callable(main)
    process = subprocess.Popen(
        [sys.executable, "-m", "eventrelay", "mock-vendors", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(9)]
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert set(env) == ENV_NAMES
        assert env["VTCDN_API_KEY"] == "mock-vtcdn-key"
        health = http.get(env["BOTSI_BASE_URL"].removesuffix("/botsi") + "/_mock/health")
        assert health.json() == {"ok": True}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()


def test_error_body_replaces_the_body_of_injected_failures_only(
    mock: MockVendors, http: requests.Session
) -> None:
    text = '{"errors": [{"message": "bad\\u0000", "description": "\\ud83d"}]}'
    mock.set_faults("vtcdn", fail_next=[400], error_body=text + "\ud83d")
    body = {"user": {"email": "a@example.com"}, "event": {"update": {"x": 1}}}
    refused = vtcdn(mock, http, body)
    assert refused.status_code == 400
    assert refused.content == text.encode() + b"\xed\xa0\xbd"  # the lone surrogate, as is
    assert vtcdn(mock, http, body).status_code == 200  # accepted answers keep their body
    with pytest.raises(ValueError, match="error_body"):
        mock.set_faults("vtcdn", error_body=5)
