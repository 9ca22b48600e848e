"""Soak: sustained mixed load with retention and partitions of minutes (issue 13, item 6).

    python -m tests.benchmarks.soak                       # 20 minutes (the figures in docs/)
    python -m tests.benchmarks.soak --minutes 3 --retention-seconds 40 --partition-seconds 10

The real pipeline on this machine: the mock vendor server (a process on 127.0.0.1, answering
in 15-60 ms, with a few % of 503s, retried, and of 400s, dead-lettered), `eventrelay worker
--concurrency 2`, `eventrelay scheduler`, and a producer thread enqueueing the four vendors'
jobs at a steady `--rate` (a fifth of them with an idempotency key of their own). Its own
database (eventrelay_soak) and Redis DB 9; EVENTRELAY_RETENTION_SECONDS (and the idempotency
keys' TTL) and EVENTRELAY_PARTITION_SECONDS set to `--retention-seconds` / `--partition-seconds`.

Dead letters are live rows that retention never removes (only `dlq purge` does), so with a few
% of jobs dead-lettered the live partition would grow by design. The soak therefore acts as an
operator whose cron runs `eventrelay dlq purge --older-than <retention>s` every minute
(`--no-dlq-purge` leaves them, to see that growth).

Every ~10 s it samples the size (tables + indexes, over the partition tree) of `deliveries`
and `delivery_attempts`, of `idempotency_keys`, the number of history partitions, the
delivered total (the running totals), the live backlog and the worker's RSS (main process and
pool children, /proc). Verdicts:

* sizes flat: the largest of the last half ≤ 1.2 × the largest in the first retention window's
  end (from retention + one partition, when the first partition can go, to retention + two);
* delivery rate of the last 10% of the run ≥ 0.9 × that of the first 10%;
* worker RSS flat: the largest of the last half ≤ 1.2 × the RSS at the first window's end.

Writes soak.json and soak.md into `--out`. Bounded: traffic only to 127.0.0.1, stops by itself,
and stops everything it started on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from tests.benchmarks import bench

ROOT = bench.ROOT
DB_NAME = "eventrelay_soak"
DB_URL = bench.PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME
REDIS_URL = "redis://127.0.0.1:6379/9"
SAMPLE_SECONDS = 10.0
SIZE_LIMIT = 1.2
RATE_LIMIT = 0.9
RSS_LIMIT = 1.2
DLQ_PURGE_EVERY_SECONDS = 60.0
# Per vendor: answer latency, and errors (503s are retried; 400s are dead letters).
FAULTS = {
    "botsi": {"latency_ms": 30, "error_rate": 0.03, "error_status": 503},
    "vtcdn": {"latency_ms": 15, "error_rate": 0.02, "error_status": 400},
    "infobip": {"latency_ms": 60, "error_rate": 0.04, "error_status": 503},
    "gravityfield": {"latency_ms": 25, "error_rate": 0.01, "error_status": 400},
}


def environment(retention: float, partition: float) -> dict[str, str]:
    return {
        **bench.ENV,
        "EVENTRELAY_DATABASE_URL": DB_URL,
        "EVENTRELAY_BROKER_URL": REDIS_URL,
        "EVENTRELAY_REDIS_URL": REDIS_URL,
        "EVENTRELAY_RETENTION_SECONDS": str(retention),
        "EVENTRELAY_PARTITION_SECONDS": str(partition),
        "EVENTRELAY_IDEMPOTENCY_TTL_SECONDS": str(retention),
        # Retries soon enough that they happen within the run, and give up within it.
        "EVENTRELAY_BACKOFF_BASE_SECONDS": "1",
        "EVENTRELAY_BACKOFF_CAP_SECONDS": "20",
        "EVENTRELAY_MAX_ATTEMPTS": "4",
    }


def reset_state() -> None:
    from tests.support import ensure_database

    ensure_database(DB_NAME, fresh=True)
    from eventrelay.models.session import reset_engine
    from eventrelay.worker.ops.migrate import upgrade

    reset_engine()
    upgrade(DB_URL)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


class Producer(threading.Thread):
    """enqueue_many every 0.2 s, `rate` jobs a second on average, until stopped."""

    TICK_SECONDS = 0.2

    def __init__(self, rate: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.rate = rate
        self.stop_event = threading.Event()
        self.sent = 0
        self.late_ticks = 0
        self.errors: list[str] = []
        self.run_id = uuid.uuid4().hex[:8]

    def run(self) -> None:
        from eventrelay import enqueue_many

        started = time.monotonic()
        tick = 0
        while not self.stop_event.is_set():
            tick += 1
            due = int(self.rate * tick * self.TICK_SECONDS) - self.sent
            jobs = [self._job(self.sent + k) for k in range(due)]
            try:
                if jobs:
                    enqueue_many(jobs)
                self.sent += len(jobs)
            except Exception as exc:  # reported, and the run goes on
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            wait = started + tick * self.TICK_SECONDS - time.monotonic()
            if wait < 0:
                self.late_ticks += 1
            self.stop_event.wait(max(0.0, wait))

    def _job(self, n: int) -> dict[str, Any]:
        job = bench.job(n, f"soak-{self.run_id}")
        if n % 5 == 0:
            job["idempotency_key"] = f"soak-{self.run_id}-{n}"
        return job


def sample(engine: Any, worker_pid: int, t0: float) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.connect() as conn:

        def tree(table: str) -> tuple[int, int]:
            row = conn.execute(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0), "
                    "count(*) FILTER (WHERE isleaf) FROM pg_partition_tree(:t)"
                ),
                {"t": table},
            ).one()
            return int(row[0]), int(row[1])

        deliveries, leaves = tree("deliveries")
        attempts, _ = tree("delivery_attempts")
        keys = conn.execute(text("SELECT pg_total_relation_size('idempotency_keys')")).scalar_one()
        live_bytes = conn.execute(
            text(
                "SELECT pg_total_relation_size('deliveries_live') "
                "+ pg_total_relation_size('delivery_attempts_live')"
            )
        ).scalar_one()
        totals = dict(
            conn.execute(
                text(
                    "SELECT name, sum(value) FROM delivery_counters "
                    "WHERE name IN ('delivered', 'dead', 'suppressed', 'attempts.retry') "
                    "GROUP BY name"
                )
            ).all()
        )
        live = dict(
            conn.execute(text("SELECT status, count(*) FROM deliveries_live GROUP BY status")).all()
        )
        history_rows = conn.execute(
            text("SELECT count(*) FROM deliveries WHERE archived_at < '9999-01-01'")
        ).scalar_one()
    return {
        "t": round(time.monotonic() - t0, 1),
        "deliveries_bytes": deliveries,
        "attempts_bytes": attempts,
        "tables_bytes": deliveries + attempts,
        "live_partitions_bytes": int(live_bytes),
        "idempotency_keys_bytes": int(keys),
        "history_partitions": leaves - 1,
        "history_rows": int(history_rows),
        "delivered_total": int(totals.get("delivered", 0)),
        "dead_total": int(totals.get("dead", 0)),
        "retries_total": int(totals.get("attempts.retry", 0)),
        "live": {str(k): int(v) for k, v in live.items()},
        "worker_rss_mib": round(bench.rss_mib(worker_pid), 1),
    }


def _rate(samples: list[dict[str, Any]]) -> float:
    if len(samples) < 2:
        return 0.0
    dt = samples[-1]["t"] - samples[0]["t"]
    return (samples[-1]["delivered_total"] - samples[0]["delivered_total"]) / max(1e-9, dt)


def verdicts(samples: list[dict[str, Any]], retention: float, partition: float) -> dict[str, Any]:
    window = [s for s in samples if retention + partition <= s["t"] <= retention + 2 * partition]
    if not window:  # sampled more sparsely than a partition: the first sample past it
        window = [s for s in samples if s["t"] >= retention + partition][:1]
    last_half = samples[len(samples) // 2 :]
    tenth = max(2, len(samples) // 10)
    first, last = samples[: tenth + 1], samples[-tenth - 1 :]
    out: dict[str, Any] = {"first_window_samples": len(window)}
    if not window or not last_half:
        out["error"] = "the run is shorter than the first retention window"
        return out
    for key, limit in (
        ("tables_bytes", SIZE_LIMIT),
        ("idempotency_keys_bytes", SIZE_LIMIT),
        ("worker_rss_mib", RSS_LIMIT),
    ):
        base = max(s[key] for s in window)
        peak = max(s[key] for s in last_half)
        out[key] = {
            "first_window_max": base,
            "last_half_max": peak,
            "ratio": round(peak / base, 3) if base else None,
            "target": f"<= {limit}",
            "met": bool(base) and peak <= limit * base,
        }
    r_first, r_last = _rate(first), _rate(last)
    out["delivery_rate"] = {
        "first_10pct_per_second": round(r_first, 1),
        "last_10pct_per_second": round(r_last, 1),
        "ratio": round(r_last / r_first, 3) if r_first else None,
        "target": f">= {RATE_LIMIT}",
        "met": bool(r_first) and r_last >= RATE_LIMIT * r_first,
    }
    return out


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    v = results["verdicts"]
    a = results["settings"]
    lines = [
        "# Soak: sustained load with retention of minutes (issue 13, item 6)",
        "",
        f"`python -m tests.benchmarks.soak{results['args']}`: {a['minutes']:g} minutes of a "
        f"steady producer at {a['rate']:g} jobs/s (the four vendors; the mock answering in "
        "15-60 ms with 1-4% errors: 503s are retried, 400s dead-lettered), "
        f"`eventrelay worker --concurrency {a['concurrency']}` and `eventrelay scheduler`, "
        f"with EVENTRELAY_RETENTION_SECONDS={a['retention_seconds']:g}, "
        f"EVENTRELAY_PARTITION_SECONDS={a['partition_seconds']:g} (and the idempotency keys' "
        f"TTL {a['retention_seconds']:g} s). "
        + (
            "Dead letters, which retention keeps, were purged as an operator's cron would: "
            f"`eventrelay dlq purge --older-than {a['retention_seconds']:g}s` every "
            f"{a['dlq_purge_every_seconds']:g} s. "
            if a.get("dlq_purge_every_seconds")
            else "Dead letters were never purged (`--no-dlq-purge`): they grow the live rows. "
        )
        + "Generated by that command; do not edit by hand.",
        "",
        "| check | first window | last half / last 10% | ratio | target | |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    if "error" in v:
        lines.append(f"| (none) | {v['error']} | | | | |")
    else:
        for key, name, fmt in (
            ("tables_bytes", "deliveries + attempts, MiB (max)", _mib),
            ("idempotency_keys_bytes", "idempotency_keys, MiB (max)", _mib),
            ("worker_rss_mib", "worker RSS, MiB (max)", lambda x: f"{x:,.1f}"),
        ):
            c = v[key]
            lines.append(
                f"| {name} | {fmt(c['first_window_max'])} | {fmt(c['last_half_max'])} | "
                f"{c['ratio']} | {c['target']} | {'met' if c['met'] else 'missed'} |"
            )
        r = v["delivery_rate"]
        lines.append(
            f"| deliveries/s (first 10% / last 10%) | {r['first_10pct_per_second']} | "
            f"{r['last_10pct_per_second']} | {r['ratio']} | {r['target']} | "
            f"{'met' if r['met'] else 'missed'} |"
        )
    t = results["totals"]
    lines += [
        "",
        f"Jobs enqueued: {t['enqueued']:,}; delivered {t['delivered']:,}, dead-lettered "
        f"{t['dead']:,} (of which {t.get('dead_letters_purged', 0):,} purged by the operator's "
        f"cron), retried attempts {t['retries']:,}; live rows at the end "
        f"{t['live_at_end']}; producer errors {t['producer_errors']}, late producer ticks "
        f"{t['late_ticks']}. History partitions per table at the end: "
        f"{results['samples'][-1]['history_partitions']}.",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, load average at the start "
        f"{results['machine']['load_average']}, shared with other work.",
        "",
        "## Samples",
        "",
        "| t s | deliveries+attempts MiB | of which live partitions | keys MiB | partitions "
        "| history rows | delivered/s | pending | dead | worker RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    prev = None
    for s in results["samples"]:
        rate = _rate([prev, s]) if prev else 0.0
        prev = s
        lines.append(
            f"| {s['t']:.0f} | {_mib(s['tables_bytes'])} | {_mib(s['live_partitions_bytes'])} "
            f"| {_mib(s['idempotency_keys_bytes'])} "
            f"| {s['history_partitions']} | {s['history_rows']:,} | {rate:,.0f} | "
            f"{s['live'].get('pending', 0):,} | {s['live'].get('dead', 0):,} | "
            f"{s['worker_rss_mib']:,.1f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def print_summary(results: dict[str, Any]) -> None:
    v = results["verdicts"]
    print(f"\nsoak, {results['settings']['minutes']:g} minutes")
    if "error" in v:
        print(f"  {v['error']}")
        return
    for key in ("tables_bytes", "idempotency_keys_bytes", "worker_rss_mib", "delivery_rate"):
        c = v[key]
        print(
            f"  {key:<24} ratio {c['ratio']} (target {c['target']}) "
            f"{'met' if c['met'] else 'MISSED'}"
        )
    print(f"  totals: {results['totals']}")


def purge_dead_letters(env: dict[str, str], older_than_seconds: float) -> int:
    """What an operator's cron would run: `eventrelay dlq purge --older-than ...`."""
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventrelay",
            "dlq",
            "purge",
            "--older-than",
            f"{older_than_seconds:g}s",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(json.loads(done.stdout)["count"])


