"""A total deadline per request, on top of requests' connect and read timeouts.

`requests` timeouts bound each read of the socket, not the request: a vendor that sends a byte
every second (headers or body) keeps a request open for as long as it likes, and the worker's
slot with it, until the pump lets the row go and another worker sends the job again while the
first request is still open. urllib3's `Timeout(total=...)` does not help: it sets the socket's
timeout once, from what is left after connecting, and every later read gets it anew.

So one watchdog thread per process shuts the socket of a request that outlives its deadline;
the read blocked on it returns, and the request ends there. The connection a request uses is
noted by the connection classes below (the pool picks it, so nothing else can know it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# How often the watchdog looks for requests past their deadline: how late a cut may come.
SCAN_SECONDS = 0.05

_current = threading.local()
log = logging.getLogger("eventrelay.worker")


class Deadline:
    """One request's deadline. `fired` once the watchdog has cut the request."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False
        self._done = False
        self._conn: Any = None
        self._lock = threading.Lock()

    def note(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn

    def finish(self) -> None:
        with self._lock:  # after this, the watchdog never touches the (reused) connection
            self._done = True

    def cut(self) -> bool:
        """Shut the request's socket; False if it has none yet (look again soon)."""
        with self._lock:
            if self._done:
                return True
            sock = getattr(self._conn, "sock", None)
            if sock is None:
                return False
            self.fired = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return True


class _Watchdog:
    """Cuts the requests that outlive their deadline: each sender thread notes the deadline of
    the request it makes (a dict entry per thread, set and cleared without a lock), and one
    thread looks at them every SCAN_SECONDS.

    Not a heap of deadlines with a timed wait for the earliest: every request pushed one under
    a lock every sender shares, and once the first deadlines came due, the watchdog woke for
    each request made 30 s before, finished long ago (a thread switch per delivery)."""

    def __init__(self) -> None:
        self._requests: dict[int, Deadline] = {}  # sender thread's ident -> its request's
        self._start_lock = threading.Lock()
        self._started = False

    def arm(self, seconds: float) -> Deadline:
        deadline = Deadline(time.monotonic() + seconds)
        if not self._started:
            with self._start_lock:
                if not self._started:
                    threading.Thread(
                        target=self._run, name="eventrelay-deadline", daemon=True
                    ).start()
                    self._started = True
        self._requests[threading.get_ident()] = deadline
        return deadline

    def disarm(self, deadline: Deadline) -> None:
        ident = threading.get_ident()
        if self._requests.get(ident) is deadline:
            del self._requests[ident]

    def _run(self) -> None:
        while True:
            time.sleep(SCAN_SECONDS)
            try:
                self._cut_late()
            except Exception:  # a watchdog that died would let every later request run on
                log.exception("the request deadline watchdog failed a look; it looks again")

    def _cut_late(self) -> None:
        now = time.monotonic()
        # Entries are removed only by their own thread (`disarm`); a request whose connection
        # has no socket yet (still connecting) is cut at a later look.
        for deadline in list(self._requests.values()):
            if deadline.at <= now and not deadline.fired:
                deadline.cut()


_watchdog = _Watchdog()


def _forget_parents_watchdog() -> None:
    # A fork copies the lock as it was (perhaps held by a sender thread) but not the thread.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_forget_parents_watchdog)


@contextlib.contextmanager
def watch(seconds: float) -> Iterator[Deadline]:
    """Cut the request this thread makes inside the block once `seconds` have passed."""
    watchdog = _watchdog
    deadline = watchdog.arm(seconds)
    _current.deadline = deadline
    try:
        yield deadline
    finally:
        _current.deadline = None
        deadline.finish()
        watchdog.disarm(deadline)


def _note(conn: Any) -> None:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.note(conn)


# A vendor request's body up to this size goes out in the same write as its head.
ONE_WRITE_MAX_BODY_BYTES = 64 * 1024


class _OneWrite(HTTPConnection):
    """A request's head and body in one write: urllib3 sends them in two, which costs the
    worker a second system call (each releases the GIL, and with many sender threads getting
    it back is a thread switch) and the vendor a second packet to read."""

    _held: bytes | None = None
    _holding = False

    def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> None:
        _note(self)
        self._holding = isinstance(body, bytes) and 0 < len(body) <= ONE_WRITE_MAX_BODY_BYTES
        self._held = None
        try:
            super().request(method, url, body, *args, **kwargs)
        finally:
            held, self._held, self._holding = self._held, None, False
        if held is not None:  # no body followed the head after all
            super().send(held)

    def send(self, data: Any) -> None:
        if self._holding:
            if self._held is None:
                self._held = bytes(data)  # the head: wait for the body
                return
            data, self._held, self._holding = self._held + bytes(data), None, False
        super().send(data)


class _HTTPConnection(_OneWrite):
    pass


class _HTTPSConnection(_OneWrite, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections tell `watch` which socket a request uses."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
