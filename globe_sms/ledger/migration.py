"""The ledger database's schema version: read it, and bring the database to this globe-sms's head revision.

Alembic manages every table of the ledger database (the send ledger's and the receipt store's) in one history
kept in `globe_sms/ledger/migrations/versions/` (docs/ledger-migrations.md says how to add a revision). No
`alembic.ini` is read: the script directory is this package's; the migrations run on a connection passed in.

Opening a ledger (`LedgerDatabase`) runs `prepare_schema` in one transaction under the DDL lock (PostgreSQL:
an advisory lock; SQLite: the `BEGIN IMMEDIATE` write lock), so that processes opening at once do not race:

| the database                                      | state          | opening it                           |
|---------------------------------------------------|----------------|--------------------------------------|
| no globe-sms table                                | `new`          | created at head                      |
| globe-sms tables, no version table, the ones      | `unversioned`  | the baseline tables it lacks are     |
| globe-sms created before migrations               |                | created, stamped 0001, then `behind` |
| the same, but tables unlike those                 | `unrecognised` | `LedgerSchemaUnrecognised`           |
| an older revision                                 | `behind`       | SQLite: upgraded; PostgreSQL:        |
|                                                   |                | `LedgerSchemaBehind` names the fix   |
| this globe-sms's head                             | `current`      | nothing to do                        |
| a revision this globe-sms does not know           | `ahead`        | `LedgerSchemaAhead`                  |

A server database is shared by every worker and run that uses it, some perhaps on an older globe-sms still
running: upgrading it is the operator's decision (`globe-sms ledger upgrade URL`), taken after a backup. A
SQLite ledger is a file of one machine, so it is upgraded in place. An error leaves the database as it was.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, MetaData, inspect, make_url, text

from globe_sms.ledger.backends import make_engine
from globe_sms.ledger.errors import LedgerSchemaAhead, LedgerSchemaBehind, LedgerSchemaUnrecognised
from globe_sms.ledger.migrations.baseline import REVISION as BASELINE_REVISION
from globe_sms.ledger.migrations.baseline import TABLES as BASELINE_TABLES
from globe_sms.ledger.migrations.baseline import baseline_metadata

SCRIPT_LOCATION = Path(__file__).with_name("migrations")
VERSION_TABLE = "globe_sms_ledger_version"  # not `alembic_version`: the database may hold another app's
_PG_DDL_LOCK = 0x6C6564676572  # advisory lock key ("ledger"): one schema change at a time across processes


class SchemaState(StrEnum):
    """Where a ledger database stands against this globe-sms's migrations (the module docstring's table)."""

    NEW = "new"
    UNVERSIONED = "unversioned"
    UNRECOGNISED = "unrecognised"
    BEHIND = "behind"
    CURRENT = "current"
    AHEAD = "ahead"


@dataclass(frozen=True)
class SchemaStatus:
    """A ledger database's schema version, read in one transaction.

    Attributes:
        state: see `SchemaState`.
        current: the database's revision(s); empty when it has none (`new`, `unversioned`, `unrecognised`).
        head: the newest revision this globe-sms knows.
        pending: the revisions an upgrade applies, oldest first, as `"<id> <message>"` (an `unversioned`
            database is stamped as the baseline first: its pending revisions are those after it).
        differences: for `unrecognised`, what differs from the baseline, one line each.
    """

    state: SchemaState
    current: tuple[str, ...]
    head: str
    pending: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


def migration_config(connection: Connection | None = None) -> Config:
    """An Alembic `Config` for the ledger's script directory (no ini file); `env.py` runs on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The ledger's revisions (read once per process)."""
    return ScriptDirectory.from_config(migration_config())


def head_revision() -> str:
    """The newest revision; the history is linear (a test checks it), so there is one."""
    return script_directory().get_current_head() or ""


def read_status(conn: Connection) -> SchemaStatus:
    """The schema version of the database behind `conn`; changes nothing."""
    script = script_directory()
    head = head_revision()
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    current = tuple(context.get_current_heads())
    if current:
        known = {rev.revision for rev in script.walk_revisions()}
        if not set(current) <= known:
            return SchemaStatus(SchemaState.AHEAD, current, head)
        if current == (head,):
            return SchemaStatus(SchemaState.CURRENT, current, head)
        return SchemaStatus(SchemaState.BEHIND, current, head, _pending(current))
    present = set(inspect(conn).get_table_names()) & set(BASELINE_TABLES)
    if not present:
        return SchemaStatus(SchemaState.NEW, (), head, _pending(()))
    differences = [_describe(diff) for diff in _legacy_differences(conn) if not _tolerated(diff)]
    if differences:
        return SchemaStatus(SchemaState.UNRECOGNISED, (), head, differences=differences)
    return SchemaStatus(SchemaState.UNVERSIONED, (), head, _pending((BASELINE_REVISION,)))


def prepare_schema(conn: Connection, *, upgrade: bool) -> SchemaStatus:
    """Bring the database to head in `conn`'s transaction, under the DDL lock; returns the status found.

    Args:
        conn: a connection inside a write transaction (on SQLite a `BEGIN IMMEDIATE` one); the caller commits.
        upgrade: also apply pending revisions to a database at an older revision; else that is an error.
            A new database is always created, and a pre-migration one always stamped.

    Raises:
        LedgerSchemaAhead: a newer globe-sms migrated the database.
        LedgerSchemaBehind: the database is at an older revision and `upgrade` is false.
        LedgerSchemaUnrecognised: globe-sms tables without a revision, unlike those globe-sms created.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_DDL_LOCK})
    status = read_status(conn)
    url = conn.engine.url.render_as_string(hide_password=True)
    if status.state is SchemaState.CURRENT:
        return status
    if status.state is SchemaState.AHEAD:
        raise LedgerSchemaAhead(url, status.current, status.head)
    if status.state is SchemaState.UNRECOGNISED:
        raise LedgerSchemaUnrecognised(url, status.differences)
    config = migration_config(conn)
    if status.state is SchemaState.UNVERSIONED:
        _complete_baseline(conn)
        command.stamp(config, BASELINE_REVISION)
        current: tuple[str, ...] = (BASELINE_REVISION,)
    else:
        current = status.current
    pending = _pending(current)
    if status.state is not SchemaState.NEW and pending and not upgrade:
        raise LedgerSchemaBehind(url, current, status.head, pending)
    if pending or not current:
        command.upgrade(config, "head")
    return status


