"""The pump, run in this process against the real PostgreSQL, Redis and mock vendors, so a test
can break one of its parts on purpose: every claimed row ends, and delivery always goes on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import AttemptOutcome, Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.config import get_settings
from eventrelay.worker.engine.pump import Pump
from eventrelay.worker.engine.pump import dispatcher as dispatcher_module
from eventrelay.worker.engine.pump import heartbeat as heartbeat_module
from eventrelay.worker.engine.pump import recorder as recorder_module
from eventrelay.worker.engine.pump.recorder import record_all
from eventrelay.worker.engine.pump.request import SentGroup, release
from eventrelay.worker.engine.state import Outcome, claim
from eventrelay.worker.fleet import breaker
from eventrelay.worker.producer import enqueue
from eventrelay.worker.vendors import get_vendor
from tests.conftest import TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import attempts
from tests.support import wait_for

URL = TEST_ENV["EVENTRELAY_REDIS_URL"]

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture
def pump() -> Iterator[Pump]:
    """A pump of this process's own (a worker process starts one on its first task)."""
    started = Pump(get_settings())
    yield started
    started.drain(5.0)


def _statuses(ids: list[Any]) -> dict[str, int]:
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(Delivery.status, func.count())
            .where(Delivery.id.in_(ids))
            .group_by(Delivery.status)
        ).all()
    return {str(status): int(n) for status, n in rows}


def _offer_until(pump: Pump, vendor: str, done: Any, timeout: float, what: str) -> None:
    """Offer `vendor` every 0.3 s (as deliver messages and the scheduler's sweeps do) until
    `done()` is true."""

    def check() -> Any:
        pump.offer(vendor, wait_seconds=0)
        return done()

    wait_for(check, timeout, interval=0.3, what=what)


def test_a_vendor_that_recovers_while_its_events_wait_on_their_profiles_delivers_them_all(
    pump: Pump, mock_vendors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(breaker, "OPEN_SECONDS", 1.0)
    users = [f"u-probe-{i}" for i in range(6)]
    mock_vendors.set_faults("botsi", fail_next=[500] * 6)
    profiles = [
        enqueue("botsi", "create_profile", jobs.botsi_profile(u)).delivery_id for u in users
    ]
    _offer_until(
        pump, "botsi", lambda: breaker.state("botsi", URL) == "open", 20, "the circuit to open"
    )
    # The events come while the circuit is open: when it half-opens, the probe may be an event
    # that must wait for its profile (it is never sent).
    events = [enqueue("botsi", "send_event", jobs.botsi_event(u)).delivery_id for u in users]
    everything = profiles + events
    _offer_until(
        pump,
        "botsi",
        lambda: _statuses(everything).get("delivered") == 12,
        40,
        "all 12 Botsi jobs to be delivered after Botsi recovered",
    )
    assert breaker.state("botsi", URL) == "closed"


def _vtcdn(n: int, tag: str) -> list[Any]:
    return [
        enqueue("vtcdn", "send_event", jobs.vtcdn_update(email=f"{tag}{i}@example.com")).delivery_id
        for i in range(n)
    ]


def _all_delivered(pump: Pump, vendor: str, ids: list[Any], timeout: float, what: str) -> None:
    _offer_until(
        pump,
        vendor,
        lambda: _statuses(ids).get("delivered") == len(ids) and not pump.held(),
        timeout,
        what,
    )


def test_rows_of_a_claim_whose_second_look_fails_are_given_back_then_delivered(
    pump: Pump, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = dispatcher_module.claim
    calls: list[int] = []

    def second_look_fails(*args: Any, **kwargs: Any) -> Any:
        # The claim right after one that took rows (the dispatcher's `_settle`) fails once, as
        # it does when PostgreSQL restarts under load.
        if calls and calls[-1] > 0 and len(calls) < 3:
            calls.append(-1)
            raise OperationalError("claim", {}, Exception("server closed the connection"))
        rows = real(*args, **kwargs)
        calls.append(len(rows))
        return rows

    monkeypatch.setattr(dispatcher_module, "claim", second_look_fails)
    ids = _vtcdn(3, "stranded")
    _all_delivered(pump, "vtcdn", ids, 15, "the 3 rows of the failed claim to be delivered")
    assert -1 in calls
    assert any(
        a.reason and "given back unsent: OperationalError" in a.reason for a in _rows(ids)
    ) or all(r.status == "delivered" for r in _rows(ids))


def _rows(ids: list[Any]) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Delivery.__table__).where(Delivery.id.in_(ids))))


