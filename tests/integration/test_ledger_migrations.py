"""Ledger migrations (Alembic) on SQLite and the real PostgreSQL server.

A pre-migration ledger is built from the frozen DDL globe-sms emitted before it had migrations
(`tests/fixtures/pre_alembic/*.sql`), filled with rows, and opened by today's code; a test-only revision after
head
(a column added to `send_ledger`) shows how a later revision reaches an older ledger: upgraded in place on
SQLite, refused with the command to run on PostgreSQL, then upgraded by `globe-sms ledger upgrade`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, create_engine, inspect, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from globe_sms.cli import app
from globe_sms.ledger import (
    Ledger,
    LedgerSchemaAhead,
    LedgerSchemaBehind,
    LedgerSchemaUnrecognised,
    RunOwner,
    metadata,
    migration,
)
from globe_sms.ledger.backends import make_engine
from globe_sms.paths import default_ledger_url
from globe_sms.receipts import ReceiptStore
from globe_sms.receipts.store import delivery_metadata
from tests.clocks import T0, FakeWallClock
from tests.ledger_fixtures import PG_URL, numbers

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pre_alembic"
runner = CliRunner()

def _real_head() -> str:
    """The package's own head revision (read before any test swaps the script directory)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(migration.SCRIPT_LOCATION)).get_current_head() or "0001"


HEAD = _real_head()
"""The newest real revision; the test-only sample revision comes right after it."""
SAMPLE = f"{int(HEAD) + 1:04d}"

SAMPLE_REVISION = f'''
"""Test only: send_ledger.test_tag, the way a later issue adds a column.

Revision ID: {SAMPLE}
Revises: {HEAD}
"""

import sqlalchemy as sa
from alembic import op

revision = "{SAMPLE}"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "send_ledger", sa.Column("test_tag", sa.String(16), nullable=False, server_default="default")
    )


def downgrade() -> None:
    with op.batch_alter_table("send_ledger") as batch:
        batch.drop_column("test_tag")
'''


# -- fixtures and helpers --------------------------------------------------------------------------------


@contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """A URL into a new, empty schema of the test PostgreSQL database (search_path), dropped afterwards."""
    import psycopg

    url = make_url(PG_URL)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(conninfo, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    schema = f"migrate_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of the backend under test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/data/ledger.db"
        return
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """A URL to an empty PostgreSQL schema (the policy tests of a server database)."""
    with fresh_pg_schema() as url:
        yield url


def upgrade_a_server_ledger(url: str) -> None:
    """A PostgreSQL ledger behind head is refused when opened (docs/ledger-migrations.md): the operator runs
    `globe-sms ledger upgrade` first. A SQLite ledger is upgraded when opened: nothing to do here."""
    if url.startswith("sqlite") or HEAD == "0001":
        return
    result = runner.invoke(app, ["ledger", "upgrade", url])
    assert result.exit_code == 0, result.output


def flat(output: str) -> str:
    """CLI output with the terminal's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture
def sample_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The real script directory plus the test-only revision `SAMPLE`, in place of the package's for this
    test."""
    location = tmp_path / "migrations"
    shutil.copytree(migration.SCRIPT_LOCATION, location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / f"{SAMPLE}_test_tag.py").write_text(SAMPLE_REVISION)
    monkeypatch.setattr(migration, "SCRIPT_LOCATION", location)
    migration.script_directory.cache_clear()
    yield location
    migration.script_directory.cache_clear()


def run_sql_file(url: str, *names: str, edit: Callable[[str], str] = str) -> None:
    """Run the frozen pre-migration DDL of `names` (`ledger`, `receipts`) for the URL's backend."""
    engine = make_engine(url)
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for name in names:
            script = edit((FIXTURES / f"{name}.{dialect}.sql").read_text())
            body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
            for statement in body.split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
    engine.dispose()


def fill_old_ledger(url: str) -> None:
    """Rows as the old code wrote them: a registered campaign, one accepted batch, a lease and a receipt."""
    engine = make_engine(url)
    ts = "2026-03-01 09:30:00" if engine.dialect.name == "sqlite" else "2026-03-01 09:30:00+00"
    true = "1" if engine.dialect.name == "sqlite" else "true"
    with engine.begin() as conn:
        for i, phone in enumerate(numbers(3)):
            accepted = i == 0
            status, batch, message, attempts = (
                ("'accepted'", 1, "'m-1'", 1) if accepted else ("'pending'", "NULL", "NULL", 0)
            )
            conn.exec_driver_sql(
                "INSERT INTO send_ledger (campaign_id, phone, country, status, batch_no, message_id,"
                f" attempts, created_at, updated_at) VALUES ('old', '{phone}', 'HK', {status}, {batch},"
                f" {message}, {attempts}, '{ts}', '{ts}')"
            )
        conn.exec_driver_sql(
            "INSERT INTO campaign_batches (campaign_id, batch_no, status, recipients, accepted, failed,"
            f" unknown, started_at) VALUES ('old', 1, 'accepted', 1, 1, 0, 0, '{ts}')"
        )
        if "delivery_receipts" in inspect(conn).get_table_names():
            conn.exec_driver_sql(
                "INSERT INTO delivery_receipts (message_id, campaign_id, phone, batch_no, matched,"
                " delivery_status, source, receipts, duplicates, stale, conflicts, first_seen, updated)"
                f" VALUES ('m-1', 'old', '{numbers(1)[0]}', 1, {true}, 'delivered', 'receipt', 1, 0, 0, 0,"
                f" '{ts}', '{ts}')"
            )
    engine.dispose()


def versions(url: str) -> list[str]:
    """The rows of the ledger's version table, or [] when it does not exist."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if migration.VERSION_TABLE not in inspect(conn).get_table_names():
                return []
            query = text(f"SELECT version_num FROM {migration.VERSION_TABLE}")
            return [row[0] for row in conn.execute(query)]
    finally:
        engine.dispose()


def columns(url: str, table: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [column["name"] for column in inspect(conn).get_columns(table)]
    finally:
        engine.dispose()


def schema_diff(url: str, *targets: MetaData) -> list[object]:
    """Alembic autogenerate's diff between the database and `targets` (empty: they match)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            opts = {"compare_type": True, "version_table": migration.VERSION_TABLE}
            context = MigrationContext.configure(conn, opts=opts)
            return list(compare_metadata(context, list(targets)))
    finally:
        engine.dispose()


def assert_old_rows_intact(ledger: Ledger) -> None:
    rows = ledger.rows("old").sort("phone")
    assert rows["phone"].to_list() == numbers(3)
    assert rows["status"].to_list() == ["accepted", "pending", "pending"]
    assert rows["message_id"].to_list() == ["m-1", None, None]
    assert rows["created_at"].to_list() == [T0.replace(minute=30, hour=9)] * 3
    assert ledger.pending("old") == numbers(3)[1:]
    batches = ledger.batches("old")
    assert batches["task_id"].to_list() == ["old-b00001"] and batches["accepted"].to_list() == [1]


# -- the migrations are the schema ---------------------------------------------------------------------


class TestHistory:
    def test_one_linear_history_of_numbered_revisions(self) -> None:
        """Two issues that each add a revision 0002 leave two heads: this fails until one is renumbered."""
        script = migration.script_directory()
        assert script.get_heads() == [migration.head_revision()]
        revisions = list(script.walk_revisions())
        ids = [rev.revision for rev in reversed(revisions)]
        assert ids == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
        for rev in revisions:
            assert Path(rev.path).name.startswith(f"{rev.revision}_")
            assert rev.down_revision == (None if rev.revision == "0001" else f"{int(rev.revision) - 1:04d}")

    def test_the_migrations_ship_inside_the_package(self) -> None:
        """No alembic.ini and no top-level folder: the wheel's `globe_sms` package holds everything."""
        package = Path(__file__).parents[2] / "globe_sms"
        assert migration.SCRIPT_LOCATION == package / "ledger" / "migrations"
        for name in ("env.py", "script.py.mako", "versions/0001_baseline.py"):
            assert (migration.SCRIPT_LOCATION / name).is_file()
        assert not (Path(__file__).parents[2] / "alembic.ini").exists()


class TestMigrationsMatchTheMetadata:
    def test_a_new_ledger_is_exactly_the_metadata(self, empty_url: str) -> None:
        """Autogenerate finds nothing to do: a change to schema.py without a revision fails here."""
        Ledger(empty_url).close()
        assert versions(empty_url) == [migration.head_revision()]
        assert schema_diff(empty_url, metadata, delivery_metadata) == []

    def test_the_comparison_sees_a_column_added_to_the_metadata_only(self, empty_url: str) -> None:
        """The test above can fail: a column in the code but in no revision is a difference."""
        Ledger(empty_url).close()
        changed = MetaData()
        for table in metadata.tables.values():
            table.to_metadata(changed)
        changed.tables["send_ledger"].append_column(Column("test_tag", Integer))
        diff = schema_diff(empty_url, changed, delivery_metadata)
        assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "send_ledger", "test_tag")]

    def test_a_pre_migration_ledger_upgraded_is_exactly_the_metadata(self, empty_url: str) -> None:
        run_sql_file(empty_url, "ledger")
        upgrade_a_server_ledger(empty_url)
        ReceiptStore(empty_url).close()
        assert schema_diff(empty_url, metadata, delivery_metadata) == []


