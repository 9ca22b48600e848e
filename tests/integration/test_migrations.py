"""Models and migrations agree, and migrations run on both SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from eventrelay.worker.ops.migrate import alembic_config, check, downgrade, upgrade
from tests.support import ensure_database


def test_there_is_a_single_migration_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    return ensure_database("eventrelay_test_migrations", fresh=True)


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
