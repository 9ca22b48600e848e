"""Your own vendor without a fork: `tests/plugins/eventrelay-acme`, a distribution of its own
that registers `acme` in the entry point group `eventrelay.vendors`, is pip-installed (into a
folder of this test's, on PYTHONPATH: the project's environment is never changed) and becomes
a vendor like the built-ins: listed, its queues consumed, its settings, breaker and CLI, and
its jobs delivered by a real worker to a real HTTP server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventrelay.worker.config import get_settings
from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.fleet import breaker
from eventrelay.worker.fleet.queues import all_queues
from eventrelay.worker.producer import enqueue
from eventrelay.worker.vendors import broken_vendors, get_vendor, refresh_vendors, vendor_names
from tests.conftest import TEST_ENV, _child_env
from tests.integration.helpers import attempts, wait_status
from tests.integration.receiver import Receiver
from tests.support import ROOT, Proc, start_scheduler, start_worker, wait_for

PLUGIN = ROOT / "tests" / "plugins" / "eventrelay-acme"
ACME_KEY = "SECRET-acme-6d1f0b"

pytestmark = pytest.mark.usefixtures("clean")


def pip_install(source: Path, target: Path) -> None:
    """`pip install` a local distribution into `target`, offline: no index, no build isolation
    (setuptools comes with the test extra), no dependencies (eventrelay is already here). The
    source is copied first: setuptools builds in the source tree."""
    build = target.parent / f"{source.name}-src"
    shutil.copytree(source, build)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
        + ["--no-build-isolation", "--target", str(target), str(build)],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("plugins") / "site"
    pip_install(PLUGIN, site)
    assert (site / "eventrelay_acme" / "__init__.py").exists()
    return site


@pytest.fixture(scope="module")
def acme_env(acme_site: Path, receiver: Receiver) -> dict[str, str]:
    """What an operator sets: the plugin on the path, its settings as ACME_*."""
    return {
        "PYTHONPATH": str(acme_site),
        "ACME_BASE_URL": receiver.url("/acme/v1"),
        "ACME_API_KEY": ACME_KEY,
        "ACME_RATE_LIMIT": "50",
        "ACME_MAX_ATTEMPTS": "6",
    }


@pytest.fixture(scope="module")
def acme_here(acme_site: Path, acme_env: dict[str, str]) -> Iterator[None]:
    """This test process sees the plugin too (it enqueues and inspects in-process)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(acme_site))
        for name, value in acme_env.items():
            if name != "PYTHONPATH":
                mp.setenv(name, value)
        refresh_vendors()
        yield
    refresh_vendors()


@pytest.fixture(scope="module")
def fleet(
    database_url: str, acme_env: dict[str, str], logs_dir: Path, acme_here: None
) -> Iterator[dict[str, Proc]]:
    env = _child_env(**acme_env)
    worker = start_worker(env, logs_dir / "acme-worker.log", name="acme")
    scheduler = start_scheduler(env, logs_dir / "acme-scheduler.log")
    yield {"worker": worker, "scheduler": scheduler}
    scheduler.kill()  # the module's checks are done: a warm stop only waits
    worker.kill()


@pytest.fixture(autouse=True)
def _fresh_receiver(receiver: Receiver) -> None:
    receiver.reset()


def test_eventrelay_vendors_list_shows_the_installed_plugin(
    cli: Any, acme_env: dict[str, str]
) -> None:
    listed = json.loads(cli("vendors", "list", "--json", env=_child_env(**acme_env)).stdout)
    assert listed["vendors"]["acme"] == ["send_event"]
    assert {"botsi", "gravityfield", "infobip", "vtcdn"} <= set(listed["vendors"])
    assert listed["broken"] == {}
    assert "acme: send_event" in cli("vendors", "list", env=_child_env(**acme_env)).stdout
    # Without the distribution there is no such vendor.
    without = json.loads(cli("vendors", "list", "--json").stdout)
    assert "acme" not in without["vendors"]