# -- a ledger made before migrations ---------------------------------------------------------------------


class TestPreMigrationLedger:
    def test_opened_by_the_ledger_it_is_stamped_and_keeps_its_rows(self, empty_url: str) -> None:
        run_sql_file(empty_url, "ledger", "receipts")
        fill_old_ledger(empty_url)
        assert versions(empty_url) == []
        upgrade_a_server_ledger(empty_url)
        clock = FakeWallClock()
        with Ledger(empty_url, clock=clock) as ledger:
            assert_old_rows_intact(ledger)
            ledger.acquire_run_lease("old", RunOwner.this_process("run-1"), 60)
            ledger.mark_submitting("old", 2, numbers(3)[1:2])
            ledger.record_accepted("old", 2, {numbers(3)[1]: "m-2"}, {}, "req-2")
            assert ledger.release_run_lease("old")
        assert versions(empty_url) == [migration.head_revision()]
        with ReceiptStore(empty_url) as store:
            kept = store.get("m-1")
            assert kept is not None and kept["delivery_status"] == "delivered" and kept["matched"]

    def test_a_ledger_without_the_receipt_tables_gets_them(self, empty_url: str) -> None:
        """Made by `Ledger` alone (no receipt store yet): the tables and index the store added are created."""
        run_sql_file(empty_url, "ledger")
        fill_old_ledger(empty_url)
        upgrade_a_server_ledger(empty_url)
        with ReceiptStore(empty_url) as store:
            assert store.get("m-1") is None
        engine = make_engine(empty_url)
        with engine.connect() as conn:
            assert "delivery_receipts" in inspect(conn).get_table_names()
            indexes = {index["name"] for index in inspect(conn).get_indexes("send_ledger")}
            assert "ix_send_ledger_message_id" in indexes
        engine.dispose()
        with Ledger(empty_url) as ledger:
            assert_old_rows_intact(ledger)

    @pytest.mark.parametrize(
        ("change", "reported"),
        [
            (lambda sql: sql.replace("phone VARCHAR(15)", "phone VARCHAR(20)"), "phone: type"),
            (lambda sql: sql.replace("\tsubmitted_at DATETIME, \n", "").replace(
                "\tsubmitted_at TIMESTAMP WITH TIME ZONE, \n", ""
            ), "missing column send_ledger.submitted_at"),
            (lambda sql: sql.replace("attempts INTEGER NOT NULL", "attempts INTEGER"), "attempts: nullable"),
        ],
        ids=["type", "missing-column", "nullable"],
    )
    def test_other_differences_are_named(
        self, empty_url: str, change: Callable[[str], str], reported: str
    ) -> None:
        run_sql_file(empty_url, "ledger", edit=change)
        with pytest.raises(LedgerSchemaUnrecognised, match=reported):
            ReceiptStore(empty_url)
        assert versions(empty_url) == [] and "delivery_receipts" not in inspect_tables(empty_url)

    def test_another_apps_alembic_version_is_left_alone(self, empty_url: str) -> None:
        """The ledger may share a database (or Prefect's own) with another Alembic-managed application."""
        engine = make_engine(empty_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('3c0b2e1ab8f1')")
        engine.dispose()
        with Ledger(empty_url) as ledger:
            ledger.register("c", numbers(1))
        assert versions(empty_url) == [migration.head_revision()]
        engine = make_engine(empty_url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [
                "3c0b2e1ab8f1"
            ]
        engine.dispose()

    def test_unlike_tables_are_refused_and_left_alone(self, empty_url: str) -> None:
        """A `send_ledger` with a column globe-sms never made: not stamped, not changed."""
        run_sql_file(empty_url, "ledger")
        engine = make_engine(empty_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE send_ledger ADD COLUMN mood VARCHAR")
        engine.dispose()
        with pytest.raises(LedgerSchemaUnrecognised, match="unexpected column send_ledger.mood") as raised:
            Ledger(empty_url)
        assert "no schema revision" in str(raised.value)
        assert versions(empty_url) == []
        assert "delivery_receipts" not in inspect_tables(empty_url)

    def test_many_processes_opening_it_at_once_stamp_it_once(self, empty_url: str, tmp_path: Path) -> None:
        """Four processes open the same pre-migration ledger together: all succeed, one version row."""
        run_sql_file(empty_url, "ledger")
        fill_old_ledger(empty_url)
        script = textwrap.dedent(
            """
            import sys, time
            from pathlib import Path
            from globe_sms.ledger import Ledger
            from globe_sms.receipts import ReceiptStore
            kind, url, folder = sys.argv[1:]
            Path(folder, f"ready-{kind}-{time.monotonic_ns()}").touch()
            while not Path(folder, "go").exists():  # all imported: open together
                time.sleep(0.002)
            with (Ledger if kind == "ledger" else ReceiptStore)(url):
                pass
            """
        )
        kinds = ("ledger", "receipts", "ledger", "receipts")
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, kind, empty_url, str(tmp_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).parents[2],
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            )
            for kind in kinds
        ]
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < len(kinds) and time.monotonic() < deadline:
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outputs = [proc.communicate(timeout=120) for proc in procs]
        if not empty_url.startswith("sqlite") and HEAD != "0001":
            # a server ledger behind head: every process is refused, nothing is stamped; then the command
            assert [proc.returncode for proc in procs] == [1, 1, 1, 1], outputs
            assert all("LedgerSchemaBehind" in err for _, err in outputs) and versions(empty_url) == []
            upgrade_a_server_ledger(empty_url)
        else:
            assert [proc.returncode for proc in procs] == [0, 0, 0, 0], outputs
        assert versions(empty_url) == [migration.head_revision()]
        assert schema_diff(empty_url, metadata, delivery_metadata) == []
        with Ledger(empty_url) as ledger:
            assert_old_rows_intact(ledger)


def inspect_tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


class TestNewLedger:
    def test_threads_opening_a_new_ledger_at_once_create_it_once(self, empty_url: str) -> None:
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_it(kind: type[Ledger] | type[ReceiptStore]) -> None:
            try:
                barrier.wait()
                kind(empty_url).close()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=open_it, args=(k,)) for k in (Ledger, ReceiptStore) * 3]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert versions(empty_url) == [migration.head_revision()]
        assert schema_diff(empty_url, metadata, delivery_metadata) == []


