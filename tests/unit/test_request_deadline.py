"""A request ends at its total deadline however slowly a real server trickles its answer (a
byte every 0.2 s, each read well within the read timeout)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from eventrelay.worker.vendors.base import Verdict, send
from eventrelay.worker.vendors.gravityfield import GravityField, GravityFieldSettings

BYTE_EVERY_SECONDS = 0.2
GIVE_UP_SECONDS = 15.0  # the server stops on its own after this: a test never hangs
DEADLINE_SECONDS = 1.0


def _trickle(conn: socket.socket, head: bytes, body: bytes, trickle_head: bool) -> None:
    with contextlib.suppress(OSError), conn:
        conn.settimeout(GIVE_UP_SECONDS)
        conn.recv(65536)  # the request (small: one read)
        stop = time.monotonic() + GIVE_UP_SECONDS
        if not trickle_head:
            conn.sendall(head)
        for byte in (head + body) if trickle_head else body:
            if time.monotonic() > stop:
                return
            conn.sendall(bytes([byte]))
            time.sleep(BYTE_EVERY_SECONDS)


@pytest.fixture
def trickling_server(request: pytest.FixtureRequest) -> Iterator[str]:
    status, trickle_head = request.param
    body = b'{"ok": true}' + b" " * 1000
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                threading.Thread(
                    target=_trickle, args=(conn, head, body, trickle_head), daemon=True
                ).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _send(base: str) -> tuple[float, Any]:
    vendor = GravityField(
        GravityFieldSettings.model_construct(
            base_url=base, token=SecretStr("t"), site_key=SecretStr("s")
        )
    )
    request = vendor.build_request("send_event", [{"user": {"uid": "u"}, "data": [{"type": "t"}]}])
    started = time.monotonic()
    result = send(
        vendor,
        request,
        connect_timeout=1.0,
        read_timeout=1.5,  # every byte comes well within it
        max_response_bytes=64 * 1024,
        deadline_seconds=DEADLINE_SECONDS,
    )
    return time.monotonic() - started, result


@pytest.mark.parametrize("trickling_server", [("200 OK", True)], indirect=True)
def test_a_server_trickling_its_status_line_is_cut_at_the_deadline_and_retried(
    trickling_server: str,
) -> None:
    took, result = _send(trickling_server)
    assert took < DEADLINE_SECONDS + 0.5
    assert result.verdict is Verdict.RETRY and result.status_code is None
    assert result.error_class == "DeadlineExceeded"
    assert "EVENTRELAY_REQUEST_DEADLINE_SECONDS" in result.reason


@pytest.mark.parametrize(
    ("trickling_server", "verdict"),
    [(("200 OK", False), Verdict.DELIVERED), (("503 Service Unavailable", False), Verdict.RETRY)],
    indirect=["trickling_server"],
)
def test_a_server_trickling_its_body_is_cut_at_the_deadline_and_its_status_decides(
    trickling_server: str, verdict: Verdict
) -> None:
    # The vendor has answered (its status is in): a 200 is delivered, never sent again; what
    # had arrived of the body is kept only in whole reads, so the excerpt may be empty.
    took, result = _send(trickling_server)
    assert took < DEADLINE_SECONDS + 0.5
    assert result.verdict is verdict


def test_a_request_that_answers_in_time_is_not_cut() -> None:
    from eventrelay.worker.vendors.deadline import watch

    with watch(0.05) as deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert not deadline.fired


def test_a_forked_child_has_a_watchdog_of_its_own() -> None:
    import os
    import types

    from eventrelay.worker.vendors import deadline

    # The parent's watchdog is running, and a sender thread holds its lock as the fork happens.
    with deadline.watch(5.0), deadline._watchdog._start_lock:
        pid = os.fork()
        if pid == 0:  # the child: the parent's thread did not come along
            cut = []
            conn = types.SimpleNamespace(sock=types.SimpleNamespace(shutdown=cut.append))
            with deadline.watch(0.05) as mine:
                mine.note(conn)
                time.sleep(0.5)
            os._exit(0 if mine.fired and cut else 1)
    for _ in range(50):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the child hung on its parent's watchdog lock")
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def answering_server() -> Iterator[tuple[str, list[bytes]]]:
    """Answers 200 to each request on a connection; keeps the bytes each request came in."""
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def answer(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(GIVE_UP_SECONDS)
            while data := conn.recv(65536):
                while b"\r\n\r\n" in data and len(data) < _length(data):
                    data += conn.recv(65536)
                received.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=answer, args=(server.accept()[0],), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", received
    server.close()


def _length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return len(data)


def test_a_requests_head_and_body_go_out_in_one_write_and_arrive_whole(
    answering_server: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One write a request, not urllib3's two (head, then body): a system call and a packet
    # fewer, and no second GIL hand-off for the sender thread.
    base, received = answering_server
    writes: list[bytes] = []
    real_sendall = socket.socket.sendall

    def counted(sock: socket.socket, data: Any, *args: Any) -> None:
        if not bytes(data).startswith(b"HTTP/1.1 "):  # the client's, not the server's answers
            writes.append(bytes(data))
        real_sendall(sock, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", counted)
    for _ in range(2):  # a new connection, then a kept-alive one
        _, result = _send(base)
        assert result.verdict is Verdict.DELIVERED
    assert len(writes) == 2
    for write, request in zip(writes, received, strict=True):
        head, _, body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /") and b"Content-Length: %d" % len(body) in head
        assert write == request and body.startswith(b'{"sec"')


def test_the_watchdog_goes_on_cutting_after_a_look_that_failed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import types

    from eventrelay.worker.vendors import deadline

    watchdog = deadline._Watchdog()
    monkeypatch.setattr(deadline, "_watchdog", watchdog)
    real_look = watchdog._cut_late
    failed: list[bool] = []

    def fails_once() -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("a look that failed")
        real_look()

    monkeypatch.setattr(watchdog, "_cut_late", fails_once)
    cut: list[int] = []
    conn = types.SimpleNamespace(sock=types.SimpleNamespace(shutdown=cut.append))
    with caplog.at_level("ERROR", logger="eventrelay.worker"), deadline.watch(0.05) as mine:
        mine.note(conn)
        stop = time.monotonic() + 5
        while not mine.fired and time.monotonic() < stop:
            time.sleep(0.02)
    assert failed and mine.fired and cut
    assert "watchdog failed a look" in caplog.text
