"""A producer that is killed (SIGKILL) right after its transaction commits, before publishing.

    python -m tests.apps.killed_producer django|flask ORDER_NUMBER

Prints the delivery id, commits the order and the job, and dies in the first after-commit
hook, registered before eventrelay's own, so eventrelay's publish never runs.
"""

from __future__ import annotations

import os
import signal
import sys

from tests.integration import jobs


def die(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def django_producer(number: str) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.django_project.settings")
    django.setup()
    from django.db import transaction

    from eventrelay.worker.integrations.django import enqueue
    from tests.apps.shop.models import Order

    with transaction.atomic():
        transaction.on_commit(die)
        Order.objects.create(number=number, email="killed@example.com")
        receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update(name=number))
        print(receipt.delivery_id, flush=True)


def flask_producer(number: str) -> None:
    from sqlalchemy import event

    from eventrelay.worker.integrations.flask import eventrelay_enqueue
    from tests.apps.flask_app import Order, create_app, db

    app = create_app(os.environ["EVENTRELAY_DATABASE_URL"])
    with app.app_context():
        event.listen(db.session(), "after_commit", die)
        db.session.add(Order(number=number, email="killed@example.com"))
        receipt = eventrelay_enqueue(
            db.session, "vtcdn", "send_event", jobs.vtcdn_update(name=number)
        )
        print(receipt.delivery_id, flush=True)
        db.session.commit()


if __name__ == "__main__":
    {"django": django_producer, "flask": flask_producer}[sys.argv[1]](sys.argv[2])
    sys.exit("still alive after the commit")
