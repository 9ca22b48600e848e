"""`eventrelay demo` on embedded defaults: SQLite and a broker it starts or needs no server for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _demo_env(tmp_path: Path, path: str | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTRELAY_", "BOTSI_", "VTCDN_", "INFOBIP_", "GRAVITYFIELD_"))
    }
    env["COLUMNS"] = "200"
    if path is not None:
        env["PATH"] = path
    return env


@pytest.mark.parametrize("broker", ["private redis-server", "folder"])
def test_demo_runs_the_whole_pipeline_and_stops_everything_it_started(
    tmp_path: Path, broker: str
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = _demo_env(tmp_path, path=str(empty_bin) if broker == "folder" else None)
    result = subprocess.run(
        [sys.executable, "-m", "eventrelay", "demo", "--users", "4", "--timeout", "90"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert ("private redis-server" in out) == (broker == "private redis-server")
    assert "sqlite" in out
    assert "2 duplicates recognised" in out
    assert re.search(r"vtcdn\s+│\s+0 │\s+0 │\s+\d+ │\s+1 │\s+1 │", out)  # one dead, one suppressed
    assert "duplicate sends seen by the vendors: 0" in out
    assert "User not found" in out  # the dead letter is listed with the vendor's reason
    for started in (
        "-n demo@%h",
        "scheduler --interval 0.5",
        "redis-server --port .* --dir /tmp/eventrelay-demo-",
    ):
        leftovers = subprocess.run(["pgrep", "-f", started], capture_output=True)
        assert leftovers.stdout == b"", f"the demo left {started!r} running"
    assert not list(tmp_path.glob("*.db"))  # embedded state lived in the demo's own temp dir
