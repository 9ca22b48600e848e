"""A real HTTP server that speaks the four vendor APIs eventrelay delivers to.

It exists so the worker can be exercised end to end (unit, integration, fault and
benchmark suites, or by hand from a shell) without touching the real vendors. Every
route validates requests the way the vendor's documentation says the vendor does
(see /work/shared/vendor-docs), records what it received, and can be told to misbehave
through per-vendor "fault knobs".

Standard library only, on purpose: the mock must not depend on the code it is testing.

    python worker/mockvendors.py --port 8025     # prints `export ...` lines, then serves

Control endpoints (JSON), next to the vendor routes:

    GET    /_mock/health                     {"ok": true}
    GET    /_mock/received?vendor=X&since=N  request log, oldest first
    DELETE /_mock/received[?faults=1]        clear the log, counters and vendor state
    GET    /_mock/stats                      per-vendor counters
    GET    /_mock/faults                     current fault knobs
    POST   /_mock/faults                     {"vendor": "infobip", "rate_limit": 5}
                                             {"vendor": "infobip", "clear": true}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shlex
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

VENDORS: tuple[str, ...] = ("botsi", "vtcdn", "infobip", "gravityfield")

DEFAULT_CREDENTIALS: dict[str, str] = {
    "botsi_secret_key": "mock-botsi-secret",
    "vtcdn_api_key": "mock-vtcdn-key",
    "infobip_api_key": "mock-infobip-key",
    "gravityfield_token": "mock-gf-token",
    "gravityfield_site_key": "mock-gf-site-key",
}

DEFAULT_PORT = 8025
MAX_BODY_BYTES = 1024 * 1024
# Oversized bodies are still read (and thrown away) up to this size before answering 413:
# closing a socket with unread data makes the kernel send RST, and the client would see
# "connection reset" instead of our 413.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
MAX_LOG_RECORDS = 200_000
MAX_HANG_SECONDS = 60.0
EMAIL_OPEN_WINDOW_SECONDS = 20 * 60.0
INFOBIP_DEFAULT_RATE_LIMIT = 250
RANDOM_SEED = 20240517

INFOBIP_IDENTIFIER_TYPES: frozenset[str] = frozenset(
    {
        "ID", "EXTERNAL_ID", "PHONE", "EMAIL", "LINE", "FACEBOOK", "TELEGRAM", "PUSH",
        "WEB_PUSH", "LIVE_CHAT", "VIBER_BOTS", "INSTAGRAM", "INSTAGRAM_DM", "TWITTER",
        "APPLE_BUSINESS_CHAT", "KAKAO_SANGDAM", "GOOGLE_BUSINESS_MESSAGES",
    }
)  # fmt: skip

BOTSI_PROFILE_REQUIRED: tuple[str, ...] = ("country", "device", "os", "platform")
BOTSI_PROFILE_OPTIONAL: tuple[str, ...] = (
    "customerUserId", "locale", "currency", "storeCountry", "timezone", "ip", "appVersion",
    "appBuild", "osVersion", "advertisingId", "sessionId", "pushToken",
)  # fmt: skip

_COUNTRY_CODE = re.compile(r"[A-Z]{2}")
_INJECTED = "injected"

# (vendor, route name, pattern matched against the raw, still percent-encoded path).
# Matching the raw path keeps an encoded "/" (%2F) inside a path parameter from
# splitting it; parameters are decoded only after the match.
_ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("botsi", "botsi.profiles", re.compile(r"/botsi/profiles")),
    ("botsi", "botsi.events", re.compile(r"/botsi/events")),
    ("vtcdn", "vtcdn.event", re.compile(r"/vtcdn/v1/event")),
    (
        "infobip",
        "infobip.event",
        re.compile(
            r"/infobip/peopleevents/2/persons/(?P<personId>[^/]+)"
            r"/definitions/(?P<definitionId>[^/]+)/events"
        ),
    ),
    ("gravityfield", "gravityfield.event", re.compile(r"/gravityfield/event")),
)


# --------------------------------------------------------------------------- small helpers


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python, but JSON true is not an integer to the vendors.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _now_iso() -> str:
    """UTC timestamp the way the vendors print them: 2025-01-15T10:30:00.000Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; real JSON parsers (the vendors') do not.
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes) -> tuple[bool, Any]:
    """(is_json, value). An empty body is "not JSON", like a strict vendor parser sees it."""
    if not raw.strip():
        return False, None
    try:
        return True, json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _scheme_token(authorization: str | None, scheme: str) -> str | None:
    """The credential of `Authorization: <scheme> <credential>`; None for another scheme.

    Scheme names are case-insensitive (RFC 9110), credentials are not.
    """
    parts = (authorization or "").split(None, 1)
    if len(parts) == 2 and parts[0].lower() == scheme.lower():
        return parts[1].strip()
    return None


