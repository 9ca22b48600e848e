"""HTTP framing for the mock vendor server: a threading HTTP/1.1 server with keep-alive that
reads each request (Content-Length or chunked, bounded), hands it to a dispatch function and
writes its reply."""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from eventrelay.worker.dev.mock.base import Reply, Request

MAX_BODY_BYTES = 1024 * 1024
# Oversized bodies are still read (and thrown away) up to this size before answering 413:
# closing a socket with unread data makes the kernel send RST, and the client would see
# "connection reset" instead of our 413.
MAX_DRAIN_BYTES = 64 * 1024 * 1024

# A request to its reply; None: the request goes unanswered (a reset ended it).
Dispatch = Callable[[Request], "Reply | None"]


class MockHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler must never keep the process alive
    request_queue_size = 1024  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], dispatch: Dispatch) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.dispatch = dispatch
        super().__init__(address, MockHandler)

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


class MockHandler(BaseHTTPRequestHandler):
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
            reply = cast(MockHTTPServer, self.server).dispatch(req)
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
