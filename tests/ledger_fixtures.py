"""Fixtures and helpers for the tests that open a `Ledger` on SQLite and on the real PostgreSQL server.

`tests/conftest.py` imports the fixtures (`pg_url`, `url`, `clock`, `ledger`), so test modules ask for them by
name and import only the helper `numbers` (the `clock` is a `tests.clocks.FakeWallClock`). PostgreSQL tests
share one throwaway schema per session (dropped at the end) and a fresh campaign id per test; they are
skipped, with the reason, only when the server is unreachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from globe_sms.ledger import Ledger
from tests.clocks import FakeWallClock

PG_URL = os.environ.get("GLOBE_SMS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def numbers(n: int, start: int = 85_290_000_000) -> list[str]:
    """`n` distinct E.164 numbers (digits only)."""
    return [str(start + i) for i in range(n)]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A URL into a throwaway schema of the test PostgreSQL database; skip if the server is unreachable."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(conninfo, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: {exc}")
    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ledger URL of the backend under test (SQLite in a not-yet-existing directory)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/ledger.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def clock() -> FakeWallClock:
    return FakeWallClock()


@pytest.fixture
def ledger(url: str, clock: FakeWallClock) -> Iterator[Ledger]:
    with Ledger.open(url, clock=clock) as opened:
        yield opened