class Stopped(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=150.0, help="jobs enqueued per second")
    parser.add_argument("--retention-seconds", type=float, default=180.0)
    parser.add_argument("--partition-seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument(
        "--no-dlq-purge",
        action="store_true",
        help="keep every dead letter (no operator purging them)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(args.retention_seconds, args.partition_seconds)
    os.environ.update(env)
    from eventrelay.worker.config import get_settings

    get_settings.cache_clear()
    signal.signal(signal.SIGTERM, _on_signal)

    reset_state()
    logs = out / "soak-logs" if args.out != str(ROOT / "docs") else Path("/tmp/eventrelay-soak")
    logs.mkdir(parents=True, exist_ok=True)
    fleet = bench.Fleet(logs, args.concurrency)
    fleet.env = {**os.environ, **env}
    producer = Producer(args.rate)
    samples: list[dict[str, Any]] = []
    dead_purged = 0
    results: dict[str, Any] = {
        "args": "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv)),
        "settings": {
            "minutes": args.minutes,
            "rate": args.rate,
            "retention_seconds": args.retention_seconds,
            "partition_seconds": args.partition_seconds,
            "concurrency": args.concurrency,
            "dlq_purge_every_seconds": None if args.no_dlq_purge else DLQ_PURGE_EVERY_SECONDS,
            "faults": FAULTS,
        },
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    try:
        bench.start_mock(fleet)
        import requests

        for vendor, knobs in FAULTS.items():
            requests.post(
                f"{bench.MOCK}/_mock/faults", json={"vendor": vendor, **knobs}, timeout=10
            )
        requests.post(
            f"{bench.MOCK}/_mock/faults", json={"vendor": "infobip", "rate_limit": None}, timeout=10
        )
        worker = fleet.start(
            [
                sys.executable,
                "-m",
                "eventrelay",
                "worker",
                "--concurrency",
                str(args.concurrency),
                "-l",
                "WARNING",
            ],
            "worker",
        )
        bench.wait_worker_ready(fleet, REDIS_URL, worker)
        fleet.start([sys.executable, "-m", "eventrelay", "scheduler"], "scheduler")
        from eventrelay.models.session import get_engine

        engine = get_engine(DB_URL)
        t0 = time.monotonic()
        producer.start()
        deadline = t0 + args.minutes * 60
        next_sample = t0
        next_purge = t0 + DLQ_PURGE_EVERY_SECONDS
        while True:
            if not args.no_dlq_purge and time.monotonic() >= next_purge:
                dead_purged += purge_dead_letters(fleet.env, args.retention_seconds)
                next_purge += DLQ_PURGE_EVERY_SECONDS
            if worker.poll() is not None:
                raise RuntimeError("the worker exited: see its log in " + str(logs))
            if time.monotonic() >= next_sample:
                samples.append(sample(engine, worker.pid, t0))
                s = samples[-1]
                print(
                    f"t={s['t']:>6.0f}s tables={_mib(s['tables_bytes'])} MiB "
                    f"(live {_mib(s['live_partitions_bytes'])}) "
                    f"keys={_mib(s['idempotency_keys_bytes'])} MiB "
                    f"history_rows={s['history_rows']:,} "
                    f"partitions={s['history_partitions']} delivered={s['delivered_total']:,} "
                    f"live={s['live']} rss={s['worker_rss_mib']} MiB",
                    flush=True,
                )
                next_sample += SAMPLE_SECONDS
            if time.monotonic() >= deadline:
                break
            time.sleep(max(0.05, min(1.0, next_sample - time.monotonic())))
    except (KeyboardInterrupt, Stopped) as exc:
        print(f"stopped early ({exc or 'Ctrl-C'}); cleaning up", file=sys.stderr)
    finally:
        producer.stop_event.set()
        if producer.is_alive():
            producer.join(30)
        fleet.stop_all()
    if len(samples) < 3:
        print("too few samples to report", file=sys.stderr)
        return 1
    results["samples"] = samples
    results["verdicts"] = verdicts(samples, args.retention_seconds, args.partition_seconds)
    results["totals"] = {
        "enqueued": producer.sent,
        "delivered": samples[-1]["delivered_total"],
        "dead": samples[-1]["dead_total"],
        "retries": samples[-1]["retries_total"],
        "live_at_end": samples[-1]["live"],
        "producer_errors": len(producer.errors),
        "late_ticks": producer.late_ticks,
        "dead_letters_purged": dead_purged,
    }
    results["producer_errors"] = producer.errors[:20]
    results["median_sample_rss_mib"] = statistics.median(s["worker_rss_mib"] for s in samples)
    (out / "soak.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, out / "soak.md")
    print_summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
