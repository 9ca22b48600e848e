"""The inner loop a newcomer meets: without PostgreSQL and Redis, what needs them is skipped in
seconds with one line naming the missing service, and the slow suites wait to be asked for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REDIS_HOST

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs `unshare -n` (root) for a network namespace where nothing listens",
)
def test_without_services_integration_tests_skip_in_seconds_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    started = time.monotonic()
    result = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_claims.py",
            "tests/integration/test_cli.py",
            "tests/unit/test_layout.py::test_pip_install_puts_only_eventrelay_into_site_packages",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 2, result.stdout
    services, slow = sorted(skipped, key=lambda line: "slow" in line)
    assert "PostgreSQL unreachable at 127.0.0.1:5432" in services
    assert f"Redis unreachable at {REDIS_HOST}" in services
    assert "--run-slow" in slow
    assert " passed" not in result.stdout.splitlines()[-1]
    assert elapsed < 30, f"skipping took {elapsed:.1f} s"
