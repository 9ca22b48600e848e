"""The `eventrelay` command line.

Every command that lists or shows takes `--json`: one stable shape, documented in the README.
Exit codes: 0 success, 1 operational error (database, broker), 2 invalid input.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import click

from eventrelay.worker.errors import EventRelayError, InvalidJob

EXIT_INVALID = 2


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, sort_keys=True, default=str))


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"eventrelay: {message}", err=True)
    sys.exit(code)


def _parse_when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        from eventrelay.worker.ops.operations import parse_duration

        try:
            return datetime.now(UTC) - parse_duration(value)
        except EventRelayError:
            raise click.BadParameter(
                f"{value!r}: give an ISO time (2026-11-23T10:00) or an age (30m, 12h, 7d)"
            ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventrelay")
def cli() -> None:
    """eventrelay: durable delivery of application events to vendor APIs."""
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.logs import configure

    configure(json_lines=get_settings().log_json)


# ---- setup and processes ----------------------------------------------------------------------


@cli.command()
@click.option(
    "--database-url", envvar="EVENTRELAY_DATABASE_URL", help="Default: EVENTRELAY_DATABASE_URL."
)
def migrate(database_url: str | None) -> None:
    """Create or upgrade the tables (Alembic upgrade head)."""
    from eventrelay.worker.ops.migrate import upgrade

    try:
        upgrade(database_url)
    except Exception as exc:
        _fail(f"migration failed: {type(exc).__name__}: {exc}")
    click.echo("database is at the newest schema")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("-Q", "--queues", help="Comma-separated queues (default: every vendor's queues).")
@click.option("--vendors", help="Comma-separated vendors whose fresh and retry queues to consume.")
@click.option("-c", "--concurrency", type=int, help="Worker processes (default: number of CPUs).")
@click.option("-P", "--pool", default="prefork", show_default=True)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("-n", "--hostname", help="Node name, e.g. botsi@%h.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    queues: str | None,
    vendors: str | None,
    concurrency: int | None,
    pool: str,
    loglevel: str,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker with eventrelay's options (task events on, for Flower)."""
    from eventrelay.worker.engine.celery_app import get_app
    from eventrelay.worker.fleet.queues import all_queues, vendor_queues
    from eventrelay.worker.vendors import vendor_names

    selected = [q.strip() for q in queues.split(",")] if queues else []
    if vendors:
        for name in vendors.split(","):
            if name.strip() not in vendor_names():
                _fail(f"unknown vendor {name!r}; valid vendors: {', '.join(vendor_names())}", 2)
            selected += vendor_queues(name.strip())
    argv = ["worker", "-E", "-P", pool, "-l", loglevel, "-Q", ",".join(selected or all_queues())]
    if concurrency:
        argv += ["-c", str(concurrency)]
    if hostname:
        argv += ["-n", hostname]
    get_app().worker_main(argv + list(celery_args))


@cli.command()
@click.option(
    "--interval", type=float, help="Seconds between ticks (EVENTRELAY_SCHEDULER_INTERVAL_SECONDS)."
)
@click.option("--once", is_flag=True, help="Run one tick and exit.")
def scheduler(interval: float | None, once: bool) -> None:
    """Publish due deliveries and recover expired leases (safe to run twice)."""
    from eventrelay.worker.engine.scheduler import Scheduler

    sched = Scheduler()
    if once:
        summary = sched.tick()
        _print_json(summary.__dict__)
        return
    click.echo("eventrelay scheduler running (Ctrl-C to stop)", err=True)
    sched.run(interval)


@cli.command()
@click.option("--port", default=9808, show_default=True, type=int)
@click.option("--host", default="0.0.0.0", show_default=True)
def metrics(port: int, host: str) -> None:
    """Serve Prometheus metrics (read from the database and Redis at each scrape)."""
    from eventrelay.worker.ops.metrics import serve

    click.echo(f"eventrelay metrics on http://{host}:{port}/metrics", err=True)
    serve(port, host)


@cli.command()
@click.option(
    "--users",
    default=25,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Users to simulate (about 6 jobs each).",
)
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=float,
    help="Stop waiting after this many seconds.",
)
def demo(users: int, timeout: float) -> None:
    """Run the whole pipeline locally against the mock vendors, with live progress."""
    from eventrelay.worker.dev.demo import run_demo

    result = run_demo(users=users, timeout_seconds=timeout)
    sys.exit(0 if result.finished else 1)


@cli.command("mock-vendors")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, type=int)
def mock_vendors(host: str, port: int) -> None:
    """Run the mock vendor server (all four APIs) for tests and demos."""
    from eventrelay.worker.dev.mock.server import main

    sys.exit(main(["--host", host, "--port", str(port)]))


