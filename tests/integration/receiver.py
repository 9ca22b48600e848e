"""A real HTTP server standing for your own endpoints: a plugin vendor's API, a partner's
webhook receiver. It records what arrives, answers as scripted, and verifies webhooks with
the `standardwebhooks` reference library (never with eventrelay's own code)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    ts: float
    verified: bool | None = None  # None: no secret for this path
    why_not: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """`answers[path]` is a queue of (status, retry_after) answered in turn, then 200;
    `secrets[path]` makes the path a Standard Webhooks receiver."""

    secrets: dict[str, str] = field(default_factory=dict)
    answers: dict[str, deque[tuple[int, int | None]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.handle(self, self.path, headers, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers: int, retry_after: int | None = None) -> None:
        with self.lock:
            self.answers[path].extend((a, retry_after) for a in answers)

    def reset(self) -> None:
        with self.lock:
            self.answers.clear()
            self.received.clear()

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def handle(
        self, handler: BaseHTTPRequestHandler, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        verified, why_not = None, None
        if path in self.secrets:
            try:
                Webhook(self.secrets[path]).verify(body, headers)
                verified = True
            except WebhookVerificationError as exc:
                verified, why_not = False, str(exc)
        with self.lock:
            queue = self.answers.get(path)
            status, retry_after = queue.popleft() if queue else (200, None)
            if verified is False:
                status = 401  # what a receiver does with a bad signature
            self.received.append(
                Received(path, headers, body, status, time.time(), verified, why_not)
            )
        answer = json.dumps({"ok": status < 300} if status < 300 else {"error": f"no ({status})"})
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(answer)))
        if retry_after is not None:
            handler.send_header("Retry-After", str(retry_after))
        handler.end_headers()
        handler.wfile.write(answer.encode())
