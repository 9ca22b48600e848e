"""A producer's idempotency key names one job. The same job again is a duplicate; a different
job under a key already used is refused (as Stripe does), so it is never dropped silently.

Keys a vendor rule derives (vtcdn confirmations by orderId, Botsi impressions) are the
vendor's own dedup rule: jobs under them keep being deduplicated without an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.errors import InvalidJob
from eventrelay.worker.producer import enqueue, enqueue_many
from tests.integration import jobs
from tests.support import env_vars

pytestmark = pytest.mark.usefixtures("clean")

REUSED = "was used for a different job"


def _count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Delivery)).scalar_one())


def test_the_same_job_again_under_its_key_is_a_duplicate() -> None:
    first = enqueue("vtcdn", "send_event", jobs.vtcdn_update(), idempotency_key="signup-1")
    again = enqueue("vtcdn", "send_event", jobs.vtcdn_update(), idempotency_key="signup-1")
    assert again.duplicate and again.delivery_id == first.delivery_id
    assert _count() == 1


def test_a_key_reused_with_a_different_payload_is_refused_and_nothing_is_stored() -> None:
    enqueue("vtcdn", "send_event", jobs.vtcdn_update(name="Ana"), idempotency_key="signup-2")
    with pytest.raises(InvalidJob) as refused:
        enqueue_many(
            [
                {"vendor": "infobip", "operation": "send_event", "payload": jobs.infobip_event()},
                {
                    "vendor": "vtcdn",
                    "operation": "send_event",
                    "payload": jobs.vtcdn_update(name="Bob"),
                    "idempotency_key": "signup-2",
                },
            ]
        )
    assert refused.value.index == 1
    assert str(refused.value).count(f"idempotency_key: 'signup-2' {REUSED}") == 1
    assert _count() == 1  # not even the valid infobip job of the same call


def test_a_key_reused_for_another_operation_is_refused() -> None:
    enqueue("botsi", "create_profile", jobs.botsi_profile("u-1"), idempotency_key="u-1-first")
    with pytest.raises(InvalidJob, match=f"idempotency_key: 'u-1-first' {REUSED}"):
        enqueue("botsi", "send_event", jobs.botsi_event("u-1"), idempotency_key="u-1-first")


def test_one_key_for_two_different_jobs_in_one_call_is_refused() -> None:
    with pytest.raises(InvalidJob, match=REUSED) as refused:
        enqueue_many(
            [
                {
                    "vendor": "vtcdn",
                    "operation": "send_event",
                    "payload": jobs.vtcdn_update(name=name),
                    "idempotency_key": "twice",
                }
                for name in ("Ana", "Bob")
            ]
        )
    assert refused.value.index == 1
    assert _count() == 0
    # the key was not kept either: the first job can still be sent under it
    assert not enqueue(
        "vtcdn", "send_event", jobs.vtcdn_update(name="Ana"), idempotency_key="twice"
    ).duplicate


def test_a_key_whose_delivery_was_purged_still_stops_a_different_job_silently() -> None:
    enqueue("vtcdn", "send_event", jobs.vtcdn_update(name="Ana"), idempotency_key="old")
    with get_engine().begin() as conn:
        conn.execute(delete(Delivery))  # e.g. `eventrelay dlq purge`
    again = enqueue("vtcdn", "send_event", jobs.vtcdn_update(name="Bob"), idempotency_key="old")
    assert again.duplicate and again.status == "purged"


def test_a_second_confirmation_for_an_order_stays_a_silent_duplicate_whatever_its_body() -> None:
    def confirmation(total: int, key: str) -> Any:
        payload = {
            "user": {"email": "ana@example.com"},
            "event": {"confirmation": {"orderId": "A-17", "total": total}},
        }
        return enqueue("vtcdn", "send_event", payload, idempotency_key=key)

    first = confirmation(10, "checkout-1")
    again = confirmation(12, "checkout-2")  # vtcdn would discard it: derived from the orderId
    assert again.duplicate and again.delivery_id == first.delivery_id


def test_a_repeated_botsi_impression_with_other_fields_stays_a_silent_duplicate() -> None:
    first = enqueue("botsi", "send_event", jobs.botsi_event("u-2", isExperiment=True))
    again = enqueue("botsi", "send_event", jobs.botsi_event("u-2", isExperiment=False))
    assert again.duplicate and again.delivery_id == first.delivery_id


def test_the_cli_refuses_a_reused_key_with_exit_2_and_says_why(cli: Any) -> None:
    def send(name: str, check: bool = True) -> Any:
        payload = '{"user": {"email": "ana@example.com"}, "event": {"update": {"n": "%s"}}}'
        return cli(
            "send",
            "--vendor=vtcdn",
            "--operation=send_event",
            "--payload",
            payload % name,
            "--idempotency-key=cli-key",
            check=check,
        )

    send("Ana")
    assert '"duplicate": true' in send("Ana").stdout
    refused = send("Bob", check=False)
    assert refused.returncode == 2
    assert f"idempotency_key: 'cli-key' {REUSED}" in refused.stderr
    assert "nothing was stored" in refused.stderr
    assert _count() == 1


@pytest.fixture
def django_setup(database_url: str) -> Iterator[None]:
    with env_vars(
        EVENTRELAY_DJANGO_DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="tests.apps.django_project.settings",
    ):
        import django

        django.setup()
        from django.db import connection

        yield
        connection.close()


@pytest.mark.usefixtures("django_setup")
def test_a_reused_key_refused_inside_a_django_transaction_leaves_the_transaction_usable() -> None:
    from django.db import transaction

    from eventrelay.worker.integrations import django as integration

    integration.enqueue("vtcdn", "send_event", jobs.vtcdn_update(name="Ana"), "dj-key")
    with transaction.atomic():
        with pytest.raises(InvalidJob, match=REUSED):
            integration.enqueue("vtcdn", "send_event", jobs.vtcdn_update(name="Bob"), "dj-key")
        # the app catches the refusal and goes on; its transaction still commits
        later = integration.enqueue("gravityfield", "send_event", jobs.gravityfield_event())
    with get_engine().connect() as conn:
        assert conn.execute(select(Delivery.id).where(Delivery.id == later.delivery_id)).scalar()
    assert _count() == 2
