"""Prometheus metrics, read from the database and Redis at scrape time.

Workers are prefork processes that come and go, so counters kept in their memory would be
partial and reset on restart. The truth is in the database (running totals written in the
same transactions as the deliveries, and the live rows) and Redis (queues, circuit state): one
exporter process reads it when scraped, and every number is correct for the whole fleet
however many workers run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection

from eventrelay.models import counters
from eventrelay.models.counters import read_counters
from eventrelay.models.delivery import DELIVERIES, DeliveryStatus
from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.ops.operations import status_counts
from eventrelay.worker.vendors import vendor_names

log = logging.getLogger("eventrelay.metrics")

CIRCUIT_STATES = ("closed", "open", "half-open", "cooling", "parked")
D = DELIVERIES


class EventRelayCollector(Collector):
    """Collects every eventrelay metric in one pass over the database and Redis.

    Nothing here scans history: finished deliveries, attempts and the latency histogram are
    running totals kept as deliveries finish (`delivery_counters`), live states are counted in
    the live rows only, and the oldest row is an index's first entry.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    def collect(self) -> Iterator[Any]:
        started = time.perf_counter()
        with get_engine().connect() as conn:
            totals = read_counters(conn)
            yield from self._deliveries(conn)
            yield from self._attempts(totals)
            yield from self._latency(totals)
            yield from self._retention(conn)
        yield from self._redis()
        scrape = GaugeMetricFamily(
            "eventrelay_scrape_duration_seconds", "Time taken to collect eventrelay metrics"
        )
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape

    def _deliveries(self, conn: Connection) -> Iterator[Any]:
        by_state = GaugeMetricFamily(
            "eventrelay_deliveries",
            "Deliveries by vendor and state (delivered and suppressed: totals since the "
            "database was made, not lowered by retention)",
            labels=["vendor", "state"],
        )
        dead = GaugeMetricFamily(
            "eventrelay_dead_letters",
            "Dead-lettered deliveries waiting for replay or purge",
            labels=["vendor"],
        )
        oldest = GaugeMetricFamily(
            "eventrelay_oldest_pending_age_seconds",
            "Age of the vendor's oldest pending or delivering delivery (0 when none waits)",
            labels=["vendor"],
        )
        vendors = status_counts(conn)
        for vendor, entry in sorted(vendors.items()):
            for state, count in sorted(entry["counts"].items()):
                by_state.add_metric([vendor, state], count)
            dead.add_metric([vendor], entry["counts"][DeliveryStatus.DEAD.value])
            oldest.add_metric([vendor], entry["oldest_pending_age_seconds"] or 0.0)
        yield by_state
        yield dead
        yield oldest

    def _attempts(self, totals: dict[tuple[str, str], int]) -> Iterator[Any]:
        attempts = CounterMetricFamily(
            "eventrelay_attempts",
            "Delivery attempts by vendor and outcome",
            labels=["vendor", "outcome"],
        )
        prefix = counters.attempts_name("")
        for (vendor, name), value in sorted(totals.items()):
            if name.startswith(prefix):
                attempts.add_metric([vendor, name.removeprefix(prefix)], value)
        yield attempts

    def _latency(self, totals: dict[tuple[str, str], int]) -> Iterator[Any]:
        histogram = HistogramMetricFamily(
            "eventrelay_delivery_latency_seconds",
            "From accepted to delivered, per vendor",
            labels=["vendor"],
        )
        bounds = counters.LATENCY_BUCKETS_SECONDS
        for vendor in sorted({v for v, _ in totals}):
            per_bucket = [
                totals.get((vendor, counters.latency_bucket_name(i)), 0)
                for i in range(len(bounds) + 1)
            ]
            if not any(per_bucket):
                continue
            cumulative, buckets = 0, []
            for bound, n in zip([*map(str, bounds), "+Inf"], per_bucket, strict=True):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            total_ms = totals.get((vendor, counters.LATENCY_SUM_MS), 0)
            histogram.add_metric([vendor], buckets, total_ms / 1000)
        yield histogram

    def _retention(self, conn: Connection) -> Iterator[Any]:
        from eventrelay.worker.engine.retention import describe

        info = describe(conn, self.settings)
        kept = GaugeMetricFamily(
            "eventrelay_retention_seconds",
            "How long delivered and suppressed deliveries are kept (EVENTRELAY_RETENTION_SECONDS)",
        )
        kept.add_metric([], info["retention_seconds"])
        yield kept
        oldest = GaugeMetricFamily(
            "eventrelay_oldest_row_timestamp_seconds",
            "When the oldest delivery still in the database was accepted (Unix time)",
        )
        if info["oldest_row_created_at"]:
            oldest.add_metric([], datetime.fromisoformat(info["oldest_row_created_at"]).timestamp())
        yield oldest
        if "history_partitions" in info:
            parts = GaugeMetricFamily(
                "eventrelay_history_partitions", "PostgreSQL partitions holding history"
            )
            parts.add_metric([], info["history_partitions"])
            yield parts

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
        yield from self._liveness(url)

    def _liveness(self, url: str | None) -> Iterator[Any]:
        """Heartbeats the workers and the scheduler write to Redis (fleet/liveness.py): read
        here, so a dead process shows as one, not as a missing scrape target."""
        from eventrelay.worker.fleet import liveness

        alive = GaugeMetricFamily(
            "eventrelay_workers_alive",
            f"Workers whose last heartbeat is under {liveness.WORKER_TTL_SECONDS} s old",
        )
        last_beat = GaugeMetricFamily(
            "eventrelay_worker_last_heartbeat_timestamp_seconds",
            "When each live worker last sent a heartbeat (Unix time)",
            labels=["worker"],
        )
        ticked = GaugeMetricFamily(
            "eventrelay_scheduler_last_tick_timestamp_seconds",
            "When a scheduler last completed a tick (Unix time; 0 if none has)",
        )
        if not url:
            return
        try:
            beats = liveness.worker_beats(url)
            tick = liveness.scheduler_last_tick(url)
        except Exception:
            log.warning("cannot read heartbeats from Redis")
            return
        alive.add_metric([], len(beats))
        for worker, when in sorted(beats.items()):
            last_beat.add_metric([worker], when)
        ticked.add_metric([], tick or 0.0)
        yield alive
        yield last_beat
        yield ticked


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
