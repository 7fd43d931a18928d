"""Masking of phone numbers for logs and artifacts, the way Alibaba's docs print them (`8521234****`).

What is hidden is the last four *digits* of every number in a value, wherever the separators are:

| value | masked |
|---|---|
| `85212345678` | `8521234****` |
| `+852 1234 5678` | `+852 1234 ****` |
| `+1 (415) 555-2671` | `+1 (415) 555-****` |
| `85212345678/85287654321` | `8521234****/8528765****` |
| `+852 1234 5678, +852 8765 4321` | `+852 1234 ****, +852 8765 ****` |
| `85212345678 85287654321` | `8521234**** 8528765****` |
| `123`, ``, None, `n/a` | `****` (nothing left worth showing) |

Two passes, both plain regex replacements so that the scalar `mask_number` (Python `re`) and the vectorised
`mask_number_expr` (polars, Rust `regex`) are the same rules and agree value for value (a property test
checks it):

1. A *number* is a run of digits joined by separators a number is written with (space, tab, no-break spaces,
   `.`, `-`, `(`, `)`); anything else (`/`, `,`, `;`, `+`, a letter, a line break) ends it. Its last four
   digits become `*`. An already masked value is left as it is (`*` counts as a hidden digit).
2. Two numbers written with only a space between them are one run for pass 1, so pass 1 would leave the
   first one whole. Hence every still visible group of 7 or more digits that is followed by more of the value
   loses its last four digits too. Groups of a formatted number are shorter than that (`+44 7911 123456`), and
   a number's visible head (`44791112`, followed by `*`) is never touched.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

_VISIBLE_TAIL_MASK = "****"

_JOINERS = r" \t\u00a0\u202f.()\-"
"""What may stand between two digits of one number: spaces (also no-break), dots, dashes, parentheses."""
_DIGIT = r"(?:\d|\*)"
"""A digit, or one already hidden."""

# Pass 1: the last four digits of a number, then its end: joiners and one character that is neither a digit
# nor a joiner (kept and written back), or the end of the value. Without lookahead (Rust regex has none), the
# leftmost match is the one whose four digits are followed by the number's end: the last four.
_LAST_FOUR = (
    f"{_DIGIT}([{_JOINERS}]*){_DIGIT}([{_JOINERS}]*){_DIGIT}([{_JOINERS}]*){_DIGIT}"
    f"([{_JOINERS}]*(?:[^\\d*{_JOINERS}]|$))"
)
# Pass 2: a visible group of 7+ digits followed by anything but a digit or `*` (and not at the end, which
# pass 1 masked already): its head is kept, its last four digits hidden.
_LONG_GROUP = r"(\d{3,})\d{4}([^\d*])"

_LAST_FOUR_RE = re.compile(_LAST_FOUR)
_LONG_GROUP_RE = re.compile(_LONG_GROUP)


def mask_number(number: object) -> str:
    """Hide the last four digits of every number in a value; a value with nothing to show becomes `****`.

    Args:
        number: a phone number as text (raw or E.164), or anything that prints as one; None is fine.

    Returns:
        The value with the last four digits of each number it holds replaced by `*` (separators kept).

    Example:
        >>> mask_number("85212345678"), mask_number("+852 1234 5678, +852 8765 4321"), mask_number(None)
        ('8521234****', '+852 1234 ****, +852 8765 ****', '****')
    """
    if number is None:
        return _VISIBLE_TAIL_MASK
    text = _LAST_FOUR_RE.sub(r"*\1*\2*\3*\4", str(number))
    text = _LONG_GROUP_RE.sub(r"\1****\2", text)
    return text if "*" in text else _VISIBLE_TAIL_MASK


def mask_number_expr(column: str | pl.Expr) -> pl.Expr:
    """The vectorised twin of `mask_number`, for frames shown in artifacts (same rules, same results)."""
    import polars as pl  # here: the ledger's errors mask numbers too, and importing them must not load polars

    expr = pl.col(column) if isinstance(column, str) else column
    text = (
        expr.cast(pl.String)
        .str.replace_all(_LAST_FOUR, "*${1}*${2}*${3}*${4}")
        .str.replace_all(_LONG_GROUP, "${1}****${2}")
    )
    return (
        pl.when(text.str.contains("*", literal=True))
        .then(text)
        .otherwise(pl.lit(_VISIBLE_TAIL_MASK))
    )
