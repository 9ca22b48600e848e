"""The operator's console in Django's admin, through Django's test client, on the real database,
Redis, worker and mock vendors.

A staff user with the permissions finds a delivery by idempotency key and sees its attempts,
replays one vendor's dead letters and sees them delivered, purges after a confirmation, parks
and resumes a vendor; one without them gets 403; every action is in the admin log.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eventrelay.worker.fleet import breaker
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.support import env_vars

pytestmark = pytest.mark.usefixtures("clean", "pipeline")

SETTINGS_MODULE = "tests.apps.django_project.settings"
OPERATOR_PERMISSIONS = (
    "view_delivery",
    "view_payload",
    "view_deadletter",
    "replay_deadletter",
    "purge_deadletter",
    "view_vendor",
    "park_vendor",
    "resume_vendor",
)
VIEWER_PERMISSIONS = ("view_delivery", "view_deadletter", "view_vendor")


@pytest.fixture(scope="module")
def django_admin(database_url: str) -> Iterator[None]:
    """Django set up on the test database with its admin's own tables migrated."""
    with env_vars(
        EVENTRELAY_DJANGO_DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE=SETTINGS_MODULE
    ):
        import django
        from django.core.management import call_command
        from django.db import connection

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        yield
        connection.close()


def _user(name: str, codenames: tuple[str, ...]) -> Any:
    from django.contrib.auth.models import Permission, User

    User.objects.filter(username=name).delete()
    user = User.objects.create_user(name, password="pw-" + name, is_staff=True)
    perms = Permission.objects.filter(content_type__app_label="eventrelay", codename__in=codenames)
    assert perms.count() == len(codenames)
    user.user_permissions.set(perms)
    return user


@pytest.fixture(autouse=True)
def empty_admin_log(django_admin: None) -> None:
    from django.contrib.admin.models import LogEntry

    LogEntry.objects.all().delete()


@pytest.fixture
def operator(django_admin: None) -> Any:
    return _user("operator", OPERATOR_PERMISSIONS)


@pytest.fixture
def viewer(django_admin: None) -> Any:
    return _user("viewer", VIEWER_PERMISSIONS)


def _client(user: Any) -> Any:
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _dead_letters(mock_vendors: Any, vendor: str, jobs_: list[dict[str, Any]]) -> list[str]:
    """Real dead letters: the mock vendor refuses each job once with a 400."""
    from eventrelay.worker.producer import enqueue_many

    mock_vendors.set_faults(vendor, fail_next=[400] * len(jobs_))
    receipts = enqueue_many(jobs_)
    for r in receipts:
        wait_status(r.delivery_id, "dead")
    return [str(r.delivery_id) for r in receipts]


def _vtcdn(n: int, prefix: str = "ana") -> list[dict[str, Any]]:
    return [
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(email=f"{prefix}{i}@example.com"),
            "idempotency_key": f"order-{prefix}-{i}",
        }
        for i in range(n)
    ]


def _infobip(n: int) -> list[dict[str, Any]]:
    return [
        {
            "vendor": "infobip",
            "operation": "send_event",
            "payload": jobs.infobip_event(transaction=f"t{i}"),
        }
        for i in range(n)
    ]


def delivery(delivery_id: str) -> Any:
    """The delivery's row, or None once it is gone."""
    from sqlalchemy import select

    from eventrelay.models.delivery import DELIVERIES
    from eventrelay.models.session import get_engine

    with get_engine().connect() as conn:
        return conn.execute(select(DELIVERIES).where(DELIVERIES.c.id == delivery_id)).one_or_none()


def _log(action_flag: int | None = None) -> list[Any]:
    from django.contrib.admin.models import LogEntry

    entries = LogEntry.objects.order_by("id")
    if action_flag is not None:
        entries = entries.filter(action_flag=action_flag)
    return list(entries)


