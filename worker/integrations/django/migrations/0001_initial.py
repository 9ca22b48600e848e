"""Django's record of the unmanaged models: no schema (`sqlmigrate eventrelay 0001` is empty).

eventrelay's tables are made and changed by its Alembic revisions (`eventrelay migrate`).
"""

from django.db import migrations, models

import eventrelay.worker.integrations.django.models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Attempt",
            fields=[
                ("id", models.UUIDField(primary_key=True, serialize=False)),
                ("archived_at", models.DateTimeField()),
                ("number", models.IntegerField()),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("delivered", "delivered"),
                            ("retry", "retry"),
                            ("dead", "dead"),
                            ("lost", "lost"),
                            ("parked", "parked"),
                        ],
                        max_length=16,
                    ),
                ),
                ("started_at", models.DateTimeField()),
                ("duration_ms", models.IntegerField(null=True)),
                ("status_code", models.IntegerField(null=True)),
                ("error_class", models.CharField(max_length=128, null=True)),
                ("response_excerpt", models.TextField(null=True)),
            ],
            options={
                "db_table": "delivery_attempts",
                "managed": False,
                "default_permissions": ("view",),
            },
        ),
        migrations.CreateModel(
            name="Delivery",
            fields=[
                ("id", models.UUIDField(primary_key=True, serialize=False)),
                ("archived_at", models.DateTimeField()),
                ("vendor", models.CharField(max_length=64)),
                ("operation", models.CharField(max_length=64)),
                ("payload", eventrelay.worker.integrations.django.models.JSONColumn()),
                ("idempotency_key", models.CharField(max_length=255, null=True)),
                (
                    "user_ref",
                    models.CharField(max_length=255, null=True, verbose_name="user reference"),
                ),
                ("depends_on", models.UUIDField(null=True)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "pending"),
                            ("delivering", "delivering"),
                            ("delivered", "delivered"),
                            ("dead", "dead"),
                            ("suppressed", "suppressed"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "lane",
                    models.CharField(
                        choices=[("fresh", "fresh"), ("retry", "retry")], max_length=16
                    ),
                ),
                ("attempts", models.IntegerField()),
                ("window_started_at", models.DateTimeField()),
                ("window_base_attempts", models.IntegerField()),
                ("next_attempt_at", models.DateTimeField()),
                ("dispatched_at", models.DateTimeField(null=True)),
                ("lease_expires_at", models.DateTimeField(null=True)),
                ("reason", models.TextField(null=True)),
                ("last_status_code", models.IntegerField(null=True)),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField(null=True)),
            ],
            options={
                "verbose_name_plural": "deliveries",
                "db_table": "deliveries",
                "permissions": [("view_payload", "Can see delivery payloads unmasked")],
                "managed": False,
                "default_permissions": ("view",),
            },
        ),
        migrations.CreateModel(
            name="Vendor",
            fields=[
                ("name", models.CharField(max_length=64, primary_key=True, serialize=False)),
            ],
            options={
                "db_table": "eventrelay_vendor_has_no_table",
                "permissions": [
                    ("park_vendor", "Can park a vendor"),
                    ("resume_vendor", "Can resume a parked vendor"),
                ],
                "managed": False,
                "default_permissions": ("view",),
            },
        ),
        migrations.CreateModel(
            name="DeadLetter",
            fields=[],
            options={
                "permissions": [
                    ("replay_deadletter", "Can replay dead letters"),
                    ("purge_deadletter", "Can purge dead letters"),
                ],
                "proxy": True,
                "default_permissions": ("view",),
                "indexes": [],
                "constraints": [],
            },
            bases=("eventrelay.delivery",),
        ),
    ]