# ---- producing ----------------------------------------------------------------------------------


class _LineError(Exception):
    def __init__(self, lineno: int, message: str) -> None:
        self.lineno = lineno
        super().__init__(f"line {lineno}: {message}")


@cli.command()
@click.option("--vendor", help="Vendor of a single job.")
@click.option("--operation", help="Operation of a single job.")
@click.option("--payload", help="Payload of a single job, as JSON.")
@click.option("--idempotency-key", help="Idempotency key of a single job.")
@click.option(
    "--json", "job_json", help="A whole job as JSON: {vendor, operation, payload, idempotency_key}."
)
@click.option(
    "-f", "--file", "file_", type=click.File("r"), help="JSON lines of jobs ('-' for stdin)."
)
def send(
    vendor: str | None,
    operation: str | None,
    payload: str | None,
    idempotency_key: str | None,
    job_json: str | None,
    file_: Any,
) -> None:
    """Enqueue jobs; prints one JSON receipt per job.

    All jobs are validated first: if any is invalid, nothing is stored and the exit code is 2.
    """
    from eventrelay.worker.producer import enqueue_many

    jobs: list[Any] = []
    try:
        if file_ is not None:
            jobs = [job for _, job in _jobs_from_lines(file_)]
        elif job_json is not None:
            jobs = [_loads(job_json, "--json")]
        elif vendor or operation or payload:
            missing = [
                n
                for n, v in (
                    ("--vendor", vendor),
                    ("--operation", operation),
                    ("--payload", payload),
                )
                if not v
            ]
            if missing:
                _fail(f"a single job needs {', '.join(missing)} too", EXIT_INVALID)
            job = {
                "vendor": vendor,
                "operation": operation,
                "payload": _loads(payload, "--payload"),
            }
            if idempotency_key is not None:
                job["idempotency_key"] = idempotency_key
            jobs = [job]
        elif not sys.stdin.isatty():
            jobs = [job for _, job in _jobs_from_lines(sys.stdin)]
        else:
            _fail(
                "nothing to send: give --vendor/--operation/--payload, --json, or --file",
                EXIT_INVALID,
            )
        receipts = enqueue_many(jobs)
    except _LineError as exc:
        _fail(f"invalid input: {exc}; nothing was stored", EXIT_INVALID)
    except InvalidJob as exc:
        _fail(f"{exc}; nothing was stored", EXIT_INVALID)
    except EventRelayError as exc:
        _fail(str(exc))
    for receipt in receipts:
        _print_json(receipt.as_dict())


def _jobs_from_lines(stream: Any) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise _LineError(lineno, f"not valid JSON ({type(exc).__name__}: {exc})") from None


def _loads(text: str | None, what: str) -> Any:
    try:
        return json.loads(text or "")
    except (ValueError, RecursionError) as exc:
        raise _LineError(0, f"{what} is not valid JSON ({exc})") from None


