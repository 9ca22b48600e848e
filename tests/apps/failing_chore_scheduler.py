"""A real scheduler process whose lease-recovery chore fails on every tick
(tests/integration/test_scheduling.py): the other chores must go on."""

from __future__ import annotations

from typing import Any

from eventrelay.worker.engine import scheduler


def _broken(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected: lease recovery is broken")


scheduler.recover_expired_leases = _broken  # type: ignore[assignment]
scheduler.Scheduler().run(interval=0.2)
