"""eventrelay.testing used as an app's tests use it: the outbox and drain(), no service at all.

tests/conftest.py points eventrelay at this machine's PostgreSQL and Redis; here both are taken
away before the fixture runs, so the kit makes its own SQLite database, as it does in an app
whose tests set no EVENTRELAY_DATABASE_URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from eventrelay import InvalidJob, enqueue, enqueue_many
from eventrelay.testing import Answer, connection_refused, rate_limited, timeout
from tests.integration import jobs
from tests.support import free_port

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def no_services(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No database configured, eventrelay's defaults, and a broker and Redis where nothing
    listens."""
    import os

    from eventrelay.worker.config import get_settings

    for name in list(os.environ):
        if name.startswith("EVENTRELAY_") and not name.startswith("EVENTRELAY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVENTRELAY_BROKER_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("EVENTRELAY_REDIS_URL", "redis://127.0.0.1:9/0")
    for name in ("BOTSI", "VTCDN", "INFOBIP", "GRAVITYFIELD"):
        for var in ("BASE_URL", "SECRET_KEY", "API_KEY", "TOKEN", "SITE_KEY", "RATE_LIMIT"):
            monkeypatch.delenv(f"{name}_{var}", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def confirmation(order: str, email: str = "ana@example.com") -> dict[str, Any]:
    return {"user": {"email": email}, "event": {"confirmation": {"orderId": order, "total": 10}}}


def email_open(email: str) -> dict[str, Any]:
    return {"user": {"email": email}, "event": {"email_open": {"campaign": "c-1"}}}


def test_outbox_holds_what_enqueue_and_enqueue_many_stored(eventrelay_outbox: Any) -> None:
    receipt = enqueue("infobip", "send_event", jobs.infobip_event(), idempotency_key="cart-1")
    enqueue_many(
        [
            {"vendor": "vtcdn", "operation": "send_event", "payload": jobs.vtcdn_update()},
            {"vendor": "botsi", "operation": "create_profile", "payload": jobs.botsi_profile()},
        ]
    )

    assert [(j.vendor, j.operation) for j in eventrelay_outbox][0] == ("infobip", "send_event")
    assert sorted((j.vendor, j.operation) for j in eventrelay_outbox[1:]) == [
        ("botsi", "create_profile"),
        ("vtcdn", "send_event"),
    ]
    job = eventrelay_outbox.assert_enqueued(
        "infobip", "send_event", {"properties": {"totalCost": 100}}, idempotency_key="cart-1"
    )
    assert job.delivery_id == receipt.delivery_id == eventrelay_outbox.job_of(receipt).delivery_id
    assert eventrelay_outbox.find("vtcdn", payload={"user": {"email": "alex@example.com"}})
    eventrelay_outbox.assert_not_enqueued("gravityfield")
    # Published to the outbox, not to the broker (nothing listens there).
    assert len(eventrelay_outbox.published) == 3


def test_invalid_job_and_duplicates_add_nothing(eventrelay_outbox: Any) -> None:
    with pytest.raises(InvalidJob):
        enqueue("infobip", "send_event", {"personId": "x"})
    enqueue("vtcdn", "send_event", confirmation("o-1"))
    enqueue("vtcdn", "send_event", confirmation("o-1"))  # vtcdn: one confirmation per order

    eventrelay_outbox.assert_enqueued("vtcdn", "send_event", count=1)
    assert len(eventrelay_outbox) == 1


def test_rolled_back_transaction_captures_nothing(eventrelay_outbox: Any) -> None:
    from eventrelay.models.session import get_engine
    from eventrelay.worker.producer import publish_after_commit, record_jobs, validate_job

    class Declined(Exception):
        pass

    with pytest.raises(Declined), get_engine().begin() as conn:
        record_jobs(conn, [validate_job("vtcdn", "send_event", jobs.vtcdn_update())])
        raise Declined
    eventrelay_outbox.assert_not_enqueued()

    with get_engine().begin() as conn:
        _, to_publish = record_jobs(
            conn, [validate_job("vtcdn", "send_event", jobs.vtcdn_update())]
        )
    publish_after_commit(to_publish)
    eventrelay_outbox.assert_enqueued("vtcdn", "send_event")
    assert eventrelay_outbox.published == [to_publish[0][0]]


def test_the_outbox_is_empty_at_the_start_of_each_test(eventrelay_outbox: Any) -> None:
    # The tests above enqueued under the same keys and orders: nothing of theirs is left.
    assert len(eventrelay_outbox) == 0
    assert eventrelay_outbox == [] and not eventrelay_outbox
    assert not enqueue("vtcdn", "send_event", confirmation("o-1")).duplicate


def test_failed_assertion_lists_what_was_enqueued(eventrelay_outbox: Any) -> None:
    enqueue("infobip", "send_event", jobs.infobip_event(), idempotency_key="cart-7")
    with pytest.raises(AssertionError) as failed:
        eventrelay_outbox.assert_enqueued("infobip", "send_event", {"definitionId": "purchase"})
    assert str(failed.value).splitlines() == [
        "expected 1 job(s) to infobip send_event with payload containing "
        '{"definitionId": "purchase"}, found 0; enqueued (1):',
        '  1. infobip send_event {"definitionId": "addToCart", "identifierType": "EMAIL", '
        '"personId": "jane+tag@example.com", "properties": {"fromPromoCampaign": true, '
        '"totalCost": 100, "transactionId": "my-transaction-1"}} '
        "idempotency_key='cart-7' [pending]",
    ]


def test_drain_infobip_429_then_201_is_delivered_once_without_waiting(
    eventrelay_outbox: Any,
) -> None:
    receipt = enqueue("infobip", "send_event", jobs.infobip_event())
    started = time.perf_counter()

    report = eventrelay_outbox.drain({"infobip": [rate_limited(retry_after=30), 201]})

    assert time.perf_counter() - started < 1.0  # Retry-After: 30 was not waited for
    result = report.job(receipt)
    assert result.status == "delivered"
    assert result.attempts == 2
    assert [(a.outcome, a.status_code) for a in result.attempt_history] == [
        ("retry", 429),
        ("delivered", 201),
    ]
    assert result.attempt_history[0].retry_in_seconds == pytest.approx(30, abs=1)
    first, second = report.sent_to("infobip")
    assert [first.answer.status, second.answer.status] == [429, 201]
    assert second.method == "POST"
    assert second.url == (
        "https://infobip.eventrelay.test/peopleevents/2/persons/jane%2Btag%40example.com"
        "/definitions/addToCart/events?identifierType=EMAIL"
    )
    assert second.headers["Authorization"] == "App test-infobip-api_key"
    assert second.json == {"properties": jobs.infobip_event()["properties"]}
    assert eventrelay_outbox.job_of(receipt).status == "delivered"


def test_drain_500_until_the_attempts_run_out_is_dead(
    eventrelay_outbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTRELAY_MAX_ATTEMPTS", "4")
    enqueue("vtcdn", "send_event", jobs.vtcdn_update())

    report = eventrelay_outbox.drain({"vtcdn": 500})

    (result,) = report
    assert result.status == "dead"
    assert result.reason.startswith("gave up after 4 attempts; last error: HTTP 500")
    assert len(report.sent_to("vtcdn")) == result.attempts == 4


def test_drain_timeout_and_refused_connection_are_retried(eventrelay_outbox: Any) -> None:
    enqueue("gravityfield", "send_event", jobs.gravityfield_event())

    report = eventrelay_outbox.drain({"gravityfield": [timeout(), connection_refused(), 204]})

    (result,) = report
    assert result.status == "delivered"
    assert [a.error_class for a in result.attempt_history] == [
        "ReadTimeout",
        "ConnectionError",
        None,
    ]
    # The worker fills in the site key at send time; the stored payload never holds it.
    assert report.sent_to("gravityfield")[-1].json["sec"] == "test-gravityfield-site_key"


def test_drain_a_400_is_dead_with_the_vendors_reason(eventrelay_outbox: Any) -> None:
    enqueue("infobip", "send_event", jobs.infobip_event())

    report = eventrelay_outbox.drain(
        {"infobip": Answer(400, {"requestError": {"serviceException": {"text": "bad person"}}})}
    )

    assert report[0].status == "dead"
    assert "HTTP 400" in report[0].reason
    assert len(report.sent_to("infobip")) == 1


def test_drain_sends_botsi_profile_before_its_event(eventrelay_outbox: Any) -> None:
    profile = enqueue("botsi", "create_profile", jobs.botsi_profile(user="u-1"))
    event = enqueue("botsi", "send_event", jobs.botsi_event(user="u-1"))

    report = eventrelay_outbox.drain({"botsi": [500]})  # the profile fails once first

    assert [r.json for r in report.sent_to("botsi")] == [
        jobs.botsi_profile(user="u-1"),
        jobs.botsi_profile(user="u-1"),
        [jobs.botsi_event(user="u-1")],
    ]
    assert report.job(profile).status == "delivered"
    assert report.job(event).status == "delivered"
    assert [r.path for r in report.sent_to("botsi")] == [
        "/api/v1/web-api/profiles",
        "/api/v1/web-api/profiles",
        "/api/v1/web-api/events",
    ]


def test_drain_botsi_event_of_a_dead_profile_is_dead(eventrelay_outbox: Any) -> None:
    profile = enqueue("botsi", "create_profile", jobs.botsi_profile(user="u-2"))
    event = enqueue("botsi", "send_event", jobs.botsi_event(user="u-2"))

    report = eventrelay_outbox.drain({"botsi": Answer(422, {"error": "bad country"})})

    assert report.job(profile).status == "dead"
    assert report.job(event).status == "dead"
    assert "is dead" in report.job(event).reason
    assert len(report.sent_to("botsi")) == 1  # the event was never sent


def test_drain_vtcdn_sends_one_confirmation_per_order_and_one_email_open_per_window(
    eventrelay_outbox: Any,
) -> None:
    enqueue("vtcdn", "send_event", confirmation("o-9"))
    enqueue("vtcdn", "send_event", confirmation("o-9"))
    enqueue("vtcdn", "send_event", email_open("ana@example.com"))
    enqueue("vtcdn", "send_event", email_open("ana@example.com"))

    report = eventrelay_outbox.drain()

    assert [(j.status, j.attempt_history and j.attempt_history[-1].outcome) for j in report] == [
        ("delivered", "delivered"),
        ("delivered", "delivered"),
        ("suppressed", []),
    ]
    assert len(report.suppressed) == 1 and "window" in report.suppressed[0].reason
    assert [r.json["event"] for r in report.sent_to("vtcdn")] == [
        {"confirmation": {"orderId": "o-9", "total": 10}},
        {"email_open": {"campaign": "c-1"}},
    ]


def test_drain_parks_a_vendor_whose_key_is_refused(eventrelay_outbox: Any) -> None:
    enqueue("infobip", "send_event", jobs.infobip_event())

    report = eventrelay_outbox.drain({"infobip": 401})

    assert report[0].status == "pending"
    assert [a.outcome for a in report[0].attempt_history] == ["parked"]
    assert len(report.sent_to("infobip")) == 1


def test_drain_with_no_outbox_argument_uses_the_running_tests(eventrelay_outbox: Any) -> None:
    from eventrelay.testing import drain

    enqueue("infobip", "send_event", jobs.infobip_event())
    assert drain().delivered[0].vendor == "infobip"
    # Nothing left to do: a second drain sends nothing.
    assert drain().requests == []


def test_drain_puts_the_worker_session_and_environment_back(eventrelay_outbox: Any) -> None:
    import os

    from eventrelay.worker.vendors.base import http_session

    adapters = dict(http_session().adapters)
    enqueue("infobip", "send_event", jobs.infobip_event())
    eventrelay_outbox.drain()
    assert dict(http_session().adapters) == adapters
    assert "INFOBIP_API_KEY" not in os.environ and "INFOBIP_RATE_LIMIT" not in os.environ


@pytest.mark.parametrize(
    "answer",
    ["timeout", requests.exceptions.ReadTimeout, requests.exceptions.ReadTimeout("slow")],
)
def test_drain_takes_a_timeout_by_name_or_as_a_requests_exception(
    eventrelay_outbox: Any, answer: Any
) -> None:
    enqueue("infobip", "send_event", jobs.infobip_event())

    report = eventrelay_outbox.drain({"infobip": [answer, {"status": 201, "json": {}}]})

    assert [a.error_class for a in report[0].attempt_history] == ["ReadTimeout", None]


def test_drain_asks_a_function_for_each_answer(eventrelay_outbox: Any) -> None:
    enqueue("vtcdn", "send_event", confirmation("o-1", "a@example.com"))
    enqueue("vtcdn", "send_event", confirmation("o-2", "b@example.com"))

    def vtcdn(request: Any) -> Any:
        return 400 if request.json["user"]["email"] == "b@example.com" else None  # None: usual

    report = eventrelay_outbox.drain({"vtcdn": vtcdn})

    assert [j.status for j in report] == ["delivered", "dead"]


def test_an_unreachable_app_database_is_named_without_its_url(
    pytester: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg://app:s3cret@127.0.0.1:{free_port()}/shop_test"
    monkeypatch.setenv("EVENTRELAY_DATABASE_URL", url)
    pytester.makepyfile(test_app="def test_x(eventrelay_outbox):\n    pass\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*eventrelay_outbox: the database EVENTRELAY_DATABASE_URL names cannot be reached*"]
    )
    assert "s3cret" not in result.stdout.str()
