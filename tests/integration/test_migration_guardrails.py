"""Revision 0003 (guardrails) upgrades a ledger with data in it, on SQLite and PostgreSQL, and downgrades.

Built at the revision 0003 follows (read from the script, not hard-coded: the lead may re-chain it), filled
as the old code wrote rows (`fill_old_ledger`), then brought to head the way each backend is (SQLite: opened;
PostgreSQL: `upgrade_ledger`, what `globe-sms ledger upgrade` runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command

from globe_sms.ledger import Ledger, metadata, migration
from globe_sms.ledger.backends import make_engine
from globe_sms.ledger.caps import sent_counts, skip
from globe_sms.ledger.volume import reserve
from globe_sms.receipts.store import delivery_metadata
from tests.clocks import T0
from tests.integration.test_ledger_migrations import (
    assert_old_rows_intact,
    columns,
    fill_old_ledger,
    fresh_pg_schema,
    schema_diff,
    versions,
)
from tests.ledger_fixtures import numbers

REVISION = "0003"


def before_revision() -> str:
    down = migration.script_directory().get_revision(REVISION).down_revision
    assert isinstance(down, str)
    return down


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger at the revision before 0003, with the old code's rows in it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/ledger.db"
        yield from _built(url)
        return
    with fresh_pg_schema() as url:
        yield from _built(url)


def _built(url: str) -> Iterator[str]:
    engine = make_engine(url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(migration.migration_config(conn), before_revision())
    engine.dispose()
    fill_old_ledger(url)
    yield url


def test_upgrade_keeps_the_rows_and_adds_the_guardrails(old_url: str) -> None:
    assert "message_type" not in columns(old_url, "send_ledger")
    if old_url.startswith("sqlite"):
        Ledger(old_url).close()  # a SQLite ledger upgrades when opened
    else:
        migration.upgrade_ledger(old_url)
    assert versions(old_url) == [migration.head_revision()]
    assert schema_diff(old_url, metadata, delivery_metadata) == []
    with Ledger(old_url, clock=lambda: T0.replace(hour=12)) as ledger:
        assert_old_rows_intact(ledger)
        rows = ledger.rows("old", columns=["message_type", "phone_key"])
        assert rows["message_type"].to_list() == [None] * 3 and rows["phone_key"].to_list() == [None] * 3
        # the old code's accepted row has no submitted_at: outside every window, it counts against no cap
        assert sent_counts(ledger, "new", numbers(1), T0.replace(hour=0), ["MKT"]) == {}
        assert skip(ledger, "old", numbers(3)[1:2], "frequency_cap") == 1
        assert ledger.counts("old")["skipped"] == 1
        assert reserve(ledger, "acct", 10, "UTC", 5, None).granted == 5


def test_downgrade_turns_skipped_rows_into_failed(old_url: str) -> None:
    migration.upgrade_ledger(old_url)
    with Ledger(old_url) as ledger:
        skip(ledger, "old", numbers(3)[1:2], "frequency_cap")
    engine = make_engine(old_url)
    with engine.connect() as conn, conn.begin():
        command.downgrade(migration.migration_config(conn), before_revision())
    engine.dispose()
    assert versions(old_url) == [before_revision()]
    assert "message_type" not in columns(old_url, "send_ledger")
    engine = make_engine(old_url)
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            f"SELECT status, error_code FROM send_ledger WHERE phone = '{numbers(3)[1]}'"
        ).all()
        tables = conn.exec_driver_sql(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_name = 'account_volume' AND table_schema = current_schema()"
            if engine.dialect.name == "postgresql"
            else "SELECT count(*) FROM sqlite_master WHERE name = 'account_volume'"
        ).scalar()
    engine.dispose()
    assert [tuple(row) for row in found] == [("failed", "frequency_cap")] and tables == 0
