"""The benchmark's small form runs in CI: it must run end to end and produce every figure.
It asserts nothing about speed (the machine is shared); the full run's table is in the README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.smoke import run_smoke

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_smoke_run_produces_its_table_json_and_chart(tmp_path: Path) -> None:
    # Half the smoke's backlogs (400 and 2,000 jobs): every phase still runs and gives figures.
    result = run_smoke("tests.benchmarks.bench", tmp_path, 900, "--jobs", "200", "--drain", "1000")
    figures = json.loads((tmp_path / "bench.json").read_text())
    for section in (
        "ceiling",
        "naive_backlog",
        "eventrelay_backlog",
        "eventrelay_steady_max",
        "eventrelay_steady_half_peak",
        "enqueue",
        "drain",
        "ratios",
    ):
        assert section in figures
    assert figures["eventrelay_backlog"]["deliveries_per_second"] > 0
    assert figures["eventrelay_steady_half_peak"]["latency_p99_ms"] > 0
    assert all(value is not None for value in figures["ratios"].values())
    assert (tmp_path / "throughput.png").stat().st_size > 10_000
    assert "ratio eventrelay/naive" in result.stdout
