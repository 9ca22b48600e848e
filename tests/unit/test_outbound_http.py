"""Outbound HTTP rules, against a real local HTTP server: no redirects followed, bodies read
with a cap, timeouts on every request, network trouble translated (never raised)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from eventrelay.worker.vendors.base import Verdict, send
from eventrelay.worker.vendors.gravityfield import GravityField, GravityFieldSettings

BIG_BODY_BYTES = 5 * 1024 * 1024
DEEP_BODY_BRACKETS = 100_000


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        if self.path.endswith("/redirect/event"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()
        elif self.path.endswith("/big/event"):
            self.send_response(200)
            self.send_header("Content-Length", str(BIG_BODY_BYTES))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(b"x" * BIG_BODY_BYTES)
        elif self.path.endswith("/deep/event"):
            body = b"[" * DEEP_BODY_BRACKETS
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.endswith("/echo/event"):
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"received": {"user": {"uid": "secret-user-42"}}}')
        else:
            self.send_response(204)
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _vendor(base: str) -> GravityField:
    return GravityField(
        GravityFieldSettings.model_construct(
            base_url=base, token=SecretStr("t"), site_key=SecretStr("s")
        )
    )


def _send(base: str, **kw: Any) -> Any:
    vendor = _vendor(base)
    request = vendor.build_request("send_event", [{"user": {"uid": "u"}, "data": [{"type": "t"}]}])
    return send(
        vendor,
        request,
        connect_timeout=kw.get("connect", 1.0),
        read_timeout=kw.get("read", 2.0),
        max_response_bytes=kw.get("cap", 64 * 1024),
    )


def test_redirects_are_not_followed_and_are_dead_lettered(server: str) -> None:
    result = _send(f"{server}/redirect")
    assert result.verdict is Verdict.DEAD and result.status_code == 302
    assert "redirect" in (result.reason or "")


def test_response_bodies_are_read_only_up_to_the_cap(server: str) -> None:
    result = _send(f"{server}/big", cap=1000)
    assert result.verdict is Verdict.DELIVERED
    assert len(result.excerpt) <= 300


def test_a_success_with_a_body_too_deeply_nested_to_parse_is_still_delivered(
    server: str,
) -> None:
    # The vendor accepted the job; sending it again because its answer is odd would duplicate it.
    result = _send(f"{server}/deep", cap=DEEP_BODY_BRACKETS)
    assert result.verdict is Verdict.DELIVERED and result.status_code == 200
    assert result.excerpt.startswith("[[[")


def test_an_echoed_payload_is_not_repeated_in_the_reason(server: str) -> None:
    result = _send(f"{server}/echo")
    assert result.verdict is Verdict.DEAD and "secret-user-42" not in (result.reason or "")


def test_connection_refused_is_a_retry_not_an_exception() -> None:
    result = _send("http://127.0.0.1:1")
    assert result.verdict is Verdict.RETRY and result.status_code is None
    assert result.error_class == "ConnectionError"


def test_tls_certificates_are_verified() -> None:
    from eventrelay.worker.vendors.base import http_session

    session = http_session()
    assert session.verify is True and session.trust_env is False
