"""A PostgreSQL query read through ADBC as Arrow record batches: flat memory, about 2M rows/s on this machine.

The ADBC driver streams the result in record batches of a few MB (`fetch_record_batch`); each becomes a
polars frame (zero-copy), is cast to text, and is cut into `batch_rows` slices. `validation-notes.md` §6 has
the measurements behind the choice (connectorx and SQLAlchemy were slower, and only ADBC kept memory flat).

The connection URL comes from the secret the source names. It is unwrapped only to connect, and every error
passes through `mask_secrets`: libpq quotes parts of a URL it cannot use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import polars as pl
from pydantic import SecretStr

from globe_sms.sources import PostgresSource
from tasks.sources.errors import SourceQueryError, missing_phone_column
from tasks.sources.secrets import mask_secrets, resolve_secret
from tasks.sources.text import as_text

# SQLAlchemy-style URLs name a driver (`postgresql+psycopg://`); libpq knows only the plain scheme.
_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://")


def _libpq_url(url: SecretStr) -> str:
    return _DRIVER_SUFFIX.sub(r"\1://", url.get_secret_value())


def _connect(url: SecretStr) -> Any:
    """An ADBC connection (imported lazily: the driver loads a shared library)."""
    import adbc_driver_postgresql.dbapi as dbapi

    return dbapi.connect(_libpq_url(url))


def iter_postgres_batches(source: PostgresSource, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The query's rows as all-text frames of at most `batch_rows` rows.

    Raises:
        SourceSecretError: the connection URL's secret is missing.
        SourceQueryError: the connection or the query failed (URL and password masked).
        MissingPhoneColumn: the query returns no `phone_column`.
    """
    import adbc_driver_manager
    import pyarrow

    url = resolve_secret(source.connection, "source.connection")
    where = f"the result of source.query (from {source.connection.describe()})"
    try:
        connection = _connect(url)
    except adbc_driver_manager.Error as exc:
        raise SourceQueryError(
            "source.connection: cannot connect to PostgreSQL with the URL from "
            f"{source.connection.describe()}: "
            f"{mask_secrets(str(exc), [url])}"
        ) from None
    with closing(connection), closing(connection.cursor()) as cursor:
        try:
            cursor.execute(source.query)
            reader = cursor.fetch_record_batch()
        except adbc_driver_manager.Error as exc:
            raise SourceQueryError(
                f"source.query: the query failed: {mask_secrets(str(exc), [url])}"
            ) from None
        columns = reader.schema.names
        if source.phone_column not in columns:
            raise missing_phone_column(source.phone_column, columns, where)
        try:
            for batch in reader:
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                yield from as_text(frame, "source.query").iter_slices(batch_rows)
        except (adbc_driver_manager.Error, pyarrow.ArrowException) as exc:
            raise SourceQueryError(
                f"source.query: reading the result failed: {mask_secrets(str(exc), [url])}"
            ) from None
