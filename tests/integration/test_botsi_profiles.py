"""A Botsi event needs *a* delivered profile of its user, not the user's latest one.

The event waits only while none of the user's profiles is delivered and one is still on its
way; it is dead-lettered (`DependencyDead`) only when every profile of the user is dead.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.producer import enqueue
from tests.integration import jobs
from tests.integration.helpers import delivery, wait_status


@pytest.mark.usefixtures("clean", "pipeline")
def test_an_event_is_delivered_when_an_earlier_profile_was_delivered_and_a_later_one_died(
    mock_vendors: Any,
) -> None:
    first = enqueue("botsi", "create_profile", jobs.botsi_profile("u-twice"))
    wait_status(first.delivery_id, "delivered")
    mock_vendors.set_faults("botsi", fail_next=[400])  # the second profile is refused
    second = enqueue("botsi", "create_profile", jobs.botsi_profile("u-twice", locale="fr_FR"))
    wait_status(second.delivery_id, "dead")

    event = enqueue("botsi", "send_event", jobs.botsi_event("u-twice"))

    row = wait_status(event.delivery_id, "delivered", "dead")
    assert str(row.status) == "delivered", row.reason
    assert [r["path"] for r in mock_vendors.received("botsi") if r["status"] == 200] == [
        "/botsi/profiles",
        "/botsi/events",
    ]


def _set_status(delivery_id: Any, status: str) -> None:
    with get_engine().begin() as conn:
        conn.execute(update(Delivery).where(Delivery.id == delivery_id).values(status=status))


@pytest.mark.usefixtures("clean")
def test_an_event_waits_for_the_profile_still_on_its_way_not_for_a_later_dead_one() -> None:
    # No worker runs here: the profiles' outcomes are set as a worker would have left them.
    pending = enqueue("botsi", "create_profile", jobs.botsi_profile("u-retrying"))
    dead = enqueue("botsi", "create_profile", jobs.botsi_profile("u-retrying", locale="fr_FR"))
    _set_status(dead.delivery_id, "dead")

    event = enqueue("botsi", "send_event", jobs.botsi_event("u-retrying"))

    assert delivery(event.delivery_id).depends_on == pending.delivery_id


@pytest.mark.usefixtures("clean")
def test_an_event_waits_for_nothing_once_any_profile_of_its_user_is_delivered() -> None:
    delivered = enqueue("botsi", "create_profile", jobs.botsi_profile("u-known"))
    _set_status(delivered.delivery_id, "delivered")
    enqueue("botsi", "create_profile", jobs.botsi_profile("u-known", locale="fr_FR"))  # pending

    event = enqueue("botsi", "send_event", jobs.botsi_event("u-known"))

    assert delivery(event.delivery_id).depends_on is None


@pytest.mark.usefixtures("clean")
def test_an_event_whose_users_profiles_are_all_dead_waits_on_the_latest_and_dies_with_it() -> None:
    older = enqueue("botsi", "create_profile", jobs.botsi_profile("u-gone"))
    latest = enqueue("botsi", "create_profile", jobs.botsi_profile("u-gone", locale="fr_FR"))
    _set_status(older.delivery_id, "dead")
    _set_status(latest.delivery_id, "dead")

    event = enqueue("botsi", "send_event", jobs.botsi_event("u-gone"))

    assert delivery(event.delivery_id).depends_on == latest.delivery_id
