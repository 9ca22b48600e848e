"""Shared fixtures. Everything runs against the real PostgreSQL and Redis on this machine, in a
database and a Redis DB number of the tests' own, and a real mock vendor HTTP server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.support import (
    REDIS_HOST,
    TEST_DB_NAME,
    TEST_REDIS_DB,
    Proc,
    bring_loopback_up,
    ensure_database,
    free_port,
    loopback_is_up,
    missing_services,
    start_scheduler,
    start_worker,
)

# Settings are read once per process, so the test environment is fixed before any import of
# eventrelay's modules. Short timeouts and backoff keep retry tests fast.
MOCK_PORT = free_port()
TEST_ENV = {
    "EVENTRELAY_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEST_DB_NAME}",
    "EVENTRELAY_BROKER_URL": f"redis://{REDIS_HOST}/{TEST_REDIS_DB}",
    "EVENTRELAY_REDIS_URL": f"redis://{REDIS_HOST}/{TEST_REDIS_DB}",
    "EVENTRELAY_BACKOFF_BASE_SECONDS": "0.2",
    "EVENTRELAY_BACKOFF_CAP_SECONDS": "10",
    "EVENTRELAY_READ_TIMEOUT_SECONDS": "1.5",
    "EVENTRELAY_CONNECT_TIMEOUT_SECONDS": "1",
    "EVENTRELAY_LEASE_SECONDS": "20",
    "EVENTRELAY_SCHEDULER_INTERVAL_SECONDS": "0.2",
    # Low enough that the fleet-wide limit is measurable in a test, for every worker started.
    "INFOBIP_RATE_LIMIT": "20",
    "BOTSI_BASE_URL": f"http://127.0.0.1:{MOCK_PORT}/botsi",
    "VTCDN_BASE_URL": f"http://127.0.0.1:{MOCK_PORT}/vtcdn/v1",
    "INFOBIP_BASE_URL": f"http://127.0.0.1:{MOCK_PORT}/infobip",
    "GRAVITYFIELD_BASE_URL": f"http://127.0.0.1:{MOCK_PORT}/gravityfield",
    # Recognisable secrets: tests search storage and logs for them.
    "BOTSI_SECRET_KEY": "SECRET-botsi-7f3a9c",
    "VTCDN_API_KEY": "SECRET-vtcdn-51b2e0",
    "INFOBIP_API_KEY": "SECRET-infobip-c4d8a1",
    "GRAVITYFIELD_TOKEN": "SECRET-gftoken-9e7b3d",
    "GRAVITYFIELD_SITE_KEY": "SECRET-gfsite-2a6f11",
}
os.environ.update(TEST_ENV)
SECRETS = [v for k, v in TEST_ENV.items() if k.endswith(("_KEY", "_TOKEN"))]
MOCK_CREDENTIALS = {
    "botsi_secret_key": TEST_ENV["BOTSI_SECRET_KEY"],
    "vtcdn_api_key": TEST_ENV["VTCDN_API_KEY"],
    "infobip_api_key": TEST_ENV["INFOBIP_API_KEY"],
    "gravityfield_token": TEST_ENV["GRAVITYFIELD_TOKEN"],
    "gravityfield_site_key": TEST_ENV["GRAVITYFIELD_SITE_KEY"],
}


# CI runs everything; locally the slow suites are opt-in and what needs services is skipped,
# with one line saying which service is missing, when they are not there.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Folders whose tests need PostgreSQL and Redis (and most start Celery processes).
SERVICE_FOLDERS = ("integration", "faults", "benchmarks", "apps")
# Folders whose tests are timed or load the CPUs: `serial`, run alone after the parallel phase.
SERIAL_FOLDERS = ("faults", "benchmarks")
TESTS_DIR = Path(__file__).resolve().parent

settings.register_profile("ci", max_examples=400, deadline=None)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


def pytest_configure(config: pytest.Config) -> None:
    stale = _stale_editable_install()
    if stale:
        pytest.exit(stale, returncode=4)
    bring_loopback_up()


def _stale_editable_install() -> str | None:
    """The modules of the checkout that the strict editable install (setup.cfg) does not link
    yet: it lists the files it was installed with, so a module added since is not importable."""
    import eventrelay

    linked = [Path(p) for p in eventrelay.__path__ if "__editable__" in p]
    if not linked:
        return None
    root = TESTS_DIR.parent
    missing = []
    for prefix, folder in (
        ("worker", "worker"),
        ("models", "models"),
        ("migrations", "migrations"),
    ):
        for path in (root / folder).rglob("*.py"):
            if not (linked[0] / prefix / path.relative_to(root / folder)).exists():
                missing.append(f"{folder}/{path.relative_to(root / folder)}")
    if not missing:
        return None
    return (
        f"the editable install predates {', '.join(sorted(missing)[:3])}"
        f"{' ...' if len(missing) > 3 else ''}: run `pip install -e .` again"
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="also run the slow suites (CI=true runs them)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not loopback_is_up():
        terminalreporter.write_line(
            "loopback is down: the tests that run a local HTTP server fail; in a fresh network "
            "namespace run `ip link set lo up` first",
            red=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS_DIR).parts
        if parts[0] in SERVICE_FOLDERS:
            item.add_marker(pytest.mark.services)
        if parts[0] in SERIAL_FOLDERS:
            item.add_marker(pytest.mark.serial)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slow") and not (IN_CI or item.config.getoption("--run-slow")):
        pytest.skip("slow: opt-in locally with --run-slow (CI=true runs it)")
    if item.get_closest_marker("services"):
        missing = missing_services()
        if missing and IN_CI:
            pytest.exit(f"CI=true and {missing}", returncode=3)
        if missing:
            pytest.skip(f"needs PostgreSQL and Redis: {missing}")


@pytest.fixture(scope="session")
def database_url() -> str:
    """A fresh, migrated PostgreSQL database of the tests' own."""
    from eventrelay.models.session import reset_engine
    from eventrelay.worker.ops.migrate import upgrade

    url = ensure_database(TEST_DB_NAME, fresh=True)
    reset_engine()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def redis_client() -> Any:
    from eventrelay.worker.fleet.redis_client import get_redis

    client = get_redis(TEST_ENV["EVENTRELAY_REDIS_URL"])
    client.ping()
    return client


