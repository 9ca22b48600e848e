"""Mock vtcdn: send a user event (`POST /vtcdn/v1/event`, no trailing slash).

The client side, with the vendor's rules it relies on, is worker/vendors/vtcdn.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from eventrelay.worker.dev.mock.base import (
    UNKNOWN_USERS,
    MockHost,
    Reply,
    Request,
    Route,
    VendorMock,
    is_int,
    is_text,
)

EMAIL_OPEN_WINDOW_SECONDS = 20 * 60.0

_MISSING_EVENT = ("Missing event information", "Please send event information along with user")
_USER_NOT_FOUND = ("User not found", "User must exist before events are sent")


def errors(message: str, description: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "description": description}]}


# Each *_problem returns None when acceptable, else the (message, description) of the 400.


def _user_problem(user: Any) -> tuple[str, str] | None:
    if user is None:
        return ("Missing user information", "Please send user information along with event")
    if not isinstance(user, dict):
        return ("Invalid user information", "user must be an object with email or _id")
    identifiers = [name for name in ("email", "_id") if name in user]
    if len(identifiers) != 1:
        return ("Invalid user information", "user must have exactly one of email or _id")
    name = identifiers[0]
    if not is_text(user[name]):
        return ("Invalid user information", f"user.{name} must be a non-empty string")
    if name == "email" and "@" not in user[name]:
        return ("Invalid user information", "user.email is not an email address")
    return None


def _event_problem(event: Any) -> tuple[str, str] | None:
    if not isinstance(event, dict) or not event:
        return _MISSING_EVENT
    if len(event) != 1:
        return ("Invalid event information", "event must have exactly one key, the event type")
    ((event_type, payload),) = event.items()
    if not isinstance(payload, dict):
        return ("Invalid event information", f"event.{event_type} must be an object")
    if event_type == "generic":
        inner = payload.get("generic")
        if not isinstance(inner, dict) or not is_text(inner.get("event_name")):
            return ("Invalid generic event", "event.generic.generic.event_name is required")
    if event_type == "confirmation":
        order_id = payload.get("orderId")
        if not (is_text(order_id) or is_int(order_id)):
            return ("Invalid confirmation event", "event.confirmation.orderId is required")
    return None


def problem(body: Any) -> tuple[str, str] | None:
    """Unexpected top-level fields are ignored, as vtcdn does."""
    if not isinstance(body, dict):
        return ("Invalid request", "Request body must be a JSON object with user and event")
    return _user_problem(body.get("user")) or _event_problem(body.get("event"))


class VtcdnMock(VendorMock):
    name = "vtcdn"
    title = "vtcdn"
    base_path = "/vtcdn/v1"
    default_credentials = {"vtcdn_api_key": "mock-vtcdn-key"}
    knobs = {"unknown_users": UNKNOWN_USERS}

    def __init__(self, host: MockHost) -> None:
        super().__init__(host)
        # Public so tests can shrink the 20-minute window (MockVendors.email_open_window).
        self.email_open_window: float = EMAIL_OPEN_WINDOW_SECONDS
        self._orders: set[str] = set()
        self._email_opens: dict[str, float] = {}  # user -> start of its window

    def routes(self) -> Sequence[Route]:
        return (Route(r"/v1/event", self._event),)

    def error_body(self, status: int, text: str) -> Any:
        return errors(HTTPStatus(status).phrase, text)

    def reset(self) -> None:
        with self._lock:
            self._orders.clear()
            self._email_opens.clear()

    def _event(self, req: Request) -> Reply:
        if req.headers.get("authorization") != self.credential("vtcdn_api_key"):
            return Reply(401, errors("Unauthorized", "Invalid API key"))
        if not req.is_json:
            return Reply(400, errors("Invalid JSON", "Request body must be valid JSON"))
        rejected = problem(req.body)
        if rejected is not None:
            return Reply(400, errors(*rejected))
        user = req.body["user"]
        user_key = str(user.get("email", user.get("_id")))
        if user_key in self.knob("unknown_users"):
            return Reply(400, errors(*_USER_NOT_FOUND))
        ((event_type, payload),) = req.body["event"].items()
        discarded = self._discards(event_type, payload, user_key)
        created = {"message": "Event created", "email": "Event was created for the specified user"}
        return Reply(200, {"results": created}, discarded=discarded)

    def _discards(self, event_type: str, payload: dict[str, Any], user_key: str) -> bool:
        """vtcdn's own rules: one confirmation per orderId, and one email open per user per
        20 minutes counted from the first. Discarded events still get a 200, which is
        exactly why tests need to see them."""
        with self._lock:
            if event_type == "confirmation":
                order_id = str(payload["orderId"])
                if order_id in self._orders:
                    return True
                self._orders.add(order_id)
                return False
            if event_type == "email_open":
                now = time.monotonic()
                window_start = self._email_opens.get(user_key)
                if window_start is not None and now - window_start < self.email_open_window:
                    return True
                self._email_opens[user_key] = now
            return False
