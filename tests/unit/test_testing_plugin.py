"""The pytest plugin as an app's test run gets it: from the `pytest11` entry point, in a pytest
process of its own (pytest's `pytester`), with no database configured and no Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from typing import Any

import pytest

pytest_plugins = ["pytester"]
# Each test runs a whole pytest session of an app (pytester): opt-in locally, run in CI.
pytestmark = pytest.mark.slow

APP_TEST = """
from eventrelay import enqueue
from eventrelay.testing import rate_limited

JOB = {"personId": "ana@example.com", "identifierType": "EMAIL",
       "definitionId": "purchase", "properties": {"total": 10}}

def test_checkout_tells_infobip(eventrelay_outbox):
    enqueue("infobip", "send_event", JOB)
    eventrelay_outbox.assert_enqueued("infobip", "send_event", {"definitionId": "purchase"})
    report = eventrelay_outbox.drain({"infobip": [rate_limited(retry_after=5), 201]})
    assert report[0].status == "delivered"
    assert [r.answer.status for r in report.sent_to("infobip")] == [429, 201]

def test_wrong_expectation(eventrelay_outbox):
    enqueue("infobip", "send_event", JOB, idempotency_key="cart-3")
    eventrelay_outbox.assert_enqueued("vtcdn", "send_event")

def test_plugin_came_from_the_entry_point(request):
    plugin = request.config.pluginmanager.get_plugin("eventrelay")
    assert plugin is not None and plugin.__name__ == "eventrelay.testing"
"""


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """An app's environment: no eventrelay settings, a broker where nothing listens."""
    for name in list(os.environ):
        if name.startswith(("EVENTRELAY_", "INFOBIP_", "VTCDN_", "BOTSI_", "GRAVITYFIELD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVENTRELAY_BROKER_URL", "redis://127.0.0.1:9/0")


def test_pytest11_entry_point_names_the_plugin_module() -> None:
    (entry,) = [e for e in metadata.entry_points(group="pytest11") if e.name == "eventrelay"]
    assert entry.value == "eventrelay.testing"


def test_importing_the_plugin_imports_nothing_of_eventrelay() -> None:
    code = (
        "import sys, eventrelay.testing; "
        "print(sorted(m for m in sys.modules if m.startswith(('eventrelay.', 'sqlalchemy', "
        "'celery', 'redis', 'requests'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['eventrelay.testing']"


def test_app_suite_uses_the_fixture_and_a_failure_lists_the_jobs(
    pytester: Any, app_env: None
) -> None:
    pytester.makepyfile(test_app=APP_TEST)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: expected 1 job(s) to vtcdn send_event, found 0; enqueued (1):",
            'E *   1. infobip send_event {"definitionId": "purchase", *} '
            "idempotency_key='cart-3' [[]pending[]]",
        ]
    )
    # The helper's own frame is hidden: the failure points at the test's line.
    assert "outbox.py" not in result.stdout.str()


def test_the_plugin_can_be_turned_off(pytester: Any, app_env: None) -> None:
    pytester.makepyfile(test_app="def test_x(eventrelay_outbox):\n    pass\n")

    result = pytester.runpytest_subprocess("-p", "no:eventrelay", "-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'eventrelay_outbox' not found*"])


def test_readme_testing_example_runs_as_written(pytester: Any, app_env: None) -> None:
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Testing your app", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert example.startswith("# tests/test_checkout.py")
    pytester.makepyfile(test_checkout=example)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


def test_in_process_pytester_runs_can_follow_one_another(pytester: Any, app_env: None) -> None:
    # An app testing its own plugins runs pytest in-process, again and again, in a process
    # that has not imported SQLAlchemy yet: the outer run here is a fresh process.
    inner = (
        "from eventrelay import enqueue\n"
        "def test_inner(eventrelay_outbox):\n"
        "    enqueue('vtcdn', 'send_event', {'user': {'_id': 'u'}, 'event': {'update': {}}})\n"
        "    assert eventrelay_outbox.drain({'vtcdn': [500, 200]})[0].attempts == 2\n"
    )
    pytester.makepyfile(
        test_outer=(
            "pytest_plugins = ['pytester']\n"
            "def test_twice(pytester):\n"
            f"    pytester.makepyfile(test_inner={inner!r})\n"
            "    for _ in range(2):\n"
            "        pytester.runpytest('-p', 'no:cacheprovider').assert_outcomes(passed=1)\n"
        )
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
