"""`eventrelay demo`: the whole pipeline on one machine, with nothing but Python installed.

It starts what it needs (the mock vendor server, a private Redis if `redis-server` is on the
PATH or else a folder broker, a worker and the scheduler), enqueues a realistic mix for the
four vendors, shows live progress, prints a summary and the dead letters, and stops everything
it started. EVENTRELAY_DATABASE_URL / EVENTRELAY_BROKER_URL, when set, are used instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from eventrelay.worker.dev.processes import start_redis, start_scheduler, start_worker

TERMINAL = ("delivered", "dead", "suppressed")


@dataclass
class DemoResult:
    accepted: int = 0
    duplicates: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    seconds: float = 0.0


def demo_jobs(users: int) -> list[dict[str, Any]]:
    """A realistic mix: profiles then paywall events, user events with duplicates and a
    throttled email open, person events, store events, and jobs that will dead-letter."""
    jobs: list[dict[str, Any]] = []
    for i in range(users):
        user = f"demo-user-{i}"
        email = f"shopper{i}@example.com"
        jobs.append(
            {
                "vendor": "botsi",
                "operation": "create_profile",
                "payload": {
                    "country": "US",
                    "device": "iPhone 15 Pro Max",
                    "os": "iOS 17.0",
                    "platform": "ios",
                    "customerUserId": user,
                    "locale": "en_US",
                    "currency": "USD",
                },
            }
        )
        jobs.append(
            {
                "vendor": "botsi",
                "operation": "send_event",
                "payload": {
                    "eventType": "paywall_shown",
                    "paywallId": 42,
                    "placementId": "ai-placement-id",
                    "isExperiment": i % 2 == 0,
                    "aiPricingModelId": 32,
                    "customerUserId": user,
                },
            }
        )
        jobs.append(
            {
                "vendor": "vtcdn",
                "operation": "send_event",
                "payload": {
                    "user": {"email": email},
                    "event": {"update": {"firstname": f"Shopper {i}"}},
                },
            }
        )
        jobs.append(
            {
                "vendor": "vtcdn",
                "operation": "send_event",
                "payload": {
                    "user": {"email": email},
                    "event": {"confirmation": {"orderId": f"order-{i}", "total": 10 + i}},
                },
            }
        )
        jobs.append(
            {
                "vendor": "infobip",
                "operation": "send_event",
                "payload": {
                    "personId": email,
                    "identifierType": "EMAIL",
                    "definitionId": "addToCart",
                    "properties": {"transactionId": f"t-{i}", "totalCost": 100},
                },
            }
        )
        jobs.append(
            {
                "vendor": "gravityfield",
                "operation": "send_event",
                "payload": {
                    "user": {"uid": f"uid-{i}"},
                    "data": [
                        {
                            "type": "add-to-cart-v1",
                            "productId": f"sku-{i}",
                            "quantity": 1,
                            "value": 25,
                        }
                    ],
                },
            }
        )
    # Duplicates: the same paywall impression and the same order confirmation again.
    jobs.append(dict(jobs[1]))
    jobs.append(dict(jobs[3]))
    # Two email opens within 20 minutes: the second is suppressed by vtcdn's rule.
    opened = {
        "user": {"email": "shopper0@example.com"},
        "event": {"email_open": {"campaign": "nov"}},
    }
    jobs += [{"vendor": "vtcdn", "operation": "send_event", "payload": opened}] * 2
    # A user vtcdn does not know yet: dead-lettered with vtcdn's reason, replayable later.
    jobs.append(
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": {
                "user": {"email": "not-yet-registered@example.com"},
                "event": {"login": {}},
            },
        }
    )
    return jobs


def run_demo(
    users: int = 25, timeout_seconds: float = 120.0, console: Console | None = None
) -> DemoResult:
    """Run the demo; returns what happened (also printed)."""
    console = console or Console()
    started = time.monotonic()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="eventrelay-demo-"))
        stack.callback(shutil.rmtree, workdir, True)
        env = _demo_environment(stack, workdir, console)
        from eventrelay.worker.dev.mock.server import MockVendors

        mock = MockVendors(port=0).start()
        stack.callback(mock.stop)
        env.update(mock.env())
        os.environ.update(env)
        _reload_settings()

        from eventrelay.worker.ops.migrate import upgrade

        upgrade(env["EVENTRELAY_DATABASE_URL"])
        worker = start_worker(env, workdir / "worker.log", name="demo", events=False, wait=False)
        stack.callback(worker.stop)
        scheduler = start_scheduler(env, workdir / "scheduler.log", interval=0.5)
        stack.callback(scheduler.stop)
        console.print("[dim]starting a worker (2 processes) and the scheduler…[/dim]")
        worker.wait_for_output("ready.", 60, "the demo's worker")

        # An error burst: Infobip answers 500 to its first requests; they are retried.
        mock.set_faults("infobip", fail_next=[500, 500, 503, 500, 502])
        mock.set_faults("vtcdn", unknown_users=["not-yet-registered@example.com"])
        from eventrelay.worker.producer import enqueue_many

        jobs = demo_jobs(users)
        receipts = enqueue_many(jobs)
        result = DemoResult(accepted=len(receipts), duplicates=sum(r.duplicate for r in receipts))
        console.print(f"enqueued {len(jobs)} jobs: {result.duplicates} duplicates recognised")
        result.finished = _watch(console, result, timeout_seconds)
        result.dead_letters = _dead_letters()
        result.seconds = time.monotonic() - started
        _summary(console, result, mock.stats())
        console.print("[dim]stopping the worker, scheduler and mock vendors…[/dim]")
    return result


def _demo_environment(stack: ExitStack, workdir: Path, console: Console) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("EVENTRELAY_DATABASE_URL", f"sqlite:///{workdir / 'demo.db'}")
    env.setdefault("EVENTRELAY_BACKOFF_BASE_SECONDS", "0.5")
    env.setdefault("EVENTRELAY_BACKOFF_CAP_SECONDS", "5")
    env.setdefault("EVENTRELAY_SCHEDULER_INTERVAL_SECONDS", "0.5")
    if "EVENTRELAY_BROKER_URL" in os.environ:
        console.print(
            f"broker: {os.environ['EVENTRELAY_BROKER_URL'].split('@')[-1]} (from the environment)"
        )
        return env
    if shutil.which("redis-server"):
        redis_server, port = start_redis(workdir)
        stack.callback(redis_server.stop)
        env["EVENTRELAY_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        console.print(f"broker: a private redis-server on port {port}")
    else:
        env["EVENTRELAY_BROKER_URL"] = "filesystem://"
        env["EVENTRELAY_BROKER_FOLDER"] = str(workdir / "broker")
        console.print("broker: a folder (no redis-server on the PATH); fleet-wide limits are off")
    console.print(f"database: {env['EVENTRELAY_DATABASE_URL'].split('@')[-1]}")
    return env


def _reload_settings() -> None:
    """The CLI read settings before the demo chose its services: read them again."""
    from eventrelay.models.session import reset_engine
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.fleet.celery_app import reset_app
    from eventrelay.worker.vendors import get_vendor

    get_settings.cache_clear()
    get_vendor.cache_clear()
    reset_engine()
    reset_app()


def _counts() -> dict[str, dict[str, int]]:
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import status_counts

    with get_engine().connect() as conn:
        return {v: dict(e["counts"]) for v, e in status_counts(conn).items()}


def _dead_letters() -> list[dict[str, Any]]:
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import DeadFilter, dead_letters

    with get_engine().connect() as conn:
        return dead_letters(conn, DeadFilter(), limit=50)


def _table(counts: dict[str, dict[str, int]], title: str) -> Table:
    table = Table(title=title)
    for col in ("vendor", "pending", "delivering", "delivered", "dead", "suppressed"):
        table.add_column(col, justify="right" if col != "vendor" else "left")
    for vendor, c in sorted(counts.items()):
        table.add_row(
            vendor,
            *(
                str(c.get(s, 0))
                for s in ("pending", "delivering", "delivered", "dead", "suppressed")
            ),
        )
    return table


def _watch(console: Console, result: DemoResult, timeout_seconds: float) -> bool:
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}")
    )
    bars: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_seconds
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            counts = _counts()
            for vendor, c in sorted(counts.items()):
                total = sum(c.values())
                done = sum(c.get(s, 0) for s in TERMINAL)
                if vendor not in bars:
                    bars[vendor] = progress.add_task(vendor, total=total)
                progress.update(bars[vendor], total=total, completed=done)
            live.update(Group(progress, _table(counts, "deliveries")))
            result.counts = counts
            if all(sum(c.get(s, 0) for s in TERMINAL) == sum(c.values()) for c in counts.values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def _summary(console: Console, result: DemoResult, mock_stats: dict[str, Any]) -> None:
    console.print(_table(result.counts, "summary"))
    sent = {v: s.get("accepted", 0) for v, s in mock_stats.items()}
    per_vendor = ", ".join(f"{v} {n}" for v, n in sorted(sent.items()))
    duplicate_sends = sum(s.get("duplicates", 0) for s in mock_stats.values())
    console.print(
        f"accepted {result.accepted} jobs ({result.duplicates} duplicates returned the first "
        f"delivery); vendors accepted {sum(sent.values())} requests ({per_vendor}); "
        f"duplicate sends seen by the vendors: {duplicate_sends}; {result.seconds:.1f}s"
    )
    if not result.finished:
        console.print("[yellow]stopped waiting before every delivery finished[/yellow]")
    if result.dead_letters:
        table = Table(
            title="dead letters (in a real deployment `eventrelay dlq replay ID` sends one again)"
        )
        for col in ("id", "vendor", "operation", "reason"):
            table.add_column(col)
        for d in result.dead_letters:
            table.add_row(d["id"], d["vendor"], d["operation"], d["reason"] or "")
        console.print(table)
