"""Read recipients from any `globe_sms.sources.Source`, as all-text polars frames in bounded chunks.

One module per kind: `files` (CSV, Parquet, NDJSON: a lazy scan), `postgres` (ADBC record batches),
`http` (httpx, page by page). Two entry points:

* `iter_source_batches(source, batch_rows=...)`: frames of at most `batch_rows` rows in source order, for the
  streaming pipeline (`tasks/spool.py`); memory stays bounded whatever the source's size.
* `load_source(source)`: the whole source as one frame, for small lists and tests.

Every column is text (String): a phone number is never turned into an integer or a float. The phone column
is checked before the first chunk is yielded (for files and PostgreSQL, before any row is read). Errors are
`SourceError`s (see `tasks/sources/errors.py`), each naming the campaign field at fault.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from globe_sms.sources import (
    CsvSource,
    HttpSource,
    NdjsonSource,
    ParquetSource,
    PostgresSource,
    Source,
)
from tasks.sources.errors import (
    MissingPhoneColumn,
    SourceError,
    SourceHttpError,
    SourceQueryError,
    SourceSecretError,
)

DEFAULT_BATCH_ROWS = 500_000


def describe_source(source: Source) -> str:
    """A one-line description for logs, with no secret: `csv exports/*.csv`, `postgres (env DB_URL)`."""
    if isinstance(source, (CsvSource, ParquetSource, NdjsonSource)):
        return f"{source.kind} {source.path}"
    if isinstance(source, PostgresSource):
        return f"postgres query (connection from {source.connection.describe()})"
    return f"http {source.url}"


def iter_source_batches(source: Source, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """The source's rows as all-text frames of at most `batch_rows` rows, in source order.

    Args:
        source: any recipient source.
        batch_rows: the most rows per frame (memory grows with it).

    Raises:
        SourceError: the source cannot be read, or has no `phone_column` (subclasses say why).

    Example:
        >>> for chunk in iter_source_batches(CsvSource(path="exports/*.csv"), batch_rows=100_000):
        ...     print(chunk.height, chunk.schema)
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    if isinstance(source, (CsvSource, ParquetSource, NdjsonSource)):
        from tasks.sources.files import iter_file_batches

        return iter_file_batches(source, batch_rows)
    if isinstance(source, PostgresSource):
        from tasks.sources.postgres import iter_postgres_batches

        return iter_postgres_batches(source, batch_rows)
    if isinstance(source, HttpSource):
        from tasks.sources.http import iter_http_batches

        return iter_http_batches(source, batch_rows)
    raise TypeError(f"not a recipient source: {type(source).__name__}")


def load_source(source: Source) -> pl.DataFrame:
    """The whole source as one all-text frame (for small lists; large ones go through `iter_source_batches`).

    Raises:
        SourceError: as `iter_source_batches`.
    """
    if isinstance(source, (CsvSource, ParquetSource, NdjsonSource)):
        from tasks.sources.files import POLARS_READ_ERRORS, scan_file_source

        try:
            return scan_file_source(source).collect()
        except POLARS_READ_ERRORS as exc:
            raise SourceError(
                f"source.path: cannot read {source.path} as {source.kind.upper()}: {exc}"
            ) from None
    chunks = list(iter_source_batches(source))
    if not chunks:
        return pl.DataFrame(schema={source.phone_column: pl.String})
    return pl.concat(chunks, how="diagonal") if len(chunks) > 1 else chunks[0]


__all__ = [
    "DEFAULT_BATCH_ROWS",
    "MissingPhoneColumn",
    "SourceError",
    "SourceHttpError",
    "SourceQueryError",
    "SourceSecretError",
    "describe_source",
    "iter_source_batches",
    "load_source",
]