def test_a_row_claimed_again_before_the_recorder_forgot_its_last_attempt_stays_held(
    pump: Pump, mock_vendors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mock_vendors.set_faults("vtcdn", latency_ms=800)
    real_send = dispatcher_module.send_group
    real_record = recorder_module.record_all
    again: list[list[str]] = []

    given_back: list[bool] = []

    def first_given_back_due_now(vendor: Any, group: Any, *args: Any, **kwargs: Any) -> Any:
        if not given_back:
            given_back.append(True)
            return SentGroup(outcomes=release(group, 0.0, "given back by the test"))
        return real_send(vendor, group, *args, **kwargs)

    def claimed_again_before_forgotten(engine: Any, batch: Any) -> Any:
        result = real_record(engine, batch)
        if not again and any(o.kind is None for o in batch):
            # Committed, not forgotten yet: the dispatcher takes the row again right now.
            again.append(pump.offer("vtcdn", wait_seconds=2.0))
        return result

    # The outcome being recorded here is one the recorder has not finished, so past 200 ms (a
    # loaded machine) the dispatcher would wait for it: the very window this test holds open.
    monkeypatch.setattr(dispatcher_module, "RECORDER_BEHIND_SECONDS", 60.0)
    monkeypatch.setattr(dispatcher_module, "send_group", first_given_back_due_now)
    monkeypatch.setattr(recorder_module, "record_all", claimed_again_before_forgotten)
    (delivery_id,) = _vtcdn(1, "reclaimed")
    wait_for(
        lambda: pump.offer("vtcdn", wait_seconds=0) or again, 5, what="the row to be re-claimed"
    )
    assert again[0] == [str(delivery_id)]
    assert (delivery_id, 1) in pump.held()  # renewed by the heartbeat, waited for by drain
    drained = pump.drain(5.0)
    assert drained and drained.left == 0
    assert _statuses([delivery_id]) == {"delivered": 1}


def test_drain_says_how_many_it_recorded_and_how_many_it_left_to_the_lease(
    pump: Pump, mock_vendors: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mock_vendors.set_faults("vtcdn", latency_ms=600)
    ids = _vtcdn(3, "drain")
    wait_for(lambda: pump.offer("vtcdn", wait_seconds=0.1) or len(pump.held()) == 3, 5)
    with caplog.at_level("INFO", logger="eventrelay.worker"):
        drained = pump.drain(5.0)
    assert (drained.drained, drained.left) == (3, 0) and drained
    assert "drained 3, left 0 to the lease" in caplog.text
    assert pump.stats()["recorder_lag_ms"]["max"] > 0  # shown by Flower with each task
    assert _statuses(ids) == {"delivered": 3}


def test_drain_that_runs_out_of_time_leaves_the_rest_to_the_lease(
    pump: Pump, mock_vendors: Any
) -> None:
    mock_vendors.set_faults("vtcdn", latency_ms=1200)
    _vtcdn(2, "late")
    wait_for(lambda: pump.offer("vtcdn", wait_seconds=0.1) or len(pump.held()) == 2, 5)
    drained = pump.drain(0.2)
    assert (drained.drained, drained.left) == (0, 2) and not drained


def _fails_once(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[str]:
    """Make `owner.name` raise once (a bug in that role), then behave; returns a log of it."""
    real = getattr(owner, name)
    raised: list[str] = []

    def once(*args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(name)
            raise RuntimeError(f"chaos: {name} failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, once)
    return raised


@pytest.mark.parametrize(
    ("role", "owner", "name"),
    [
        ("dispatch", dispatcher_module.Dispatcher, "_pick"),
        ("record", recorder_module.Inbox, "gather"),
        ("heartbeat", heartbeat_module.Heartbeat, "beat"),
        ("send", dispatcher_module, "send_group"),
    ],
)
def test_a_role_that_raises_is_started_again_and_delivery_goes_on_within_15_seconds(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    role: str,
    owner: Any,
    name: str,
) -> None:
    raised = _fails_once(monkeypatch, owner, name)
    pump = Pump(get_settings())
    try:
        ids = _vtcdn(5, f"chaos-{role}")
        started = time.monotonic()
        wait_for(lambda: pump.offer("vtcdn", wait_seconds=0) or raised, 10, what=f"{role} to fail")
        _all_delivered(pump, "vtcdn", ids, 15, f"delivery to go on after the {role} failed")
        assert time.monotonic() - started < 15
        if role != "send":
            assert pump.supervisor.restarts(role) == 1
            assert f"pump {role} died unexpectedly" in caplog.text
            assert f"chaos: {name} failed" in caplog.text  # with its traceback
    finally:
        pump.drain(5.0)


def test_a_vendor_whose_settings_are_bad_waits_with_the_reason_while_the_others_deliver(
    pump: Pump, monkeypatch: pytest.MonkeyPatch
) -> None:
    infobip = [
        enqueue("infobip", "send_event", jobs.infobip_event(transaction=f"t{i}")).delivery_id
        for i in range(5)
    ]
    # The worker reads the vendor's settings when it first works for it.
    get_vendor.cache_clear()
    monkeypatch.setenv("INFOBIP_RATE_LIMIT", "fast")
    try:
        pump.offer("infobip", wait_seconds=0.5)
        vtcdn = _vtcdn(20, "beside-bad-infobip")
        _all_delivered(pump, "vtcdn", vtcdn, 15, "vtcdn to deliver beside a misconfigured infobip")
        rows = _rows(infobip)
        assert {str(r.status) for r in rows} == {"pending"}
        assert all(r.attempts == 0 and "INFOBIP_RATE_LIMIT" in (r.reason or "") for r in rows)
    finally:
        monkeypatch.delenv("INFOBIP_RATE_LIMIT")
        get_vendor.cache_clear()


def _claimed(vendor: str, n: int) -> list[Any]:
    with get_engine().begin() as conn:
        return claim(conn, vendor, [], get_settings().lease_seconds, top_up=n)


def test_an_answer_the_database_refuses_fails_alone_and_its_batch_is_recorded_once(
    mock_vendors: Any,
) -> None:
    ids = _vtcdn(60, "poison")
    rows = _claimed("vtcdn", 60)
    assert len(rows) == 60
    nul, surrogate, *fine = rows
    outcomes = [Outcome(c, AttemptOutcome.DELIVERED, status_code=200) for c in fine]
    outcomes.insert(
        17,
        Outcome(
            nul,
            AttemptOutcome.DEAD,
            status_code=400,
            reason="HTTP 400: bad \x00 field",
            excerpt='{"error": "bad \x00"}',
        ),
    )
    outcomes.insert(
        40,
        Outcome(
            surrogate,
            AttemptOutcome.RETRY,
            status_code=503,
            reason="HTTP 503: busy \ud83d",
            excerpt="busy \ud83d",
            next_attempt_at=utcnow(),
        ),
    )
    started = time.monotonic()
    recorded, lost = record_all(get_engine(), outcomes)
    assert time.monotonic() - started < 10  # not the transient retry window
    assert lost == []
    assert sum(len(r.applied) for r in recorded) == 60
    by_id = {r.id: r for r in _rows(ids)}
    assert sum(str(r.status) == "delivered" for r in by_id.values()) == 58
    dead, retried = by_id[nul.id], by_id[surrogate.id]
    assert str(dead.status) == "dead" and str(retried.status) == "pending"
    for row in (dead, retried):
        assert row.reason.startswith("the vendor's answer could not be stored: ")
        assert "\x00" not in row.reason
    assert [a.outcome for a in attempts(nul.id)] == [AttemptOutcome.DEAD]
    assert attempts(surrogate.id)[0].response_excerpt is None


def test_a_second_drain_does_nothing_more(pump: Pump, caplog: pytest.LogCaptureFixture) -> None:
    first = pump.drain(1.0)
    caplog.clear()  # the first drain's own line, when the logger is at INFO already
    with caplog.at_level("INFO", logger="eventrelay.worker"):
        assert pump.drain(1.0) is first
    assert "drained" not in caplog.text


def test_a_probe_whose_dependency_lookup_fails_is_given_back_and_the_next_row_probes(
    pump: Pump, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(breaker, "OPEN_SECONDS", 0.3)
    profile = enqueue("botsi", "create_profile", jobs.botsi_profile("u-lookup")).delivery_id
    event = enqueue("botsi", "send_event", jobs.botsi_event("u-lookup")).delivery_id
    with get_engine().begin() as conn:  # the profile is due a little later: the event probes
        conn.execute(
            update(Delivery)
            .where(Delivery.id == profile)
            .values(next_attempt_at=utcnow() + timedelta(seconds=2))
        )
    for _ in range(breaker.FAILURE_THRESHOLD):
        breaker.record_failure("botsi", URL)
    time.sleep(0.4)  # half-open
    real = dispatcher_module.dependency_states
    failed: list[bool] = []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            raise OperationalError("select", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "dependency_states", fails_once)
    _offer_until(
        pump,
        "botsi",
        lambda: _statuses([profile, event]).get("delivered") == 2,
        15,
        "the profile and its event to be delivered",
    )
    assert failed and breaker.state("botsi", URL) == "closed"
