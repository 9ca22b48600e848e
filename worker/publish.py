"""Publishing delivery ids to their vendor's queue. Messages carry ids, never payloads."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence

from models.delivery import Lane
from worker.config import get_settings
from worker.queues import queue_name

log = logging.getLogger("eventrelay.publish")


def publish(vendor: str, lane: Lane, ids: Sequence[uuid.UUID], *, fail_fast: bool = False) -> None:
    """One message per batch of ids. Raises if the broker cannot be reached."""
    from worker.tasks import deliver

    size = get_settings().batch_size
    options = {"retry": False} if fail_fast else {}
    for start in range(0, len(ids), size):
        chunk = [str(i) for i in ids[start : start + size]]
        deliver.apply_async(args=(vendor, chunk), queue=queue_name(vendor, lane), **options)


def publish_many(rows: Iterable[tuple[uuid.UUID, str, Lane]], *, fail_fast: bool = False) -> None:
    groups: dict[tuple[str, Lane], list[uuid.UUID]] = defaultdict(list)
    for delivery_id, vendor, lane in rows:
        groups[(vendor, Lane(lane))].append(delivery_id)
    for (vendor, lane), ids in groups.items():
        publish(vendor, lane, ids, fail_fast=fail_fast)
