"""Suppression (opt-out) lists: read them and normalise their numbers exactly like recipients' numbers.

The hook is deliberately small: anything that can produce a polars Series of numbers (a file today, a
database table later) goes through `normalise_numbers` and is handed to `validate_recipients(suppression=)`.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import polars as pl

from tasks.mobile_rules import check_mobile_numbers
from tasks.normalise import normalise_phones, read_csv_as_strings

_SEPARATORS = ",;\t"


def normalise_numbers(numbers: pl.Series | pl.DataFrame, *, default_region: str | None = None) -> pl.Series:
    """Normalise opt-out numbers to the E.164 digits validation compares with.

    Entries that cannot be read as a number of a known country are dropped. Lengths and mobile patterns are
    not checked: an opt-out must stay effective whatever its format.

    Args:
        numbers: raw numbers (any dtype, cast to String), or a frame with a `phone` column.
        default_region: as in `ValidationRules.default_region`, so `07911 123456` opts out `447911123456`.

    Returns:
        A String Series `phone` of distinct E.164 digit strings without `+`.

    Example:
        >>> normalise_numbers(pl.Series(["+44 7911 123456", "0044 (0)7911-123456", "junk"])).to_list()
        ['447911123456']
    """
    if isinstance(numbers, pl.DataFrame):
        numbers = numbers.get_column("phone")
    phones = pl.DataFrame({"_raw": numbers.cast(pl.String)})
    checked = check_mobile_numbers(
        normalise_phones(phones, "_raw", default_region=default_region), strict=False
    )
    return (
        checked.filter(pl.col("_region").is_not_null())
        .select(pl.col("_digits").alias("phone"))
        .unique(maintain_order=True)
        .to_series()
    )


def load_suppression_file(path: str | PathLike[str]) -> pl.Series:
    """Read an opt-out list: a CSV with a `phone` column, or plain text with one number per line.

    Blank lines and lines starting with `#` are skipped. Values come back raw, as String.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a CSV (a header with separators) has no `phone` column.
    """
    path = Path(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        return pl.Series("phone", [], dtype=pl.String)
    header = lines[0]
    separator = next((sep for sep in _SEPARATORS if sep in header), None)
    if separator is None and header.strip("\"' ").lower() != "phone":
        return pl.Series("phone", lines, dtype=pl.String)
    table = read_csv_as_strings(path, separator=separator or ",", comment_prefix="#")
    column = next((c for c in table.columns if c.strip().lower() == "phone"), None)
    if column is None:
        raise ValueError(f"suppression file {str(path)!r} has columns {table.columns} but no 'phone' column")
    return table.get_column(column).rename("phone")