def _pending(current: Sequence[str]) -> list[str]:
    """`"<id> <message>"` of each revision from `current` (exclusive) to head, oldest first."""
    steps = list(script_directory().iterate_revisions("heads", tuple(current) or "base"))  # all known
    return [f"{step.revision} {step.doc}" for step in reversed(steps) if step.revision not in current]


def _legacy_differences(conn: Connection) -> list[Any]:
    """Alembic's comparison of the database's globe-sms tables with the frozen pre-migration schema."""
    context = MigrationContext.configure(
        conn,
        opts={
            "version_table": VERSION_TABLE,
            "compare_type": True,
            "include_name": lambda name, kind, _parent: kind != "table" or name in BASELINE_TABLES,
        },
    )
    return list(compare_metadata(context, baseline_metadata()))


def _tolerated(diff: Any) -> bool:
    """What an old globe-sms database may lack (a table or index the old code created on first use) or add."""
    return isinstance(diff, tuple) and diff[0] in ("add_table", "add_index", "remove_index")


def _complete_baseline(conn: Connection) -> None:
    """Create the baseline tables and indexes an old database lacks, as the old code did on opening it."""
    metadata: MetaData = baseline_metadata()
    existing = set(inspect(conn).get_table_names())
    metadata.create_all(conn, checkfirst=True)
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        have = {index["name"] for index in inspect(conn).get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in have:
                index.create(conn)


def _describe(diff: Any) -> str:
    """One line for a difference `compare_metadata` found (its tuples are `(kind, ...details)`)."""
    if isinstance(diff, list):  # modify_type / modify_nullable / ...: [(kind, schema, table, column, ...)]
        return "; ".join(_describe(item) for item in diff)
    kind, *rest = diff
    if kind in ("add_table", "remove_table"):
        return f"{'missing' if kind == 'add_table' else 'unexpected'} table {rest[0].name}"
    if kind in ("add_column", "remove_column"):
        _schema, table, column = rest[:3]
        return f"{'missing' if kind == 'add_column' else 'unexpected'} column {table}.{column.name}"
    if kind.startswith("modify_"):
        _schema, table, column, _info, old, new = rest[:6]
        return f"{table}.{column}: {kind[7:]} is {old!r}, expected {new!r}"
    if kind in ("add_constraint", "remove_constraint"):
        constraint = rest[0]
        what = "missing" if kind == "add_constraint" else "unexpected"
        return f"{what} constraint {constraint.name} on {constraint.table.name}"
    return f"{kind} {getattr(rest[0], 'name', rest[0]) if rest else ''}".strip()


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (None: in memory, or not SQLite)."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or "mode=memory" in database:
        return None
    return Path(database.removeprefix("file:").split("?")[0]).expanduser()


def ledger_status(url: str) -> SchemaStatus:
    """The schema version of the ledger at `url`, read without changing anything (nor creating a SQLite file).

    Raises:
        sqlalchemy.exc.ArgumentError: `url` is not a SQLAlchemy URL.
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    path = _sqlite_file(make_url(url))
    if path is not None and not path.exists():
        return SchemaStatus(SchemaState.NEW, (), head_revision(), _pending(()))
    engine = make_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            return read_status(conn)
    finally:
        engine.dispose()


def upgrade_ledger(url: str) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the ledger at `url` to head, whatever its backend, under the DDL lock; `(before, after)`.

    Raises:
        LedgerSchemaAhead: a newer globe-sms migrated it.
        LedgerSchemaUnrecognised: globe-sms tables without a revision, unlike those globe-sms created.
        sqlalchemy.exc.ArgumentError: `url` is not a SQLAlchemy URL.
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(ledger_write=True)
            with conn.begin():
                before = prepare_schema(conn, upgrade=True)
            with conn.begin():
                after = read_status(conn)
        return before, after
    finally:
        engine.dispose()
