"""Portable SQL helpers for the statements SQLAlchemy spells differently per dialect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(conn: Connection, table: Table) -> Any:
    """INSERT with ON CONFLICT support for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"eventrelay supports PostgreSQL and SQLite, not {conn.dialect.name}")


def insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], conflict: Sequence[str]
) -> None:
    """Insert rows, skipping those whose `conflict` columns already exist."""
    if rows:
        conn.execute(
            dialect_insert(conn, table).on_conflict_do_nothing(index_elements=conflict), rows
        )
