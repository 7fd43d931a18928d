"""What differs between the ledger database's backends (SQLite, PostgreSQL): the engine's set-up, and rows
passed as one parameter (a JSON text for SQLite, arrays for PostgreSQL).

Shared by everything that stores in the ledger database: the ledger (`globe_sms.ledger.store`), its
migrations, and the receipt store (`globe_sms.receipts.store`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    String,
    Subquery,
    create_engine,
    event,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; BEGIN is emitted by `_sqlite_on_begin`, not by sqlite3."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    # Turning a new database to WAL takes an exclusive lock and fails at once ("database is locked", no
    # busy wait) while another connection opens the same new file: retry within the busy timeout.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    # FULL, not NORMAL: a `submitting` commit lost to a power cut could let a number be sent twice.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    """Writers take the write lock up front: a deferred read-then-write can hit SQLITE_BUSY at once."""
    immediate = conn.get_execution_options().get("ledger_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


PG_CONNECT_TIMEOUT_SECONDS = 10  # libpq waits for the OS's TCP timeout (minutes) without one


def make_engine(url: str | URL) -> Engine:
    """An engine for `url`; SQLite gets its parent directory, WAL, busy_timeout and IMMEDIATE writes.

    A bare `postgresql://` URL uses psycopg 3, with a connect timeout unless the URL sets `connect_timeout`.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # SQLAlchemy would pick psycopg2, which is not installed
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS}
        return create_engine(parsed, pool_pre_ping=True, connect_args=timeout)
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in database:
        # One shared connection, or each pooled connection would open its own empty database.
        engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def values_table(dialect: str, names: Sequence[str], rows: Sequence[Sequence[str | None]]) -> Subquery:
    """`rows` as a derived table with string columns `names` plus `ord` (the row's position).

    One bound parameter per column instead of one per value: a 1,000-number batch is one statement,
    with no parameter limit and no per-row round trip.
    """
    if dialect == "sqlite":
        each = func.json_each(literal(json.dumps(rows), String)).table_valued("key", "value")
        columns = [
            func.json_extract(each.c.value, f"$[{i}]", type_=String).label(n) for i, n in enumerate(names)
        ]
        return select(each.c.key.label("ord"), *columns).subquery("src")
    arrays = [literal([row[i] for row in rows], ARRAY(String)) for i in range(len(names))]
    unnest = func.unnest(*arrays).table_valued(*names, with_ordinality="ord").render_derived(name="u")
    return select(unnest.c.ord, *(unnest.c[name] for name in names)).subquery("src")