def test_admin_pages_are_at_djangos_usual_urls(operator: Any) -> None:
    client = _client(operator)
    index = client.get("/admin/eventrelay/")
    assert index.status_code == 200
    for url in (
        "/admin/eventrelay/delivery/",
        "/admin/eventrelay/deadletter/",
        "/admin/eventrelay/vendor/",
    ):
        assert url in index.content.decode()
        assert client.get(url).status_code == 200


def test_a_delivery_is_found_by_its_idempotency_key_with_its_attempts_newest_first(
    operator: Any, mock_vendors: Any
) -> None:
    from eventrelay.worker.producer import enqueue_many

    mock_vendors.set_faults("vtcdn", fail_next=[500, 500])
    (receipt,) = enqueue_many(_vtcdn(1, prefix="ana"))
    wait_status(receipt.delivery_id, "delivered")
    _vtcdn_other = enqueue_many(_vtcdn(1, prefix="bob"))
    client = _client(operator)
    found = client.get("/admin/eventrelay/delivery/", {"q": "order-ana-0"})
    text = found.content.decode()
    assert found.status_code == 200
    assert str(receipt.delivery_id) in text and str(_vtcdn_other[0].delivery_id) not in text
    assert "1 delivery" in text
    by_id = client.get("/admin/eventrelay/delivery/", {"q": str(receipt.delivery_id)})
    assert str(receipt.delivery_id) in by_id.content.decode()
    (botsi,) = enqueue_many(
        [{"vendor": "botsi", "operation": "send_event", "payload": jobs.botsi_event(user="ana-7")}]
    )
    by_user = client.get("/admin/eventrelay/delivery/", {"q": "ana-7"}).content.decode()
    assert str(botsi.delivery_id) in by_user and str(receipt.delivery_id) not in by_user

    page = client.get(f"/admin/eventrelay/delivery/{receipt.delivery_id}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    numbers = [int(n) for n in re.findall(r'<td class="field-number">\s*<p>(\d+)</p>', html)]
    assert numbers == [3, 2, 1]  # two 500s, then delivered: newest first
    assert "ana0@example.com" in html  # view_payload: unmasked


def test_the_payload_is_masked_as_the_logs_mask_it_without_view_payload(
    viewer: Any, mock_vendors: Any
) -> None:
    from eventrelay.worker.producer import enqueue_many

    (receipt,) = enqueue_many(_vtcdn(1, prefix="maria"))
    html = _client(viewer).get(f"/admin/eventrelay/delivery/{receipt.delivery_id}/change/")
    text = html.content.decode()
    assert html.status_code == 200
    assert "maria0@example.com" not in text and "m***@example.com" in text


def test_replaying_one_vendors_dead_letters_delivers_them_and_logs_each(
    operator: Any, mock_vendors: Any
) -> None:
    from django.contrib.admin.models import CHANGE

    dead_vtcdn = _dead_letters(mock_vendors, "vtcdn", _vtcdn(3))
    dead_infobip = _dead_letters(mock_vendors, "infobip", _infobip(2))
    client = _client(operator)
    listing = client.get("/admin/eventrelay/deadletter/", {"vendor": "vtcdn"}).content.decode()
    assert all(i in listing for i in dead_vtcdn) and not any(i in listing for i in dead_infobip)
    assert "3 dead letters" in listing

    done = client.post(
        "/admin/eventrelay/deadletter/?vendor=vtcdn",
        {"action": "replay", "_selected_action": dead_vtcdn, "index": "0"},
        follow=True,
    )
    assert "3 dead letter(s) replayed" in done.content.decode()
    for i in dead_vtcdn:
        wait_status(i, "delivered")
    for i in dead_infobip:
        assert str(delivery(i).status) == "dead"
    logged = _log(CHANGE)
    assert sorted(e.object_id for e in logged) == sorted(dead_vtcdn)
    assert all(e.user_id == operator.pk and "Replayed" in e.get_change_message() for e in logged)


def test_replay_across_every_match_of_a_filter(operator: Any, mock_vendors: Any) -> None:
    dead = _dead_letters(mock_vendors, "vtcdn", _vtcdn(2))
    done = _client(operator).post(
        "/admin/eventrelay/deadletter/?vendor=vtcdn",
        {"action": "replay", "_selected_action": dead[:1], "select_across": "1", "index": "0"},
        follow=True,
    )
    assert "2 dead letter(s) replayed" in done.content.decode()
    for i in dead:
        wait_status(i, "delivered")


def test_purge_asks_first_as_delete_selected_does_then_deletes_and_logs(
    operator: Any, mock_vendors: Any
) -> None:
    from django.contrib.admin.models import DELETION

    dead = _dead_letters(mock_vendors, "infobip", _infobip(2))
    client = _client(operator)
    ask = client.post(
        "/admin/eventrelay/deadletter/", {"action": "purge", "_selected_action": dead[:1]}
    )
    assert ask.status_code == 200
    form = ask.content.decode()
    assert 'name="post" value="yes"' in form and dead[0] in form
    assert delivery(dead[0]) is not None  # nothing happens before the confirmation

    done = client.post(
        "/admin/eventrelay/deadletter/",
        {"action": "purge", "_selected_action": dead[:1], "post": "yes"},
        follow=True,
    )
    assert "1 dead letter(s) purged" in done.content.decode()
    assert delivery(dead[0]) is None and str(delivery(dead[1]).status) == "dead"
    assert [e.object_id for e in _log(DELETION)] == [dead[0]]


def test_a_user_without_the_permission_gets_403_on_every_action(
    viewer: Any, mock_vendors: Any
) -> None:
    dead = _dead_letters(mock_vendors, "infobip", _infobip(1))
    client = _client(viewer)
    listing = client.get("/admin/eventrelay/deadletter/").content.decode()
    assert 'value="replay"' not in listing and 'value="purge"' not in listing
    for action in ("replay", "purge"):
        for extra in ({}, {"post": "yes"}):
            refused = client.post(
                "/admin/eventrelay/deadletter/",
                {"action": action, "_selected_action": dead, **extra},
            )
            assert refused.status_code == 403, action
    for action in ("park", "resume"):
        refused = client.post(
            "/admin/eventrelay/vendor/",
            {"action": action, "_selected_action": ["infobip"], "reason": "x", "post": "yes"},
        )
        assert refused.status_code == 403, action
    assert str(delivery(dead[0]).status) == "dead"
    assert _log() == []


def test_nothing_can_be_added_changed_or_deleted(operator: Any, mock_vendors: Any) -> None:
    from django.contrib.auth.models import User

    User.objects.filter(pk=operator.pk).update(is_superuser=True)  # even a superuser
    operator.refresh_from_db()
    dead = _dead_letters(mock_vendors, "infobip", _infobip(1))
    client = _client(operator)
    for model in ("delivery", "deadletter"):
        assert client.get(f"/admin/eventrelay/{model}/add/").status_code == 403
        change = client.post(f"/admin/eventrelay/{model}/{dead[0]}/change/", {"vendor": "botsi"})
        assert change.status_code == 403
        assert client.post(f"/admin/eventrelay/{model}/{dead[0]}/delete/").status_code == 403
        listing = client.get(f"/admin/eventrelay/{model}/").content.decode()
        assert "delete_selected" not in listing
    assert (
        client.post(
            "/admin/eventrelay/deadletter/",
            {"action": "delete_selected", "_selected_action": dead, "post": "yes"},
            follow=True,
        ).status_code
        == 200
    )
    assert delivery(dead[0]).vendor == "infobip" and str(delivery(dead[0]).status) == "dead"


def test_vendors_page_parks_with_a_reason_and_resumes(
    operator: Any, redis_client: Any, mock_vendors: Any
) -> None:
    from django.contrib.admin.models import CHANGE

    from tests.conftest import TEST_ENV

    url = TEST_ENV["EVENTRELAY_REDIS_URL"]
    client = _client(operator)
    page = client.get("/admin/eventrelay/vendor/").content.decode()
    assert all(f'data-vendor="{v}"' in page for v in ("botsi", "vtcdn", "infobip", "gravityfield"))
    ask = client.post(
        "/admin/eventrelay/vendor/", {"action": "park", "_selected_action": ["vtcdn"]}
    )
    assert ask.status_code == 200 and 'name="reason"' in ask.content.decode()
    assert breaker.parked_reason("vtcdn", url) is None
    client.post(
        "/admin/eventrelay/vendor/",
        {
            "action": "park",
            "_selected_action": ["vtcdn"],
            "reason": "vendor incident",
            "post": "yes",
        },
    )
    assert breaker.parked_reason("vtcdn", url) == "vendor incident"
    page = client.get("/admin/eventrelay/vendor/").content.decode()
    row = page[page.index('data-vendor="vtcdn"') :]
    assert "parked" in row[:600] and "vendor incident" in row[:600]

    from eventrelay.worker.producer import enqueue_many

    (waiting,) = enqueue_many(_vtcdn(1, prefix="parked"))
    time.sleep(1.0)
    assert str(delivery(waiting.delivery_id).status) == "pending"
    done = client.post(
        "/admin/eventrelay/vendor/",
        {"action": "resume", "_selected_action": ["vtcdn"]},
        follow=True,
    )
    assert "1 vendor(s) resumed" in done.content.decode()
    assert breaker.parked_reason("vtcdn", url) is None
    wait_status(waiting.delivery_id, "delivered")
    messages = [e.get_change_message() for e in _log(CHANGE)]
    assert messages == [
        "Parked (eventrelay vendors park): vendor incident",
        "Resumed (eventrelay vendors resume)",
    ]


def test_list_filters_by_vendor_status_lane_and_date_range(
    operator: Any, mock_vendors: Any
) -> None:
    from eventrelay.worker.producer import enqueue_many

    vtcdn = enqueue_many(_vtcdn(2, prefix="f"))
    infobip = enqueue_many(_infobip(1))
    for r in (*vtcdn, *infobip):
        wait_status(r.delivery_id, "delivered")
    client = _client(operator)

    def ids(**params: str) -> set[str]:
        html = client.get("/admin/eventrelay/delivery/", params).content.decode()
        return set(re.findall(r"/admin/eventrelay/delivery/([0-9a-f-]{36})/change/", html))

    all_ids = {str(r.delivery_id) for r in (*vtcdn, *infobip)}
    assert ids() == all_ids
    assert ids(vendor="infobip") == {str(infobip[0].delivery_id)}
    assert ids(status="delivered") == all_ids and ids(status="dead") == set()
    # Lanes are of live work: finished deliveries are in none.
    assert ids(lane="fresh") == set() and ids(lane="retry") == set()
    (dead,) = _dead_letters(mock_vendors, "infobip", _infobip(1))
    assert ids(lane="fresh") == {dead} and ids(lane="retry") == set()
    all_ids.add(dead)
    assert (
        ids(created_at__gte="2000-01-01T00:00:00+00:00", created_at__lt="2100-01-01T00:00:00+00:00")
        == all_ids
    )
    assert (
        ids(created_at__gte="2000-01-01T00:00:00+00:00", created_at__lt="2001-01-01T00:00:00+00:00")
        == set()
    )


def test_the_django_app_has_no_schema_of_its_own(django_admin: None) -> None:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("sqlmigrate", "eventrelay", "0001", stdout=out)
    statements = [
        line for line in out.getvalue().splitlines() if line.strip() and not line.startswith("--")
    ]
    assert statements in ([], ["BEGIN;", "COMMIT;"])
    # The models and the migration agree (an `eventrelay` model change needs its migration).
    call_command("makemigrations", "eventrelay", "--check", "--dry-run", verbosity=0)
