"""A worker or scheduler with a bad setting does not start: exit 2, one line naming the
variable and what it must be, no traceback (README, "What a bad setting does")."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventrelay.worker.producer import enqueue
from tests.conftest import SECRETS
from tests.integration import jobs
from tests.integration.helpers import delivery, wait_status
from tests.support import ROOT, start_worker

WORKER = [sys.executable, "-m", "eventrelay", "worker", "-c", "1", "--without-gossip"]
CELERY = [
    sys.executable,
    "-m",
    "celery",
    "-A",
    "eventrelay.worker",
    "worker",
    "-c",
    "1",
    "--without-gossip",
    "--without-mingle",
]
SCHEDULER = [sys.executable, "-m", "eventrelay", "scheduler", "--interval", "0.2"]
COMMANDS = {"eventrelay worker": WORKER, "celery worker": CELERY, "scheduler": SCHEDULER}
# Long enough for a refused start on a busy machine; a process that is still running then has
# accepted the setting (today's behaviour was to run on and deliver nothing).
REFUSED_WITHIN_SECONDS = 40

BAD = {
    # variable: (value, what the line must say)
    "INFOBIP_RATE_LIMIT": ("fast", "must be a number >= 0 (0: unlimited), got 'fast'"),
    "VTCDN_RATE_LIMIT": ("-5", "must be a number >= 0 (0: unlimited), got '-5'"),
    "BOTSI_MAX_IN_FLIGHT": ("0", "must be a whole number >= 1, got '0'"),
    "VTCDN_MAX_ATTEMPTS": ("0", "must be a whole number >= 1, got '0'"),
    "GRAVITYFIELD_BACKOFF_BASE_SECONDS": ("-1", "must be a number > 0, got '-1'"),
    "INFOBIP_BACKOFF_CAP_SECONDS": ("0", "must be a number > 0, got '0'"),
    "EVENTRELAY_MAX_IN_FLIGHT": ("lots", "must be a whole number >= 1 and <= 2000, got 'lots'"),
    "EVENTRELAY_LEASE_SECONDS": ("inf", "must be a number > 0, got 'inf'"),
}


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=REFUSED_WITHIN_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        raise AssertionError(
            f"{' '.join(command[2:5])} was still running after {REFUSED_WITHIN_SECONDS}s: "
            f"it accepted the bad setting\n{out[-2000:]}"
        ) from None


def _assert_refused(result: subprocess.CompletedProcess[str], variable: str, says: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    lines = [line for line in output.splitlines() if variable in line]
    assert len(lines) == 1, output[-3000:]
    assert f"{variable}: {says}" in lines[0]
    assert "Traceback" not in output and "ValidationError" not in output
    assert not any(secret in output for secret in SECRETS)


@pytest.mark.parametrize("variable", sorted(BAD))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_setting_ends_the_process_at_start_with_one_line_naming_the_variable(
    command: str, variable: str, child_env: Any
) -> None:
    value, says = BAD[variable]
    result = _run(COMMANDS[command], child_env(**{variable: value}))
    _assert_refused(result, variable, says)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_retention_shorter_than_the_partition_interval_is_refused_naming_both(
    command: str, child_env: Any
) -> None:
    env = child_env(EVENTRELAY_RETENTION_SECONDS="30", EVENTRELAY_PARTITION_SECONDS="60")
    result = _run(COMMANDS[command], env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    [line] = [line for line in output.splitlines() if "EVENTRELAY_RETENTION_SECONDS" in line]
    assert "EVENTRELAY_PARTITION_SECONDS" in line and "shorter" in line
    assert "Traceback" not in output


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_a_pool_that_cannot_stop_warmly_is_refused_at_start(pool: str, child_env: Any) -> None:
    result = _run([*WORKER, "-P", pool], child_env())
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f"the '{pool}' pool is not supported" in output and "-P prefork" in output
    assert "Traceback" not in output


@pytest.mark.usefixtures("clean")
def test_a_missing_vendor_secret_is_named_at_start_and_holds_only_that_vendor(
    child_env: Any, logs_dir: Path
) -> None:
    worker = start_worker(
        child_env(INFOBIP_API_KEY=""), logs_dir / "missing-secret.log", 1, name="missingkey"
    )
    try:
        assert "warning: INFOBIP_API_KEY is not set: infobip's deliveries wait" in worker.output()
        waits = enqueue("infobip", "send_event", jobs.infobip_event())
        goes = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
        wait_status(goes.delivery_id, "delivered", timeout=20)
        time.sleep(1.0)
        row = delivery(waits.delivery_id)
        assert str(row.status) == "pending" and "INFOBIP_API_KEY" in (row.reason or "")
        assert row.attempts - row.window_base_attempts == 0  # waiting spends nothing
    finally:
        worker.kill()
