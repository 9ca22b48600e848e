"""Prometheus metrics, read from the database and Redis at scrape time.

Workers are prefork processes that come and go, so counters kept in their memory would be
partial and reset on restart. The truth is in PostgreSQL (deliveries, attempts) and Redis
(queues, circuit state): one exporter process reads it when scraped, and every number is
correct for the whole fleet however many workers run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection, case, func, literal, select

from eventrelay.models.delivery import ATTEMPTS, DELIVERIES, DeliveryStatus
from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.vendors import vendor_names

log = logging.getLogger("eventrelay.metrics")

LATENCY_BUCKETS_SECONDS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    86400,
)
CIRCUIT_STATES = ("closed", "open", "half-open", "cooling", "parked")
D, A = DELIVERIES, ATTEMPTS


def _latency_seconds(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", D.c.finished_at - D.c.created_at)
    return (func.julianday(D.c.finished_at) - func.julianday(D.c.created_at)) * literal(86400.0)


class EventRelayCollector(Collector):
    """Collects every eventrelay metric in one pass over the database and Redis."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    def collect(self) -> Iterator[Any]:
        started = time.perf_counter()
        with get_engine().connect() as conn:
            yield from self._deliveries(conn)
            yield from self._attempts(conn)
            yield from self._latency(conn)
        yield from self._redis()
        scrape = GaugeMetricFamily(
            "eventrelay_scrape_duration_seconds", "Time taken to collect eventrelay metrics"
        )
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape

    def _deliveries(self, conn: Connection) -> Iterator[Any]:
        by_state = GaugeMetricFamily(
            "eventrelay_deliveries", "Deliveries by vendor and state", labels=["vendor", "state"]
        )
        dead = GaugeMetricFamily(
            "eventrelay_dead_letters",
            "Dead-lettered deliveries waiting for replay or purge",
            labels=["vendor"],
        )
        counts = {(v, s.value): 0 for v in vendor_names() for s in DeliveryStatus}
        for vendor, status, count in conn.execute(
            select(D.c.vendor, D.c.status, func.count()).group_by(D.c.vendor, D.c.status)
        ):
            counts[(vendor, str(status))] = count
        for (vendor, state), count in sorted(counts.items()):
            by_state.add_metric([vendor, state], count)
            if state == DeliveryStatus.DEAD.value:
                dead.add_metric([vendor], count)
        yield by_state
        yield dead

    def _attempts(self, conn: Connection) -> Iterator[Any]:
        attempts = CounterMetricFamily(
            "eventrelay_attempts",
            "Delivery attempts by vendor and outcome",
            labels=["vendor", "outcome"],
        )
        for vendor, outcome, count in conn.execute(
            select(D.c.vendor, A.c.outcome, func.count())
            .select_from(A.join(D, D.c.id == A.c.delivery_id))
            .group_by(D.c.vendor, A.c.outcome)
        ):
            attempts.add_metric([vendor, str(outcome)], count)
        yield attempts

    def _latency(self, conn: Connection) -> Iterator[Any]:
        latency = _latency_seconds(conn)
        columns = [
            func.sum(case((latency <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS_SECONDS
        ]
        histogram = HistogramMetricFamily(
            "eventrelay_delivery_latency_seconds",
            "From accepted to delivered, per vendor",
            labels=["vendor"],
        )
        rows = conn.execute(
            select(D.c.vendor, func.count(), func.sum(latency), *columns)
            .where(D.c.status == DeliveryStatus.DELIVERED, D.c.finished_at.is_not(None))
            .group_by(D.c.vendor)
        )
        for vendor, count, total, *bucket_counts in rows:
            buckets = [
                (str(b), float(c or 0))
                for b, c in zip(LATENCY_BUCKETS_SECONDS, bucket_counts, strict=True)
            ]
            buckets.append(("+Inf", float(count)))
            histogram.add_metric([vendor], buckets, float(total or 0))
        yield histogram

    def _redis(self) -> Iterator[Any]:
        from eventrelay.worker.engine.scheduler import queue_depths
        from eventrelay.worker.fleet import breaker

        depth = GaugeMetricFamily(
            "eventrelay_queue_depth",
            "Messages waiting in each vendor queue",
            labels=["vendor", "queue"],
        )
        depths = queue_depths(self.settings.broker_url) or {}
        for queue, count in sorted(depths.items()):
            vendor = queue.split(".")[1]
            depth.add_metric([vendor, queue], count)
        yield depth
        circuit = GaugeMetricFamily(
            "eventrelay_circuit_state",
            "1 for the vendor's current circuit state",
            labels=["vendor", "state"],
        )
        cooldown = GaugeMetricFamily(
            "eventrelay_cooldown_seconds",
            "Seconds left of the vendor's 429 pause (0 when it is not cooling)",
            labels=["vendor"],
        )
        url = self.settings.effective_redis_url
        for vendor in vendor_names():
            try:
                health = breaker.health(vendor, url) if url else breaker.Health("closed")
            except Exception:
                log.warning("cannot read circuit state of %s from Redis", vendor)
                continue
            for state in CIRCUIT_STATES:
                circuit.add_metric([vendor, state], 1.0 if state == health.state else 0.0)
            cooldown.add_metric([vendor], health.cooling_seconds_left or 0.0)
        yield circuit
        yield cooldown


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics until interrupted."""
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(EventRelayCollector())
    server, thread = start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        while thread.is_alive():
            thread.join(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
