"""The development commands of the `eventrelay` CLI: `demo` and `mock-vendors`.

The CLI's group (worker/ops/cli) finds them here by name, so the operations layer never
imports the development tools.
"""

from __future__ import annotations

import sys

import click


@click.command()
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


@click.command("mock-vendors")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, type=int)
def mock_vendors(host: str, port: int) -> None:
    """Run the mock vendor server (all four APIs) for tests and demos."""
    from eventrelay.worker.dev.mock.cli import main

    sys.exit(main(["--host", host, "--port", str(port)]))
