"""Portable SQL helpers for the statements SQLAlchemy spells differently per dialect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, Table, select
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


def pick_locked(conn: Connection, query: Select[Any], name: str = "picked") -> Select[Any]:
    """The rows `query` picks (a SELECT of ids with a LIMIT), evaluated once and, on
    PostgreSQL, locked with SKIP LOCKED: use as `column.in_(pick_locked(...))`.

    Why not a plain `IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`: PostgreSQL may rescan
    that subquery for each row the outer UPDATE visits, and every rescan skips the rows the
    statement itself has just locked, so it picks new ones: a claim limited to n rows can take
    every due row (docs/decisions.md). A MATERIALIZED CTE is evaluated exactly once.
    """
    if conn.dialect.name != "postgresql":
        return query
    picked = query.with_for_update(skip_locked=True).cte(name)
    picked = picked.prefix_with("MATERIALIZED", dialect="postgresql")
    return select(*picked.c)
