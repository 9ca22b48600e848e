"""A real HTTP server that speaks the APIs of the vendors eventrelay delivers to.

It exists so the worker can be exercised end to end (unit, integration, fault and
benchmark suites, or by hand from a shell) without touching the real vendors. This module
is the part every vendor shares: HTTP framing, routing by the path's first segment to a
vendor mock, fault injection through per-vendor "fault knobs", the request log and
counters, credentials, and the CLI. Each vendor's routes, validation and answers are a
`VendorMock` (base.py) in a module of its own, listed in `VENDOR_MOCKS` below; its routes
validate requests the way the client in worker/vendors/ expects the vendor to.

Standard library only, on purpose: the mock must not depend on the code it is testing.

    eventrelay mock-vendors --port 8025     # prints `export ...` lines, then serves

Control endpoints (JSON), next to the vendor routes:

    GET    /_mock/health                     {"ok": true}
    GET    /_mock/received?vendor=X&since=N  request log, oldest first
    DELETE /_mock/received[?faults=1]        clear the log, counters and vendor state
    GET    /_mock/stats                      per-vendor counters
    GET    /_mock/faults                     current fault knobs
    POST   /_mock/faults                     {"vendor": "infobip", "rate_limit": 5}
                                             {"vendor": "infobip", "clear": true}

Fault knobs every vendor has: error_rate, error_status, latency_ms, hang_seconds, retry_after,
retry_after_count, fail_next, success_body (raw text sent, instead of the vendor's own
body, with every answer the vendor accepts: e.g. "[" * 100000, JSON too deep to parse), and
error_body (raw text sent instead of the injected failures' body, e.g. a vendor's error text with
a NUL or a lone surrogate in it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shlex
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from eventrelay.worker.dev.mock.base import (
    Handler,
    Reply,
    Request,
    VendorMock,
    is_int,
    is_number,
    is_text,
    parse_count,
)
from eventrelay.worker.dev.mock.botsi import BotsiMock
from eventrelay.worker.dev.mock.gravityfield import GravityFieldMock
from eventrelay.worker.dev.mock.infobip import InfobipMock
from eventrelay.worker.dev.mock.vtcdn import VtcdnMock

# The registry: one line per vendor mock, in the order logs, counters and env list them.
# A fifth vendor is its module (a VendorMock subclass) plus its line here.
VENDOR_MOCKS: tuple[type[VendorMock], ...] = (BotsiMock, VtcdnMock, InfobipMock, GravityFieldMock)

VENDORS: tuple[str, ...] = tuple(mock.name for mock in VENDOR_MOCKS)

DEFAULT_CREDENTIALS: dict[str, str] = {
    key: value for mock in VENDOR_MOCKS for key, value in mock.default_credentials.items()
}

DEFAULT_PORT = 8025
MAX_BODY_BYTES = 1024 * 1024
# Oversized bodies are still read (and thrown away) up to this size before answering 413:
# closing a socket with unread data makes the kernel send RST, and the client would see
# "connection reset" instead of our 413.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
MAX_LOG_RECORDS = 200_000
MAX_HANG_SECONDS = 60.0
RANDOM_SEED = 20240517

_INJECTED = "injected"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value  # an HTTP date, passed through as given
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- fault knobs
# Knobs every vendor has; a vendor's own ones are its VendorMock.knobs.


def _parse_fraction(value: Any) -> float:
    if not is_number(value) or not 0 <= value <= 1:
        raise ValueError("must be a number between 0 and 1")
    return float(value)


def _parse_non_negative(value: Any) -> float:
    if not is_number(value) or value < 0:
        raise ValueError("must be a non-negative number")
    return float(value)


def _parse_hang(value: Any) -> float:
    # Bounded so a forgotten knob cannot wedge a suite for longer than a minute.
    return min(_parse_non_negative(value), MAX_HANG_SECONDS)


def _parse_status(value: Any) -> int:
    if not is_int(value) or not 200 <= value <= 599:
        raise ValueError("must be an HTTP status code between 200 and 599")
    return int(value)


def _parse_status_list(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise ValueError("must be a list of HTTP status codes")
    return [_parse_status(status) for status in value]


def _parse_success_body(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string (the raw body) or null")
    if len(value.encode()) > MAX_BODY_BYTES:
        raise ValueError(f"must be at most {MAX_BODY_BYTES} bytes")
    return value


def _parse_error_body(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string (the raw body) or null")
    # surrogatepass: a lone surrogate goes out as the bytes a broken vendor would send.
    if len(value.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise ValueError(f"must be at most {MAX_BODY_BYTES} bytes")
    return value


def _parse_retry_after(value: Any) -> float | str | None:
    if value is None or is_text(value):
        return cast("str | None", value)
    return _parse_non_negative(value)


_COMMON_KNOBS: dict[str, Callable[[Any], Any]] = {
    "error_rate": _parse_fraction,
    "error_status": _parse_status,
    "latency_ms": _parse_non_negative,
    "hang_seconds": _parse_hang,
    "retry_after": _parse_retry_after,
    "retry_after_count": parse_count,
    "fail_next": _parse_status_list,
    "success_body": _parse_success_body,
    "error_body": _parse_error_body,
}

# Which vendors declare each vendor-only knob, so that setting one elsewhere reads as a typo.
_KNOB_OWNERS: dict[str, frozenset[str]] = {
    name: frozenset(owner.name for owner in VENDOR_MOCKS if name in owner.knobs)
    for mock in VENDOR_MOCKS
    for name in mock.knobs
}


@dataclass
class _Faults:
    vendor: type[VendorMock]
    error_rate: float = 0.0
    error_status: int = 500
    latency_ms: float = 0.0
    hang_seconds: float = 0.0
    retry_after: float | str | None = None
    retry_after_count: int = 1
    retry_after_remaining: int = 0
    fail_next: list[int] = field(default_factory=list)
    success_body: str | None = None
    error_body: str | None = None
    own: dict[str, Any] = field(init=False)  # the vendor's own knobs, by name

    def __post_init__(self) -> None:
        self.own = {name: knob.default for name, knob in self.vendor.knobs.items()}

    def _parser(self, name: str) -> Callable[[Any], Any]:
        if name in _COMMON_KNOBS:
            return _COMMON_KNOBS[name]
        if name in self.vendor.knobs:
            return self.vendor.knobs[name].parse
        if name in _KNOB_OWNERS:
            raise ValueError(f"fault knob {name!r} applies only to {sorted(_KNOB_OWNERS[name])}")
        known = sorted({*_COMMON_KNOBS, *_KNOB_OWNERS})
        raise ValueError(f"unknown fault knob {name!r}; known: {known}")

    def update(self, knobs: dict[str, Any]) -> None:
        """Validate every knob first, then apply them all: a bad knob changes nothing."""
        parsed: dict[str, Any] = {}
        for name, value in knobs.items():
            parser = self._parser(name)
            try:
                parsed[name] = parser(value)
            except ValueError as exc:
                raise ValueError(f"fault knob {name!r} {exc}") from None
        if "retry_after" in parsed and "retry_after_count" not in parsed:
            # Each arming of retry_after covers its own count, default 1, not a stale one.
            parsed["retry_after_count"] = 1
        for name, value in parsed.items():
            if name in _COMMON_KNOBS:
                setattr(self, name, value)
            else:
                self.own[name] = value
        if "retry_after_count" in parsed:
            self.retry_after_remaining = (
                self.retry_after_count if self.retry_after is not None else 0
            )

    def snapshot(self) -> dict[str, Any]:
        own = {name: knob.show(self.own[name]) for name, knob in self.vendor.knobs.items()}
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "latency_ms": self.latency_ms,
            "hang_seconds": self.hang_seconds,
            "retry_after": self.retry_after,
            "retry_after_count": self.retry_after_count,
            "retry_after_remaining": self.retry_after_remaining,
            "fail_next": list(self.fail_next),
            "success_body": self.success_body,
            "error_body": self.error_body,
            **own,
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


# --------------------------------------------------------------------------- the server


class MockVendors:
    """Every vendor mock in VENDOR_MOCKS on one port, each under its own path prefix.

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
        self._host = host
        # One lock guards the mutable state below (each vendor mock locks its own); critical
        # sections never block or nest.
        self._lock = threading.Lock()
        self._stop_event = threading.Event()  # wakes sleeping (latency/hang) handlers on stop
        # Each reset starts a new epoch. A request belongs to the epoch it arrived in: one still
        # in progress when its epoch ends (a hang a test left behind) wakes, is never answered,
        # logged or counted, and never touches vendor state, so it cannot show up in the next
        # test's log, counters or duplicates.
        self._epoch = 0
        self._epoch_ended = threading.Event()
        self._rng = random.Random(RANDOM_SEED)
        self._mocks: dict[str, VendorMock] = {mock.name: mock(self) for mock in VENDOR_MOCKS}
        self._faults: dict[str, _Faults] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG_RECORDS)
        self._seq = 0
        self._stats: dict[str, _Stats] = {}
        self._seen: set[bytes] = set()  # digests of accepted (path, body) units
        self._reset_faults()
        self._reset_stats()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False
        self._control_routes: dict[str, dict[str, Handler]] = {
            "/_mock/health": {"GET": lambda _req: Reply(200, {"ok": True})},
            "/_mock/received": {"GET": self._get_received, "DELETE": self._delete_received},
            "/_mock/stats": {"GET": lambda _req: Reply(200, self.stats())},
            "/_mock/faults": {
                "GET": lambda _req: Reply(200, self.faults()),
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
        return {f"{mock.name.upper()}_BASE_URL": self.url + mock.base_path for mock in VENDOR_MOCKS}

    def env(self) -> dict[str, str]:
        """Environment variables pointing eventrelay at this mock."""
        # The worker reads <NAME>_<FIELD> (VendorSettings' env_prefix), and credential keys
        # are "<name>_<field>": vtcdn_api_key is VTCDN_API_KEY.
        secrets = {key.upper(): self.credentials[key] for key in DEFAULT_CREDENTIALS}
        return {**self.base_urls(), **secrets}

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
        self._epoch_ended.set()
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

    @property
    def email_open_window(self) -> float:
        """vtcdn's email-open window in seconds, writable so tests can shrink 20 minutes."""
        return self._vtcdn().email_open_window

    @email_open_window.setter
    def email_open_window(self, seconds: float) -> None:
        self._vtcdn().email_open_window = seconds

    def _vtcdn(self) -> VtcdnMock:
        return cast(VtcdnMock, self._mocks[VtcdnMock.name])

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
            return {vendor: faults.snapshot() for vendor, faults in self._faults.items()}

    def knob(self, vendor: str, name: str) -> Any:
        """Current value of one of a vendor's own knobs (what its VendorMock.knob reads)."""
        with self._lock:
            return self._faults[vendor].own[name]

    def reset(self) -> None:
        """Clear the log, counters, vendor state and faults. Requests still in progress (a
        hang, a latency) end unanswered and are never counted: they belong to the test that
        sent them."""
        self._clear(faults=True)

    def set_faults(self, vendor: str, **faults: Any) -> None:
        """Merge fault knobs into the vendor's; `clear=True` first resets them to defaults."""
        if vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}; known: {list(VENDORS)}")
        clear = faults.pop("clear", False)
        if not isinstance(clear, bool):
            raise ValueError("clear must be true or false")
        with self._lock:
            target = _Faults(type(self._mocks[vendor])) if clear else self._faults[vendor]
            target.update(faults)
            self._faults[vendor] = target

    def _reset_faults(self) -> None:  # caller holds the lock (or is __init__)
        self._faults = {name: _Faults(type(mock)) for name, mock in self._mocks.items()}

    def _reset_stats(self) -> None:  # caller holds the lock (or is __init__)
        self._stats = {name: _Stats() for name in self._mocks}

    def _clear(self, *, faults: bool) -> None:
        with self._lock:
            self._epoch += 1
            ended, self._epoch_ended = self._epoch_ended, threading.Event()
            # seq keeps increasing across resets so pollers using `since` never miss records.
            self._log.clear()
            self._reset_stats()
            self._seen.clear()
            self._rng.seed(RANDOM_SEED)
            if faults:
                self._reset_faults()
        ended.set()  # wakes the previous epoch's sleeping handlers: they end unanswered
        # After our lock is released: locks are never held two at a time.
        for mock in self._mocks.values():
            mock.reset()

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, req: Request) -> Reply | None:
        """The reply to send; None: a reset ended the request's epoch, drop the connection."""
        if req.raw_path == "/_mock" or req.raw_path.startswith("/_mock/"):
            return self._control(req)
        with self._lock:
            epoch, ended = self._epoch, self._epoch_ended
        mock, handler, req.params = self._match_route(req.raw_path)
        req.vendor = None if mock is None else mock.name
        reply = self._vendor_reply(req, mock, handler, ended)
        if reply is None or not self._record(req, reply, epoch):
            return None
        return reply

    def _match_route(
        self, raw_path: str
    ) -> tuple[VendorMock | None, Handler | None, dict[str, str]]:
        """(vendor mock, handler, decoded path params) by the raw, still percent-encoded
        path. Unknown paths under a vendor prefix keep the vendor, so their 404s are logged
        and counted against it."""
        mock = self._mocks.get(raw_path.lstrip("/").split("/", 1)[0])
        if mock is None:
            return None, None, {}
        prefix = "/" + mock.name
        found = mock.match(raw_path[len(prefix) :]) if raw_path.startswith(prefix) else None
        if found is None:
            return mock, None, {}
        return mock, *found

    def _vendor_reply(
        self,
        req: Request,
        mock: VendorMock | None,
        handler: Handler | None,
        ended: threading.Event,
    ) -> Reply | None:
        def error(status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
            # In the vendor's own error shape, so clients' error parsing is exercised.
            body = {"error": text} if mock is None else mock.error_body(status, text)
            return Reply(status, body, headers=headers or {})

        if mock is None or handler is None:
            return error(404, f"No route for {req.raw_path}")
        if req.method != "POST":
            return error(405, f"Method {req.method} not allowed", headers={"Allow": "POST"})
        if req.framing_error is not None:
            return error(*req.framing_error)
        self._delay(mock.name, ended)
        if ended.is_set():
            return None  # reset (or stopped) while it waited: the vendor never saw it
        injected = self._take_injected_fault(mock.name)
        if injected is not None:
            return self._with_error_body(mock.name, injected)
        return self._with_success_body(mock.name, handler(req))

    def _with_success_body(self, vendor: str, reply: Reply) -> Reply:
        """An accepted answer carries the `success_body` knob's raw text, when it is set."""
        with self._lock:
            text = self._faults[vendor].success_body
        if text is None or not 200 <= reply.status < 300 or reply.status == 204:
            return reply
        reply.raw_body = text.encode()
        reply.fault = "success_body"
        return reply

    def _with_error_body(self, vendor: str, reply: Reply) -> Reply:
        """An injected failure carries the `error_body` knob's raw text, when it is set."""
        with self._lock:
            text = self._faults[vendor].error_body
        if text is not None:
            reply.raw_body = text.encode("utf-8", "surrogatepass")
        return reply

    def _delay(self, vendor: str, ended: threading.Event) -> None:
        with self._lock:
            faults = self._faults[vendor]
            seconds = faults.latency_ms / 1000 + min(faults.hang_seconds, MAX_HANG_SECONDS)
        if seconds > 0:
            # Sleeps only this handler's thread; returns early when the request's epoch ends
            # (a reset) or the server stops.
            ended.wait(seconds)

    def _take_injected_fault(self, vendor: str) -> Reply | None:
        """Consume the next injected failure, if any: fail_next, then retry_after, then
        error_rate. Injected failures come before auth, like an overloaded gateway's."""
        with self._lock:
            faults = self._faults[vendor]
            if faults.fail_next:
                return Reply(faults.fail_next.pop(0), {"error": _INJECTED}, fault="fail_next")
            if faults.retry_after is not None and faults.retry_after_remaining > 0:
                faults.retry_after_remaining -= 1
                return Reply(
                    429,
                    {"error": _INJECTED},
                    headers={"Retry-After": _format_retry_after(faults.retry_after)},
                    fault="retry_after",
                )
            if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
                return Reply(faults.error_status, {"error": _INJECTED}, fault="error_rate")
        return None

    # ------------------------------------------------------------------ log and stats

    def _dedupe_keys(self, req: Request, reply: Reply) -> list[bytes]:
        # The query is part of the identity: for Infobip, identifierType says whose event it is.
        prefix = req.path + "?" + _canonical(sorted(req.query.items())) + "\n"
        items = reply.dedupe_items if reply.dedupe_items is not None else [req.body]
        return [
            hashlib.blake2b((prefix + _canonical(item)).encode(), digest_size=16).digest()
            for item in items
        ]

    def _record(self, req: Request, reply: Reply, epoch: int) -> bool:
        """Log and count the request; False if a reset ended its epoch first (then nothing is
        logged or counted: a reset's counters start at zero whatever was still in progress)."""
        accepted = 200 <= reply.status < 300
        # Hash outside the lock: canonicalising a large body should not stall other threads.
        keys = self._dedupe_keys(req, reply) if accepted else []
        with self._lock:
            if epoch != self._epoch:
                return False
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
                    "response": reply.body
                    if reply.raw_body is None
                    else reply.raw_body.decode("utf-8", "replace"),
                    "ts": req.ts,
                }
            )
        return True

    # ------------------------------------------------------------------ control endpoints

    def _control(self, req: Request) -> Reply:
        methods = self._control_routes.get(req.raw_path)
        if methods is None:
            return Reply(404, {"error": f"No route for {req.raw_path}"})
        handler = methods.get(req.method)
        if handler is None:
            return Reply(
                405,
                {"error": f"Method {req.method} not allowed"},
                headers={"Allow": ", ".join(methods)},
            )
        try:
            return handler(req)
        except ValueError as exc:
            return Reply(400, {"error": str(exc)})

    def _get_received(self, req: Request) -> Reply:
        since = req.query.get("since", "0")
        if not since.isdigit():
            raise ValueError("since must be a non-negative integer")
        return Reply(200, self.received(req.query.get("vendor") or None, since=int(since)))

    def _delete_received(self, req: Request) -> Reply:
        self._clear(faults=req.query.get("faults", "").lower() in ("1", "true", "yes"))
        return Reply(200, {"ok": True})

    def _post_faults(self, req: Request) -> Reply:
        if not req.is_json or not isinstance(req.body, dict):
            raise ValueError('body must be a JSON object like {"vendor": "botsi", ...}')
        knobs = dict(req.body)
        vendor = knobs.pop("vendor", None)
        if not isinstance(vendor, str):
            raise ValueError("vendor is required")
        self.set_faults(vendor, **knobs)
        return Reply(200, {"ok": True, "faults": self.faults()[vendor]})


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
        req = Request(
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
            reply = Reply(500, {"error": f"mock server error: {exc!r}"})
        if reply is None:  # a reset ended the request: it goes unanswered, like a lost one
            self.close_connection = True
            return
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

    def _send(self, reply: Reply) -> None:
        bodyless = reply.status in (204, 304)
        if bodyless:
            payload = b""
        elif reply.raw_body is not None:
            payload = reply.raw_body
        else:
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
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


def _titles() -> str:
    """The registry in words, e.g. "Botsi, vtcdn, Infobip and Gravity Field"."""
    *rest, last = (mock.title for mock in VENDOR_MOCKS)
    return f"{', '.join(rest)} and {last}" if rest else last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mockvendors",
        description=f"Serve mock {_titles()} APIs for eventrelay.",
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
