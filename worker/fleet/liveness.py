"""Heartbeats of the fleet's processes, kept in Redis for the metrics exporter to read.

A process cannot report its own death, and the exporter is a process of its own
(`eventrelay metrics`): so each worker and each scheduler writes a timestamp here, and the
exporter turns them into `eventrelay_workers_alive` and
`eventrelay_scheduler_last_tick_timestamp_seconds`, whichever machine they run on.

* A worker beats from its main process on Celery's `heartbeat_sent` signal (every 2 s while
  task events are on, which `eventrelay worker` always asks for with `-E`); its key expires
  WORKER_TTL_SECONDS after the last beat, and a warm shutdown removes it.
* The scheduler beats at the end of every tick that completed.

A failed write is logged at debug and ignored: liveness must never stop the work it reports.
The worker's beat runs in its main process's event loop (Celery's timer), so it writes with a
client of its own with short timeouts and, after a failure, skips beats for a while: a slow or
unreachable Redis holds the consumer at most WRITE_TIMEOUT_SECONDS per BACKOFF_SECONDS.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from eventrelay.worker.fleet import keys
from eventrelay.worker.fleet.redis_client import get_redis

log = logging.getLogger("eventrelay.liveness")

# Fifteen missed 2 s heartbeats: a worker busy in a long GC pause or a slow Redis round trip
# still counts; one that is gone stops counting within a minute.
WORKER_TTL_SECONDS = 30
# The scheduler's last tick is kept a day: its age, not its presence, is what alerts read.
SCHEDULER_TTL_SECONDS = 86_400


worker_key = keys.worker_heartbeat
SCHEDULER_KEY = keys.SCHEDULER_HEARTBEAT


WRITE_TIMEOUT_SECONDS = 0.5
BACKOFF_SECONDS = 10.0

_clients: dict[str, Any] = {}
_quiet_until = 0.0


def _writer(url: str) -> Any:
    client = _clients.get(url)
    if client is None:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=WRITE_TIMEOUT_SECONDS, socket_connect_timeout=WRITE_TIMEOUT_SECONDS
        )
        _clients[url] = client
    return client


def _write(url: str | None, what: str, *command: Any) -> None:
    global _quiet_until
    if not url or time.monotonic() < _quiet_until:
        return
    try:
        _writer(url).execute_command(*command)
    except Exception as exc:
        _quiet_until = time.monotonic() + BACKOFF_SECONDS
        log.debug("%s not written (%s)", what, type(exc).__name__)


def _redis_url() -> str | None:
    from eventrelay.worker.config import get_settings

    return get_settings().effective_redis_url


def worker_beat(hostname: str, redis_url: str | None = None) -> None:
    _write(
        redis_url or _redis_url(),
        "worker heartbeat",
        "SET",
        worker_key(hostname),
        repr(time.time()),
        "EX",
        WORKER_TTL_SECONDS,
    )


def worker_gone(hostname: str, redis_url: str | None = None) -> None:
    _write(redis_url or _redis_url(), "worker removal", "DEL", worker_key(hostname))


def scheduler_beat(redis_url: str | None = None) -> None:
    _write(
        redis_url or _redis_url(),
        "scheduler heartbeat",
        "SET",
        SCHEDULER_KEY,
        repr(time.time()),
        "EX",
        SCHEDULER_TTL_SECONDS,
    )


def worker_beats(redis_url: str) -> dict[str, float]:
    """Worker hostname → Unix time of its last heartbeat, for every worker still alive."""
    client = get_redis(redis_url)
    prefix = worker_key("")
    names = [k.decode() if isinstance(k, bytes) else str(k) for k in client.scan_iter(prefix + "*")]
    values = client.mget(names) if names else []
    return {
        name.removeprefix(prefix): float(value)
        for name, value in zip(names, values, strict=True)
        if value is not None
    }


def scheduler_last_tick(redis_url: str) -> float | None:
    value = get_redis(redis_url).get(SCHEDULER_KEY)
    return float(value) if value is not None else None


def _on_heartbeat_sent(sender: Any = None, **_: Any) -> None:
    hostname = getattr(getattr(sender, "eventer", None), "hostname", None)
    if hostname:
        worker_beat(str(hostname))


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None)
    if hostname:
        worker_gone(str(hostname))


def connect_worker_signals() -> None:
    """Beat on every Celery worker heartbeat; forget the worker when it shuts down."""
    from celery.signals import heartbeat_sent, worker_shutdown

    heartbeat_sent.connect(_on_heartbeat_sent, weak=False, dispatch_uid="eventrelay-liveness")
    worker_shutdown.connect(_on_worker_shutdown, weak=False, dispatch_uid="eventrelay-gone")
