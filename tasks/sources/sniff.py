"""Look at a file's first bytes before a parser does: is it text at all, and is its CSV header usable?

polars reads whatever it is given: an Excel workbook renamed `.csv` becomes a frame of mojibake columns, or an
error quoting raw bytes; a file with no line break is read whole as its "header"; duplicate column names are
silently renamed (`phone`, `phone_duplicated_0`). These checks refuse such files with a message that says
what the file looks like and what to do, reading at most `max_header_bytes` (`CsvSource.max_header_bytes`,
1 MiB by default) of it:

* `binary_format(head)`: the format a file's first bytes give away (ZIP / Excel workbook, OLE2 `.xls`, gzip,
  bzip2, xz, zstd, Parquet, Arrow, SQLite, PDF, UTF-16 text), or `binary` for any NUL byte; None for text.
* `read_csv_header(path, source)`: the column names, refusing a binary file, an empty one, a first line
  longer than the limit, a header that is not UTF-8 (with `encoding: utf8`), and duplicate names.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from globe_sms.sources import CsvSource
from tasks.sources.errors import SourceError

SNIFF_BYTES = 8192
_WORKBOOK = "an Excel workbook or another ZIP archive"
# Leading bytes of formats that are never text CSV (or NDJSON), with what they are.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", _WORKBOOK),
    (b"PK\x05\x06", _WORKBOOK),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Excel (.xls) workbook or another OLE2 document"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
    (b"PAR1", "a Parquet file"),
    (b"ARROW1", "an Arrow IPC file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"%PDF", "a PDF document"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
)
_EXPORT_CSV = "export it as CSV (File > Save As > CSV UTF-8)"
_ADVICE = {
    _WORKBOOK: _EXPORT_CSV,
    "an old Excel (.xls) workbook or another OLE2 document": _EXPORT_CSV,
    "a Parquet file": "set kind: parquet",
    "UTF-16 text": "save it as UTF-8 (File > Save As > CSV UTF-8)",
}


def binary_format(head: bytes) -> str | None:
    """What `head` (a file's first bytes) shows the file to be, if not text; None for text."""
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return what
    return "binary data" if b"\x00" in head else None


def refuse_binary(path: Path, kind: str, head: bytes) -> None:
    """Raise a `SourceError` if `head` shows the file is not text, saying what it looks like and what to do.

    Args:
        path: the file, for the message.
        kind: what it was to be read as (`csv`, `ndjson`).
        head: its first bytes (`SNIFF_BYTES` are enough).
    """
    what = binary_format(head)
    if what is None:
        return
    if what.endswith("-compressed data"):
        advice = "decompress it first"
    elif what == "a Parquet file" or kind == "csv":
        advice = _ADVICE.get(what, "export the recipients as CSV, or set `kind` to what the file is")
    else:
        advice = "export the recipients as NDJSON (one JSON object per line), or set `kind` to what it is"
    raise SourceError(
        f"source.path: {path} does not look like a text {kind.upper()} file (it looks like {what}); {advice}"
    )


def read_csv_header(path: Path, source: CsvSource) -> list[str]:
    """The column names of a CSV file, read from at most `source.max_header_bytes` bytes.

    Raises:
        SourceError: the file is binary, empty, its first line is longer than the limit, its header is
            not UTF-8 (with `encoding: utf8`), or two columns have the same name.
    """
    limit = source.max_header_bytes
    try:
        with path.open("rb") as file:
            head = file.read(limit + 1)
    except OSError as exc:
        raise SourceError(f"source.path: cannot read {path}: {exc.strerror}") from None
    refuse_binary(path, "csv", head[:SNIFF_BYTES])
    if not head.strip():
        raise SourceError(f"source.path: {path} is empty: nothing to send")
    end = head.find(b"\n")
    if end < 0 and len(head) > limit:
        raise SourceError(
            f"source.path: the first line of {path} is longer than {limit:,} bytes (no line break): "
            "that is not a CSV header; check the file, or raise source.max_header_bytes if its header "
            "really is that long"
        )
    line = head if end < 0 else head[:end]
    try:
        text = line.decode("utf-8-sig", errors="strict" if source.encoding == "utf8" else "replace")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"source.path: the header of {path} is not UTF-8 (byte 0x{line[exc.start]:02x} at offset "
            f"{exc.start}); save the file as CSV UTF-8, or set encoding: utf8-lossy"
        ) from None
    names = next(csv.reader(io.StringIO(text.rstrip("\r")), delimiter=source.separator), [])
    repeated = [name for name, count in Counter(names).items() if count > 1 and name.strip()]
    if repeated:
        listed = ", ".join(
            f"{name!r} (columns {', '.join(str(i + 1) for i, n in enumerate(names) if n == name)})"
            for name in repeated
        )
        raise SourceError(
            f"source.path: the header of {path} names a column more than once: {listed}; "
            "rename or remove the copies, so that no value is read from the wrong column"
        )
    return names
