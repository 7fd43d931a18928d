"""Unit tests of where a campaign's files live: `globe_sms.paths` and `Campaign.resolve_paths`.

What a user does with them (the same campaign file run from two directories, a campaign without a file, the
spools of crashed runs) is in tests/integration/test_campaign_paths.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_paths.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from globe_sms.campaign import Campaign
from globe_sms.paths import (
    data_folder,
    default_data_dir,
    resolve_ledger_file,
    sqlite_file,
)

BASE = Path("/srv/campaigns")


def campaign(**changes: object) -> Campaign:
    data: dict[str, object] = {
        "campaign_id": "spring-sale",
        "source": {"path": "lists/recipients-*.csv"},
        "template": "Hi {first_name}",
        "sender_id": "GlobeSMS",
        "price_table": "prices.csv",
        "validation": {"suppression_file": "../opt-outs.txt"},
        "ledger": "sqlite:///state/ledger.db",
        "data_dir": ".data",
    }
    return Campaign.parse({**data, **changes})


class TestLedgerUrl:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("sqlite:///ledger.db", "sqlite:////srv/campaigns/ledger.db"),
            ("sqlite:///state/ledger.db", "sqlite:////srv/campaigns/state/ledger.db"),
            ("sqlite:////var/lib/ledger.db", "sqlite:////var/lib/ledger.db"),
            ("sqlite://", "sqlite://"),
            ("sqlite:///:memory:", "sqlite:///:memory:"),
            ("sqlite:///file:ledger?mode=memory&uri=true", "sqlite:///file:ledger?mode=memory&uri=true"),
            ("postgresql+psycopg://app@db:5432/sms", "postgresql+psycopg://app@db:5432/sms"),
            ("postgresql://app:pw@db/sms", "postgresql://app:pw@db/sms"),
            ("not a url", "not a url"),
        ],
    )
    def test_only_a_relative_sqlite_file_moves(self, url: str, expected: str) -> None:
        assert resolve_ledger_file(url, BASE) == expected
        assert resolve_ledger_file(expected, BASE) == expected

    def test_the_data_folder_is_data_dir_else_beside_a_sqlite_ledger_else_the_default(self) -> None:
        assert data_folder("sqlite:////var/lib/g/ledger.db", "/tmp/x") == Path("/tmp/x")
        assert data_folder("sqlite:////var/lib/g/ledger.db") == Path("/var/lib/g")
        assert data_folder("postgresql://app@db/sms") == default_data_dir()
        assert data_folder("sqlite://") == default_data_dir()
        assert sqlite_file("sqlite:///a/b.db") == Path("a/b.db") and sqlite_file("sqlite://") is None
