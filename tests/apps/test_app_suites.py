"""The sample apps' own test suites, run as their developers run them: `pytest` in the app's
folder, eventrelay's plugin loaded from its pytest11 entry point, no eventrelay test settings,
and no Redis: the Django app on PostgreSQL with the broker and Redis URLs on a port where
nothing listens; the Django app on SQLite and the Flask app in a network namespace where
nothing listens at all (`unshare -n`, loopback up), eventrelay on the kit's SQLite file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, TEST_DB_NAME, ensure_database, free_port

APPS = ROOT / "tests" / "apps"


def app_env(**extra: str) -> dict[str, str]:
    """The machine's environment without eventrelay's test settings (tests/conftest.py)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTRELAY_", "BOTSI_", "VTCDN_", "INFOBIP_", "GRAVITYFIELD_"))
        and k not in ("PYTEST_CURRENT_TEST", "DJANGO_SETTINGS_MODULE")
    }
    return {**env, **extra}


def run_suite(folder: Path, env: dict[str, str], prefix: tuple[str, ...] = ()) -> str:
    result = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(folder / "pytest.ini"),
            "--confcutdir",
            str(folder),
            "-s",
            str(folder),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    return result.stdout


def test_django_app_suite_passes_with_no_redis_on_its_own_database() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    database = ensure_database(f"{TEST_DB_NAME}_app", fresh=True)

    out = run_suite(
        APPS / "django_project",
        app_env(
            EVENTRELAY_DATABASE_URL=database,
            EVENTRELAY_BROKER_URL=closed,
            EVENTRELAY_REDIS_URL=closed,
        ),
    )

    assert "4 passed" in out
    assert "plugins: eventrelay-" in out
    assert "checkout test: view" in out


NO_NETWORK = ("unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh")
needs_namespace = pytest.mark.skipif(
    not (shutil.which("unshare") and shutil.which("ip") and os.geteuid() == 0),
    reason="needs root, unshare and ip (a network namespace of its own)",
)


@needs_namespace
def test_django_app_suite_on_sqlite_passes_where_no_service_listens(tmp_path: Path) -> None:
    out = run_suite(
        APPS / "django_project",
        app_env(EVENTRELAY_DJANGO_DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}"),
        prefix=NO_NETWORK,
    )

    # The same-database producers need PostgreSQL; enqueue_on_commit works on any database.
    assert "1 passed, 3 skipped" in out


@needs_namespace
def test_flask_app_suite_passes_where_no_service_listens() -> None:
    out = run_suite(APPS / "flask_tests", app_env(), prefix=NO_NETWORK)

    assert "4 passed" in out
    assert "plugins: eventrelay-" in out
