"""The fault suite prints one line per scenario at the end of the run, whatever -q/-s say."""

from __future__ import annotations

from typing import Any

REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("eventrelay fault scenarios")
        for line in REPORT:
            terminalreporter.write_line(line)
