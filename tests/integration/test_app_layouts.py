"""Real apps whose own folders hold a top-level `models.py` and `worker.py` (the most common
Flask and Django layouts) still use eventrelay: one import name, `eventrelay`, never clashes.

Each app runs as its own process from its own folder, as `python app.py` does in production,
so its `models` and `worker` come first on `sys.path`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import wait_status

pytestmark = pytest.mark.usefixtures("clean", "pipeline")

APPS = Path(__file__).resolve().parents[1] / "apps"


def _run_app(folder: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=APPS / folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{folder} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("folder", "script"),
    [("clash_flask", ["app.py", "{url}", "fl"]), ("clash_django", ["run.py", "dj"])],
)
def test_an_app_with_its_own_models_and_worker_modules_enqueues_and_delivers(
    folder: str, script: list[str], database_url: str, child_env: Any, mock_vendors: Any
) -> None:
    env = child_env()
    out = _run_app(folder, [a.format(url=database_url) for a in script], env)

    # The app's own modules were the ones imported (its chores ran) ...
    assert len(out["chores"]) == 3
    # ... and eventrelay's jobs, written in the app's transactions, were delivered.
    for delivery_id in out["delivery_ids"]:
        wait_status(delivery_id, "delivered")
    names = [r["body"]["event"]["update"]["firstname"] for r in mock_vendors.received("vtcdn")]
    assert sorted(names) == sorted(out["chores"])  # the declined order's job never went out
