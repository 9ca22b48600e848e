"""The project's own `worker` module (its background chores): it must not hide eventrelay's."""

from __future__ import annotations

CHORES: list[str] = []


def remember(order_number: str) -> None:
    CHORES.append(order_number)
