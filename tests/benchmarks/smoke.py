"""Running a benchmark's small form as CI does: its own process, none of the tests' settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_smoke(
    module: str, out: Path, timeout: float, *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> --smoke --out <out> <args>`; fails the test with its output if it
    fails."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTRELAY_", "BOTSI_", "VTCDN_", "INFOBIP_", "GRAVITYFIELD_"))
        # the benchmark's own database and Redis DB numbers are not the worker's settings
        or k.startswith(("EVENTRELAY_BENCH_", "EVENTRELAY_TEST_PG_ADMIN_URL"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
