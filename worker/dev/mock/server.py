"""A real HTTP server that speaks the APIs of the vendors eventrelay delivers to.

It exists so the worker can be exercised end to end (unit, integration, fault and
benchmark suites, or by hand from a shell) without touching the real vendors. This module
is the part every vendor shares: HTTP framing, routing by the path's first segment to a
vendor mock, fault injection through per-vendor "fault knobs", the request log and
counters, credentials, and the CLI. Each vendor's routes, validation and answers are a
`VendorMock` (base.py) in a module of its own, listed in `VENDOR_MOCKS` (vendors.py); its routes
validate requests the way the client in worker/vendors/ expects the vendor to.

Standard library only, on purpose: the mock must not depend on the code it is testing.

    eventrelay mock-vendors --port 8025     # prints `export ...` lines, then serves (cli.py)

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

import hashlib
import json
import random
import threading
from collections import deque
from types import TracebackType
from typing import Any, cast

from eventrelay.worker.dev.mock.base import Handler, Reply, Request, VendorMock
from eventrelay.worker.dev.mock.faults import MAX_HANG_SECONDS, Faults, Stats, format_retry_after
from eventrelay.worker.dev.mock.http import MockHTTPServer
from eventrelay.worker.dev.mock.vendors import DEFAULT_CREDENTIALS, VENDOR_MOCKS, VENDORS
from eventrelay.worker.dev.mock.vtcdn import VtcdnMock

__all__ = ["DEFAULT_CREDENTIALS", "DEFAULT_PORT", "VENDORS", "VENDOR_MOCKS", "MockVendors"]

DEFAULT_PORT = 8025
MAX_LOG_RECORDS = 200_000
RANDOM_SEED = 20240517

_INJECTED = "injected"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
        self._faults: dict[str, Faults] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG_RECORDS)
        self._seq = 0
        self._stats: dict[str, Stats] = {}
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
        self._httpd = MockHTTPServer((host, port), self._dispatch)

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
            target = Faults(type(self._mocks[vendor])) if clear else self._faults[vendor]
            target.update(faults)
            self._faults[vendor] = target

    def _reset_faults(self) -> None:  # caller holds the lock (or is __init__)
        self._faults = {name: Faults(type(mock)) for name, mock in self._mocks.items()}

    def _reset_stats(self) -> None:  # caller holds the lock (or is __init__)
        self._stats = {name: Stats() for name in self._mocks}

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
                    headers={"Retry-After": format_retry_after(faults.retry_after)},
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
