"""Durability under real failures: lose nothing, send once, isolate a failing vendor.

Each scenario runs a private fleet (its own PostgreSQL and Redis servers, two workers, the
scheduler, the mock vendors) and ends with one line: accepted, delivered, dead, suppressed,
lost (must be 0) and duplicate sends seen by the mock vendor.

    python -m pytest tests/faults -p no:cacheprovider     # the whole suite, on its own

FAULT_STORM_JOBS (default 2000) sizes the kill storm; the other scenarios use a quarter of it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventrelay.worker.fleet import keys
from tests.faults.cluster import Cluster
from tests.faults.conftest import REPORT
from tests.integration import jobs as samples
from tests.support import wait_for

pytestmark = pytest.mark.slow

STORM_JOBS = int(os.environ.get("FAULT_STORM_JOBS", "2000"))
SETTLE_SECONDS = 180.0


def mixed_jobs(n: int, tag: str) -> list[dict[str, Any]]:
    """n unique jobs across the four vendors, including Botsi profiles their events wait for."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(
                {
                    "vendor": "botsi",
                    "operation": "create_profile",
                    "payload": samples.botsi_profile(f"{tag}-u{i}"),
                }
            )
        elif kind == 1:
            out.append(
                {
                    "vendor": "botsi",
                    "operation": "send_event",
                    "payload": samples.botsi_event(f"{tag}-u{i - 1}", paywall=i),
                }
            )
        elif kind == 2:
            out.append(
                {
                    "vendor": "vtcdn",
                    "operation": "send_event",
                    "payload": samples.vtcdn_update(email=f"{tag}-{i}@example.com"),
                }
            )
        elif kind == 3:
            out.append(
                {
                    "vendor": "infobip",
                    "operation": "send_event",
                    "payload": samples.infobip_event(
                        f"{tag}-{i}@example.com", transaction=f"{tag}-{i}"
                    ),
                }
            )
        else:
            out.append(
                {
                    "vendor": "gravityfield",
                    "operation": "send_event",
                    "payload": samples.gravityfield_event(uid=f"{tag}-{i}"),
                }
            )
    return out


@pytest.fixture
def mock(mock_vendors: Any) -> Iterator[Any]:
    mock_vendors.reset()
    yield mock_vendors
    mock_vendors.reset()


@pytest.fixture
def cluster(mock: Any) -> Iterator[Cluster]:
    fleet = Cluster(mock)
    yield fleet
    fleet.close()


def report(
    scenario: str, cluster: Cluster, receipts: list[dict[str, Any]], mock: Any, extra: str = ""
) -> dict[str, int]:
    """Check the end state, print the scenario's line, and return the figures."""
    accepted = {r["delivery_id"] for r in receipts if not r["duplicate"]}
    counts = cluster.counts()
    with cluster.engine.connect() as conn:
        from sqlalchemy import text

        terminal = {
            str(i)
            for i in conn.execute(
                text(
                    "SELECT id FROM deliveries WHERE status IN ('delivered', 'dead', 'suppressed')"
                )
            ).scalars()
        }
        double_recorded = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT delivery_id FROM delivery_attempts WHERE outcome = 'delivered' "
                "GROUP BY delivery_id HAVING count(*) > 1) d"
            )
        ).scalar()
    stats = mock.stats()
    figures = {
        "accepted": len(accepted),
        "delivered": counts.get("delivered", 0),
        "dead": counts.get("dead", 0),
        "suppressed": counts.get("suppressed", 0),
        "lost": len(accepted - terminal),
        "duplicate_sends": sum(s.get("duplicates", 0) for s in stats.values()),
        "double_recorded": int(double_recorded or 0),
    }
    line = (
        f"{scenario:<34} accepted={figures['accepted']:<5} delivered={figures['delivered']:<5} "
        f"dead={figures['dead']:<3} suppressed={figures['suppressed']:<3} lost={figures['lost']} "
        f"duplicate_sends={figures['duplicate_sends']}{(' ' + extra) if extra else ''}"
    )
    REPORT.append(line)
    print(line)
    assert figures["lost"] == 0, line
    assert figures["double_recorded"] == 0, line
    return figures


