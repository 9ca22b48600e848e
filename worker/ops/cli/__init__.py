"""The `eventrelay` command line.

Every command that lists or shows takes `--json`: one stable shape, documented in the README.
Exit codes: 0 success, 1 operational error (database, broker), 2 invalid input.

One module per job: `processes` (migrate, worker, scheduler, metrics), `send`, `status`
(status, show), `dlq`, `vendors`. The development commands (`demo`, `mock-vendors`) live in
`worker/dev/commands.py`, above this layer: the group finds them by name when they are asked
for, so the operations layer never imports the development tools.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from eventrelay.worker.ops.cli import dlq, processes, send, status, vendors

# Command name -> "module:attribute", imported only when the command is run or listed.
LAZY_COMMANDS = {
    "demo": "eventrelay.worker.dev.commands:demo",
    "mock-vendors": "eventrelay.worker.dev.commands:mock_vendors",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), target
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventrelay")
def cli() -> None:
    """eventrelay: durable delivery of application events to vendor APIs."""
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.logs import configure

    configure(json_lines=get_settings().log_json)


for _command in (
    processes.migrate,
    processes.worker,
    processes.scheduler,
    processes.metrics,
    send.send,
    status.status,
    status.show,
    dlq.dlq,
    vendors.vendors,
):
    cli.add_command(_command)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from sqlalchemy.exc import DBAPIError

    from eventrelay.worker.errors import ConfigurationError

    try:
        cli(prog_name="eventrelay")
    except ConfigurationError as exc:  # names the variable and what it must be
        click.echo(f"eventrelay: {exc}", err=True)
        sys.exit(2)
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
