"""A claimed row from its claim to its record, and the ledger of every row the process holds.

A row this process claimed is held (its lease is renewed by the heartbeat) until its outcome
is recorded. On the way it is handed on exactly once:

    Claim ──take──▶ a request (sent; its outcome, or a release if the send broke)
      │  └─settle─▶ straight to the recorder (waits for its dependency, that one is dead)
      └──close───▶ given back unspent (whatever is left when the claim ends, exceptions too)

A row given back and claimed again by this process before the recorder was done with its
previous claim is a new entry, still renewed and still waited for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from eventrelay.worker.engine.pump.request import release
from eventrelay.worker.engine.state import Claimed, Outcome

Key = tuple[uuid.UUID, int]
GIVE_BACK_WAIT_SECONDS = 1.0


def key(c: Claimed) -> Key:
    return (c.id, c.attempt)


class Ledger:
    """Every row this process holds the lease of, until its outcome is recorded (or let go).

    An entry is one claim of a row (the `Claimed` object that claim returned), not the row: a
    row given back and claimed again before the recorder was done with the first claim has the
    same id and, its attempt unspent, the same attempt number; the recorder ends only the
    claim its outcome came from.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._held: dict[uuid.UUID, tuple[Claimed, float]] = {}  # and when (monotonic)
        # Outcomes handed to the recorder and not recorded yet, oldest first (the recorder's lag).
        self._decided: dict[uuid.UUID, float] = {}

    def hold(self, rows: Sequence[Claimed]) -> None:
        now = time.monotonic()
        with self._lock:
            for c in rows:
                self._held[c.id] = (c, now)
                self._decided.pop(c.id, None)

    def _mine(self, c: Claimed) -> bool:
        held = self._held.get(c.id)
        return held is not None and held[0] is c

    def decided(self, outcomes: Sequence[Outcome]) -> None:
        now = time.monotonic()
        with self._lock:
            for o in outcomes:
                if self._mine(o.claimed):
                    self._decided.setdefault(o.claimed.id, now)

    def end(self, outcomes: Sequence[Outcome]) -> None:
        """The recorder is done with these (recorded, or let go to their leases)."""
        with self._lock:
            for o in outcomes:
                if self._mine(o.claimed):
                    del self._held[o.claimed.id]
                    self._decided.pop(o.claimed.id, None)
            self._lock.notify_all()

    def renewable(self, oldest: float) -> list[Key]:
        """(id, attempt) of the rows held since `oldest` (monotonic) or later."""
        with self._lock:
            return [key(c) for c, since in self._held.values() if since >= oldest]

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def backlog(self) -> tuple[int, float]:
        """Outcomes waiting for the recorder, and how long the oldest has waited (seconds)."""
        with self._lock:
            if not self._decided:
                return 0, 0.0
            oldest = next(iter(self._decided.values()))
            return len(self._decided), time.monotonic() - oldest

    def wait_empty(self, deadline: float) -> bool:
        with self._lock:
            while self._held:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.1))
            return True


@dataclass(eq=False)
class Send:
    """One request's rows on their way to the vendor (`probe`: the vendor's half-open probe)."""

    vendor: str
    rows: list[Claimed]
    probe: bool = False


class Claim:
    """The rows one claim took for one vendor, until each is handed on.

    Use it as a context manager: leaving it gives back every row not handed on (with the
    exception's name as the reason when one is raised), so no path strands a row.
    """

    def __init__(
        self, vendor: str, rows: Sequence[Claimed], give: Callable[[Sequence[Outcome]], None]
    ) -> None:
        self.vendor = vendor
        self._give = give
        self._open: dict[Key, Claimed] = {}
        self.sends = 0  # requests started from it
        self.add(rows)

    def add(self, rows: Sequence[Claimed]) -> None:
        for c in rows:
            self._open[key(c)] = c

    @property
    def rows(self) -> list[Claimed]:
        return list(self._open.values())

    def __len__(self) -> int:
        return len(self._open)

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """These rows end without a request: their outcomes go to the recorder."""
        mine = [o for o in outcomes if self._open.pop(key(o.claimed), None) is not None]
        if mine:
            self._give(mine)

    def take(self, rows: Sequence[Claimed], probe: bool = False) -> Send:
        """These rows go out in one request, which ends them from now on."""
        for c in rows:
            del self._open[key(c)]
        self.sends += 1
        return Send(self.vendor, list(rows), probe)

    def close(self, reason: str | None = None) -> None:
        left = list(self._open.values())
        self._open.clear()
        if left:
            self._give(release(left, GIVE_BACK_WAIT_SECONDS, reason))

    def __enter__(self) -> Claim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(f"given back unsent: {exc_type.__name__}" if exc_type else None)
