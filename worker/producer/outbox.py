"""The outbox write: validated jobs become delivery rows inside the caller's transaction.

Once that transaction commits, the job is durable whatever happens to the broker: publishing
(`eventrelay.worker.producer.publish`) is an optimisation the scheduler covers for.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import Connection, Text, cast, delete, insert, select, tuple_, update

from eventrelay.models.base import LIVE, new_id, utcnow
from eventrelay.models.delivery import DELIVERIES, DeliveryStatus, Lane
from eventrelay.models.idempotency import IDEMPOTENCY_KEYS
from eventrelay.models.sql import dialect_insert, pick_locked
from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.errors import FieldError, InvalidJob
from eventrelay.worker.producer.broker import pause
from eventrelay.worker.producer.validate import THROTTLE_PREFIX
from eventrelay.worker.tracing import current_context
from eventrelay.worker.vendors import get_vendor
from eventrelay.worker.vendors.base import PreparedJob

D = DELIVERIES
K = IDEMPOTENCY_KEYS


@dataclass(frozen=True)
class Receipt:
    """What `enqueue` returns for one job."""

    delivery_id: uuid.UUID
    vendor: str
    operation: str
    duplicate: bool  # True: an earlier job with the same key exists; nothing new was stored
    status: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivery_id": str(self.delivery_id),
            "vendor": self.vendor,
            "operation": self.operation,
            "duplicate": self.duplicate,
            "status": self.status,
        }


def record_jobs(
    conn: Connection, jobs: Sequence[PreparedJob], settings: Settings | None = None
) -> tuple[list[Receipt], list[tuple[uuid.UUID, str, Lane]]]:
    """Store validated jobs inside the caller's transaction (the outbox write).

    Use this directly to write jobs in the same transaction as your own rows; then call
    `publish_after_commit` with the second value once that transaction has committed. While
    this process has paused publishing (the broker just failed), that value is empty and the
    rows wait for the scheduler.
    """
    settings = settings or get_settings()
    now = utcnow()
    ids = [new_id() for _ in jobs]
    receipts: list[Receipt | None] = [None] * len(jobs)
    _answer_duplicates(conn, jobs, ids, receipts, now, settings)
    fresh = [i for i in range(len(jobs)) if receipts[i] is None]
    suppressed = _throttled(conn, jobs, fresh, ids, now)
    depends = _dependencies(conn, jobs, fresh, ids)
    to_publish = _insert_deliveries(conn, jobs, fresh, ids, receipts, suppressed, depends, now)
    return [r for r in receipts if r is not None], to_publish


def _answer_duplicates(
    conn: Connection,
    jobs: Sequence[PreparedJob],
    ids: Sequence[uuid.UUID],
    receipts: list[Receipt | None],
    now: datetime,
    settings: Settings,
) -> None:
    """Step 1, idempotency: fill in the receipt of every job whose key is taken already. The
    unique (vendor, key) decides, not a read-then-write.

    Raises:
        InvalidJob: a key given with a different job than the one it was used for.
    """
    owners: dict[tuple[str, str], int] = {}
    for i, job in enumerate(jobs):
        if job.idempotency_key is not None:
            owners.setdefault((job.vendor, job.idempotency_key), i)
    expires = now + timedelta(seconds=settings.idempotency_ttl_seconds)
    won = _claim_keys(conn, {k: (ids[i], expires) for k, i in owners.items()}, now)
    existing = _existing(conn, [k for k in owners if k not in won])
    for i, job in enumerate(jobs):
        if job.idempotency_key is None:
            continue
        key = (job.vendor, job.idempotency_key)
        owner = owners[key]
        if key in won and owner == i:
            continue
        if key in won:  # the same key twice in this call: the first one stands
            first = jobs[owner]
            if _key_was_given(job) and (first.operation, first.payload) != _job(job):
                _refuse_reused_key(conn, won, job, i, f"by job #{owner} of this call")
            receipts[i] = Receipt(
                ids[owner], job.vendor, job.operation, True, DeliveryStatus.PENDING
            )
            continue
        stored = existing.get(key)
        # A key whose delivery is gone (purged) can no longer be compared: a duplicate.
        if stored and stored.job and stored.job != _job(job) and _key_was_given(job):
            _refuse_reused_key(conn, won, job, i, f"by delivery {stored.delivery_id}")
        receipts[i] = Receipt(
            stored.delivery_id if stored else uuid.UUID(int=0),
            job.vendor,
            job.operation,
            True,
            str(stored.status) if stored and stored.status else "purged",
        )


def _throttled(
    conn: Connection,
    jobs: Sequence[PreparedJob],
    fresh: Sequence[int],
    ids: Sequence[uuid.UUID],
    now: datetime,
) -> dict[int, str]:
    """Step 2, throttle windows (vtcdn email opens): the jobs to store as suppressed, with
    their reason; the first job of a window is sent, later ones are suppressed."""
    throttles: dict[tuple[str, str], tuple[int, float]] = {}
    suppressed: dict[int, str] = {}
    for i in fresh:
        if jobs[i].throttle:
            throttle_key, window = jobs[i].throttle  # type: ignore[misc]
            tkey = (jobs[i].vendor, THROTTLE_PREFIX + throttle_key)
            if tkey in throttles:
                suppressed[i] = f"suppressed: {jobs[i].vendor} allows one per {window:g}s window"
            else:
                throttles[tkey] = (i, window)
    # All in one sorted claim, like the idempotency keys: claimed one by one in the jobs'
    # order, two producers with the same users in another order would deadlock.
    got = _claim_keys(
        conn,
        {t: (ids[i], now + timedelta(seconds=window)) for t, (i, window) in throttles.items()},
        now,
    )
    for tkey, (i, window) in throttles.items():
        if tkey not in got:
            suppressed[i] = f"suppressed: {jobs[i].vendor} allows one per {window:g}s window"
    return suppressed


def _insert_deliveries(
    conn: Connection,
    jobs: Sequence[PreparedJob],
    fresh: Sequence[int],
    ids: Sequence[uuid.UUID],
    receipts: list[Receipt | None],
    suppressed: Mapping[int, str],
    depends: Mapping[int, uuid.UUID],
    now: datetime,
) -> list[tuple[uuid.UUID, str, Lane]]:
    """Step 4: one delivery row per fresh job, and its receipt; returns what to publish after
    the commit (nothing while this process has paused publishing)."""
    rows = []
    to_publish = []
    publishing = not pause.paused()
    trace_context = current_context()  # the caller's span, if it traces
    for i in fresh:
        job = jobs[i]
        status = DeliveryStatus.SUPPRESSED if i in suppressed else DeliveryStatus.PENDING
        publish = publishing and status is DeliveryStatus.PENDING
        rows.append(
            {
                "id": ids[i],
                "vendor": job.vendor,
                "operation": job.operation,
                "payload": job.payload,
                "idempotency_key": job.idempotency_key,
                "user_ref": job.user_ref,
                "depends_on": depends.get(i),
                "trace_context": trace_context,
                "status": status,
                "lane": Lane.FRESH,
                "attempts": 0,
                "next_attempt_at": now,
                "window_started_at": now,
                "window_base_attempts": 0,
                # Set optimistically: if publishing fails it is cleared again, and a crash in
                # between is caught by the scheduler's redispatch. While this process has
                # paused publishing (the broker failed), NULL: the scheduler publishes it.
                "dispatched_at": now if publish else None,
                "reason": suppressed.get(i),
                "created_at": now,
                "updated_at": now,
                "finished_at": now if status is DeliveryStatus.SUPPRESSED else None,
                # Even when suppressed: the retention pass moves those into history and counts
                # them, so a producer never waits for a partition or a running total's lock.
                "archived_at": LIVE,
            }
        )
        receipts[i] = Receipt(ids[i], job.vendor, job.operation, False, str(status))
        if publish:
            to_publish.append((ids[i], job.vendor, Lane.FRESH))
    if rows:
        conn.execute(insert(D), rows)
    return to_publish


def _claim_keys(
    conn: Connection,
    keys: Mapping[tuple[str, str], tuple[uuid.UUID, datetime]],
    now: datetime,
) -> set[tuple[str, str]]:
    """Insert keys (each with its delivery and expiry), or take over expired ones; returns the
    keys this call now owns."""
    if not keys:
        return set()
    # Sorted, so concurrent producers lock rows in the same order (no deadlocks).
    rows = [
        {"vendor": v, "key": k, "delivery_id": d, "created_at": now, "expires_at": expires}
        for (v, k), (d, expires) in sorted(keys.items())
    ]
    stmt = dialect_insert(conn, K)
    stmt = stmt.on_conflict_do_update(
        index_elements=["vendor", "key"],
        set_={
            "delivery_id": stmt.excluded.delivery_id,
            "created_at": stmt.excluded.created_at,
            "expires_at": stmt.excluded.expires_at,
        },
        where=K.c.expires_at < now,
    ).returning(K.c.vendor, K.c.key)
    # executemany: one cached statement, batched by SQLAlchemy's insertmanyvalues.
    return {(r.vendor, r.key) for r in conn.execute(stmt, rows)}


@dataclass(frozen=True)
class _Stored:
    """What a key already taken points at; `job` and `status` are None if its delivery is gone."""

    delivery_id: uuid.UUID
    status: str | None
    job: tuple[str, Any] | None  # (operation, payload)


def _existing(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], _Stored]:
    found: dict[tuple[str, str], _Stored] = {}
    for vendor in {v for v, _ in keys}:
        names = [k for v, k in keys if v == vendor]
        rows = conn.execute(
            # The payload as JSON text, parsed here: a Django connection loads JSON its own way.
            select(K.c.key, K.c.delivery_id, D.c.status, D.c.operation, cast(D.c.payload, Text))
            .select_from(K.outerjoin(D, D.c.id == K.c.delivery_id))
            .where(K.c.vendor == vendor, K.c.key.in_(names))
        )
        for key, delivery_id, status, operation, payload in rows:
            job = (operation, json.loads(payload)) if operation is not None else None
            found[(vendor, key)] = _Stored(delivery_id, status, job)
    return found


def _job(job: PreparedJob) -> tuple[str, Any]:
    return (job.operation, job.payload)


def _key_was_given(job: PreparedJob) -> bool:
    """True if the job's key is the producer's own, not one a vendor rule derives (those are the
    vendor's dedup rule: a different job under them is a duplicate, not a mistake)."""
    derived = get_vendor(job.vendor).idempotency_key(job.operation, job.payload, None)
    return job.idempotency_key != derived


def _refuse_reused_key(
    conn: Connection, won: set[tuple[str, str]], job: PreparedJob, index: int, used: str
) -> NoReturn:
    """Refuse the call, taking back the keys it claimed: nothing of it stays in the caller's
    transaction, which goes on as if the call had not been made."""
    if won:
        conn.execute(delete(K).where(tuple_(K.c.vendor, K.c.key).in_(sorted(won))))
    raise InvalidJob(
        [
            FieldError(
                "idempotency_key",
                f"{job.idempotency_key!r} was used for a different job ({used}, with another "
                "operation or payload); send that same job to get its receipt, or give this "
                "job a new key",
            )
        ],
        index,
    )


def _dependencies(
    conn: Connection, jobs: Sequence[PreparedJob], fresh: Sequence[int], ids: Sequence[uuid.UUID]
) -> dict[int, uuid.UUID]:
    """Step 3, ordering: for jobs that must follow another operation of the same user, what
    they wait for.

    A job needs *a* delivered one of the user's followed deliveries (Botsi: a profile), not the
    latest: once any is delivered it waits for nothing. Otherwise it waits for the latest one
    still on its way (in this call, or pending/delivering); if every one is dead, for the latest
    dead one, so the worker dead-letters the job with that reason.
    """
    wanted: dict[tuple[str, str], set[str]] = {}
    for i in fresh:
        job = jobs[i]
        if job.user_ref and job.follows_operation:
            wanted.setdefault((job.vendor, job.follows_operation), set()).add(job.user_ref)
    delivered: set[tuple[str, str, str]] = set()
    on_its_way: dict[tuple[str, str, str], uuid.UUID] = {}
    dead: dict[tuple[str, str, str], uuid.UUID] = {}
    for (vendor, operation), users in wanted.items():
        rows = conn.execute(
            select(D.c.id, D.c.user_ref, D.c.status)
            .where(
                D.c.vendor == vendor,
                D.c.operation == operation,
                D.c.user_ref.in_(users),
                D.c.status != DeliveryStatus.SUPPRESSED,
            )
            .order_by(D.c.created_at, D.c.id)
        )
        for r in rows:  # ascending: the last one seen of each kind is the latest
            key = (vendor, operation, r.user_ref)
            if r.status == DeliveryStatus.DELIVERED:
                delivered.add(key)
            elif r.status == DeliveryStatus.DEAD:
                dead[key] = r.id
            else:
                on_its_way[key] = r.id
    depends: dict[int, uuid.UUID] = {}
    for i in fresh:
        job = jobs[i]
        if job.user_ref and job.follows_operation:
            key = (job.vendor, job.follows_operation, job.user_ref)
            if key not in delivered:
                waits_for = on_its_way.get(key) or dead.get(key)
                if waits_for is not None:
                    depends[i] = waits_for
        if job.user_ref:
            # Later jobs of this call wait for this one: it is the latest on its way.
            on_its_way[(job.vendor, job.operation, job.user_ref)] = ids[i]
    return depends


def mark_unpublished(conn: Connection, ids: Sequence[uuid.UUID]) -> None:
    """Publishing failed: clear dispatched_at so the scheduler publishes these when it can."""
    conn.execute(
        update(D)
        .where(D.c.id.in_(ids), D.c.archived_at == LIVE, D.c.status == DeliveryStatus.PENDING)
        .values(dispatched_at=None)
    )


def purge_expired_keys(conn: Connection, limit: int = 10_000) -> int:
    """Delete up to `limit` expired idempotency and throttle keys; returns how many.

    Safe against a producer taking a key over meanwhile. On PostgreSQL a DELETE that waited for
    such a producer's row re-checks only its own WHERE on the new row version, not the
    `IN (SELECT ... LIMIT)` that chose the row: so the expiry is repeated outside, and rows a
    producer holds are skipped (SKIP LOCKED) instead of waited for.
    """
    now = utcnow()
    expired = select(K.c.vendor, K.c.key).where(K.c.expires_at < now).limit(limit)
    # pick_locked: evaluated once. A plain IN (SELECT ... LIMIT ... FOR UPDATE SKIP LOCKED)
    # deleted all 5,000 expired keys in one "batch of 500" once the table had statistics (the
    # scheduler's ANALYZE): the planner rescanned the subquery, which skipped the rows this
    # DELETE had just removed and picked new ones each time.
    picked = pick_locked(conn, expired, name="expired_keys")
    result = conn.execute(
        delete(K).where(tuple_(K.c.vendor, K.c.key).in_(picked), K.c.expires_at < now)
    )
    return int(result.rowcount or 0)
