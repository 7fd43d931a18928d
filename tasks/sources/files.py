"""CSV, Parquet and NDJSON files (a path or a glob) as one lazy, all-text scan.

Files are read in name order and stacked; a column missing from one file is null in its rows. CSV is read
without type inference; Parquet columns are cast to text; NDJSON is read with every key as text (a JSON number
becomes its digits, an object its JSON), the keys taken from the first 1,000 lines of each file.

Before polars sees a CSV or NDJSON file, its first bytes are checked (`tasks/sources/sniff.py`): a binary
file (an Excel workbook, gzip, Parquet...) is refused saying what it looks like; a CSV header longer than
`max_header_bytes`, not UTF-8, or naming a column twice is refused too.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from globe_sms.sources import CsvSource, FileSource, NdjsonSource, ParquetSource
from tasks.sources.errors import SourceError, missing_phone_column
from tasks.sources.sniff import SNIFF_BYTES, read_csv_header, refuse_binary
from tasks.sources.text import text_exprs

NDJSON_SCHEMA_LINES = 1_000
POLARS_READ_ERRORS = (
    pl.exceptions.ComputeError,
    pl.exceptions.NoDataError,
    pl.exceptions.SchemaError,
    pl.exceptions.ShapeError,
    pl.exceptions.ColumnNotFoundError,
    pl.exceptions.InvalidOperationError,
    OSError,
    UnicodeDecodeError,
)


def source_files(source: FileSource) -> list[Path]:
    """The files `source.path` names: itself, or the glob's matches in name order.

    Raises:
        SourceError: no such file, or nothing matches the glob.
    """
    if glob.has_magic(source.path):
        matches = sorted(Path(p) for p in glob.glob(source.path, recursive=True) if Path(p).is_file())
        if not matches:
            raise SourceError(f"source.path: no file matches {source.path}")
        return matches
    path = Path(source.path)
    if not path.is_file():
        raise SourceError(f"source.path: no such file: {path}")
    return [path]


def _scan_one(source: FileSource, path: Path) -> pl.LazyFrame:
    """One file as a lazy frame of String columns."""
    if isinstance(source, CsvSource):
        read_csv_header(path, source)
        return pl.scan_csv(path, infer_schema=False, separator=source.separator, encoding=source.encoding)
    if isinstance(source, NdjsonSource):
        with path.open("rb") as file:
            head = file.read(SNIFF_BYTES)
        refuse_binary(path, "ndjson", head)
        if not head.strip():
            raise SourceError(f"source.path: {path} is empty: nothing to send")
        names = pl.scan_ndjson(path, infer_schema_length=NDJSON_SCHEMA_LINES).collect_schema().names()
        return pl.scan_ndjson(path, schema=dict.fromkeys(names, pl.String))
    assert isinstance(source, ParquetSource)
    scan = pl.scan_parquet(path)
    return scan.select(text_exprs(scan.collect_schema(), f"source.path: {path.name}"))


def scan_file_source(source: FileSource) -> pl.LazyFrame:
    """Every file of `source` as one lazy frame of String columns, checked for the phone column.

    Raises:
        SourceError: no file, an unreadable file, or no `phone_column`.
    """
    files = source_files(source)
    scans = []
    for path in files:
        try:
            scan = _scan_one(source, path)
            columns = scan.collect_schema().names()
        except POLARS_READ_ERRORS as exc:
            raise SourceError(f"source.path: cannot read {path} as {source.kind.upper()}: {exc}") from None
        if source.phone_column not in columns:
            raise missing_phone_column(source.phone_column, columns, str(path))
        scans.append(scan)
    return scans[0] if len(scans) == 1 else pl.concat(scans, how="diagonal")


def iter_file_batches(source: FileSource, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The files' rows in frames of `batch_rows` rows, through polars' streaming engine.

    Raises:
        SourceError: as `scan_file_source`, or a file that turns out unreadable part-way (e.g. a ragged CSV).
    """
    scan = scan_file_source(source)
    try:
        yield from scan.collect_batches(chunk_size=batch_rows, maintain_order=True)
    except POLARS_READ_ERRORS as exc:
        raise SourceError(f"source.path: cannot read {source.path} as {source.kind.upper()}: {exc}") from None
