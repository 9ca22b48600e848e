"""The latency sweep's small form runs in CI: every contender at 0 and 100 ms produces its
figures. It asserts nothing about speed beyond "latency is hidden at all" (the machine is
shared); the full sweep's table is in the README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.smoke import run_smoke

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_latency_sweep_smoke_run_produces_its_table_json_and_chart(tmp_path: Path) -> None:
    result = run_smoke("tests.benchmarks.latency", tmp_path, timeout=600)
    figures = json.loads((tmp_path / "latency.json").read_text())
    by_latency = {r["latency_ms"]: r for r in figures["rows"]}
    assert set(by_latency) == {0, 100}
    for row in by_latency.values():
        for contender in ("eventrelay", "plain_prefork_c2", "plain_threads_c64"):
            assert row[contender]["deliveries_per_second"] > 0
    # At 100 ms one request at a time per process would give 20/s: more means requests
    # really are kept in flight (a margin far below what the full sweep measures).
    assert by_latency[100]["eventrelay"]["in_flight"] > 4
    assert (tmp_path / "latency.png").stat().st_size > 10_000
    assert "ratio er_100_over_threads64_100" in result.stdout
