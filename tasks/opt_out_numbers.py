"""Opt-out entries -> the E.164 digits they suppress, and the entries that cannot be read, with why.

An opt-out must stay effective whatever its format, so the rules differ from recipients' in three ways:

* no length or mobile-pattern check: an entry only has to resolve to a known calling code, with at least
  two national digits;
* an extension (`+44 7911 123456 ext. 12`, `x12`, `;ext=12`, `#12`) and a `tel:` prefix are dropped, and
  the number is suppressed;
* digits without `+` or `00` that do not start with `0` (`447911123456`) are also read with the country code
  first, besides the default region's national reading, and every reading is suppressed: with
  `default_region: HK`, `447911123456` suppresses the GB number (and the nonsense HK reading, harmlessly).

What stays unreadable (and is reported, never dropped silently): a national number (`07911 123456`) when the
rules have no `default_region`, spreadsheet damage (`8.52983E+10`, `447911123456.0`: digits are lost),
letters, other characters, an unknown calling code, a bare calling code, or more than 15 digits (E.164's
limit: often an extension written without a marker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from tasks.mobile_rules import check_mobile_numbers
from tasks.normalise import normalise_phones

_MIN_NATIONAL_DIGITS = 2  # phonenumbers' _MIN_LENGTH_FOR_NSN
MAX_DIGITS = 15  # E.164's longest number: more is not one number (and would not fit validation's Int64 key)
# RFC 3966 `;ext=12`, and the written forms phonenumbers reads: `ext. 12`, `extn 12`, `extension 12`, `x12`,
# `#12`; always at the end of the entry, after the number.
EXTENSION_RE = (
    r"(?i)(?:\s*;\s*ext\s*=\s*|\s*,?\s*(?:extension|extn?|x)\.?\s*:?\s*|\s*#\s*)[0-9]{1,7}\s*$"
)
_TEL_URI_RE = r"(?i)^\s*tel:"
_DIGIT_START_RE = r"^[1-9]"

REASONS = {
    "empty": "the phone cell is empty",
    "damage": "digits lost to a spreadsheet (scientific notation such as 8.52983E+10, or a trailing .0): "
    "export the column as text, or write the numbers in full",
    "no_country_code": "a national number without a country code: set validation.default_region (e.g. GB) "
    "or write it in international form (+44 ...)",
    "letters": "contains letters",
    "invalid_characters": "contains characters that are not part of a phone number",
    "unknown_code": "no known country calling code",
    "too_short": "too few digits after the country code",
    "too_long": f"more than {MAX_DIGITS} digits, the longest a phone number can be: if it ends in an "
    "extension, mark it (ext. 12, x12)",
}
"""Why an entry is unreadable, by code: the text the error shows for each."""


@dataclass(frozen=True)
class ReadOptOuts:
    """The outcome of `read_opt_out_numbers`.

    Attributes:
        numbers: distinct E.164 digit strings (no `+`) to suppress, as `phone` (String).
        unreadable: the entries that could not be read: `line` (Int64), `entry` (raw text) and `reason` (a
            key of `REASONS`), in input order.
    """

    numbers: pl.Series
    unreadable: pl.DataFrame


def _hide_last_digits(text: str, count: int = 4) -> str:
    """`text` with its last `count` digits replaced by `*`, every other character kept."""
    chars = list(text)
    for i in reversed(range(len(chars))):
        if count == 0:
            break
        if chars[i].isdigit():
            chars[i], count = "*", count - 1
    return "".join(chars)


def mask_entry(entry: str) -> str:
    """The entry with the last four digits of its number hidden, and the digits of an extension too.

    `globe_sms.masking.mask_number` hides the last four characters, which for `8.52983E+10` or
    `+44 7911 123456 ext. 12` would hide letters and show every digit of the number.

    Example:
        >>> mask_entry("07911 123456"), mask_entry("8.52983E+10"), mask_entry("+44 7911 123456 x12")
        ('07911 12****', '8.529**E+**', '+44 7911 12**** x**')
    """
    match = re.search(EXTENSION_RE, entry)
    if match is None or match.start() == 0:
        return _hide_last_digits(entry)
    return _hide_last_digits(entry[: match.start()]) + re.sub(r"[0-9]", "*", entry[match.start() :])


def _readings(entries: pl.DataFrame, default_region: str | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The entries read as written (with the default region), and digits-only ones read as `+<digits>`."""
    stripped = (
        pl.col("entry")
        .str.replace(_TEL_URI_RE, "")
        .str.replace(EXTENSION_RE, "")
        .str.strip_chars()
        .alias("_number")
    )
    frame = entries.select(stripped)
    as_written = check_mobile_numbers(
        normalise_phones(frame, "_number", default_region=default_region), strict=False
    )
    international = pl.when(pl.col("_number").str.contains(_DIGIT_START_RE)).then(
        pl.lit("+") + pl.col("_number")
    )
    with_plus = check_mobile_numbers(
        normalise_phones(frame.select(international.alias("_number")), "_number"), strict=False
    )
    return as_written, with_plus


def _usable(reading: pl.DataFrame) -> pl.Series:
    """Rows of a reading whose digits resolve to a known calling code, with a plausible number of digits."""
    return reading.select(
        pl.col("_cc").is_not_null()
        & (pl.col("_nsn").str.len_bytes() >= _MIN_NATIONAL_DIGITS)
        & (pl.col("_digits").str.len_bytes() <= MAX_DIGITS)
    ).to_series().fill_null(False)


def _reason(reading: pl.DataFrame) -> pl.Expr:
    """The reason code of an unusable row, from the as-written reading's flags (first that applies)."""
    flags = ["_empty", "_damage", "_no_country_code", "_letters", "_invalid_characters", "_unknown_code"]
    too_long = pl.col("_digits").str.len_bytes() > MAX_DIGITS
    expr: pl.Expr = pl.when(too_long).then(pl.lit("too_long")).otherwise(pl.lit("too_short"))
    for flag in reversed(flags):
        expr = pl.when(pl.col(flag)).then(pl.lit(flag.removeprefix("_"))).otherwise(expr)
    return expr


def read_opt_out_numbers(entries: pl.DataFrame, *, default_region: str | None = None) -> ReadOptOuts:
    """Read opt-out entries as numbers to suppress, and list those that cannot be read.

    Args:
        entries: `entry` (String, raw text) and `line` (Int64: where the entry is, for messages).
        default_region: `ValidationRules.default_region`, for national numbers such as `07911 123456`.

    Returns:
        A `ReadOptOuts`: the distinct numbers to suppress and the unreadable entries.

    Example:
        >>> frame = pl.DataFrame({"entry": ["+44 7911 123456 x12", "8.52983E+10"], "line": [1, 2]})
        >>> read = read_opt_out_numbers(frame)
        >>> read.numbers.to_list(), read.unreadable["reason"].to_list()
        (['447911123456'], ['damage'])
    """
    as_written, with_plus = _readings(entries, default_region)
    first, second = _usable(as_written), _usable(with_plus)
    numbers = pl.concat(
        [as_written.get_column("_digits").filter(first), with_plus.get_column("_digits").filter(second)]
    )
    unreadable = (
        entries.select("line", "entry")
        .with_columns(as_written.select(_reason(as_written).alias("reason")).to_series())
        .filter(~(first | second))
    )
    return ReadOptOuts(numbers.unique(maintain_order=True).rename("phone"), unreadable)


__all__ = ["EXTENSION_RE", "REASONS", "ReadOptOuts", "mask_entry", "read_opt_out_numbers"]