def read_timeouts(cluster: Cluster) -> int:
    """Attempts that gave up waiting for an answer. The vendor may have processed each one, and
    then it sees the job twice (README, "Guarantees": the other way a duplicate can happen).
    The mock vendors answer from the test process: on this 2-CPU machine, with two pumps
    holding up to 96 requests each in flight, an answer now and then takes longer than the
    suite's 1.5 s read timeout (fault suite, issue #12: duplicate_sends=1, and 159 in one
    loaded run, each a ReadTimeout in the delivery's attempt history)."""
    return int(
        cluster.scalar("SELECT count(*) FROM delivery_attempts WHERE error_class = 'ReadTimeout'")
        or 0
    )


def sends_beyond_timeouts(cluster: Cluster, mock: Any, vendor: str) -> dict[str, int]:
    """Deliveries the vendor accepted more often than once plus their timed-out attempts
    (payload user.uid -> times accepted): a duplicate outside the documented window."""
    accepted: dict[str, int] = {}
    for record in mock.received(vendor):
        if 200 <= record["status"] < 300 and isinstance(record["body"], dict):
            uid = str((record["body"].get("user") or {}).get("uid"))
            accepted[uid] = accepted.get(uid, 0) + 1
    with cluster.engine.connect() as conn:
        from sqlalchemy import text

        timed_out = dict(
            conn.execute(
                text(
                    "SELECT d.payload->'user'->>'uid', count(a.id) FROM deliveries d "
                    "LEFT JOIN delivery_attempts a ON a.delivery_id = d.id "
                    "AND a.error_class = 'ReadTimeout' WHERE d.vendor = :v GROUP BY 1"
                ),
                {"v": vendor},
            ).all()
        )
    return {uid: n for uid, n in accepted.items() if n > 1 + int(timed_out.get(uid, 0) or 0)}


def delivered_count(cluster: Cluster) -> int:
    try:
        return int(
            cluster.scalar("SELECT count(*) FROM deliveries WHERE status = 'delivered'") or 0
        )
    except Exception:
        return 0


