"""Mock Infobip People: send a custom person event
(`POST /infobip/peopleevents/2/persons/{personId}/definitions/{definitionId}/events`).

The client side, with the vendor's rules it relies on, is worker/vendors/infobip.py.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from eventrelay.worker.dev.mock.base import (
    UNKNOWN_USERS,
    Knob,
    MockHost,
    Reply,
    Request,
    Route,
    VendorMock,
    parse_count,
    scheme_token,
)

DEFAULT_RATE_LIMIT = 250  # requests per second per account

IDENTIFIER_TYPES: frozenset[str] = frozenset(
    {
        "ID", "EXTERNAL_ID", "PHONE", "EMAIL", "LINE", "FACEBOOK", "TELEGRAM", "PUSH",
        "WEB_PUSH", "LIVE_CHAT", "VIBER_BOTS", "INSTAGRAM", "INSTAGRAM_DM", "TWITTER",
        "APPLE_BUSINESS_CHAT", "KAKAO_SANGDAM", "GOOGLE_BUSINESS_MESSAGES",
    }
)  # fmt: skip

_MESSAGE_IDS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    429: "TOO_MANY_REQUESTS",
}


def error(message_id: str, text: str) -> dict[str, Any]:
    return {"requestError": {"serviceException": {"messageId": message_id, "text": text}}}


def _parse_rate_limit(value: Any) -> int | None:
    return None if value is None else parse_count(value)  # None: no limit at all


def problem(req: Request) -> str | None:
    """None when acceptable, else the text of the 400."""
    identifier_type = req.query.get("identifierType")
    if identifier_type is None:
        return "identifierType query parameter is required"
    if identifier_type not in IDENTIFIER_TYPES:
        return f"identifierType must be one of {sorted(IDENTIFIER_TYPES)}"
    if not req.is_json or not isinstance(req.body, dict):
        return "Request body must be a JSON object"
    properties = req.body.get("properties")
    if properties is not None and not isinstance(properties, dict):
        return "properties must be an object or null"
    return None


class InfobipMock(VendorMock):
    name = "infobip"
    title = "Infobip"
    base_path = "/infobip"
    default_credentials = {"infobip_api_key": "mock-infobip-key"}
    knobs = {
        "unknown_users": UNKNOWN_USERS,
        "rate_limit": Knob(_parse_rate_limit, DEFAULT_RATE_LIMIT),
    }

    def __init__(self, host: MockHost) -> None:
        super().__init__(host)
        self._arrivals: deque[float] = deque()  # admitted request times, last second

    def routes(self) -> Sequence[Route]:
        return (
            Route(
                r"/peopleevents/2/persons/(?P<personId>[^/]+)"
                r"/definitions/(?P<definitionId>[^/]+)/events",
                self._event,
            ),
        )

    def error_body(self, status: int, text: str) -> Any:
        return error(_MESSAGE_IDS.get(status, "GENERAL_ERROR"), text)

    def reset(self) -> None:
        with self._lock:
            self._arrivals.clear()

    def _event(self, req: Request) -> Reply:
        api_key = scheme_token(req.headers.get("authorization"), "App")
        if api_key != self.credential("infobip_api_key"):
            return Reply(401, error("UNAUTHORIZED", "Invalid login details"))
        if not self._admit(req.ts):
            return Reply(
                429,
                error("TOO_MANY_REQUESTS", "Too many requests"),
                headers={"Retry-After": "1"},
                fault="rate_limit",
            )
        rejected = problem(req)
        if rejected is not None:
            return Reply(400, error("BAD_REQUEST", rejected))
        if req.params["personId"] in self.knob("unknown_users"):
            return Reply(404, error("NOT_FOUND", "Person not found"))
        body = {
            "eventId": str(uuid.uuid4()).upper(),
            "definitionId": req.params["definitionId"],
            "occurredTime": datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z",
            "properties": req.body.get("properties"),
            "metadata": {"source": "API"},
        }
        return Reply(201, body)

    def _admit(self, arrived: float) -> bool:
        """Sliding one-second window over admitted arrivals (per account = per server), timed
        when the request arrived, as the vendor counts (and as the log's `ts` shows), not when
        this handler thread got to it. Refused requests do not extend the window, so a client
        that waits Retry-After always gets through."""
        limit = self.knob("rate_limit")
        if limit is None:
            return True
        with self._lock:
            arrivals = self._arrivals
            while arrivals and arrivals[0] <= arrived - 1.0:
                arrivals.popleft()
            if len(arrivals) >= limit:
                return False
            arrivals.append(arrived)
            return True