# -- a ledger behind or ahead of this globe-sms ---------------------------------------------------------


class TestBehind:
    @pytest.mark.usefixtures("sample_revision")
    def test_an_older_sqlite_ledger_is_upgraded_when_opened_keeping_its_rows(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/ledger.db"
        run_sql_file(url, "ledger", "receipts")
        fill_old_ledger(url)
        with Ledger(url) as ledger:
            assert_old_rows_intact(ledger)
        assert versions(url) == [SAMPLE]
        engine = create_engine(url)
        with engine.connect() as conn:
            tags = conn.execute(text("SELECT DISTINCT test_tag FROM send_ledger")).scalars().all()
        engine.dispose()
        assert tags == ["default"]

    @pytest.mark.postgres
    @pytest.mark.usefixtures("sample_revision")
    def test_an_older_postgres_ledger_is_refused_until_upgraded_by_command(self, pg_empty_url: str) -> None:
        empty_url = pg_empty_url
        run_sql_file(empty_url, "ledger", "receipts")
        fill_old_ledger(empty_url)
        # a pre-migration ledger behind head: refused as a whole, not even stamped
        with pytest.raises(LedgerSchemaBehind, match=r"globe-sms ledger upgrade") as raised:
            Ledger(empty_url)
        assert f"{SAMPLE} Test only: send_ledger.test_tag" in str(raised.value)
        assert versions(empty_url) == [] and "test_tag" not in columns(empty_url, "send_ledger")

        status = runner.invoke(app, ["ledger", "status", empty_url])
        assert status.exit_code == 1, status.output
        assert "unversioned" in status.output and f"pending: {SAMPLE}" in status.output
        assert "pending: 0001" not in status.output

        result = runner.invoke(app, ["ledger", "upgrade", empty_url])
        assert result.exit_code == 0, result.output
        assert f"stamped a pre-migration ledger as 0001, now at revision {SAMPLE}" in flat(result.output)
        assert f"applied: {SAMPLE}" in result.output and "applied: 0001" not in result.output
        assert versions(empty_url) == [SAMPLE] and "test_tag" in columns(empty_url, "send_ledger")
        with Ledger(empty_url) as ledger:
            assert_old_rows_intact(ledger)
        assert runner.invoke(app, ["ledger", "status", empty_url]).exit_code == 0

    @pytest.mark.postgres
    def test_a_stamped_postgres_ledger_one_revision_behind(
        self, pg_empty_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At head (opened by this globe-sms), then globe-sms gains a revision: refused, then upgraded."""
        empty_url = pg_empty_url
        with Ledger(empty_url) as ledger:
            ledger.register("c", numbers(2))
        location = tmp_path / "migrations"
        shutil.copytree(migration.SCRIPT_LOCATION, location, ignore=shutil.ignore_patterns("__pycache__"))
        (location / "versions" / f"{SAMPLE}_test_tag.py").write_text(SAMPLE_REVISION)
        monkeypatch.setattr(migration, "SCRIPT_LOCATION", location)
        migration.script_directory.cache_clear()
        try:
            with pytest.raises(LedgerSchemaBehind, match=f"revision {HEAD}; this globe-sms needs {SAMPLE}"):
                ReceiptStore(empty_url)
            assert runner.invoke(app, ["ledger", "upgrade", empty_url]).exit_code == 0
            with Ledger(empty_url) as ledger:
                assert ledger.pending("c") == numbers(2)
            assert versions(empty_url) == [SAMPLE]
        finally:
            migration.script_directory.cache_clear()

    @pytest.mark.usefixtures("sample_revision")
    def test_a_ledger_at_0001_is_upgraded_and_the_revision_downgrades(self, tmp_path: Path) -> None:
        """The recipe of docs/ledger-migrations.md: build at the previous revision, fill, open, check."""
        url = f"sqlite:///{tmp_path}/ledger.db"
        engine = make_engine(url)
        with engine.connect() as conn, conn.begin():
            command.upgrade(migration.migration_config(conn), "0001")
        assert versions(url) == ["0001"] and "test_tag" not in columns(url, "send_ledger")
        fill_old_ledger(url)
        with Ledger(url) as ledger:
            assert_old_rows_intact(ledger)
        assert versions(url) == [SAMPLE] and "test_tag" in columns(url, "send_ledger")
        with engine.connect() as conn, conn.begin():
            command.downgrade(migration.migration_config(conn), HEAD)
        engine.dispose()
        assert versions(url) == [HEAD] and "test_tag" not in columns(url, "send_ledger")
        assert schema_diff(url, metadata, delivery_metadata) == []

    @pytest.mark.usefixtures("sample_revision")
    def test_threads_opening_an_older_sqlite_ledger_upgrade_it_once(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/ledger.db"
        run_sql_file(url, "ledger", "receipts")
        fill_old_ledger(url)
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_it() -> None:
            try:
                barrier.wait()
                Ledger(url).close()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == [] and versions(url) == [SAMPLE]
        with Ledger(url) as ledger:
            assert_old_rows_intact(ledger)


class TestSingleLaneRevision:
    """Revision 0002 (issue #16): lane, segments and carrier on the rows, lane on the batches."""

    def _at_0001_with_rows(self, url: str) -> None:
        engine = make_engine(url)
        with engine.connect() as conn, conn.begin():
            command.upgrade(migration.migration_config(conn), "0001")
        engine.dispose()
        fill_old_ledger(url)

    def _check_upgraded(self, url: str) -> None:
        with Ledger(url) as ledger:
            assert_old_rows_intact(ledger)
            rows = ledger.rows("old").sort("phone")
            # the accepted row went through the only lane there was; pending rows were never sent
            assert rows["lane"].to_list() == ["batch", None, None]
            assert rows["segments"].to_list() == [None] * 3 and rows["carrier"].to_list() == [None] * 3
            assert ledger.batches("old")["lane"].to_list() == ["batch"]
            phone = numbers(3)[1]
            from globe_sms.ledger import Lane, Status
            from globe_sms.ledger.store import SingleOutcome

            ledger.mark_submitting("old", 2, [phone], Lane.SINGLE)
            outcome = SingleOutcome(Status.ACCEPTED, "m-2", None, "req-2", 3, "CMI")
            ledger.record_singles("old", 2, {phone: outcome})
            row = ledger.rows("old").filter(pl.col("phone") == phone).row(0, named=True)
            assert (row["lane"], row["segments"], row["carrier"], row["request_id"]) == (
                "single", 3, "CMI", "req-2"
            )
            assert ledger.batches("old")["lane"].to_list() == ["batch", "single"]

    def test_a_sqlite_ledger_at_0001_is_upgraded_when_opened(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/ledger.db"
        self._at_0001_with_rows(url)
        self._check_upgraded(url)
        assert versions(url)[0] >= "0002"
        assert schema_diff(url, metadata, delivery_metadata) == []

    @pytest.mark.postgres
    def test_a_postgres_ledger_at_0001_is_upgraded_by_command(self, pg_empty_url: str) -> None:
        self._at_0001_with_rows(pg_empty_url)
        with pytest.raises(LedgerSchemaBehind, match="0002"):
            Ledger(pg_empty_url)
        result = runner.invoke(app, ["ledger", "upgrade", pg_empty_url])
        assert result.exit_code == 0, result.output
        assert "applied: 0002" in result.output
        self._check_upgraded(pg_empty_url)
        assert schema_diff(pg_empty_url, metadata, delivery_metadata) == []

    def test_0002_downgrades_to_0001(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/ledger.db"
        self._at_0001_with_rows(url)
        Ledger(url).close()
        engine = make_engine(url)
        with engine.connect() as conn, conn.begin():
            command.downgrade(migration.migration_config(conn), "0001")
        engine.dispose()
        assert versions(url) == ["0001"]
        assert {"lane", "segments", "carrier"}.isdisjoint(columns(url, "send_ledger"))
        assert "lane" not in columns(url, "campaign_batches")


class TestAhead:
    def test_a_ledger_migrated_by_a_newer_globe_sms_is_refused(self, empty_url: str) -> None:
        with Ledger(empty_url) as ledger:
            ledger.register("c", numbers(2))
        engine = make_engine(empty_url)
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {migration.VERSION_TABLE} SET version_num = '0099'"))
        engine.dispose()
        for opener in (Ledger, ReceiptStore):
            with pytest.raises(LedgerSchemaAhead, match="0099, which this globe-sms does not know"):
                opener(empty_url)
        result = runner.invoke(app, ["ledger", "upgrade", empty_url])
        assert result.exit_code == 1 and "a newer globe-sms migrated it" in flat(result.output)
        status = runner.invoke(app, ["ledger", "status", empty_url])
        assert status.exit_code == 1 and "ahead" in status.output
        assert versions(empty_url) == ["0099"]


# -- the commands ---------------------------------------------------------------------------------------


class TestCommands:
    def test_status_of_a_missing_sqlite_ledger_creates_nothing(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/nowhere/ledger.db"
        result = runner.invoke(app, ["ledger", "status", url])
        assert result.exit_code == 0, result.output
        assert "new" in result.output and not (tmp_path / "nowhere").exists()

    def test_upgrade_creates_then_has_nothing_to_do(self, empty_url: str) -> None:
        first = runner.invoke(app, ["ledger", "upgrade", empty_url])
        assert first.exit_code == 0 and f"created, now at revision {HEAD}" in flat(first.output)
        again = runner.invoke(app, ["ledger", "upgrade", empty_url])
        assert again.exit_code == 0 and "nothing to do" in again.output
        status = runner.invoke(app, ["ledger", "status", empty_url])
        assert status.exit_code == 0 and "current" in status.output

    @pytest.mark.postgres
    def test_a_password_is_never_printed(self, pg_empty_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A URL with a password is named by a secret (`env:NAME`), never given on the command line, where
        `ps` and the shell's history would keep it; either way the password is never printed."""
        with_password = make_url(pg_empty_url).set(password="s3cret-pw").render_as_string(hide_password=False)
        refused = runner.invoke(app, ["ledger", "status", with_password])
        assert refused.exit_code == 2 and "s3cret-pw" not in refused.output
        assert "env:NAME" in flat(refused.output)
        monkeypatch.setenv("LEDGER_URL", with_password)
        for name in ("upgrade", "status"):
            result = runner.invoke(app, ["ledger", name, "env:LEDGER_URL"])
            assert result.exit_code == 0, result.output
            assert "s3cret-pw" not in result.output and "***" in result.output
        unreachable = make_url(with_password).set(port=9).render_as_string(hide_password=False)
        monkeypatch.setenv("LEDGER_URL", unreachable)
        result = runner.invoke(app, ["ledger", "status", "env:LEDGER_URL"])
        assert result.exit_code == 2 and "s3cret-pw" not in result.output and "cannot open" in result.output

    def test_a_malformed_url_is_exit_2(self) -> None:
        result = runner.invoke(app, ["ledger", "status", "not a url"])
        assert result.exit_code == 2 and "not a SQLAlchemy URL" in result.output

    def test_the_subcommand_runs_as_installed(self, tmp_path: Path) -> None:
        """`globe-sms ledger upgrade` in a subprocess, as a user runs it."""
        url = f"sqlite:///{tmp_path}/ledger.db"
        done = subprocess.run(
            [Path(sys.executable).with_name("globe-sms"), "ledger", "upgrade", url],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parents[2],
        )
        assert done.returncode == 0, done.stderr
        assert versions(url) == [migration.head_revision()]


@pytest.mark.usefixtures("prefect_server")
def test_send_with_a_ledger_from_a_newer_globe_sms_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send stops before anything is read or sent, with the reason, exit status 2."""
    examples = Path(__file__).parents[2] / "examples"
    for name in ("welcome.yaml", "welcome.csv", "prices.csv"):
        shutil.copy(examples / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    url = default_ledger_url()  # the example names no ledger
    Ledger(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migration.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    result = runner.invoke(app, ["send", str(tmp_path / "welcome.yaml"), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "a newer globe-sms migrated it" in flat(result.output)