def test_kill_9_one_of_two_workers_during_a_storm(cluster: Cluster, mock: Any) -> None:
    mock.set_faults("gravityfield", latency_ms=20)
    mock.set_faults("vtcdn", latency_ms=20)
    victim, _ = cluster.workers("victim", "survivor")
    cluster.scheduler()
    receipts = cluster.produce(mixed_jobs(STORM_JOBS, "kill"))
    wait_for(lambda: delivered_count(cluster) >= STORM_JOBS // 4, 120, what="a quarter delivered")
    in_flight = int(
        cluster.scalar("SELECT count(*) FROM deliveries WHERE status = 'delivering'") or 0
    )
    victim.signal(signal.SIGKILL)  # the main process and its pool children, no goodbye
    victim.stop()
    cluster.wait_until_settled(SETTLE_SECONDS)
    lost_attempts = int(
        cluster.scalar("SELECT count(*) FROM delivery_attempts WHERE outcome = 'lost'") or 0
    )
    figures = report(
        "kill -9 one of two workers",
        cluster,
        receipts,
        mock,
        f"in_flight_at_kill={in_flight} lost_attempts_recorded={lost_attempts}",
    )
    # A vendor may see a job twice only if the worker died after the vendor answered.
    assert figures["duplicate_sends"] <= in_flight
    assert figures["delivered"] == figures["accepted"]


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_broker_lost_mid_run(cluster: Cluster, mock: Any, how: str) -> None:
    mock.set_faults("vtcdn", latency_ms=10)
    mock.set_faults("infobip", latency_ms=10)
    cluster.workers("a", "b")
    cluster.scheduler()
    n = max(400, STORM_JOBS // 4)
    receipts = cluster.produce(mixed_jobs(n, f"broker-{how}"))
    wait_for(lambda: delivered_count(cluster) >= n // 5, 120, what="a fifth delivered")
    if how == "restart":
        cluster.redis.kill()
        cluster.redis.start()  # same port, nothing kept: every queue is empty
    else:
        cluster.redis.flushall()
    started = time.monotonic()
    cluster.wait_until_settled(SETTLE_SECONDS)
    recovered_in = time.monotonic() - started
    timeouts = read_timeouts(cluster)
    figures = report(
        f"redis {how} mid-run",
        cluster,
        receipts,
        mock,
        f"recovered_in={recovered_in:.1f}s" + (f" read_timeouts={timeouts}" if timeouts else ""),
    )
    # Losing the broker re-sends nothing; only an answer slower than the read timeout can.
    assert figures["duplicate_sends"] <= timeouts
    assert figures["delivered"] == figures["accepted"]


def test_postgres_restart_mid_run(cluster: Cluster, mock: Any) -> None:
    mock.set_faults("gravityfield", latency_ms=10)
    cluster.workers("a", "b")
    cluster.scheduler()
    n = max(400, STORM_JOBS // 4)
    receipts = cluster.produce(mixed_jobs(n, "pg"))
    wait_for(lambda: delivered_count(cluster) >= n // 5, 120, what="a fifth delivered")
    cluster.pg.restart()  # immediate shutdown: connections drop mid-transaction
    started = time.monotonic()
    cluster.wait_until_settled(SETTLE_SECONDS)
    figures = report(
        "postgresql restart mid-run",
        cluster,
        receipts,
        mock,
        f"recovered_in={time.monotonic() - started:.1f}s",
    )
    assert figures["delivered"] == figures["accepted"]
    assert figures["duplicate_sends"] <= int(
        cluster.scalar("SELECT count(*) FROM delivery_attempts WHERE outcome = 'lost'") or 0
    )


def test_vendors_answering_500s_429s_and_too_slowly(cluster: Cluster, mock: Any) -> None:
    mock.set_faults("gravityfield", error_rate=0.3)
    mock.set_faults("vtcdn", retry_after=2, retry_after_count=20)
    mock.set_faults("infobip", hang_seconds=2.0)  # slower than the 1.5 s read timeout
    cluster.workers("a", "b")
    cluster.scheduler()
    n = max(400, STORM_JOBS // 4)
    receipts = cluster.produce(mixed_jobs(n, "flaky"))
    time.sleep(6)
    mock.set_faults("infobip", clear=True)  # the slow spell ends
    cluster.wait_until_settled(SETTLE_SECONDS)
    timeouts = int(
        cluster.scalar("SELECT count(*) FROM delivery_attempts WHERE error_class LIKE '%Timeout%'")
        or 0
    )
    retried = int(
        cluster.scalar("SELECT count(*) FROM delivery_attempts WHERE outcome = 'retry'") or 0
    )
    figures = report(
        "500s 30% / 429 Retry-After / slow",
        cluster,
        receipts,
        mock,
        f"retries={retried} timeouts={timeouts}",
    )
    assert figures["delivered"] == figures["accepted"]
    # A response slower than the timeout may have been processed by the vendor all the same:
    # only those can come back as duplicates.
    assert figures["duplicate_sends"] <= timeouts


def test_one_vendor_hanging_does_not_hold_up_the_others(cluster: Cluster, mock: Any) -> None:
    cluster.workers("a", "b")
    cluster.scheduler()
    n = max(400, STORM_JOBS // 4)
    others = [j for j in mixed_jobs(n, "base") if j["vendor"] != "infobip"]
    started = time.monotonic()
    baseline = cluster.produce(others)
    cluster.wait_until_settled(SETTLE_SECONDS)
    baseline_rate = len(others) / (time.monotonic() - started)

    mock.reset()
    mock.set_faults("infobip", hang_seconds=30)
    hung = cluster.produce([j for j in mixed_jobs(n, "hang") if j["vendor"] == "infobip"])
    time.sleep(1)
    others = [j for j in mixed_jobs(n, "during") if j["vendor"] != "infobip"]
    started = time.monotonic()
    during = cluster.produce(others)
    during_ids = [r["delivery_id"] for r in during]
    wait_for(
        lambda: (
            cluster.scalar(
                "SELECT count(*) FROM deliveries WHERE status = 'delivered' AND id IN ("
                + ",".join(f"'{i}'" for i in during_ids)
                + ")"
            )
            == len(during_ids)
        ),
        120,
        interval=0.2,
        what="the other vendors' deliveries",
    )
    during_rate = len(others) / (time.monotonic() - started)
    circuit = redis.Redis.from_url(cluster.redis.url).exists(keys.breaker_open("infobip"))
    attempts_spent = int(
        cluster.scalar(
            "SELECT coalesce(max(d.attempts), 0) FROM deliveries d WHERE d.vendor = 'infobip'"
        )
        or 0
    )
    mock.set_faults("infobip", clear=True)
    cluster.wait_until_settled(SETTLE_SECONDS)
    ratio = during_rate / baseline_rate
    report(
        "infobip hangs, others keep going",
        cluster,
        baseline + hung + during,
        mock,
        f"others_rate_ratio={ratio:.2f} circuit_opened={bool(circuit)} "
        f"max_infobip_attempts={attempts_spent}",
    )
    # The hung vendor holds at most its share of each process's slots: the others keep their
    # pace (a margin under 1.0 for this shared machine's noise).
    assert ratio >= 0.7, f"the other vendors ran at {ratio:.2f} of their pace"


def _produce_overlapping(env: dict[str, str], worker_no: int, barrier: Any, out: Any) -> None:
    os.environ.update(env)
    from eventrelay.worker.config import get_settings

    get_settings.cache_clear()
    from eventrelay.worker.fleet.celery_app import reset_app

    reset_app()
    from eventrelay.worker.producer import enqueue_many

    barrier.wait()
    jobs = [
        {
            "vendor": "gravityfield",
            "operation": "send_event",
            "payload": samples.gravityfield_event(uid=f"race-{k}"),
            "idempotency_key": f"race-{k}",
        }
        for k in range(worker_no * 25, worker_no * 25 + 100)
    ]
    out.put([r.as_dict() for r in enqueue_many(jobs)])


def test_eight_producers_on_overlapping_keys(cluster: Cluster, mock: Any) -> None:
    cluster.worker("a")
    cluster.scheduler()
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    env = {k: v for k, v in cluster.env.items() if k.startswith(("EVENTRELAY_", "GRAVITYFIELD_"))}
    procs = [
        ctx.Process(target=_produce_overlapping, args=(env, n, barrier, out)) for n in range(8)
    ]
    for p in procs:
        p.start()
    receipts = [r for _ in procs for r in out.get(timeout=120)]
    for p in procs:
        p.join(30)
    cluster.wait_until_settled(SETTLE_SECONDS)
    keys = 7 * 25 + 100
    timeouts = read_timeouts(cluster)
    figures = report(
        "8 producers, overlapping keys",
        cluster,
        receipts,
        mock,
        f"keys={keys} receipts={len(receipts)}"
        + (f" read_timeouts={timeouts}" if timeouts else ""),
    )
    assert figures["accepted"] == keys == figures["delivered"]
    # One delivery per key, each sent once, unless an attempt of its own timed out waiting for
    # the vendor's answer (which the vendor may still have processed).
    assert sends_beyond_timeouts(cluster, mock, "gravityfield") == {}
    assert figures["duplicate_sends"] <= timeouts


def test_kill_9_a_worker_with_many_requests_in_flight(mock: Any) -> None:
    """Default lease settings: what a killed worker held goes out again within 15 s, and the
    vendor sees a job twice only if it was in flight at the kill."""
    # The default lease, not the suite's 8 s; answers slower than they come, within the timeout.
    cluster = Cluster(mock, EVENTRELAY_LEASE_SECONDS="10", EVENTRELAY_READ_TIMEOUT_SECONDS="10")
    try:
        mock.set_faults("vtcdn", latency_ms=4000)
        victim = cluster.worker("victim")
        cluster.scheduler()
        receipts = cluster.produce(
            [
                {
                    "vendor": "vtcdn",
                    "operation": "send_event",
                    "payload": samples.vtcdn_update(email=f"inflight-{i}@example.com"),
                }
                for i in range(400)
            ]
        )

        def held() -> int:
            return int(
                cluster.scalar("SELECT count(*) FROM deliveries WHERE status = 'delivering'") or 0
            )

        wait_for(lambda: held() >= 100, 60, what="at least 100 requests in flight")
        in_flight = held()
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.stop()
        mock.set_faults("vtcdn", latency_ms=0)
        cluster.worker("heir")
        wait_for(
            lambda: (
                int(
                    cluster.scalar(
                        "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'delivering')"
                    )
                    or 0
                )
                == 0
            ),
            60,
            interval=0.25,
            what="every delivery to settle",
        )
        recovered_in = time.monotonic() - killed_at
        figures = report(
            "kill -9 with many in flight",
            cluster,
            receipts,
            mock,
            f"in_flight_at_kill={in_flight} recovered_in={recovered_in:.1f}s",
        )
        assert recovered_in <= 15.0, f"took {recovered_in:.1f}s after the kill"
        assert figures["duplicate_sends"] <= in_flight
        assert figures["delivered"] == figures["accepted"] == 400
    finally:
        cluster.close()


def test_vendor_recovers_while_its_circuit_is_open_and_work_waits_on_a_dependency(
    cluster: Cluster, mock: Any
) -> None:
    """The half-open probe may be an event that must wait for its profile: it is given back
    and the next row probes, so Botsi is used again once it recovers."""
    cluster.workers("a", "b")
    cluster.scheduler()
    users = [f"recover-u{i}" for i in range(6)]
    mock.set_faults("botsi", error_rate=1.0)  # failing until its circuit opens
    receipts = cluster.produce(
        [
            {"vendor": "botsi", "operation": "create_profile", "payload": samples.botsi_profile(u)}
            for u in users
        ]
    )
    client = redis.Redis.from_url(cluster.redis.url)
    wait_for(lambda: client.exists(keys.breaker_open("botsi")), 60, what="botsi's circuit to open")
    opened_at = time.monotonic()
    # Botsi recovers while its circuit is open, so the first half-open probe meets a healthy
    # vendor. (Six injected 500s instead depended on how many requests went out before the
    # circuit opened: with five, the probe met the sixth and the circuit stayed open 15 s more.)
    mock.set_faults("botsi", error_rate=0.0)
    # Events come while the circuit is open; each waits for its user's profile.
    receipts += cluster.produce(
        [
            {"vendor": "botsi", "operation": "send_event", "payload": samples.botsi_event(u)}
            for u in users
        ]
    )
    cluster.wait_until_settled(90)
    recovered_in = time.monotonic() - opened_at
    figures = report(
        "botsi recovers, events wait",
        cluster,
        receipts,
        mock,
        f"recovered_in={recovered_in:.1f}s (circuit open 15 s)",
    )
    assert figures["delivered"] == figures["accepted"] == 12
    assert figures["duplicate_sends"] == 0


def test_a_poison_answer_under_load_fails_alone(cluster: Cluster, mock: Any) -> None:
    """A vendor's error text with a NUL and a lone surrogate, amid a few hundred answers: the
    bad outcome is recorded with a readable reason, and nothing else is sent twice."""
    mock.set_faults("vtcdn", latency_ms=100)
    mock.set_faults("gravityfield", latency_ms=100)
    cluster.workers("a", "b")
    cluster.scheduler()
    load = [j for j in mixed_jobs(max(400, STORM_JOBS // 4), "poison") if j["vendor"] != "botsi"]
    half = len(load) // 2
    receipts = cluster.produce(load[:half])
    wait_for(lambda: delivered_count(cluster) >= 50, 60, what="the load to be under way")
    # vtcdn's error shape; json.loads turns the escapes into a NUL and a lone surrogate.
    mock.set_faults(
        "vtcdn",
        fail_next=[400, 503],
        error_body='{"errors": [{"message": "Invalid\\u0000 user", "description": "cut \\ud83d"}]}',
    )
    receipts += cluster.produce(load[half:])  # the poison comes amid these answers
    cluster.wait_until_settled(SETTLE_SECONDS)
    timeouts = read_timeouts(cluster)
    unreadable = int(
        cluster.scalar("SELECT count(*) FROM deliveries WHERE reason LIKE '%could not be stored%'")
        or 0
    )
    dead = int(
        cluster.scalar("SELECT count(*) FROM deliveries WHERE status = 'dead' AND vendor = 'vtcdn'")
        or 0
    )
    figures = report(
        "poison answer under load",
        cluster,
        receipts,
        mock,
        f"vtcdn_dead={dead} stored_without_text={unreadable} read_timeouts={timeouts}",
    )
    assert dead == 1  # the 400; the 503 was retried and delivered
    assert figures["delivered"] == figures["accepted"] - 1
    assert figures["duplicate_sends"] <= timeouts  # 0 unless an answer came after the timeout
