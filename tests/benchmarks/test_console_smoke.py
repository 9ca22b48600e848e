"""The console benchmark's small form runs in CI: every page of both admins answers 200 with
20,000 rows of history. Speed is not asserted (the machine is shared); the 1M-row table is in
docs/console.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.smoke import run_smoke


@pytest.mark.slow
def test_console_smoke_run_times_every_page_of_both_admins(tmp_path: Path) -> None:
    run_smoke("tests.benchmarks.console", tmp_path, timeout=300)
    text = (tmp_path / "console.md").read_text()
    assert "## Django admin" in text and "## Flask-Admin" in text
    rows = [line for line in text.splitlines() if line.startswith("| `/admin/")]
    assert len(rows) >= 19
