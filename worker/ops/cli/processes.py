"""Setup and the long-running processes: migrate, worker, scheduler, metrics."""

from __future__ import annotations

import click

from eventrelay.worker.ops.cli.output import fail, print_json


@click.command()
@click.option(
    "--database-url", envvar="EVENTRELAY_DATABASE_URL", help="Default: EVENTRELAY_DATABASE_URL."
)
def migrate(database_url: str | None) -> None:
    """Create or upgrade the tables (Alembic upgrade head)."""
    from eventrelay.worker.ops.migrate import upgrade

    try:
        upgrade(database_url)
    except Exception as exc:
        fail(f"migration failed: {type(exc).__name__}: {exc}")
    click.echo("database is at the newest schema")


@click.command(context_settings={"ignore_unknown_options": True})
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
    from eventrelay.worker.engine.startup import check_pool
    from eventrelay.worker.fleet.celery_app import get_app
    from eventrelay.worker.fleet.queues import all_queues, vendor_queues
    from eventrelay.worker.vendors import vendor_names

    if refused := check_pool(pool):  # before Celery imports (and patches for) the pool
        fail(refused, 2)
    selected = [q.strip() for q in queues.split(",")] if queues else []
    if vendors:
        for name in vendors.split(","):
            if name.strip() not in vendor_names():
                fail(f"unknown vendor {name!r}; valid vendors: {', '.join(vendor_names())}", 2)
            selected += vendor_queues(name.strip())
    argv = ["worker", "-E", "-P", pool, "-l", loglevel, "-Q", ",".join(selected or all_queues())]
    if concurrency:
        argv += ["-c", str(concurrency)]
    if hostname:
        argv += ["-n", hostname]
    get_app().worker_main(argv + list(celery_args))


@click.command()
@click.option(
    "--interval", type=float, help="Seconds between ticks (EVENTRELAY_SCHEDULER_INTERVAL_SECONDS)."
)
@click.option("--once", is_flag=True, help="Run one tick and exit.")
def scheduler(interval: float | None, once: bool) -> None:
    """Publish due deliveries and recover expired leases (safe to run twice)."""
    from eventrelay.worker.engine.scheduler import Scheduler
    from eventrelay.worker.engine.startup import refuse_bad_start

    refuse_bad_start("scheduler", sends=False)
    sched = Scheduler()
    if once:
        summary = sched.tick(raise_errors=True)
        print_json(summary.__dict__)
        return
    click.echo("eventrelay scheduler running (Ctrl-C to stop)", err=True)
    sched.run(interval)


@click.command()
@click.option("--port", default=9808, show_default=True, type=int)
@click.option("--host", default="0.0.0.0", show_default=True)
def metrics(port: int, host: str) -> None:
    """Serve Prometheus metrics (read from the database and Redis at each scrape)."""
    from eventrelay.worker.ops.metrics import serve

    click.echo(f"eventrelay metrics on http://{host}:{port}/metrics", err=True)
    serve(port, host)
