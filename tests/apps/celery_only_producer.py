"""A producer that has only Celery: sends one job through `worker/integrations/remote.py`.

    python -m tests.apps.celery_only_producer standalone|installed BROKER_URL IDEMPOTENCY_KEY

`standalone` loads remote.py from its file with eventrelay, SQLAlchemy, pydantic and psycopg
made unimportable, as in an app that copied the file. `installed` imports it as
`worker.integrations.remote` (the tests point EVENTRELAY_DATABASE_URL at nothing).
Prints the modules of eventrelay and SQLAlchemy that ended up imported, one per line.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Any

FORBIDDEN = {"eventrelay", "sqlalchemy", "pydantic", "pydantic_settings", "psycopg"}
REMOTE_PY = Path(__file__).resolve().parents[2] / "worker" / "integrations" / "remote.py"


class Forbid(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"{name} is not installed in this producer")
        return None


def load_remote(mode: str) -> Any:
    if mode == "installed":
        import eventrelay.worker.integrations.remote as remote

        return remote
    sys.meta_path.insert(0, Forbid())
    spec = importlib.util.spec_from_file_location("eventrelay_remote", REMOTE_PY)
    assert spec and spec.loader
    remote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(remote)
    return remote


if __name__ == "__main__":
    mode, broker_url, key = sys.argv[1:4]
    remote = load_remote(mode)
    from celery import Celery

    payload = {"user": {"email": f"{key}@example.com"}, "event": {"update": {"firstname": key}}}
    with Celery("shop", broker=broker_url) as producer:
        remote.send_jobs(producer, [remote.job("vtcdn", "send_event", payload, key)])
    for name in sorted(sys.modules):
        if name.split(".")[0] in FORBIDDEN:
            print(name)
