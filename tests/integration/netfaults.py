"""Network faults between eventrelay and its services, made with real sockets.

`TcpProxy` forwards to a real server and can be closed (connections refused, open ones cut) and
opened again: a database or broker that goes away and comes back. `SilentServer` accepts
connections and never answers: a server that hangs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from tests.support import free_port


class SilentServer:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *_: Any) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in self._held:
            conn.close()


class TcpProxy:
    """127.0.0.1:<port> → 127.0.0.1:<target_port>, while open; with `delay_seconds`, every
    chunk is held that long in each direction (a server one round trip of twice that away)."""

    def __init__(self, target_port: int, delay_seconds: float = 0.0) -> None:
        self.target_port = target_port
        self.delay_seconds = delay_seconds
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self._server is None:
                self._server = socket.create_server(("127.0.0.1", self.port), backlog=128)
                threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            if self._server is not None:
                # shutdown first: close() alone leaves a thread blocked in accept() listening.
                with contextlib.suppress(OSError):
                    self._server.shutdown(socket.SHUT_RDWR)
                self._server.close()
                self._server = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.delay_seconds:
                    time.sleep(self.delay_seconds)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
