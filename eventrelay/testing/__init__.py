"""eventrelay's pytest plugin: test an app that enqueues jobs, with no Redis and no worker.

Installed with eventrelay (the `pytest11` entry point `eventrelay`), so an app's tests have
the fixture `eventrelay_outbox` (django-anymail's `mail.outbox`, dramatiq's `StubBroker`):

    def test_checkout_tells_infobip(client, eventrelay_outbox):
        client.post("/checkout", ...)
        eventrelay_outbox.assert_enqueued("infobip", "send_event", {"definitionId": "purchase"})
        report = eventrelay_outbox.drain({"infobip": [rate_limited(retry_after=30), 201]})
        assert report[0].status == "delivered"

* The outbox holds every job the test's code enqueued and committed (`enqueue`,
  `enqueue_many`, the Django and Flask integrations, `record_jobs` + `publish_after_commit`);
  a rolled-back transaction leaves nothing. It is emptied before each test.
* Database: the app's test database if EVENTRELAY_DATABASE_URL is set (migrated once), else a
  SQLite file of the kit's own. eventrelay's tables there are emptied before each test.
* `drain()` delivers the jobs in the test's thread through the worker's own code, against
  scripted answers (`answers.py`), without waiting for retries (`delivering.py`).

Importing this module imports nothing of eventrelay and builds nothing: the fixture does
that when a test asks for it. Turn the plugin off with `-p no:eventrelay`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from eventrelay.testing.answers import (
        Answer,
        SentRequest,
        connection_refused,
        rate_limited,
        timeout,
    )
    from eventrelay.testing.delivering import Attempt, DrainReport, JobResult, drain
    from eventrelay.testing.outbox import CapturedJob, Outbox, contains


@pytest.fixture
def eventrelay_outbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outbox]:
    """The jobs this test enqueued (emptied before it), with `find`, `assert_enqueued` and
    `drain()`. Producers publish to it instead of the broker: no Redis is needed."""
    from eventrelay.testing.outbox import open_outbox

    with open_outbox(_kit_folder(tmp_path_factory)) as outbox:
        yield outbox


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test using `pytester` (an app testing its own pytest plugins) gets eventrelay's
    modules imported before it runs. pytester's in-process runs (`runpytest`, `inline_run`)
    drop the modules first imported inside them, so a second run imports them again, and
    SQLAlchemy's compiled extensions cannot be imported twice (TypeError: 'InternalTraversal'
    object is not callable). Tests without pytester import nothing here."""
    if "pytester" in getattr(item, "fixturenames", ()):
        from eventrelay.testing.outbox import load_everything

        load_everything()


def _kit_folder(factory: pytest.TempPathFactory) -> Any:
    folder = factory.getbasetemp() / "eventrelay"
    folder.mkdir(exist_ok=True)
    return folder


_FACE = {
    "Answer": "eventrelay.testing.answers",
    "SentRequest": "eventrelay.testing.answers",
    "connection_refused": "eventrelay.testing.answers",
    "rate_limited": "eventrelay.testing.answers",
    "timeout": "eventrelay.testing.answers",
    "Attempt": "eventrelay.testing.delivering",
    "DrainReport": "eventrelay.testing.delivering",
    "JobResult": "eventrelay.testing.delivering",
    "drain": "eventrelay.testing.delivering",
    "CapturedJob": "eventrelay.testing.outbox",
    "Outbox": "eventrelay.testing.outbox",
    "contains": "eventrelay.testing.outbox",
}


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'eventrelay.testing' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "Answer",
    "Attempt",
    "CapturedJob",
    "DrainReport",
    "JobResult",
    "Outbox",
    "SentRequest",
    "connection_refused",
    "contains",
    "drain",
    "eventrelay_outbox",
    "rate_limited",
    "timeout",
]
