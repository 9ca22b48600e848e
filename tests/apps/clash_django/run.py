"""A Django project whose folder holds `models.py` and `worker.py`, enqueueing in its own
transactions.

    python run.py ORDER_PREFIX

Creates three orders, each with its vtcdn job inside `transaction.atomic()`, and one whose block
raises (rolled back with its job); prints {"delivery_ids": [...], "chores": [...]} as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()


from django.db import connection, transaction  # noqa: E402  (after django.setup())

from eventrelay.worker.integrations.django import enqueue  # noqa: E402
from models import Order  # noqa: E402
from worker import CHORES, remember  # noqa: E402


class PaymentDeclined(Exception):
    pass


def create_order(number: str, email: str, decline: bool = False) -> str:
    with transaction.atomic():
        Order.objects.create(number=number, email=email)
        receipt = enqueue(
            "vtcdn",
            "send_event",
            {"user": {"email": email}, "event": {"update": {"firstname": number}}},
            idempotency_key=f"clash-django-{number}",
        )
        if decline:
            raise PaymentDeclined(number)
    remember(number)
    return str(receipt.delivery_id)


def main() -> None:
    prefix = sys.argv[1]
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {Order._meta.db_table}")
    with connection.schema_editor() as editor:
        editor.create_model(Order)
    ids = [create_order(f"{prefix}-{n}", f"d{n}@example.com") for n in range(3)]
    with contextlib.suppress(PaymentDeclined):
        create_order(f"{prefix}-x", "x@example.com", decline=True)
    print(json.dumps({"delivery_ids": ids, "chores": CHORES}))


if __name__ == "__main__":
    main()