def test_a_broken_plugin_is_listed_by_its_entry_point_name_and_the_rest_still_work(
    cli: Any, acme_env: dict[str, str], tmp_path: Path
) -> None:
    info = tmp_path / "eventrelay_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: eventrelay-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[eventrelay.vendors]\nbroken = eventrelay_broken:Nope\n"
    )
    env = _child_env(**{**acme_env, "PYTHONPATH": f"{tmp_path}:{acme_env['PYTHONPATH']}"})
    listed = json.loads(cli("vendors", "list", "--json", env=env).stdout)
    assert "ModuleNotFoundError" in listed["broken"]["broken"]
    assert {"acme", "botsi", "gravityfield", "infobip", "vtcdn"} <= set(listed["vendors"])
    text = cli("vendors", "list", env=env)
    assert "broken: not loaded: eventrelay_broken:Nope: ModuleNotFoundError" in text.stderr
    assert "acme: send_event" in text.stdout


@pytest.mark.usefixtures("acme_here")
def test_its_queues_settings_and_breaker_follow_from_the_registry(
    cli: Any, acme_env: dict[str, str]
) -> None:
    assert "acme" in vendor_names() and broken_vendors() == {}
    assert {"eventrelay.acme", "eventrelay.acme.retry"} <= set(all_queues())
    acme = get_vendor("acme")
    assert acme.settings.rate_limit == 50  # ACME_RATE_LIMIT, like any <VENDOR>_RATE_LIMIT
    assert RetryPolicy.for_vendor(acme, get_settings()).max_attempts == 6
    redis_url = TEST_ENV["EVENTRELAY_REDIS_URL"]
    for _ in range(breaker.FAILURE_THRESHOLD):
        breaker.record_failure("acme", redis_url)
    assert breaker.check("acme", redis_url).allowed is False
    status = json.loads(cli("status", "--json", env=_child_env(**acme_env)).stdout)
    assert status["vendors"]["acme"]["circuit"] == "open"
    assert status["vendors"]["acme"]["queues"] == {"eventrelay.acme": 0, "eventrelay.acme.retry": 0}
    breaker.record_success("acme", redis_url)


@pytest.mark.usefixtures("fleet")
def test_a_job_to_the_plugin_vendor_is_delivered_end_to_end_by_a_real_worker(
    cli: Any, acme_env: dict[str, str], receiver: Receiver
) -> None:
    receiver.script("/acme/v1/events", 503)  # retried like any vendor's 5xx
    payload = {"event": "signup", "user_id": "u-1", "plan": {"name": "pro", "seats": 3}}
    sent = cli(
        "send",
        "--vendor",
        "acme",
        "--operation",
        "send_event",
        "--payload",
        json.dumps(payload),
        env=_child_env(**acme_env),
    )
    receipt = json.loads(sent.stdout)
    row = wait_status(receipt["delivery_id"], "delivered")
    assert row.attempts == 2
    assert [str(a.outcome) for a in attempts(receipt["delivery_id"])] == ["retry", "delivered"]
    arrived = receiver.at("/acme/v1/events")
    assert [r.status for r in arrived] == [503, 200]
    assert arrived[-1].json == payload
    assert arrived[-1].headers["authorization"] == f"Bearer {ACME_KEY}"


@pytest.mark.usefixtures("fleet")
def test_an_app_enqueues_to_the_plugin_vendor_like_any_other(receiver: Receiver) -> None:
    receipt = enqueue("acme", "send_event", {"event": "purchase", "total": 10})
    wait_status(receipt.delivery_id, "delivered")
    wait_for(lambda: receiver.at("/acme/v1/events"), 10, what="acme's request")
    assert receiver.at("/acme/v1/events")[0].json == {"event": "purchase", "total": 10}


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_example_is_the_plugin_these_tests_install() -> None:
    section = _readme_section("Your own vendors")
    blocks = dict(re.findall(r"```(?:toml|python)\n# (\S+)\n(.*?)```", section, flags=re.S))
    assert set(blocks) == {"pyproject.toml", "eventrelay_acme/__init__.py"}
    for name, shown in blocks.items():
        assert shown == (PLUGIN / name).read_text(), f"README's {name} differs from {PLUGIN / name}"
