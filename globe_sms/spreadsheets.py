"""Files meant for spreadsheets are inert: no cell of a CSV written for people can become a formula.

A spreadsheet opening a CSV reads a cell that starts with `=`, `+`, `-` or `@` as a formula (Excel does for
all four, LibreOffice for `=`), and one that starts with a tab or a carriage return may be trimmed into one.
A rejected row is written back verbatim, so a cell `=HYPERLINK("http://x","y")`, `@SUM(1+1)` or
`-cmd|' /C calc'!A0` of the recipient list would come alive in the rejects file. Following OWASP's advice on
CSV injection, every such text cell, header cells included, gets a leading `'`, which shows the text as it was
(`'=HYPERLINK(...)`) and makes it plain text.

A cell that is a plain number is left alone: `+85212345678`, `-5`, `+0.5` are numbers to a spreadsheet, never
formulas, so a phone cell stays readable (`85212345678` in LibreOffice; Excel evaluates `=+85212345678`, the
same number). A phone written with separators (`+852 1234 5678`) is not a number and gets its `'`, which
Excel would otherwise read as a formula.

Used by every CSV globe-sms writes for people: the rejects file (`tasks/spool.py`, `tasks/report.py`).
"""

from __future__ import annotations

import re
from typing import TypeVar

import polars as pl

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""The first characters that make a spreadsheet read a cell as a formula (OWASP's list)."""

TEXT_PREFIX = "'"

_PLAIN_NUMBER = r"[+-]?[0-9]+(?:\.[0-9]+)?"
_PLAIN_NUMBER_RE = re.compile(_PLAIN_NUMBER)

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


def neutralise_cell(text: str) -> str:
    """`'=1+1` for `=1+1`; a cell that cannot become a formula, plain numbers included, as it is."""
    if text[:1] in FORMULA_STARTS and not _PLAIN_NUMBER_RE.fullmatch(text):
        return TEXT_PREFIX + text
    return text


def neutralise_expr(column: str) -> pl.Expr:
    """The vectorised twin of `neutralise_cell` over a text column, named as the column (nulls stay null)."""
    text = pl.col(column).cast(pl.String)
    # A first-character test and a concat: twice as fast as a regex `^[=+...]` and `str.replace("^", "'")`
    # (2M rows). `\z`, not `$`, ends the number: like Python's `fullmatch`, no newline may follow it.
    dangerous = text.str.head(1).is_in(FORMULA_STARTS) & text.str.contains(f"^(?:{_PLAIN_NUMBER})\\z").not_()
    return pl.when(dangerous).then(pl.concat_str(pl.lit(TEXT_PREFIX), text)).otherwise(text).alias(column)


def neutralise_for_spreadsheets(frame: Frame) -> Frame:
    """Make every text cell and every header of a frame safe to open in a spreadsheet.

    Vectorised (one `when/then` per text column), so it runs inside a streaming `sink_csv` of millions of
    rows. Categorical and Enum columns are written as text, hence neutralised too; numbers, dates and booleans
    cannot start with a formula character in a CSV and are left alone. Join list columns into text before.

    Args:
        frame: a DataFrame or LazyFrame about to be written as CSV for people.

    Returns:
        The same kind of frame, text cells starting with `=`, `+`, `-`, `@`, a tab or a carriage return (and
        not plain numbers) prefixed with `'`, header cells likewise.

    Example:
        >>> frame = pl.DataFrame({"=x": ["=1+1", "+85212345678", "-cmd|' /C calc'!A0", "Ann"]})
        >>> neutralise_for_spreadsheets(frame).to_dict(as_series=False)
        {"'=x": ["'=1+1", '+85212345678', "'-cmd|' /C calc'!A0", 'Ann']}
    """
    schema = frame.collect_schema()
    text_types = (pl.String, pl.Categorical, pl.Enum)
    cells = [neutralise_expr(name) for name, dtype in schema.items() if isinstance(dtype, text_types)]
    safe = frame.with_columns(cells) if cells else frame
    renames = {name: neutralise_cell(name) for name in schema.names() if neutralise_cell(name) != name}
    return safe.rename(renames) if renames else safe
