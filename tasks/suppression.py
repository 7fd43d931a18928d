"""Suppression (opt-out) lists: read them, fail closed on entries that cannot be read, and hand validation
the numbers to suppress.

A campaign's opt-outs come from `validation.suppression_file` (plain text, one number per line, or a CSV with
a `phone` column), from `validation.suppression` (any recipient source kind: a CSV, a PostgreSQL query, ...,
read through `tasks/sources/`), or both. `load_opt_outs(rules)` reads them once per run
(`tasks/spool.py`); `validate_recipients` compares the recipients' numbers with them.

An entry that cannot be read as a number (`tasks/opt_out_numbers.py` says which and why) stops the campaign
before anything is sent, with every such line listed, masked, unless `validation.suppression_unreadable` is
`ignore`: then they are skipped and counted (`OptOuts.ignored`, shown in the run summary).

    ValueError
    └── SuppressionError           an opt-out list that cannot be used; nothing was sent
        ├── SuppressionFileMissing   the file (or a file source's path) does not exist: its absolute path
        └── UnreadableOptOuts        entries that are not numbers, listed with their line, masked
"""

from __future__ import annotations

import csv
import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import polars as pl

from globe_sms.sources import CsvSource, NdjsonSource, ParquetSource, Source
from globe_sms.validation_rules import ValidationRules
from tasks.opt_out_numbers import REASONS, mask_entry, read_opt_out_numbers

SHOWN_UNREADABLE = 20
"""How many unreadable entries an error lists (then `... and N more`)."""
_SEPARATORS = ",;\t"
_NUMBER_LIKE = re.compile(r"""^["'=]*[+(0-9]""")  # a first line that is an entry, not a header
# Source readers' messages say `source.<field>`; for an opt-out list, `validation.suppression.<field>`.
_SOURCE_FIELD = re.compile(
    r"(?<![\w/.-])source\.(?=(?:path|query|connection|phone_column|url|params|records_path|pagination|auth|"
    r"separator|encoding)\b)"
)


class SuppressionError(ValueError):
    """An opt-out list that cannot be used; raised before anything is sent."""


class SuppressionFileMissing(SuppressionError):
    """A suppression file (or the file a suppression source names) does not exist."""


class UnreadableOptOuts(SuppressionError):
    """Opt-out entries that cannot be read as phone numbers, under `suppression_unreadable: error`."""


@dataclass(frozen=True)
class OptOuts:
    """A campaign's opt-outs, read.

    Attributes:
        numbers: distinct E.164 digit strings (no `+`) to suppress, as `phone` (String).
        ignored: unreadable entries skipped under `suppression_unreadable: ignore`.
    """

    numbers: pl.Series
    ignored: int = 0

    @property
    def keys(self) -> pl.Series:
        """The numbers as the Int64 keys validation compares with."""
        return self.numbers.cast(pl.Int64)


def _absolute(path: str | PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def check_suppression_files(rules: ValidationRules) -> None:
    """Refuse a campaign whose opt-out file is not there, before any run starts (the CLI and flow call it).

    Checks `suppression_file` and, for a file-kind `suppression` source without a glob, its `path`.

    Raises:
        SuppressionFileMissing: naming the field and the file's absolute path.
    """
    if rules.suppression_file is not None and not _absolute(rules.suppression_file).is_file():
        raise SuppressionFileMissing(
            f"validation.suppression_file: no such file: {_absolute(rules.suppression_file)}; "
            "an opt-out list that is missing would let opted-out people be messaged, so nothing was sent"
        )
    source = rules.suppression
    if isinstance(source, (CsvSource, ParquetSource, NdjsonSource)) and not glob.has_magic(source.path):
        if not _absolute(source.path).is_file():
            raise SuppressionFileMissing(
                f"validation.suppression.path: no such file: {_absolute(source.path)}; nothing was sent"
            )


def _numbered_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) of the lines that are neither blank nor `#` comments."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    return [(n, line) for n, line in kept if not line.lstrip().startswith("#")]


def _cells(header: str, separator: str) -> list[str]:
    return [cell.strip().strip("\"'").strip() for cell in next(csv.reader([header], delimiter=separator))]


def _phone_header(header: str) -> tuple[str, int] | None:
    """The separator and index of the `phone` column when the first line is a header naming it."""
    for separator in _SEPARATORS:
        cells = [cell.lower() for cell in _cells(header, separator)]
        if "phone" in cells:
            return separator, cells.index("phone")
    return None