# ---- inspecting ---------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (documented shape).")
def status(as_json: bool) -> None:
    """Deliveries per vendor and state, oldest pending age, queue depths, circuit state."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.engine.retention import describe
    from eventrelay.worker.engine.scheduler import queue_depths
    from eventrelay.worker.fleet.queues import vendor_queues
    from eventrelay.worker.ops.operations import status_counts

    settings = get_settings()
    with get_engine().connect() as conn:
        vendors = status_counts(conn)
        retention = describe(conn, settings)
    depths = queue_depths(settings.broker_url)
    for name, entry in vendors.items():
        entry["queues"] = {q: (depths or {}).get(q) for q in vendor_queues(name)}
        entry.update(_circuit(name, settings.effective_redis_url))
    data = {
        "generated_at": datetime.now(UTC).isoformat(),
        "vendors": vendors,
        "retention": retention,
    }
    if as_json:
        _print_json(data)
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # Short headers with a legend: at 80 columns rich would cut "pending", "delivering" and
    # "delivered" to the same "pendi…"/"deliv…". Padding on the right only: two spaces between
    # columns leave room for "cooling 30m" and seven-digit counts; 80 wide, the legend wraps
    # into two lines.
    table = Table(
        title="eventrelay status",
        box=box.SIMPLE_HEAD,
        min_width=80,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        caption="pend: pending · sending: claimed by a worker · done: delivered · "
        "supp: suppressed · oldest: oldest pending · queued: messages in fresh/retry queues",
        caption_justify="left",
    )
    for col, justify in STATUS_COLUMNS:
        table.add_column(col, justify=justify, no_wrap=True)
    notes = []
    for name, entry in sorted(vendors.items()):
        c = entry["counts"]
        age = entry["oldest_pending_age_seconds"]
        q = list(entry["queues"].values())
        circuit = _circuit_text(entry)
        if entry["parked_reason"]:
            notes.append(f"{name} is parked: {entry['parked_reason']}")
        table.add_row(
            name,
            *(str(c[s]) for s in ("pending", "delivering", "delivered", "dead", "suppressed")),
            _age(age),
            "/".join("?" if v is None else str(v) for v in q),
            circuit,
        )
    console = Console()
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True)
    console.print(_retention_text(retention))


def _retention_text(info: dict[str, Any]) -> str:
    from eventrelay.worker.ops.operations import format_duration

    text = f"history: delivered and suppressed kept {format_duration(info['retention_seconds'])}"
    if "partition_seconds" in info:
        text += (
            f" (in {info['history_partitions']} partitions of "
            f"{format_duration(info['partition_seconds'])})"
        )
    oldest = info["oldest_row_created_at"]
    return text + (f"; oldest row kept: {oldest[:19]}Z" if oldest else "; no rows")


STATUS_COLUMNS: tuple[tuple[str, Literal["left", "right"]], ...] = (
    ("vendor", "left"),
    ("pend", "right"),
    ("sending", "right"),
    ("done", "right"),
    ("dead", "right"),
    ("supp", "right"),
    ("oldest", "right"),
    ("queued", "right"),
    ("circuit", "left"),
)


def _circuit(vendor: str, redis_url: str | None) -> dict[str, Any]:
    """The vendor's gate as `status --json` shows it: circuit, cooling_seconds_left, parked_reason
    (all None without a Redis to read them from)."""
    from eventrelay.worker.fleet import breaker

    out: dict[str, Any] = {"circuit": None, "cooling_seconds_left": None, "parked_reason": None}
    if redis_url:
        try:
            health = breaker.health(vendor, redis_url)
        except Exception:
            out["circuit"] = "unknown (redis unreachable)"
        else:
            out["circuit"] = health.state
            out["cooling_seconds_left"] = health.cooling_seconds_left
            out["parked_reason"] = health.parked_reason
    return out


def _circuit_text(entry: dict[str, Any]) -> str:
    """The circuit for a table: "closed", "cooling 12s", "-" when unknown."""
    if entry["circuit"] == "cooling" and entry["cooling_seconds_left"] is not None:
        return f"cooling {_age(max(1.0, entry['cooling_seconds_left']))}"
    return str(entry["circuit"] or "-")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


@cli.command()
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (documented shape).")
def show(delivery_id: str, as_json: bool) -> None:
    """One delivery with its payload and attempts."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import show as show_delivery

    try:
        with get_engine().connect() as conn:
            data = show_delivery(conn, delivery_id)
    except EventRelayError as exc:
        _fail(str(exc), EXIT_INVALID)
    if as_json:
        _print_json(data)
        return
    for key in (
        "id",
        "vendor",
        "operation",
        "status",
        "attempts",
        "reason",
        "idempotency_key",
        "created_at",
        "next_attempt_at",
        "finished_at",
    ):
        click.echo(f"{key:>16}: {data[key]}")
    click.echo(f"{'payload':>16}: {json.dumps(data['payload'])}")
    for a in data["attempt_history"]:
        click.echo(
            f"  attempt {a['number']}: {a['outcome']} status={a['status_code']} "
            f"{a['duration_ms']}ms {a['error_class'] or ''} {a['response_excerpt'] or ''}"
        )


# ---- dead letters -------------------------------------------------------------------------------


def _dead_filter(
    ids: tuple[str, ...],
    vendor: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
) -> Any:
    from eventrelay.worker.ops.operations import DeadFilter

    return DeadFilter(
        ids=ids, vendor=vendor, reason=reason, since=_parse_when(since), until=_parse_when(until)
    )


_filter_options = [
    click.option("--vendor", help="Only this vendor."),
    click.option("--reason", help="Only reasons containing this text (case-insensitive)."),
    click.option("--since", help="Dead-lettered at/after: ISO time or age (12h, 7d)."),
    click.option("--until", help="Dead-lettered before: ISO time or age."),
]


def _with_filters(func: Any) -> Any:
    for option in reversed(_filter_options):
        func = option(func)
    return func


@cli.group()
def dlq() -> None:
    """Dead letters: list, replay, purge."""


