"""What a worker and the scheduler check before they take work.

A setting is read where it is used, and for a worker that is inside a forked child or a pump
thread, where an exception is logged and the process goes on delivering nothing (a pydantic
traceback from `worker_process_init`, a dispatcher thread gone). So every `EVENTRELAY_*` and
every vendor's settings are parsed here first, in the main process, before any fork:

* a value that is there but wrong ends the process with exit 2 and one line per problem,
  naming the variable and what it must be (`INFOBIP_RATE_LIMIT: must be a number >= 0
  (0: unlimited), got 'fast'`), never the value of a secret;
* a vendor's secret or base URL that is not set only makes that vendor's deliveries wait
  (as they always have), with a line naming the variable to set;
* a Celery pool the pump cannot shut down warmly is refused the same way (exit 2).

README, "What a bad setting does" and "Stopping a worker".
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr, ValidationError

from eventrelay.worker.config import Settings, describe_errors, get_settings
from eventrelay.worker.vendors import VENDOR_CLASSES, broken_vendors

EXIT_BAD_SETTING = 2

# Pools whose shutdown drains the pump (tested in tests/integration/test_shutdown.py). gevent
# and eventlet patch the threads the pump runs on (and psycopg's wait blocks the whole hub,
# psycopg#527); a custom pool is unknown: neither is accepted.
ACCEPTED_POOLS = ("prefork", "threads", "solo")
POOL_ALIASES = {"processes": "prefork"}
POOL_MODULES = {
    "celery.concurrency.prefork": "prefork",
    "celery.concurrency.thread": "threads",
    "celery.concurrency.solo": "solo",
    "celery.concurrency.gevent": "gevent",
    "celery.concurrency.eventlet": "eventlet",
}


@dataclass
class StartCheck:
    """What the check found: `refused` lines end the process; `waiting` lines only say which
    vendors' deliveries will wait for a setting."""

    refused: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def check_settings(sends: bool = True) -> StartCheck:
    """Parse every `EVENTRELAY_*` setting and every vendor's settings from the environment;
    with `sends` (a worker), also say which vendors lack a secret or base URL."""
    found = StartCheck()
    try:
        Settings()
    except ValidationError as exc:
        found.refused += [line for _, line in describe_errors(exc, Settings, "EVENTRELAY_")]
    for name, cls in sorted(VENDOR_CLASSES.items()):
        settings_class = cls.settings_class
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        try:
            settings = settings_class()
        except ValidationError as exc:
            found.refused += [line for _, line in describe_errors(exc, settings_class, prefix)]
            continue
        if not sends:
            continue
        for field_name, info in type(settings).model_fields.items():
            value = getattr(settings, field_name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            required = field_name == "base_url" or "SecretStr" in str(info.annotation)
            if required and not value:
                found.waiting.append(
                    f"{prefix}{field_name}".upper() + f" is not set: {name}'s deliveries wait "
                    "until it is set in the worker's environment (the other vendors deliver)"
                )
    if sends:
        for name, why in sorted(broken_vendors().items()):
            found.waiting.append(f"vendor {name!r} failed to load ({why}): its deliveries wait")
    return found


def pool_name(pool: Any) -> str:
    """The alias of a Celery pool given as an alias (`-P threads`) or as its class."""
    if isinstance(pool, str):
        name = pool.split(":")[0] if ":" in pool else pool
        return POOL_MODULES.get(name, POOL_ALIASES.get(name, name))
    module = getattr(pool, "__module__", "")
    return POOL_MODULES.get(module, f"{module}.{getattr(pool, '__name__', '?')}")


def check_pool(pool: Any) -> str | None:
    """Why `pool` is refused, or None if eventrelay accepts it."""
    name = pool_name(pool)
    if name in ACCEPTED_POOLS:
        return None
    return (
        f"the {name!r} pool is not supported: eventrelay's pump runs its own threads, and only "
        f"{', '.join(ACCEPTED_POOLS)} stop it warmly (in-flight requests finish and are "
        "recorded); use -P prefork (the default)"
    )


def refuse_bad_start(what: str, pool: Any = None, sends: bool = True) -> None:
    """Print each problem on one line and exit 2 if the process must not start; say which
    vendors will wait. Called in the main process before it takes any work."""
    found = check_settings(sends)
    if pool is not None:
        refused_pool = check_pool(pool)
        if refused_pool:
            found.refused.append(refused_pool)
    for line in found.waiting:
        print(f"eventrelay {what}: warning: {line}", file=sys.stderr, flush=True)
    if found.refused:
        for line in found.refused:
            print(f"eventrelay {what}: not started: {line}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_SETTING)
    get_settings()  # read once, now that it is known to parse
