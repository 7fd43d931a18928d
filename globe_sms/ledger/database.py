"""`LedgerDatabase`: the plumbing `Ledger` and `ReceiptStore` share over the one ledger database.

Both open the same SQLAlchemy URL, whose schema (every table of both) Alembic manages in one history: opening
creates a new database at the head revision, stamps one created before migrations, upgrades an older SQLite
ledger, and refuses an older PostgreSQL one or one a newer globe-sms migrated (`globe_sms.ledger.migration`),
all under one DDL lock so that processes starting together do not race. Both write in one transaction per
method, and stamp rows with an injected clock that must be timezone-aware.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from globe_sms.clock import utc_now
from globe_sms.ledger.backends import make_engine
from globe_sms.ledger.errors import LedgerUnreachable
from globe_sms.ledger.migration import prepare_schema
from globe_sms.ledger.url import LedgerLocation, masked_error, render_masked, resolve_ledger_url


class LedgerDatabase:
    """An engine over the ledger database, its schema brought to head on open; close it or use it in a `with`.

    Args:
        url: SQLAlchemy URL: `sqlite:///.data/ledger.db` (parent directories are created), `sqlite://` (in
            memory, one shared connection) or `postgresql+psycopg://user@host/db`; or a `SecretRef` naming
            where the whole URL is kept (`globe_sms.ledger.url`).
        clock: returns the current aware datetime; tests inject a fixed one.

    Raises:
        LedgerUrlError: the URL is malformed or its secret is not found.
        LedgerUnreachable: the database cannot be reached or opened (the URL is shown masked).
        LedgerSchemaError: the schema is behind (PostgreSQL: run `globe-sms ledger upgrade`), ahead (a newer
            globe-sms migrated it) or not globe-sms's; nothing was changed.
    """

    def __init__(self, url: LedgerLocation, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        resolved = resolve_ledger_url(url)  # the one place a ledger URL's password is read
        try:
            self._engine = make_engine(resolved)
        except OSError as exc:  # SQLite: the folder cannot be created
            raise LedgerUnreachable(f"cannot open the ledger {render_masked(resolved)}: {exc}") from None
        self._dialect = self._engine.dialect.name
        try:
            with self._write() as conn:
                prepare_schema(conn, upgrade=self._dialect == "sqlite")
        except (OperationalError, InterfaceError) as exc:  # not reachable, refused, or not a database
            self._engine.dispose()
            raise LedgerUnreachable(
                f"cannot open the ledger {render_masked(resolved)}: {masked_error(exc, resolved)}"
            ) from None
        except BaseException:
            self._engine.dispose()
            raise

    @classmethod
    def open(cls, url: LedgerLocation, *, clock: Callable[[], datetime] = utc_now) -> Self:
        """Open the store at `url`; same as the constructor."""
        return cls(url, clock=clock)

    def close(self) -> None:
        """Dispose of the engine and its pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._engine.url.render_as_string(hide_password=True)!r})"

    def now(self) -> datetime:
        """The store's clock, as aware UTC.

        Raises:
            ValueError: the clock returned a naive datetime (it would be stored as local time).
        """
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(f"the {type(self).__name__} clock returned a naive datetime")
        return now.astimezone(UTC)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._engine.connect() as conn:
            conn.execution_options(ledger_write=True)
            with conn.begin():
                yield conn