@pytest.fixture(scope="session")
def mock_vendors() -> Iterator[Any]:
    from eventrelay.worker.dev.mock.server import MockVendors

    server = MockVendors(port=MOCK_PORT, credentials=MOCK_CREDENTIALS).start()
    yield server
    server.stop()


@pytest.fixture
def clean(database_url: str, redis_client: Any, mock_vendors: Any) -> Iterator[None]:
    """Empty tables, an empty test Redis DB and a mock vendor with no faults and no log."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from eventrelay.models.session import get_engine

    # A worker still finishing the previous test's deliveries can deadlock with TRUNCATE's
    # table locks; PostgreSQL then cancels one side, so try again.
    for attempt in range(5):
        try:
            with get_engine().begin() as conn:
                conn.execute(
                    text(
                        "TRUNCATE delivery_attempts, deliveries, idempotency_keys, botsi_profiles, "
                        "delivery_counters CASCADE"
                    )
                )
            break
        except OperationalError:
            if attempt == 4:
                raise
    redis_client.flushdb()
    mock_vendors.reset()
    yield


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def _child_env(**overrides: str) -> dict[str, str]:
    env = {**os.environ, **TEST_ENV, **overrides}
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


# Per module, so tests that start workers of their own never race a worker left running.
@pytest.fixture(scope="module")
def pipeline(database_url: str, mock_vendors: Any, logs_dir: Path) -> Iterator[dict[str, Proc]]:
    """A real Celery worker (prefork, 2 processes) and a real scheduler."""
    env = _child_env()
    worker = start_worker(env, logs_dir / "worker.log")
    scheduler = start_scheduler(env, logs_dir / "scheduler.log")
    yield {"worker": worker, "scheduler": scheduler}
    # Killed, not stopped: the module's checks are done, and a warm stop only waits (2 s a
    # worker; tests/integration/test_shutdown.py tests it).
    scheduler.kill()
    worker.kill()


@pytest.fixture
def child_env() -> Any:
    return _child_env


@pytest.fixture
def cli() -> Any:
    """Run `eventrelay ...` as a real process; returns the CompletedProcess."""
    import subprocess
    import sys

    def run(
        *args: str, input: str | None = None, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "eventrelay", *args],
            input=input,
            capture_output=True,
            text=True,
            env=env or _child_env(),
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"eventrelay {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    return run
