"""Portable SQL helpers for the statements SQLAlchemy spells differently per dialect."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Select, Table, Text, bindparam, cast, func, select
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine


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
    return pick_locked_in(conn.dialect.name, query, name)


def pick_locked_in(dialect: str, query: Select[Any], name: str = "picked") -> Select[Any]:
    """`pick_locked` for a statement built once per dialect (`dialect`: its name)."""
    if dialect != "postgresql":
        return query
    picked = query.with_for_update(skip_locked=True).cte(name)
    picked = picked.prefix_with("MATERIALIZED", dialect="postgresql")
    return select(*picked.c)


class BatchRows:
    """PostgreSQL: a batch of rows as a table to join, update from or insert from, sent as one
    JSON parameter (`json_to_recordset(:name_rows) AS name(a type, b type, ...)`).

    Why: a statement over a batch is then the same text whatever the batch's size, so it is
    built once (`table` in a statement kept by the caller), compiled once, and prepared on the
    server by psycopg, and the rows travel as one parameter (`values(rows)`). An `IN` list of
    100 pairs is a new, long statement every time (parsed by psycopg and planned by PostgreSQL
    each time); an executemany is a statement per row; one array per column costs psycopg a
    Python call per element to adapt. JSON is encoded in C (ids and times as their text, which
    PostgreSQL reads back exactly).
    """

    def __init__(self, name: str, columns: Sequence[tuple[str, TypeEngine[Any]]]) -> None:
        self.parameter = f"{name}_rows"
        self.names = [column for column, _ in columns]
        document = cast(bindparam(self.parameter, type_=Text()), postgresql.JSON)
        table = func.json_to_recordset(document).table_valued(
            *(sql_column(column, type_) for column, type_ in columns)
        )
        self.table: TableValuedAlias = table.render_derived(name=name, with_types=True)

    def values(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """The statement's parameter for `rows` (each a column name -> value mapping)."""
        return {self.parameter: json.dumps(list(rows), default=str, ensure_ascii=False)}