def _format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value  # an HTTP date, passed through as given
    return str(int(value)) if float(value).is_integer() else str(value)


def _match_route(raw_path: str) -> tuple[str | None, str | None, dict[str, str]]:
    """(vendor, route name, decoded path params). Unknown paths under a vendor prefix keep
    the vendor, so their 404s are logged and counted against it."""
    for vendor, name, pattern in _ROUTES:
        match = pattern.fullmatch(raw_path)
        if match:
            return vendor, name, {k: unquote(v) for k, v in match.groupdict().items()}
    first_segment = raw_path.lstrip("/").split("/", 1)[0]
    return (first_segment if first_segment in VENDORS else None), None, {}


# --------------------------------------------------------------------------- vendor bodies


def _vtcdn_errors(message: str, description: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "description": description}]}


def _infobip_error(message_id: str, text: str) -> dict[str, Any]:
    return {"requestError": {"serviceException": {"messageId": message_id, "text": text}}}


_INFOBIP_MESSAGE_IDS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    429: "TOO_MANY_REQUESTS",
}


def _error_body(vendor: str | None, status: int, text: str) -> dict[str, Any]:
    """An error in the vendor's own error shape, so clients' error parsing is exercised."""
    if vendor == "botsi":
        return {"ok": False, "error": text}
    if vendor == "vtcdn":
        return _vtcdn_errors(HTTPStatus(status).phrase, text)
    if vendor == "infobip":
        return _infobip_error(_INFOBIP_MESSAGE_IDS.get(status, "GENERAL_ERROR"), text)
    return {"error": text}


# --------------------------------------------------------------------------- validation
# Each returns None when the body is acceptable, else the reason the vendor would give.


def _botsi_profile_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for name in BOTSI_PROFILE_REQUIRED:
        if name not in body:
            return f"{name} is required"
        if not _is_text(body[name]):
            return f"{name} must be a non-empty string"
    if not _COUNTRY_CODE.fullmatch(body["country"]):
        return "country must be an ISO 3166-1 alpha-2 code (two uppercase letters, e.g. US)"
    for name in BOTSI_PROFILE_OPTIONAL:
        # Strict on purpose: null is "present and not a string"; clients should omit instead.
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string"
    return None


_BOTSI_EVENT_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("eventType", _is_text, "a non-empty string"),
    ("paywallId", _is_int, "an integer"),
    ("placementId", _is_text, "a non-empty string"),
    ("isExperiment", lambda v: isinstance(v, bool), "a boolean"),
    ("aiPricingModelId", _is_int, "an integer"),
)


def _botsi_event_problem(event: Any) -> str | None:
    """Reason relative to the element, e.g. ".paywallId must be an integer"."""
    if not isinstance(event, dict):
        return " must be an object"
    for name, is_valid, kind in _BOTSI_EVENT_FIELDS:
        if name not in event:
            return f".{name} is required"
        if not is_valid(event[name]):
            return f".{name} must be {kind}"
    identifiers = [name for name in ("profileId", "customerUserId") if name in event]
    if not identifiers:
        return ": profileId or customerUserId is required"
    for name in identifiers:
        if not _is_text(event[name]):
            return f".{name} must be a non-empty string"
    return None


def _botsi_events_problem(body: Any) -> str | None:
    if not isinstance(body, list):
        return "body must be a JSON array of events"
    if not body:
        return "body must contain at least one event"
    for index, event in enumerate(body):
        problem = _botsi_event_problem(event)
        if problem is not None:
            return f"events[{index}]{problem}"
    return None


_VTCDN_MISSING_EVENT = (
    "Missing event information",
    "Please send event information along with user",
)
_VTCDN_USER_NOT_FOUND = ("User not found", "User must exist before events are sent")


def _vtcdn_user_problem(user: Any) -> tuple[str, str] | None:
    if user is None:
        return ("Missing user information", "Please send user information along with event")
    if not isinstance(user, dict):
        return ("Invalid user information", "user must be an object with email or _id")
    identifiers = [name for name in ("email", "_id") if name in user]
    if len(identifiers) != 1:
        return ("Invalid user information", "user must have exactly one of email or _id")
    name = identifiers[0]
    if not _is_text(user[name]):
        return ("Invalid user information", f"user.{name} must be a non-empty string")
    if name == "email" and "@" not in user[name]:
        return ("Invalid user information", "user.email is not an email address")
    return None


