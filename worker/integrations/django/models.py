"""Django's view of eventrelay's tables: unmanaged, so Django never creates or alters them.

eventrelay's Alembic revisions own the schema (`eventrelay migrate`); these classes only name
the columns the admin reads. The tables' real primary key is (id, archived_at), the partition
key being part of it on PostgreSQL; `id` alone is unique (a UUIDv7 per delivery), which is what
Django needs of a primary key. Rows are changed only through `worker.ops.operations`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.db import models

from eventrelay.models.base import LIVE
from eventrelay.models.delivery import AttemptOutcome, DeliveryStatus, Lane


def _choices(enum: Any) -> list[tuple[str, str]]:
    return [(m.value, m.value) for m in enum]


class JSONColumn(models.Field):
    """A `json` column read as Python data.

    Not Django's JSONField: that one expects `jsonb`, which psycopg hands over as text, while
    a `json` column arrives already decoded.
    """

    def db_type(self, connection: Any) -> str:
        return "json"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value


class Delivery(models.Model):
    id = models.UUIDField(primary_key=True)
    archived_at = models.DateTimeField()
    vendor = models.CharField(max_length=64)
    operation = models.CharField(max_length=64)
    payload = JSONColumn()
    idempotency_key = models.CharField(max_length=255, null=True)
    user_ref = models.CharField("user reference", max_length=255, null=True)
    depends_on = models.UUIDField(null=True)
    status = models.CharField(max_length=16, choices=_choices(DeliveryStatus))
    lane = models.CharField(max_length=16, choices=_choices(Lane))
    attempts = models.IntegerField()
    window_started_at = models.DateTimeField()
    window_base_attempts = models.IntegerField()
    next_attempt_at = models.DateTimeField()
    dispatched_at = models.DateTimeField(null=True)
    lease_expires_at = models.DateTimeField(null=True)
    reason = models.TextField(null=True)
    last_status_code = models.IntegerField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "deliveries"
        verbose_name_plural = "deliveries"
        # No add, change or delete: nothing is edited through the admin, only acted on.
        default_permissions = ("view",)
        permissions = [("view_payload", "Can see delivery payloads unmasked")]

    def __str__(self) -> str:
        return f"{self.vendor}/{self.operation} {self.id}"

    @property
    def is_history(self) -> bool:
        return self.archived_at is not None and self.archived_at < LIVE


class DeadLetterManager(models.Manager["DeadLetter"]):
    def get_queryset(self) -> models.QuerySet[DeadLetter]:
        # archived_at = LIVE: only the live partition is read, however much history there is.
        return super().get_queryset().filter(archived_at=LIVE, status=DeliveryStatus.DEAD.value)


class DeadLetter(Delivery):
    """Dead-lettered deliveries only, with the `replay` and `purge` actions."""

    objects = DeadLetterManager()

    class Meta:
        proxy = True
        default_permissions = ("view",)
        permissions = [
            ("replay_deadletter", "Can replay dead letters"),
            ("purge_deadletter", "Can purge dead letters"),
        ]


class Attempt(models.Model):
    id = models.UUIDField(primary_key=True)
    archived_at = models.DateTimeField()
    delivery = models.ForeignKey(
        Delivery,
        db_column="delivery_id",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="attempt_history",
    )
    number = models.IntegerField()
    outcome = models.CharField(max_length=16, choices=_choices(AttemptOutcome))
    started_at = models.DateTimeField()
    duration_ms = models.IntegerField(null=True)
    status_code = models.IntegerField(null=True)
    error_class = models.CharField(max_length=128, null=True)
    response_excerpt = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = "delivery_attempts"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.outcome}"


class Vendor(models.Model):
    """A vendor as the console shows it. No table: its page reads the database and Redis
    through `operations.vendor_overview`; the model carries the permissions and the admin log's
    content type."""

    name = models.CharField(max_length=64, primary_key=True)

    class Meta:
        managed = False
        db_table = "eventrelay_vendor_has_no_table"
        default_permissions = ("view",)
        permissions = [
            ("park_vendor", "Can park a vendor"),
            ("resume_vendor", "Can resume a parked vendor"),
        ]

    def __str__(self) -> str:
        return self.name


def uuid7_floor(moment: datetime) -> Any:
    """The smallest UUIDv7 of `moment`'s millisecond: ids are time-ordered, so a time range is
    an id range, which the primary key's index serves."""
    import uuid

    ms = int(moment.astimezone(UTC).timestamp() * 1000)
    return uuid.UUID(int=max(ms, 0) << 80)
