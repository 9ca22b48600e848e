"""The embedded SQLite database keeps what it committed, even through a power loss."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from eventrelay.models.session import make_engine

SYNCHRONOUS_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_a_commit_to_the_embedded_sqlite_database_is_on_disk_before_it_returns(
    tmp_path: Path,
) -> None:
    # With WAL, synchronous=NORMAL may lose the last commits on power loss (SQLite's docs,
    # "PRAGMA synchronous"); a job `enqueue` said was stored must stay stored.
    engine = make_engine(f"sqlite:///{tmp_path / 'eventrelay.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == SYNCHRONOUS_FULL
    finally:
        engine.dispose()
