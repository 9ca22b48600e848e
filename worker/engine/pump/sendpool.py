"""The threads that run the requests."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("eventrelay.worker")

Work = tuple[Callable[..., None], tuple[Any, ...]]


class SendPool:
    """Threads that run the requests: one more is started whenever work comes and none is
    idle, up to `max_threads`; they live as long as the process (each keeps its Session).

    Not `concurrent.futures.ThreadPoolExecutor`: it counts a thread as idle each time it
    finishes an item, even when it goes straight on to the next queued one, so once work has
    queued it stops adding threads and requests wait in its queue (docs/latency.md).

    A thread never dies of its work (whatever an item raises is logged and the thread goes
    on); `replace_dead()` (the supervisor's) starts a new one for any thread that still did.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self.max_threads = max_threads
        self._name = name
        self._work: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no submitted item is promised to
        self._threads: list[threading.Thread] = []
        self._started = 0
        self._closed = False

    @property
    def threads(self) -> int:
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("send pool is shut down")
            if self._idle > 0:
                self._idle -= 1  # one idle thread takes it
            elif len(self._threads) < self.max_threads:
                self._start_thread()
            # else: every thread is busy; the item waits for the first one to finish
            self._work.put((fn, args))

    def replace_dead(self) -> int:
        """Start a thread for each one that died; returns how many died."""
        with self._lock:
            alive = [t for t in self._threads if t.is_alive()]
            dead = len(self._threads) - len(alive)
            self._threads = alive
            if not self._closed:
                for _ in range(dead):
                    self._start_thread()
        return dead

    def shutdown(self) -> None:
        """Stop every thread once it is idle; work still queued is dropped (the pump has
        waited for what it holds, and what it drops comes back when its lease expires)."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._work.put(None)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"{self._name}_{self._started}", daemon=True
        )
        self._started += 1
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None or self._closed:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - the thread outlives its work, whatever it was
                log.exception("a send thread's work raised")
            with self._lock:
                self._idle += 1