@dlq.command("list")
@_with_filters
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (documented shape).")
def dlq_list(
    vendor: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead deliveries, newest first, with their reasons."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import count_dead, dead_letters

    flt = _dead_filter((), vendor, reason, since, until)
    with get_engine().connect() as conn:
        rows = dead_letters(conn, flt, limit)
        total = count_dead(conn, flt)
    if as_json:
        _print_json({"total": total, "dead_letters": rows})
        return
    for r in rows:
        click.echo(f"{r['id']}  {r['vendor']}/{r['operation']}  {r['finished_at']}  {r['reason']}")
    click.echo(f"{len(rows)} shown of {total} dead letters")


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@_with_filters
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter matching the filters.")
@click.option("--dry-run", is_flag=True, help="Only say how many would be replayed.")
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(
    ids: tuple[str, ...],
    vendor: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    all_: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send dead deliveries again (by id, or --all matching filters). Never re-sends delivered."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import count_dead, replay
    from eventrelay.worker.producer import publish_after_commit

    if not ids and not (all_ or vendor or reason or since or until):
        _fail(
            "name delivery ids, or use --all / --vendor / --reason / --since / --until",
            EXIT_INVALID,
        )
    try:
        flt = _dead_filter(ids, vendor, reason, since, until)
        with get_engine().begin() as conn:
            if dry_run:
                count = count_dead(conn, flt)
                rows = []
            else:
                rows = replay(conn, flt)
                count = len(rows)
    except EventRelayError as exc:
        _fail(str(exc), EXIT_INVALID)
    if rows:
        publish_after_commit(rows)
    if as_json:
        _print_json({"dry_run": dry_run, "count": count})
    else:
        click.echo(
            f"{count} dead letter(s) {'would be' if dry_run else ''} replayed".replace("  ", " ")
        )


@dlq.command("purge")
@click.option(
    "--older-than", required=True, help="Age, e.g. 30d: delete dead letters older than it."
)
@click.option("--dry-run", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_purge(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Delete dead letters (and their attempts) that died longer ago than --older-than."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import parse_duration, purge_dead

    try:
        age = parse_duration(older_than)
    except EventRelayError as exc:
        _fail(str(exc), EXIT_INVALID)
    with get_engine().begin() as conn:
        count = purge_dead(conn, age, dry_run)
    if as_json:
        _print_json({"dry_run": dry_run, "count": count})
    else:
        click.echo(f"{count} dead letter(s) {'would be ' if dry_run else ''}purged")


# ---- vendors ------------------------------------------------------------------------------------


@cli.group()
def vendors() -> None:
    """Vendor state: list, resume a parked vendor."""


@vendors.command("list")
@click.option("--json", "as_json", is_flag=True)
def vendors_list(as_json: bool) -> None:
    """Registered vendors, their operations and circuit (cooling, parked, ...)."""
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.vendors import VENDOR_CLASSES

    data = {name: sorted(cls.operations) for name, cls in sorted(VENDOR_CLASSES.items())}
    redis_url = get_settings().effective_redis_url
    circuits = {name: _circuit(name, redis_url) for name in data}
    if as_json:
        _print_json({"vendors": data, "circuits": circuits})
        return
    for name, ops in data.items():
        state = circuits[name]
        line = f"{name}: {', '.join(ops)}"
        if state["circuit"]:
            line += f" ({_circuit_text(state)})"
        if state["parked_reason"]:
            line += (
                f": {state['parked_reason']}; fix the key, then `eventrelay vendors resume {name}`"
            )
        click.echo(line)


@vendors.command("resume")
@click.argument("vendor")
def vendors_resume(vendor: str) -> None:
    """Unpark a vendor after fixing its credentials; its waiting deliveries go out now."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.fleet import breaker
    from eventrelay.worker.ops.operations import resume_vendor
    from eventrelay.worker.vendors import vendor_names

    if vendor not in vendor_names():
        _fail(
            f"unknown vendor {vendor!r}; valid vendors: {', '.join(vendor_names())}", EXIT_INVALID
        )
    url = get_settings().effective_redis_url
    was_parked = breaker.unpark(vendor, url) if url else False
    with get_engine().begin() as conn:
        rows = resume_vendor(conn, vendor)
    click.echo(
        f"{vendor}: {'unparked' if was_parked else 'was not parked'}; "
        f"{len(rows)} waiting deliveries are due now (the scheduler publishes them)"
    )


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from sqlalchemy.exc import DBAPIError

    try:
        cli(prog_name="eventrelay")
    except DBAPIError as exc:
        # Say what to do, not a traceback: the usual causes are a missing schema or a database
        # that is not running.
        text = str(exc.orig or exc).splitlines()[0]
        hint = ""
        if "no such table" in text or "does not exist" in text:
            hint = "; the eventrelay tables are missing: run `eventrelay migrate`"
        elif "connect" in text.lower():
            hint = "; is the database running, and is EVENTRELAY_DATABASE_URL right?"
        click.echo(f"eventrelay: database error: {text}{hint}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