def _vtcdn_event_problem(event: Any) -> tuple[str, str] | None:
    if not isinstance(event, dict) or not event:
        return _VTCDN_MISSING_EVENT
    if len(event) != 1:
        return ("Invalid event information", "event must have exactly one key, the event type")
    ((event_type, payload),) = event.items()
    if not isinstance(payload, dict):
        return ("Invalid event information", f"event.{event_type} must be an object")
    if event_type == "generic":
        inner = payload.get("generic")
        if not isinstance(inner, dict) or not _is_text(inner.get("event_name")):
            return ("Invalid generic event", "event.generic.generic.event_name is required")
    if event_type == "confirmation":
        order_id = payload.get("orderId")
        if not (_is_text(order_id) or _is_int(order_id)):
            return ("Invalid confirmation event", "event.confirmation.orderId is required")
    return None


def _vtcdn_problem(body: Any) -> tuple[str, str] | None:
    """(message, description) of the vtcdn 400, or None. Unexpected fields are ignored."""
    if not isinstance(body, dict):
        return ("Invalid request", "Request body must be a JSON object with user and event")
    return _vtcdn_user_problem(body.get("user")) or _vtcdn_event_problem(body.get("event"))


def _gravityfield_problem(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    if not isinstance(user, dict) or "uid" not in user:
        return "user.uid is required"
    if not _is_text(user["uid"]):
        return "user.uid must be a non-empty string"
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return "data must be a non-empty array of events"
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not _is_text(item.get("type")):
            return f"data[{index}].type is required (string)"
    return None


# --------------------------------------------------------------------------- fault knobs


def _parse_fraction(value: Any) -> float:
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError("must be a number between 0 and 1")
    return float(value)


def _parse_non_negative(value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise ValueError("must be a non-negative number")
    return float(value)


def _parse_hang(value: Any) -> float:
    # Bounded so a forgotten knob cannot wedge a suite for longer than a minute.
    return min(_parse_non_negative(value), MAX_HANG_SECONDS)


def _parse_count(value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError("must be a non-negative integer")
    return int(value)


def _parse_status(value: Any) -> int:
    if not _is_int(value) or not 200 <= value <= 599:
        raise ValueError("must be an HTTP status code between 200 and 599")
    return int(value)


def _parse_status_list(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise ValueError("must be a list of HTTP status codes")
    return [_parse_status(status) for status in value]


def _parse_identifiers(value: Any) -> frozenset[str]:
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(item, str) for item in value
    ):
        raise ValueError("must be a list of strings")
    return frozenset(value)


def _parse_retry_after(value: Any) -> float | str | None:
    if value is None or _is_text(value):
        return cast("str | None", value)
    return _parse_non_negative(value)


def _parse_rate_limit(value: Any) -> int | None:
    return None if value is None else _parse_count(value)


def _parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


_KNOB_PARSERS: dict[str, Callable[[Any], Any]] = {
    "error_rate": _parse_fraction,
    "error_status": _parse_status,
    "latency_ms": _parse_non_negative,
    "hang_seconds": _parse_hang,
    "retry_after": _parse_retry_after,
    "retry_after_count": _parse_count,
    "fail_next": _parse_status_list,
    "unknown_users": _parse_identifiers,
    "rate_limit": _parse_rate_limit,
    "respond_204": _parse_bool,
}

# Knobs that only mean something for some vendors; setting them elsewhere is a typo.
_VENDOR_ONLY_KNOBS: dict[str, frozenset[str]] = {
    "unknown_users": frozenset({"vtcdn", "infobip"}),
    "rate_limit": frozenset({"infobip"}),
    "respond_204": frozenset({"gravityfield"}),
}


@dataclass
class _Faults:
    error_rate: float = 0.0
    error_status: int = 500
    latency_ms: float = 0.0
    hang_seconds: float = 0.0
    retry_after: float | str | None = None
    retry_after_count: int = 1
    retry_after_remaining: int = 0
    fail_next: list[int] = field(default_factory=list)
    unknown_users: frozenset[str] = frozenset()
    rate_limit: int | None = INFOBIP_DEFAULT_RATE_LIMIT
    respond_204: bool = False

    def update(self, vendor: str, knobs: dict[str, Any]) -> None:
        """Validate every knob first, then apply them all: a bad knob changes nothing."""
        parsed: dict[str, Any] = {}
        for name, value in knobs.items():
            parser = _KNOB_PARSERS.get(name)
            if parser is None:
                raise ValueError(f"unknown fault knob {name!r}; known: {sorted(_KNOB_PARSERS)}")
            allowed = _VENDOR_ONLY_KNOBS.get(name)
            if allowed is not None and vendor not in allowed:
                raise ValueError(f"fault knob {name!r} applies only to {sorted(allowed)}")
            try:
                parsed[name] = parser(value)
            except ValueError as exc:
                raise ValueError(f"fault knob {name!r} {exc}") from None
        if "retry_after" in parsed and "retry_after_count" not in parsed:
            # Each arming of retry_after covers its own count, default 1, not a stale one.
            parsed["retry_after_count"] = 1
        for name, value in parsed.items():
            setattr(self, name, value)
        if "retry_after_count" in parsed:
            self.retry_after_remaining = (
                self.retry_after_count if self.retry_after is not None else 0
            )

    def snapshot(self, vendor: str) -> dict[str, Any]:
        knobs: dict[str, Any] = {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "latency_ms": self.latency_ms,
            "hang_seconds": self.hang_seconds,
            "retry_after": self.retry_after,
            "retry_after_count": self.retry_after_count,
            "retry_after_remaining": self.retry_after_remaining,
            "fail_next": list(self.fail_next),
            "unknown_users": sorted(self.unknown_users),
            "rate_limit": self.rate_limit,
            "respond_204": self.respond_204,
        }
        return {
            name: value
            for name, value in knobs.items()
            if vendor in _VENDOR_ONLY_KNOBS.get(name, frozenset(VENDORS))
        }


@dataclass
class _Stats:
    requests: int = 0
    accepted: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    rate_limited: int = 0
    discarded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "by_status": dict(self.by_status),
            "duplicates": self.duplicates,
            "rate_limited": self.rate_limited,
            "discarded": self.discarded,
        }


# --------------------------------------------------------------------------- request / reply


@dataclass
class _Request:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    raw_body: bytes
    ts: float
    framing_error: tuple[int, str] | None = None  # the body could not be read: (status, why)
    vendor: str | None = None
    route: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    is_json: bool = field(init=False)
    body: Any = field(init=False)

    def __post_init__(self) -> None:
        self.is_json, self.body = _parse_json(self.raw_body)

    @property
    def path(self) -> str:
        return unquote(self.raw_path)


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON-serialisable; None sends no body
    headers: dict[str, str] = field(default_factory=dict)
    discarded: bool = False  # accepted but ignored by the vendor's own rules
    fault: str | None = None  # which knob/rule produced this reply, for the log
    dedupe_items: list[Any] | None = None  # units compared for duplicates; None: whole body


# --------------------------------------------------------------------------- the server


class MockVendors:
    """The four vendor APIs on one port, each under its own path prefix.

    Binds in the constructor (so `url` is known before `start()`); `start()` serves from
    a daemon thread. Usable as a context manager.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, credentials: dict[str, str] | None = None
    ) -> None:
        unknown = set(credentials or {}) - set(DEFAULT_CREDENTIALS)
        if unknown:
            raise ValueError(f"unknown credentials {sorted(unknown)}")
        self.credentials: dict[str, str] = {**DEFAULT_CREDENTIALS, **(credentials or {})}
        # An instance attribute so tests can shrink vtcdn's 20-minute email-open window.
        self.email_open_window: float = EMAIL_OPEN_WINDOW_SECONDS
        self._host = host
        # One lock guards all mutable state below; critical sections never block or nest.
        self._lock = threading.Lock()
        self._stop_event = threading.Event()  # wakes sleeping (latency/hang) handlers on stop
        self._rng = random.Random(RANDOM_SEED)
        self._faults: dict[str, _Faults] = {vendor: _Faults() for vendor in VENDORS}
        self._log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG_RECORDS)
        self._seq = 0
        self._stats: dict[str, _Stats] = {vendor: _Stats() for vendor in VENDORS}
        self._seen: set[bytes] = set()  # digests of accepted (path, body) units
        self._vtcdn_orders: set[str] = set()
        self._vtcdn_email_opens: dict[str, float] = {}  # user -> start of its 20-min window
        self._infobip_arrivals: deque[float] = deque()  # admitted request times, last second
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False
        self._handlers: dict[str, Callable[[_Request], _Reply]] = {
            "botsi.profiles": self._botsi_profiles,
            "botsi.events": self._botsi_events,
            "vtcdn.event": self._vtcdn_event,
            "infobip.event": self._infobip_event,
            "gravityfield.event": self._gravityfield_event,
        }
        self._control_routes: dict[str, dict[str, Callable[[_Request], _Reply]]] = {
            "/_mock/health": {"GET": lambda _req: _Reply(200, {"ok": True})},
            "/_mock/received": {"GET": self._get_received, "DELETE": self._delete_received},
            "/_mock/stats": {"GET": lambda _req: _Reply(200, self.stats())},
            "/_mock/faults": {
                "GET": lambda _req: _Reply(200, self.faults()),
                "POST": self._post_faults,
            },
        }
        self._httpd = _Server((host, port), self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"  # a wildcard bind is reachable on loopback
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def base_urls(self) -> dict[str, str]:
        return {
            "BOTSI_BASE_URL": f"{self.url}/botsi",
            "VTCDN_BASE_URL": f"{self.url}/vtcdn/v1",
            "INFOBIP_BASE_URL": f"{self.url}/infobip",
            "GRAVITYFIELD_BASE_URL": f"{self.url}/gravityfield",
        }

    def env(self) -> dict[str, str]:
        """Environment variables pointing eventrelay at this mock."""
        return {
            **self.base_urls(),
            "BOTSI_SECRET_KEY": self.credentials["botsi_secret_key"],
            "VTCDN_API_KEY": self.credentials["vtcdn_api_key"],
            "INFOBIP_API_KEY": self.credentials["infobip_api_key"],
            "GRAVITYFIELD_TOKEN": self.credentials["gravityfield_token"],
            "GRAVITYFIELD_SITE_KEY": self.credentials["gravityfield_site_key"],
        }

    def start(self) -> MockVendors:
        with self._lock:
            if self._closed:
                raise RuntimeError("this MockVendors was stopped; create a new one")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self.serve_forever, name=f"mockvendors:{self.port}", daemon=True
            )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop()` is called from another thread."""
        with self._lock:
            if self._closed:
                return
            # Set before the loop starts: shutdown() issued before the loop runs is still
            # honoured by socketserver, whereas shutdown() without any loop would block.
            self._serving = True
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            serving = self._serving
        self._stop_event.set()
        if serving:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> MockVendors:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ in-process access

    def received(self, vendor: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Logged requests (oldest first), optionally for one vendor and after seq `since`."""
        if vendor is not None and vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}; known: {list(VENDORS)}")
        with self._lock:
            return [
                dict(record)
                for record in self._log
                if record["seq"] > since and (vendor is None or record["vendor"] == vendor)
            ]

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {vendor: stats.as_dict() for vendor, stats in self._stats.items()}

    def faults(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {vendor: faults.snapshot(vendor) for vendor, faults in self._faults.items()}

    def reset(self) -> None:
        """Clear the log, counters, vendor state and faults."""
        self._clear(faults=True)

    def set_faults(self, vendor: str, **faults: Any) -> None:
        """Merge fault knobs into the vendor's; `clear=True` first resets them to defaults."""
        if vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}; known: {list(VENDORS)}")
        clear = faults.pop("clear", False)
        if not isinstance(clear, bool):
            raise ValueError("clear must be true or false")
        with self._lock:
            target = _Faults() if clear else self._faults[vendor]
            target.update(vendor, faults)
            self._faults[vendor] = target

    def _clear(self, *, faults: bool) -> None:
        with self._lock:
            # seq keeps increasing across resets so pollers using `since` never miss records.
            self._log.clear()
            self._stats = {vendor: _Stats() for vendor in VENDORS}
            self._seen.clear()
            self._vtcdn_orders.clear()
            self._vtcdn_email_opens.clear()
            self._infobip_arrivals.clear()
            self._rng.seed(RANDOM_SEED)
            if faults:
                self._faults = {vendor: _Faults() for vendor in VENDORS}

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, req: _Request) -> _Reply:
        if req.raw_path == "/_mock" or req.raw_path.startswith("/_mock/"):
            return self._control(req)
        req.vendor, req.route, req.params = _match_route(req.raw_path)
        reply = self._vendor_reply(req)
        self._record(req, reply)
        return reply

    def _vendor_reply(self, req: _Request) -> _Reply:
        if req.route is None or req.vendor is None:
            return _Reply(404, _error_body(req.vendor, 404, f"No route for {req.raw_path}"))
        if req.method != "POST":
            return _Reply(
                405,
                _error_body(req.vendor, 405, f"Method {req.method} not allowed"),
                headers={"Allow": "POST"},
            )
        if req.framing_error is not None:
            status, why = req.framing_error
            return _Reply(status, _error_body(req.vendor, status, why))
        self._delay(req.vendor)
        injected = self._take_injected_fault(req.vendor)
        if injected is not None:
            return injected
        return self._handlers[req.route](req)

    def _delay(self, vendor: str) -> None:
        with self._lock:
            faults = self._faults[vendor]
            seconds = faults.latency_ms / 1000 + min(faults.hang_seconds, MAX_HANG_SECONDS)
        if seconds > 0:
            # Sleeps only this handler's thread; returns early when the server stops.
            self._stop_event.wait(seconds)

    def _take_injected_fault(self, vendor: str) -> _Reply | None:
        """Consume the next injected failure, if any: fail_next, then retry_after, then
        error_rate. Injected failures come before auth, like an overloaded gateway's."""
        with self._lock:
            faults = self._faults[vendor]
            if faults.fail_next:
                return _Reply(faults.fail_next.pop(0), {"error": _INJECTED}, fault="fail_next")
            if faults.retry_after is not None and faults.retry_after_remaining > 0:
                faults.retry_after_remaining -= 1
                return _Reply(
                    429,
                    {"error": _INJECTED},
                    headers={"Retry-After": _format_retry_after(faults.retry_after)},
                    fault="retry_after",
                )
            if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
                return _Reply(faults.error_status, {"error": _INJECTED}, fault="error_rate")
        return None

    # ------------------------------------------------------------------ Botsi

    def _botsi_gate(self, req: _Request) -> _Reply | None:
        """Checks shared by Botsi's endpoints: raw secret key, JSON content type and body."""
        if req.headers.get("authorization") != self.credentials["botsi_secret_key"]:
            return _Reply(401, {"ok": False, "error": "Unauthorized"})
        if _media_type(req.headers.get("content-type")) != "application/json":
            return _Reply(415, {"ok": False, "error": "Content-Type must be application/json"})
        if not req.is_json:
            return _Reply(400, {"ok": False, "error": "Request body is not valid JSON"})
        return None

    def _botsi_profiles(self, req: _Request) -> _Reply:
        rejected = self._botsi_gate(req)
        if rejected is not None:
            return rejected
        problem = _botsi_profile_problem(req.body)
        if problem is not None:
            return _Reply(400, {"ok": False, "error": problem})
        now = _now_iso()
        data: dict[str, Any] = {
            "profileId": str(uuid.uuid4()),
            "customerUserId": req.body.get("customerUserId"),
            "paid": False,
        }
        for name in (*BOTSI_PROFILE_REQUIRED, *BOTSI_PROFILE_OPTIONAL):
            if name in req.body and name != "customerUserId":
                data[name] = req.body[name]
        data["createdAt"] = data["updatedAt"] = now
        return _Reply(200, {"ok": True, "data": data})

    def _botsi_events(self, req: _Request) -> _Reply:
        rejected = self._botsi_gate(req)
        if rejected is not None:
            return rejected
        problem = _botsi_events_problem(req.body)
        if problem is not None:
            return _Reply(400, {"ok": False, "error": problem})
        # Callers may batch, so duplicates are judged per element, not per array.
        return _Reply(200, {"ok": True}, dedupe_items=list(req.body))

    # ------------------------------------------------------------------ vtcdn

    def _vtcdn_event(self, req: _Request) -> _Reply:
        if req.headers.get("authorization") != self.credentials["vtcdn_api_key"]:
            return _Reply(401, _vtcdn_errors("Unauthorized", "Invalid API key"))
        if not req.is_json:
            return _Reply(400, _vtcdn_errors("Invalid JSON", "Request body must be valid JSON"))
        problem = _vtcdn_problem(req.body)
        if problem is not None:
            return _Reply(400, _vtcdn_errors(*problem))
        user = req.body["user"]
        user_key = str(user.get("email", user.get("_id")))
        ((event_type, payload),) = req.body["event"].items()
        with self._lock:
            if user_key in self._faults["vtcdn"].unknown_users:
                return _Reply(400, _vtcdn_errors(*_VTCDN_USER_NOT_FOUND))
            discarded = self._vtcdn_discards(event_type, payload, user_key)
        created = {"message": "Event created", "email": "Event was created for the specified user"}
        return _Reply(200, {"results": created}, discarded=discarded)

    def _vtcdn_discards(self, event_type: str, payload: dict[str, Any], user_key: str) -> bool:
        """vtcdn's own rules (caller holds the lock): one confirmation per orderId, and one
        email open per user per 20 minutes counted from the first. Discarded events still
        get a 200, which is exactly why tests need to see them."""
        if event_type == "confirmation":
            order_id = str(payload["orderId"])
            if order_id in self._vtcdn_orders:
                return True
            self._vtcdn_orders.add(order_id)
            return False
        if event_type == "email_open":
            now = time.monotonic()
            window_start = self._vtcdn_email_opens.get(user_key)
            if window_start is not None and now - window_start < self.email_open_window:
                return True
            self._vtcdn_email_opens[user_key] = now
        return False

    # ------------------------------------------------------------------ Infobip

    def _infobip_event(self, req: _Request) -> _Reply:
        api_key = _scheme_token(req.headers.get("authorization"), "App")
        if api_key != self.credentials["infobip_api_key"]:
            return _Reply(401, _infobip_error("UNAUTHORIZED", "Invalid login details"))
        if not self._infobip_admit():
            return _Reply(
                429,
                _infobip_error("TOO_MANY_REQUESTS", "Too many requests"),
                headers={"Retry-After": "1"},
                fault="rate_limit",
            )
        problem = self._infobip_problem(req)
        if problem is not None:
            return _Reply(400, _infobip_error("BAD_REQUEST", problem))
        with self._lock:
            unknown_person = req.params["personId"] in self._faults["infobip"].unknown_users
        if unknown_person:
            return _Reply(404, _infobip_error("NOT_FOUND", "Person not found"))
        body = {
            "eventId": str(uuid.uuid4()).upper(),
            "definitionId": req.params["definitionId"],
            "occurredTime": datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z",
            "properties": req.body.get("properties"),
            "metadata": {"source": "API"},
        }
        return _Reply(201, body)

    @staticmethod
    def _infobip_problem(req: _Request) -> str | None:
        identifier_type = req.query.get("identifierType")
        if identifier_type is None:
            return "identifierType query parameter is required"
        if identifier_type not in INFOBIP_IDENTIFIER_TYPES:
            return f"identifierType must be one of {sorted(INFOBIP_IDENTIFIER_TYPES)}"
        if not req.is_json or not isinstance(req.body, dict):
            return "Request body must be a JSON object"
        properties = req.body.get("properties")
        if properties is not None and not isinstance(properties, dict):
            return "properties must be an object or null"
        return None

    def _infobip_admit(self) -> bool:
        """Sliding one-second window over admitted arrivals (per account = per server).
        Refused requests do not extend the window, so a client that waits Retry-After
        always gets through."""
        now = time.monotonic()
        with self._lock:
            limit = self._faults["infobip"].rate_limit
            if limit is None:
                return True
            arrivals = self._infobip_arrivals
            while arrivals and arrivals[0] <= now - 1.0:
                arrivals.popleft()
            if len(arrivals) >= limit:
                return False
            arrivals.append(now)
            return True

    # ------------------------------------------------------------------ Gravity Field

    def _gravityfield_event(self, req: _Request) -> _Reply:
        token = _scheme_token(req.headers.get("authorization"), "Bearer")
        if token != self.credentials["gravityfield_token"]:
            return _Reply(403, {"error": "Forbidden"})  # the page documents 403, not 401
        if not req.is_json:
            return _Reply(400, {"error": "Request body is not valid JSON"})
        if not isinstance(req.body, dict):
            return _Reply(422, {"error": "body must be a JSON object"})
        if req.body.get("sec") != self.credentials["gravityfield_site_key"]:
            return _Reply(403, {"error": "Forbidden: sec is not this site's key"})
        problem = _gravityfield_problem(req.body)
        if problem is not None:
            return _Reply(422, {"error": problem})
        with self._lock:
            respond_204 = self._faults["gravityfield"].respond_204
        if respond_204:
            return _Reply(204)
        user = req.body["user"]
        session = user.get("ses") if _is_text(user.get("ses")) else str(uuid.uuid4())
        body = {
            "user": {"uid": user["uid"], "ses": session, "segments": [], "conditions": {}},
            "campaigns": [],
        }
        return _Reply(200, body)

    # ------------------------------------------------------------------ log and stats

    def _dedupe_keys(self, req: _Request, reply: _Reply) -> list[bytes]:
        # The query is part of the identity: for Infobip, identifierType says whose event it is.
        prefix = req.path + "?" + _canonical(sorted(req.query.items())) + "\n"
        items = reply.dedupe_items if reply.dedupe_items is not None else [req.body]
        return [
            hashlib.blake2b((prefix + _canonical(item)).encode(), digest_size=16).digest()
            for item in items
        ]

    def _record(self, req: _Request, reply: _Reply) -> None:
        accepted = 200 <= reply.status < 300
        # Hash outside the lock: canonicalising a large body should not stall other threads.
        keys = self._dedupe_keys(req, reply) if accepted else []
        with self._lock:
            duplicates = 0
            for key in keys:
                if key in self._seen:
                    duplicates += 1
                else:
                    self._seen.add(key)
            if req.vendor is not None:
                stats = self._stats[req.vendor]
                stats.requests += 1
                stats.accepted += accepted
                status_key = str(reply.status)
                stats.by_status[status_key] = stats.by_status.get(status_key, 0) + 1
                stats.duplicates += duplicates
                stats.rate_limited += reply.status == 429
                stats.discarded += reply.discarded
            self._seq += 1
            self._log.append(
                {
                    "seq": self._seq,
                    "vendor": req.vendor,
                    "method": req.method,
                    "path": req.path,
                    "raw_path": req.raw_path,
                    "params": req.params,
                    "query": req.query,
                    "headers": req.headers,
                    "body": req.body,
                    "status": reply.status,
                    "discarded": reply.discarded,
                    "duplicates": duplicates,
                    "fault": reply.fault,
                    "response": reply.body,
                    "ts": req.ts,
                }
            )

    # ------------------------------------------------------------------ control endpoints

    def _control(self, req: _Request) -> _Reply:
        methods = self._control_routes.get(req.raw_path)
        if methods is None:
            return _Reply(404, {"error": f"No route for {req.raw_path}"})
        handler = methods.get(req.method)
        if handler is None:
            return _Reply(
                405,
                {"error": f"Method {req.method} not allowed"},
                headers={"Allow": ", ".join(methods)},
            )
        try:
            return handler(req)
        except ValueError as exc:
            return _Reply(400, {"error": str(exc)})

    def _get_received(self, req: _Request) -> _Reply:
        since = req.query.get("since", "0")
        if not since.isdigit():
            raise ValueError("since must be a non-negative integer")
        return _Reply(200, self.received(req.query.get("vendor") or None, since=int(since)))

    def _delete_received(self, req: _Request) -> _Reply:
        self._clear(faults=req.query.get("faults", "").lower() in ("1", "true", "yes"))
        return _Reply(200, {"ok": True})

    def _post_faults(self, req: _Request) -> _Reply:
        if not req.is_json or not isinstance(req.body, dict):
            raise ValueError('body must be a JSON object like {"vendor": "botsi", ...}')
        knobs = dict(req.body)
        vendor = knobs.pop("vendor", None)
        if not isinstance(vendor, str):
            raise ValueError("vendor is required")
        self.set_faults(vendor, **knobs)
        return _Reply(200, {"ok": True, "faults": self.faults()[vendor]})


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler must never keep the process alive
    request_queue_size = 1024  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], mock: MockVendors) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.mock = mock
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host's FQDN, which can stall for seconds
        # without DNS; the name is never needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out (hang fault) or drop connections are expected, not bugs.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the workers' connection pools expect
    server_version = "eventrelay-mockvendors/1.0"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
    # client's delayed ACK adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        arrived = time.time()
        url = urlsplit(self.path)
        raw_body, framing_error = self._read_body()
        req = _Request(
            method=self.command,
            raw_path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers=self._lower_headers(),
            raw_body=raw_body,
            ts=arrived,
            framing_error=framing_error,
        )
        if framing_error is not None:
            self.close_connection = True  # the stream position is no longer trustworthy
        try:
            reply = cast(_Server, self.server).mock._dispatch(req)
        except Exception as exc:  # answer something rather than drop the connection
            reply = _Reply(500, {"error": f"mock server error: {exc!r}"})
        self._send(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def _lower_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _read_body(self) -> tuple[bytes, tuple[int, str] | None]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        header = self.headers.get("Content-Length")
        if header is None:
            return b"", None
        try:
            length = int(header)
            if length < 0:
                raise ValueError
        except ValueError:
            return b"", (400, "Invalid Content-Length header")
        if length > MAX_BODY_BYTES:
            if length <= MAX_DRAIN_BYTES:
                self._discard(length)
            return b"", (413, f"Request body larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length), None

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)

    def _read_chunked(self) -> tuple[bytes, tuple[int, str] | None]:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip(), 16)
            except ValueError:
                return b"", (400, "Malformed chunked request body")
            if size == 0:
                while self.rfile.readline(65537).strip():  # optional trailers
                    pass
                break
            total += size
            if total > MAX_DRAIN_BYTES:
                return b"", (413, f"Request body larger than {MAX_BODY_BYTES} bytes")
            data = self.rfile.read(size)
            self.rfile.readline()  # the CRLF closing the chunk
            if total <= MAX_BODY_BYTES:
                chunks.append(data)
        if total > MAX_BODY_BYTES:
            return b"", (413, f"Request body larger than {MAX_BODY_BYTES} bytes")
        return b"".join(chunks), None

    def _send(self, reply: _Reply) -> None:
        bodyless = reply.status in (204, 304)
        payload = b"" if reply.body is None or bodyless else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if payload:
                self.send_header("Content-Type", "application/json")
            if not bodyless:
                self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)
        except ConnectionError:
            self.close_connection = True  # the client gave up (e.g. its timeout during a hang)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: suites and benchmarks send many thousands of requests


# --------------------------------------------------------------------------- CLI


def _env_lines(mock: MockVendors) -> Iterator[str]:
    for name, value in mock.env().items():
        yield f"export {name}={shlex.quote(value)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mockvendors",
        description="Serve mock Botsi, vtcdn, Infobip and Gravity Field APIs for eventrelay.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port, 0 picks a free one (default %(default)s)",
    )
    args = parser.parse_args(argv)
    mock = MockVendors(host=args.host, port=args.port)
    for line in _env_lines(mock):
        print(line)
    sys.stdout.flush()  # a parent process reads these lines before we block
    print(f"mockvendors: serving on {mock.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for the serve loop, which runs in this very thread: delegate it.
        threading.Thread(target=mock.stop, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, request_stop)
    try:
        mock.serve_forever()
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
