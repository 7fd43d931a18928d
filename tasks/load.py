"""Load recipients from their source as an all-text polars frame.

Every column is read as a string: CSV type inference would turn `85212345678` into an integer and
`4.47911E+11` into a float, and the validation step must see the text as it was written.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from globe_sms.campaign import CsvSource


class SourceError(ValueError):
    """A recipient source that cannot be read, or lacks the phone column."""


def read_csv_source(source: CsvSource) -> pl.DataFrame:
    """Read a CSV source with every column as text.

    Raises:
        SourceError: the file is missing or unreadable, or has no `phone_column`.
    """
    path = Path(source.path)
    if not path.is_file():
        raise SourceError(f"source.path: no such file: {path}")
    try:
        frame = pl.read_csv(
            path, infer_schema=False, separator=source.separator, encoding=source.encoding
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, UnicodeDecodeError) as exc:
        raise SourceError(f"source.path: cannot read {path} as CSV: {exc}") from None
    if source.phone_column not in frame.columns:
        raise SourceError(
            f"source.phone_column: column {source.phone_column!r} not in {path.name}; "
            f"columns are {', '.join(frame.columns)}"
        )
    return frame


@task(name="load-recipients", cache_policy=NO_CACHE)
def load_recipients(source: CsvSource) -> pl.DataFrame:
    """Read the campaign's recipients (every column as text)."""
    return read_csv_source(source)
