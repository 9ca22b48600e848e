"""The history benchmark's small form runs in CI: every operation runs on both databases, and
the statements of the hot path read no history partition. Speed is not asserted beyond a wide
margin (the machine is shared); the full run's table is in docs/history.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.history import OPERATIONS
from tests.benchmarks.smoke import run_smoke

# Only a history that a statement must read by design: the oldest row kept (an index's first
# entry per partition, retention.describe) and the oldest finished one (the first partition).
READS_HISTORY_BY_DESIGN = ("ORDER BY deliveries.id", "deliveries.archived_at <")


@pytest.mark.slow
def test_history_smoke_run_measures_every_operation_and_reads_only_live_rows(
    tmp_path: Path,
) -> None:
    result = run_smoke("tests.benchmarks.history", tmp_path, timeout=120)
    figures = json.loads((tmp_path / "history.json").read_text())
    assert (tmp_path / "history.md").read_text().count("| ") > len(OPERATIONS)
    for phase in ("empty", "history"):
        for op in OPERATIONS:
            assert figures[phase][op]["samples"] >= 3, (phase, op)
            assert figures[phase][op]["median_ms"] > 0, (phase, op)
    assert figures["sizes_history"]["deliveries"]["partitions"] > 10
    claim = [p for p in figures["plans"] if p["operation"] == "claim"]
    # The UPDATE's own node names the parent table; every scan is of the live partition.
    assert claim and all(
        set(p["relations_read"]) <= {"deliveries", "deliveries_live"}
        and "deliveries_live" in p["relations_read"]
        for p in claim
    )
    for p in figures["plans"]:
        if p["operation"] in ("claim", "claim + record 100", "scheduler tick", "dlq list --json"):
            assert not p["history_partitions_read"], p["statement"]
        elif p["history_partitions_read"]:
            assert any(s in p["statement"] for s in READS_HISTORY_BY_DESIGN), p["statement"]
    # Only a ratio far beyond noise fails: the hot path scanning the history would be one.
    for row in figures["table"]:
        assert row["ratio"] < 10, row
    assert "claim + record 100" in result.stdout
