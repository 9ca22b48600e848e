"""The operator's console in Flask-Admin, through Flask's test client, on the real database,
Redis, worker and mock vendors: the same flow as the Django admin's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from eventrelay.worker.fleet import breaker
from eventrelay.worker.producer import enqueue_many
from tests.apps.flask_console import Console
from tests.conftest import TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.integration.test_django_admin import _dead_letters, _infobip, _vtcdn, delivery

pytestmark = pytest.mark.usefixtures("clean", "pipeline")


@pytest.fixture(scope="module")
def flask_console(database_url: str) -> Console:
    return Console()


@pytest.fixture
def console(flask_console: Console) -> Iterator[Console]:
    from eventrelay.worker.integrations.flask_admin import PERMISSIONS

    flask_console.granted = set(PERMISSIONS)
    flask_console.audit.clear()
    yield flask_console


def _ids(html: str) -> set[str]:
    return set(re.findall(r"details/\?id=([0-9a-f-]{36})", html))


def test_a_delivery_is_found_by_idempotency_key_with_attempts_newest_first(
    console: Console, mock_vendors: Any
) -> None:
    mock_vendors.set_faults("vtcdn", fail_next=[500, 500])
    (receipt,) = enqueue_many(_vtcdn(1, prefix="ana"))
    wait_status(receipt.delivery_id, "delivered")
    (other,) = enqueue_many(_vtcdn(1, prefix="bob"))  # after: the two 500s were ana's
    found = console.client.get("/admin/delivery/", query_string={"search": "order-ana-0"})
    assert found.status_code == 200
    assert _ids(found.text) == {str(receipt.delivery_id)}
    details = console.client.get(
        "/admin/delivery/details/", query_string={"id": str(receipt.delivery_id)}
    )
    assert details.status_code == 200
    numbers = [int(n) for n in re.findall(r'<td class="number">(\d+)</td>', details.text)]
    assert numbers == [3, 2, 1]
    assert "ana0@example.com" in details.text  # view_payload granted
    console.granted.discard("view_payload")
    masked = console.client.get(
        "/admin/delivery/details/", query_string={"id": str(other.delivery_id)}
    )
    assert "bob0@example.com" not in masked.text and "b***@example.com" in masked.text


def test_replaying_one_vendors_dead_letters_delivers_them(
    console: Console, mock_vendors: Any
) -> None:
    dead_vtcdn = _dead_letters(mock_vendors, "vtcdn", _vtcdn(3))
    dead_infobip = _dead_letters(mock_vendors, "infobip", _infobip(1))
    listing = console.client.get("/admin/deadletter/", query_string={"flt0_vendor_equals": "vtcdn"})
    assert _ids(listing.text) == set(dead_vtcdn)
    done = console.client.post(
        "/admin/deadletter/action/",
        data={"action": "replay", "rowid": dead_vtcdn},
        follow_redirects=True,
    )
    assert "3 dead letter(s) replayed" in done.text
    for i in dead_vtcdn:
        wait_status(i, "delivered")
    assert str(delivery(dead_infobip[0]).status) == "dead"
    assert [(name, sorted(ids)) for name, ids, _ in console.audit] == [
        ("replay", sorted(dead_vtcdn))
    ]


def test_purge_deletes_through_the_operation(console: Console, mock_vendors: Any) -> None:
    dead = _dead_letters(mock_vendors, "infobip", _infobip(2))
    done = console.client.post(
        "/admin/deadletter/action/",
        data={"action": "purge", "rowid": dead[:1]},
        follow_redirects=True,
    )
    assert "1 dead letter(s) purged" in done.text
    assert delivery(dead[0]) is None and str(delivery(dead[1]).status) == "dead"
    assert console.audit == [("purge", dead[:1], "1 dead letter(s) purged")]


def test_without_the_permission_every_action_is_403(console: Console, mock_vendors: Any) -> None:
    dead = _dead_letters(mock_vendors, "infobip", _infobip(1))
    console.granted = set()
    assert console.client.get("/admin/deadletter/").status_code == 200  # seeing is allowed
    for name in ("replay", "purge"):
        refused = console.client.post(
            "/admin/deadletter/action/", data={"action": name, "rowid": dead}
        )
        assert refused.status_code == 403, name
    for name in ("park", "resume"):
        refused = console.client.post(
            "/admin/vendors/", data={"action": name, "vendor": ["infobip"], "reason": "x"}
        )
        assert refused.status_code == 403, name
    assert str(delivery(dead[0]).status) == "dead" and console.audit == []


def test_nothing_can_be_created_edited_or_deleted(console: Console, mock_vendors: Any) -> None:
    dead = _dead_letters(mock_vendors, "infobip", _infobip(1))
    for view in ("delivery", "deadletter"):
        assert console.client.get(f"/admin/{view}/new/").status_code in (302, 403, 404)
        assert console.client.post(
            f"/admin/{view}/edit/?id={dead[0]}", data={"vendor": "botsi"}
        ).status_code in (302, 403, 404)
        console.client.post(f"/admin/{view}/delete/", data={"id": dead[0]})
        console.client.post(f"/admin/{view}/action/", data={"action": "delete", "rowid": dead})
    row = delivery(dead[0])
    assert row.vendor == "infobip" and str(row.status) == "dead"


def test_vendors_page_parks_and_resumes(console: Console, mock_vendors: Any) -> None:
    url = TEST_ENV["EVENTRELAY_REDIS_URL"]
    page = console.client.get("/admin/vendors/")
    assert page.status_code == 200
    assert all(
        f'data-vendor="{v}"' in page.text for v in ("botsi", "vtcdn", "infobip", "gravityfield")
    )
    console.client.post(
        "/admin/vendors/", data={"action": "park", "vendor": ["vtcdn"], "reason": "incident"}
    )
    assert breaker.parked_reason("vtcdn", url) == "incident"
    row = console.client.get("/admin/vendors/").text.split('data-vendor="vtcdn"')[1][:400]
    assert "parked" in row and "incident" in row
    (waiting,) = enqueue_many(
        [{"vendor": "vtcdn", "operation": "send_event", "payload": jobs.vtcdn_update()}]
    )
    done = console.client.post(
        "/admin/vendors/", data={"action": "resume", "vendor": ["vtcdn"]}, follow_redirects=True
    )
    assert "1 vendor(s) resumed" in done.text
    wait_status(waiting.delivery_id, "delivered")
    assert [a[0] for a in console.audit] == ["park", "resume"]


def test_list_filters_by_status_and_lane_of_live_work(console: Console, mock_vendors: Any) -> None:
    (done,) = enqueue_many(_infobip(1))
    wait_status(done.delivery_id, "delivered")
    (dead,) = _dead_letters(mock_vendors, "infobip", _infobip(1))

    def ids(**params: str) -> set[str]:
        return _ids(console.client.get("/admin/delivery/", query_string=params).text)

    assert ids() == {str(done.delivery_id), dead}
    assert ids(flt0_status_equals="dead") == {dead}
    assert ids(flt0_status_equals="delivered") == {str(done.delivery_id)}
    assert ids(flt0_lane_equals="fresh") == {dead}  # finished deliveries are in no lane
