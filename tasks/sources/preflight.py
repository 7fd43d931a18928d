"""Check a campaign's recipient source before anything runs: the refusals that need only a file's first rows.

`preflight_source(source)` is called by `globe-sms send` right after the campaign is loaded, before any
Prefect run starts, and again at the start of the send flow (runs from the UI or a deployment do not pass
through the CLI). Each problem is a `SourceError`, so `send` exits 2 and nothing is sent:

* a file or glob that names no file; a file that is binary (an Excel workbook, gzip, Parquet read as CSV);
* a CSV header longer than `max_header_bytes`, not UTF-8, or naming a column twice;
* no `phone_column`;
* no rows at all (a header-only CSV, an empty Parquet or NDJSON file), or no row with a phone number:
  nothing to send.

It reads the header of every file and, across them, the phone column only until a row has a number, so it
costs milliseconds whatever the file's size. PostgreSQL and http sources are not read here (a query or a page
would be fetched twice); their readers refuse the same problems when the flow reads them.
"""

from __future__ import annotations

import polars as pl

from globe_sms.sources import CsvSource, NdjsonSource, ParquetSource, Source
from tasks.sources.errors import SourceError
from tasks.sources.files import POLARS_READ_ERRORS, scan_file_source


def preflight_source(source: Source) -> None:
    """Refuse a file source that cannot be sent from, reading only what that takes.

    Args:
        source: the campaign's source; other kinds than files pass unchecked.

    Raises:
        SourceError: no such file, a binary file, a bad CSV header, no phone column, or no rows.

    Example:
        >>> preflight_source(Campaign.from_yaml("welcome.yaml").source)  # returns None, or raises
    """
    if not isinstance(source, (CsvSource, ParquetSource, NdjsonSource)):
        return
    phones = scan_file_source(source).select(pl.col(source.phone_column))
    try:
        if phones.filter(pl.col(source.phone_column).is_not_null()).head(1).collect().height:
            return  # the usual case: the first row has a number, and nothing more was read
        empty = phones.head(1).collect().height == 0
    except POLARS_READ_ERRORS as exc:
        raise SourceError(f"source.path: cannot read {source.path} as {source.kind.upper()}: {exc}") from None
    if empty:
        what = "has column names but no rows" if isinstance(source, CsvSource) else "has no rows"
    else:
        what = f"has no row with a value in its phone column {source.phone_column!r}"
    raise SourceError(f"source.path: {source.path} {what}: nothing to send")
