"""Publishing delivery ids to their vendor's queue. Messages carry ids, never payloads."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kombu import pools

from eventrelay.models.delivery import Lane
from eventrelay.models.session import get_engine
from eventrelay.worker.config import get_settings
from eventrelay.worker.fleet import doorbell
from eventrelay.worker.fleet.celery_app import get_app
from eventrelay.worker.fleet.queues import TASK_NAME_DELIVER, queue_name
from eventrelay.worker.producer.broker import PRODUCER_TRANSPORT_OPTIONS, pause
from eventrelay.worker.producer.outbox import mark_unpublished

log = logging.getLogger("eventrelay.publish")

# Set by eventrelay.testing's `eventrelay_outbox` fixture only: committed jobs go to the test's
# outbox instead of the broker, so an app's tests need no Redis and no worker.
capture: Callable[[Sequence[tuple[uuid.UUID, str, Lane]]], None] | None = None


def chunked(ids: Sequence[uuid.UUID], size: int) -> list[Sequence[uuid.UUID]]:
    """Batches of at most `size` ids; no ids is one empty batch (a "drain" message)."""
    return [ids[start : start + size] for start in range(0, len(ids), size)] or [[]]


def _by_vendor_lane(
    rows: Iterable[tuple[uuid.UUID, str, Lane]],
) -> dict[tuple[str, Lane], list[uuid.UUID]]:
    groups: dict[tuple[str, Lane], list[uuid.UUID]] = defaultdict(list)
    for delivery_id, vendor, lane in rows:
        groups[(vendor, Lane(lane))].append(delivery_id)
    return groups


def publish(vendor: str, lane: Lane, ids: Sequence[uuid.UUID], *, fail_fast: bool = False) -> None:
    """One message per batch of ids. Raises if the broker cannot be reached."""
    # By name: the producer never imports the task module (no import circle, no task
    # registry needed in a web process).
    app = get_app()
    options = {"retry": False} if fail_fast else {}
    with _producer(app, fail_fast) as producer:  # one connection for all chunks
        for chunk in chunked(ids, get_settings().batch_size):
            app.send_task(
                TASK_NAME_DELIVER,
                args=(vendor, [str(i) for i in chunk]),
                queue=queue_name(vendor, lane),
                producer=producer,
                add_to_parent=False,
                **options,
            )


def _producer(app: Any, fail_fast: bool) -> Any:
    """A pooled kombu producer; a fail-fast one (web producers) with the short timeouts."""
    if not fail_fast:
        return app.producer_or_acquire()
    connection = app.connection_for_write(transport_options=PRODUCER_TRANSPORT_OPTIONS)
    # kombu keys its pools by the connection's URL and options: one pool per process.
    return pools.producers[connection].acquire(block=True)


def publish_many(rows: Iterable[tuple[uuid.UUID, str, Lane]], *, fail_fast: bool = False) -> None:
    for (vendor, lane), ids in _by_vendor_lane(rows).items():
        publish(vendor, lane, ids, fail_fast=fail_fast)


def publish_new(rows: Iterable[tuple[uuid.UUID, str, Lane]], *, fail_fast: bool = False) -> None:
    """Publish freshly accepted deliveries, coalescing small enqueues (worker.doorbell).

    Full batches get their own messages. A smaller remainder is published only if the vendor's
    doorbell was not already rung: the message already waiting will top up with these rows.
    """
    settings = get_settings()
    size = settings.batch_size
    redis_url = settings.effective_redis_url
    for (vendor, lane), ids in _by_vendor_lane(rows).items():
        full = len(ids) - len(ids) % size
        if full:
            publish(vendor, lane, ids[:full], fail_fast=fail_fast)
        rest = ids[full:]
        if not rest:
            continue
        if lane is Lane.FRESH and redis_url and not _rung(vendor, redis_url):
            continue
        publish(vendor, lane, rest, fail_fast=fail_fast)


def _rung(vendor: str, redis_url: str) -> bool:
    try:
        return doorbell.ring(vendor, redis_url, fail_fast=True)
    except Exception as exc:
        if redis_url == get_settings().broker_url:
            raise  # the broker's own Redis is not answering: publishing would not either
        # A doorbell of its own that is down: publish, as if nobody had rung.
        log.warning("doorbell unavailable (%s); publishing", type(exc).__name__)
        return True


def publish_after_commit(rows: Sequence[tuple[uuid.UUID, str, Lane]]) -> None:
    """Publish committed jobs. A broker outage is logged, not raised, and never waited for:
    the jobs are stored and the scheduler publishes them once the broker is back. After a
    failure this process stops trying for a while (`broker.PAUSE_SECONDS`)."""
    if not rows:
        return
    if capture is not None:
        capture(rows)
        return
    if not pause.may_publish():
        _leave_to_scheduler(rows)
        return
    try:
        publish_new(rows, fail_fast=True)
    except Exception as exc:  # kombu/redis raise many types for "broker unreachable"
        pause.failed()
        log.warning(
            "broker unavailable (%s); %d job(s) are stored and will be published by the "
            "scheduler; this process leaves new jobs to it for %gs",
            type(exc).__name__,
            len(rows),
            pause.seconds,
        )
        _leave_to_scheduler(rows)
    else:
        pause.succeeded()


def _leave_to_scheduler(rows: Sequence[tuple[uuid.UUID, str, Lane]]) -> None:
    try:
        with get_engine().begin() as conn:
            mark_unpublished(conn, [r[0] for r in rows])
    except Exception:
        log.exception("could not mark jobs for the scheduler; its orphan sweep will find them")