class _Lines:
    """The numbered lines as an iterator of text for `csv.reader`, remembering the last line number read."""

    def __init__(self, numbered: list[tuple[int, str]]) -> None:
        self._lines: Iterator[tuple[int, str]] = iter(numbered)
        self.last = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        self.last, line = next(self._lines)
        return line


def _csv_entries(numbered: list[tuple[int, str]], separator: str, column: int) -> tuple[list[int], list[str]]:
    """Line numbers and phone cells of a CSV's records (the header is `numbered[0]`)."""
    lines = _Lines(numbered[1:])
    numbers: list[int] = []
    entries: list[str] = []
    for record in csv.reader(lines, delimiter=separator):
        if not any(cell.strip() for cell in record):
            continue
        numbers.append(lines.last)
        entries.append(record[column] if column < len(record) else "")
    return numbers, entries


def read_suppression_file(path: str | PathLike[str]) -> pl.DataFrame:
    """An opt-out file's entries with their line numbers: `line` (Int64) and `entry` (raw text).

    The file is UTF-8 (a byte-order mark is fine), with any line endings. Blank lines and lines starting with
    `#` are skipped. If the first other line is a header naming a `phone` column (separated by `,`, `;` or a
    tab, quoted or not), the file is read as CSV and that column is used; rows with no value at all are
    skipped, a row with an empty phone cell is kept (and unreadable). Otherwise every line is one entry, with
    surrounding quotes dropped.

    Raises:
        SuppressionFileMissing: the file does not exist.
        SuppressionError: not UTF-8 text, or a header without a `phone` column.
    """
    file = _absolute(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SuppressionFileMissing(f"validation.suppression_file: no such file: {file}") from None
    except UnicodeDecodeError:
        raise SuppressionError(
            f"validation.suppression_file: {file} is not UTF-8 text; save it as UTF-8 (CSV UTF-8)"
        ) from None
    except OSError as exc:
        raise SuppressionError(f"validation.suppression_file: cannot read {file}: {exc.strerror}") from None
    numbered = _numbered_lines(text)
    if not numbered:
        return pl.DataFrame(schema={"line": pl.Int64, "entry": pl.String})
    header = numbered[0][1]
    found = _phone_header(header)
    if found is not None:
        lines, entries = _csv_entries(numbered, *found)
    elif _NUMBER_LIKE.match(header.strip()) or not any(sep in header for sep in _SEPARATORS):
        lines = [n for n, _ in numbered]
        entries = [line.strip().strip("\"'") for _, line in numbered]
    else:
        raise SuppressionError(
            f"validation.suppression_file: {file} line {numbered[0][0]} is a header with columns "
            f"{_cells(header, next(s for s in _SEPARATORS if s in header))} but no 'phone' column; name the "
            "column of numbers 'phone', or write one number per line"
        )
    return pl.DataFrame({"line": lines, "entry": entries}, schema={"line": pl.Int64, "entry": pl.String})


def load_suppression_file(path: str | PathLike[str]) -> pl.Series:
    """An opt-out file's raw entries as a String Series `phone` (see `read_suppression_file`)."""
    return read_suppression_file(path).get_column("entry").rename("phone")


def read_suppression_source(source: Source) -> pl.DataFrame:
    """A suppression source's phone column as `line` (the 1-based row) and `entry` (raw text).

    Raises:
        SuppressionError: the source cannot be read; the message names `validation.suppression.<field>`.
    """
    from tasks.sources import SourceError, iter_source_batches

    try:
        phones = [chunk.get_column(source.phone_column) for chunk in iter_source_batches(source)]
    except SourceError as exc:
        raise SuppressionError(_SOURCE_FIELD.sub("validation.suppression.", str(exc))) from None
    entries = pl.concat(phones) if phones else pl.Series(dtype=pl.String)
    return pl.DataFrame(
        {"line": pl.int_range(1, len(entries) + 1, dtype=pl.Int64, eager=True), "entry": entries},
        schema={"line": pl.Int64, "entry": pl.String},
    )


def _unreadable_error(where: str, unit: str, unreadable: pl.DataFrame) -> UnreadableOptOuts:
    """The error listing (up to `SHOWN_UNREADABLE`) unreadable entries, masked, with the reason of each."""
    count = unreadable.height
    lines = [
        f"{where}: {count:,} opt-out {'entry' if count == 1 else 'entries'} cannot be read as "
        f"{'a phone number' if count == 1 else 'phone numbers'}, so nothing was sent (an unreadable opt-out "
        "would let that person be messaged):"
    ]
    for line, entry, reason in unreadable.head(SHOWN_UNREADABLE).iter_rows():
        lines.append(f"  {unit} {line}: {mask_entry(entry or '')!r}: {REASONS[reason]}")
    if count > SHOWN_UNREADABLE:
        lines.append(f"  ... and {count - SHOWN_UNREADABLE:,} more")
    lines.append(
        "Correct or remove them, or set validation.suppression_unreadable: ignore to skip them (they are "
        "then counted in the run summary)."
    )
    return UnreadableOptOuts("\n".join(lines))


def _lists(rules: ValidationRules) -> Iterator[tuple[str, str, pl.DataFrame]]:
    """(where, unit, entries) of each opt-out list the rules name."""
    if rules.suppression_file is not None:
        yield (
            f"validation.suppression_file {_absolute(rules.suppression_file)}",
            "line",
            read_suppression_file(rules.suppression_file),
        )
    if rules.suppression is not None:
        from tasks.sources import describe_source

        where = f"validation.suppression ({describe_source(rules.suppression)})"
        yield where, "row", read_suppression_source(rules.suppression)


def numbered_entries(numbers: pl.Series) -> pl.DataFrame:
    """Numbers in any format (cast to String) as entries `line` (1-based position) and `entry`."""
    return pl.DataFrame(
        {
            "line": pl.int_range(1, len(numbers) + 1, dtype=pl.Int64, eager=True),
            "entry": numbers.cast(pl.String),
        }
    )


def read_opt_outs(entries: pl.DataFrame, rules: ValidationRules, where: str, unit: str = "line") -> OptOuts:
    """Read one list's entries (`line`, `entry`) under the rules' default region and unreadable policy.

    Raises:
        UnreadableOptOuts: some entries cannot be read and `suppression_unreadable` is `error`.
    """
    read = read_opt_out_numbers(entries, default_region=rules.default_region)
    if read.unreadable.height and rules.suppression_unreadable == "error":
        raise _unreadable_error(where, unit, read.unreadable)
    return OptOuts(read.numbers, read.unreadable.height)


def load_opt_outs(rules: ValidationRules) -> OptOuts | None:
    """Read every opt-out list the rules name (None when they name none).

    Raises:
        SuppressionFileMissing: `suppression_file` does not exist.
        UnreadableOptOuts: entries cannot be read and `suppression_unreadable` is `error`.
        SuppressionError: a list that cannot be read at all (not UTF-8, no phone column, a failed query).
    """
    parts = [read_opt_outs(entries, rules, where, unit) for where, unit, entries in _lists(rules)]
    if not parts:
        return None
    numbers = pl.concat([part.numbers for part in parts]).unique(maintain_order=True)
    return OptOuts(numbers, sum(part.ignored for part in parts))


def normalise_numbers(
    numbers: pl.Series | pl.DataFrame, *, default_region: str | None = None, unreadable: str = "ignore"
) -> pl.Series:
    """Normalise opt-out numbers in any format to the E.164 digits validation compares with.

    Lengths and mobile patterns are not checked: an opt-out must stay effective whatever its format.

    Args:
        numbers: raw numbers (any dtype, cast to String), or a frame with a `phone` column.
        default_region: as in `ValidationRules.default_region`, so `07911 123456` opts out `447911123456`.
        unreadable: `ignore` drops entries that cannot be read; `error` raises `UnreadableOptOuts`.

    Returns:
        A String Series `phone` of distinct E.164 digit strings without `+`.

    Example:
        >>> normalise_numbers(pl.Series(["+44 7911 123456", "0044 (0)7911-123456", "junk"])).to_list()
        ['447911123456']
    """
    if isinstance(numbers, pl.DataFrame):
        numbers = numbers.get_column("phone")
    rules = ValidationRules.model_validate(
        {"default_region": default_region, "suppression_unreadable": unreadable}
    )
    return read_opt_outs(numbered_entries(numbers), rules, "suppression", "entry").numbers


__all__ = [
    "SHOWN_UNREADABLE",
    "OptOuts",
    "SuppressionError",
    "SuppressionFileMissing",
    "UnreadableOptOuts",
    "check_suppression_files",
    "load_opt_outs",
    "load_suppression_file",
    "normalise_numbers",
    "numbered_entries",
    "read_opt_outs",
    "read_suppression_file",
    "read_suppression_source",
]
