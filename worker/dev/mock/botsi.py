"""Mock Botsi: create a profile (`POST /botsi/profiles`), send events (`POST /botsi/events`).

The client side, with the vendor's rules it relies on, is worker/vendors/botsi.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from eventrelay.worker.dev.mock.base import (
    Reply,
    Request,
    Route,
    VendorMock,
    is_int,
    is_text,
    media_type,
    now_iso,
)

PROFILE_REQUIRED: tuple[str, ...] = ("country", "device", "os", "platform")
PROFILE_OPTIONAL: tuple[str, ...] = (
    "customerUserId", "locale", "currency", "storeCountry", "timezone", "ip", "appVersion",
    "appBuild", "osVersion", "advertisingId", "sessionId", "pushToken",
)  # fmt: skip

_COUNTRY_CODE = re.compile(r"[A-Z]{2}")

_EVENT_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("eventType", is_text, "a non-empty string"),
    ("paywallId", is_int, "an integer"),
    ("placementId", is_text, "a non-empty string"),
    ("isExperiment", lambda v: isinstance(v, bool), "a boolean"),
    ("aiPricingModelId", is_int, "an integer"),
)

# Each *_problem returns None when the body is acceptable, else the reason Botsi would give.


def profile_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for name in PROFILE_REQUIRED:
        if name not in body:
            return f"{name} is required"
        if not is_text(body[name]):
            return f"{name} must be a non-empty string"
    if not _COUNTRY_CODE.fullmatch(body["country"]):
        return "country must be an ISO 3166-1 alpha-2 code (two uppercase letters, e.g. US)"
    for name in PROFILE_OPTIONAL:
        # Strict on purpose: null is "present and not a string"; clients should omit instead.
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string"
    return None


def _event_problem(event: Any) -> str | None:
    """Reason relative to the element, e.g. ".paywallId must be an integer"."""
    if not isinstance(event, dict):
        return " must be an object"
    for name, is_valid, kind in _EVENT_FIELDS:
        if name not in event:
            return f".{name} is required"
        if not is_valid(event[name]):
            return f".{name} must be {kind}"
    identifiers = [name for name in ("profileId", "customerUserId") if name in event]
    if not identifiers:
        return ": profileId or customerUserId is required"
    for name in identifiers:
        if not is_text(event[name]):
            return f".{name} must be a non-empty string"
    return None


def events_problem(body: Any) -> str | None:
    if not isinstance(body, list):
        return "body must be a JSON array of events"
    if not body:
        return "body must contain at least one event"
    for index, event in enumerate(body):
        problem = _event_problem(event)
        if problem is not None:
            return f"events[{index}]{problem}"
    return None


class BotsiMock(VendorMock):
    name = "botsi"
    title = "Botsi"
    base_path = "/botsi"
    default_credentials = {"botsi_secret_key": "mock-botsi-secret"}

    def routes(self) -> Sequence[Route]:
        return (Route(r"/profiles", self._profiles), Route(r"/events", self._events))

    def error_body(self, status: int, text: str) -> Any:
        return {"ok": False, "error": text}

    def _gate(self, req: Request) -> Reply | None:
        """Checks shared by Botsi's endpoints: raw secret key, JSON content type and body."""
        if req.headers.get("authorization") != self.credential("botsi_secret_key"):
            return Reply(401, {"ok": False, "error": "Unauthorized"})
        if media_type(req.headers.get("content-type")) != "application/json":
            return Reply(415, {"ok": False, "error": "Content-Type must be application/json"})
        if not req.is_json:
            return Reply(400, {"ok": False, "error": "Request body is not valid JSON"})
        return None

    def _profiles(self, req: Request) -> Reply:
        rejected = self._gate(req)
        if rejected is not None:
            return rejected
        problem = profile_problem(req.body)
        if problem is not None:
            return Reply(400, {"ok": False, "error": problem})
        now = now_iso()
        data: dict[str, Any] = {
            "profileId": str(uuid.uuid4()),
            "customerUserId": req.body.get("customerUserId"),
            "paid": False,
        }
        for name in (*PROFILE_REQUIRED, *PROFILE_OPTIONAL):
            if name in req.body and name != "customerUserId":
                data[name] = req.body[name]
        data["createdAt"] = data["updatedAt"] = now
        return Reply(200, {"ok": True, "data": data})

    def _events(self, req: Request) -> Reply:
        rejected = self._gate(req)
        if rejected is not None:
            return rejected
        problem = events_problem(req.body)
        if problem is not None:
            return Reply(400, {"ok": False, "error": problem})
        # Callers may batch, so duplicates are judged per element, not per array.
        return Reply(200, {"ok": True}, dedupe_items=list(req.body))
