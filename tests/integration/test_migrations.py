"""Models and migrations agree, and migrations run on both SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    create_engine,
    insert,
    inspect,
    select,
    text,
)

from eventrelay.models.base import UTCDateTime
from eventrelay.worker.ops.migrate import alembic_config, check, downgrade, upgrade
from tests.support import TEST_DB_NAME, ensure_database


def test_there_is_a_single_migration_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    return ensure_database(f"{TEST_DB_NAME}_migrations", fresh=True)


def test_models_and_migrations_agree(empty_database: str) -> None:
    upgrade(empty_database)
    check(empty_database)  # raises if autogenerate would find any difference


def test_downgrade_and_upgrade_keep_working_with_rows_present(empty_database: str) -> None:
    upgrade(empty_database)
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (vendor, key, delivery_id, created_at, expires_at) "
                "VALUES ('botsi', 'k', :id, '2026-01-01', '2027-01-01')"
            ),
            {"id": uuid.uuid4().hex if empty_database.startswith("sqlite") else str(uuid.uuid4())},
        )
    engine.dispose()
    downgrade(empty_database, "base")
    engine = create_engine(empty_database)
    assert "deliveries" not in inspect(engine).get_table_names()
    engine.dispose()
    upgrade(empty_database)
    engine = create_engine(empty_database)
    assert {"deliveries", "delivery_attempts", "idempotency_keys", "botsi_profiles"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_cli_migrate_creates_the_schema_on_sqlite(
    tmp_path: Path, cli: object, child_env: object
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = cli("migrate", env=child_env(EVENTRELAY_DATABASE_URL=url))  # type: ignore[operator]
    assert "newest schema" in result.stdout
    engine = create_engine(url)
    assert "deliveries" in inspect(engine).get_table_names()
    engine.dispose()


def _tables_at_0002() -> tuple[Any, Any]:
    """The two tables as revision 0002 made them (only what these tests write)."""
    meta = MetaData()
    deliveries = Table(
        "deliveries",
        meta,
        Column("id", Uuid, primary_key=True),
        *(Column(c, String) for c in ("vendor", "operation", "status", "lane", "reason")),
        Column("payload", JSON),
        Column("depends_on", Uuid),
        *(Column(c, Integer) for c in ("attempts", "window_base_attempts")),
        *(
            Column(c, UTCDateTime)
            for c in (
                "window_started_at",
                "next_attempt_at",
                "created_at",
                "updated_at",
                "finished_at",
            )
        ),
    )
    attempts = Table(
        "delivery_attempts",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("delivery_id", Uuid),
        Column("number", Integer),
        Column("outcome", String),
        Column("started_at", UTCDateTime),
    )
    return deliveries, attempts


def test_the_partitioning_migration_converts_a_populated_database_and_back(
    empty_database: str,
) -> None:
    from eventrelay.models.base import LIVE, new_id, utcnow
    from eventrelay.models.counters import read_counters
    from eventrelay.models.delivery import ATTEMPTS, DELIVERIES
    from eventrelay.worker.config import Settings
    from eventrelay.worker.engine import retention

    upgrade(empty_database, "0002")
    old_d, old_a = _tables_at_0002()
    now = utcnow()
    ages = {
        "delivered_long_ago": ("delivered", timedelta(days=40)),
        "delivered_recently": ("delivered", timedelta(hours=1)),
        "suppressed": ("suppressed", timedelta(minutes=5)),
        "dead": ("dead", timedelta(days=40)),
        "pending": ("pending", None),
    }
    ids = {name: new_id() for name in ages}
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        for name, (status, age) in ages.items():
            at = now - (age or timedelta(0))
            conn.execute(
                insert(old_d).values(
                    id=ids[name],
                    vendor="botsi",
                    operation="create_profile" if name == "delivered_long_ago" else "send_event",
                    status=status,
                    lane="fresh",
                    reason=None,
                    payload={"customerUserId": name},
                    # an event that waited for the old profile
                    depends_on=ids["delivered_long_ago"] if name == "pending" else None,
                    attempts=0 if status in ("pending", "suppressed") else 2,
                    window_base_attempts=0,
                    window_started_at=at,
                    next_attempt_at=at,
                    created_at=at,
                    updated_at=at,
                    finished_at=at if age is not None else None,
                )
            )
            if status in ("delivered", "dead"):
                for number, outcome in ((1, "retry"), (2, status)):
                    conn.execute(
                        insert(old_a).values(
                            delivery_id=ids[name], number=number, outcome=outcome, started_at=at
                        )
                    )
    engine.dispose()

    upgrade(empty_database)
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(DELIVERIES.c.id, DELIVERIES.c.archived_at))}
        attempts = conn.execute(
            select(ATTEMPTS.c.delivery_id, ATTEMPTS.c.archived_at, ATTEMPTS.c.number)
        ).all()
        totals = read_counters(conn)
    assert set(rows) == set(ids.values())
    for name in ("dead", "pending"):
        assert rows[ids[name]].archived_at == LIVE, name
    for name in ("delivered_long_ago", "delivered_recently", "suppressed"):
        assert rows[ids[name]].archived_at < now, name
    assert len(attempts) == 6
    for a in attempts:  # every attempt carries its delivery's partition key
        assert a.archived_at == rows[a.delivery_id].archived_at
    assert totals[("botsi", "delivered")] == 2
    assert totals[("botsi", "suppressed")] == 1
    assert totals[("botsi", "dead")] == 1
    assert totals[("botsi", "attempts.retry")] == 3

    # The first retention pass removes what was already older than the retention, only that.
    retention.run(engine, Settings())
    retention.forget_partitions()
    with engine.connect() as conn:
        kept = set(conn.execute(select(DELIVERIES.c.id)).scalars())
    assert kept == set(ids.values()) - {ids["delivered_long_ago"]}
    engine.dispose()

    downgrade(empty_database, "0002")
    engine = create_engine(empty_database)
    columns = {c["name"] for c in inspect(engine).get_columns("deliveries")}
    assert "archived_at" not in columns
    with engine.connect() as conn:
        back = dict(conn.execute(select(old_d.c.id, old_d.c.depends_on)).all())
        attempt_count = conn.execute(text("SELECT count(*) FROM delivery_attempts")).scalar_one()
    assert set(back) == kept
    assert back[ids["pending"]] is None  # its dependency was removed: waited for no longer
    assert attempt_count == 4
    engine.dispose()
    upgrade(empty_database)


def test_the_sec_migration_scrubs_gravityfield_rows_and_downgrades(empty_database: str) -> None:
    # Rows stored before the Gravity Field fix may hold the site's key in their payload.
    from eventrelay.models.base import LIVE, new_id, utcnow
    from eventrelay.models.delivery import DELIVERIES

    upgrade(empty_database, "0003")
    now = utcnow()
    stored = {
        "old_gf": ("gravityfield", {"sec": "SITE-KEY-1", "user": {"uid": "u"}, "data": []}),
        "old_gf_null": ("gravityfield", {"sec": None, "user": {"uid": "u"}, "data": []}),
        "new_gf": ("gravityfield", {"user": {"uid": "u"}, "data": []}),
        "other": ("vtcdn", {"user": {"_id": "u"}, "event": {"update": {}}, "sec": "its own"}),
    }
    ids = {name: new_id() for name in stored}
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        for name, (vendor, payload) in stored.items():
            conn.execute(
                insert(DELIVERIES).values(
                    id=ids[name],
                    archived_at=LIVE if name != "old_gf" else now,  # one in history
                    vendor=vendor,
                    operation="send_event",
                    payload=payload,
                    status="pending" if name != "old_gf" else "delivered",
                    lane="fresh",
                    attempts=0,
                    window_started_at=now,
                    window_base_attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    engine.dispose()

    def payloads() -> dict[str, Any]:
        engine = create_engine(empty_database)
        with engine.connect() as conn:
            rows = dict(conn.execute(select(DELIVERIES.c.id, DELIVERIES.c.payload)).all())
        engine.dispose()
        return {name: rows[i] for name, i in ids.items()}

    upgrade(empty_database, "0004")
    after = payloads()
    assert after["old_gf"] == {"user": {"uid": "u"}, "data": []}
    assert after["old_gf_null"] == {"user": {"uid": "u"}, "data": []}
    assert after["new_gf"] == stored["new_gf"][1]
    assert after["other"] == stored["other"][1]  # another vendor's own field
    downgrade(empty_database, "0003")
    assert payloads() == after  # a removed secret is never put back
    upgrade(empty_database)
    assert payloads() == after


def test_the_trace_context_migration_reaches_every_partition_and_downgrades(
    empty_database: str,
) -> None:
    from eventrelay.models.base import LIVE, new_id, utcnow
    from eventrelay.models.delivery import DELIVERIES

    pg = empty_database.startswith("postgresql")
    upgrade(empty_database, "0004")
    now = utcnow()
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        for archived_at, status in ((LIVE, "pending"), (now, "delivered")):
            conn.execute(
                text(
                    "INSERT INTO deliveries (id, archived_at, vendor, operation, payload, status, "
                    "lane, attempts, window_started_at, window_base_attempts, next_attempt_at, "
                    "created_at, updated_at) VALUES (:id, :at, 'vtcdn', 'send_event', '{}', "
                    ":status, 'fresh', 0, :now, 0, :now, :now, :now)"
                ).bindparams(
                    id=new_id() if pg else new_id().hex, at=archived_at, status=status, now=now
                )
            )
        if pg:  # a history partition made but not attached: maintenance cut short
            conn.execute(
                text(
                    "CREATE TABLE deliveries_p20260101_000000 "
                    "(LIKE deliveries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                )
            )
    engine.dispose()

    upgrade(empty_database)

    engine = create_engine(empty_database)
    with engine.begin() as conn:
        assert [r.trace_context for r in conn.execute(select(DELIVERIES.c.trace_context))] == [
            None,
            None,
        ]
        if pg:
            conn.execute(
                text(
                    "ALTER TABLE deliveries ATTACH PARTITION deliveries_p20260101_000000 "
                    "FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-01-02 00:00+00')"
                )
            )
            lacking = conn.execute(
                text(
                    "SELECT c.relname FROM pg_class c WHERE c.relkind IN ('r', 'p') "
                    "AND c.relname LIKE 'deliveries%' AND NOT EXISTS (SELECT 1 FROM "
                    "pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'trace_context')"
                )
            ).all()
            assert lacking == []
    engine.dispose()
    downgrade(empty_database, "0004")
    engine = create_engine(empty_database)
    assert "trace_context" not in {c["name"] for c in inspect(engine).get_columns("deliveries")}
    engine.dispose()
    upgrade(empty_database)
    check(empty_database)
