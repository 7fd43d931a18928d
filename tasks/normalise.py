"""Phone normalisation as pure polars expressions: raw cell text -> E.164 digits (no `+`), plus flags.

What happens to a raw value, in order (all vectorised, no per-row Python):

1. Spreadsheet text markers around an intact number are dropped (`'+852...`, `="00852..."`). Spreadsheet
   damage is detected on the raw text, because the digits are already gone: scientific notation
   (`4.47911E+11`) and a float's trailing `.0` (`447911123456.0`).
2. `(0)` is removed, then separators: whitespace (including no-break and zero-width spaces), dashes, dots,
   brackets and slashes. What is left must be `+?[0-9]+`; letters and other characters are flagged.
3. International prefixes: `+` and `00` always; the default region's own IDD (`011` in NANP, `810` in RU/KZ,
   `0011` in AU) only when a default region is given, because `011...` is a national mobile prefix elsewhere
   (South Korea). That IDD is tried before `00` (AU's `0011` is not `00` + `11`), and, like phonenumbers,
   an IDD followed by `0` is not an IDD.
4. Digits-only input without a prefix is a national number. With no default region it is flagged
   "no country code"; it is never given a `+` blindly (`13800138000` would pass as NANP and dodge the +86
   block). With a default region it gets that region's calling code, unless it already starts with it and only
   makes sense that way (phonenumbers' "country code without plus" rule: `447911123456` with default GB).

The national trunk prefix (`+44 07911...`, GB `07911...`) is stripped later, per calling code, in
`tasks/mobile_rules.py`, because whether to strip depends on the country's metadata.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from schemas.dialing_codes import code_for_region, region_rules
from tasks.mobile_rules import national_prefix_stripped

# Scientific notation or a float's trailing ".0": the cell was a number in a spreadsheet or CSV inference.
SCIENTIFIC_RE = r"^\+?[0-9]+(?:[.,][0-9]+)?[eE][+-]?[0-9]+$"
FLOAT_TAIL_RE = r"^\+?[0-9]+[.,]0+$"
_DAMAGE_RE = f"{SCIENTIFIC_RE}|{FLOAT_TAIL_RE}"
_CLEAN_E164_RE = r"^\+[0-9]+$"  # already clean: nothing to strip, flag or prefix
# `(0)` after a country code, then separators. \s is Unicode-aware in Rust regex (no-break space included);
# \p{Pd} covers every dash; U+200B..U+200F, U+2060 and U+FEFF are invisible marks pasted from web pages.
SEPARATORS_RE = r"\(0\)|[\s\p{Pd}.()\[\]/\x{200B}-\x{200F}\x{2060}\x{FEFF}]"
LETTER_RE = r"\p{L}"
# Spreadsheet text markers around an intact number: a leading apostrophe, or the ="..." formula trick.
TEXT_MARKER_RE = r"^'|^=\"(.*)\"$"
CLEAN_RE = r"^\+?[0-9]+$"  # [0-9], never \d: \d also matches Arabic-Indic and full-width digits

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

NORMALISED_COLUMNS = ("_digits", "_empty", "_letters", "_invalid_characters", "_damage", "_no_country_code")
"""The columns `normalise_phones` adds."""


def _idd_regex(default_region: str | None) -> str | None:
    """The default region's international prefix as an anchored regex, `00` excluded (always handled)."""
    if default_region is None:
        return None
    idd = region_rules(default_region).international_prefix
    return f"^(?:{idd})" if idd else None


def _national_to_digits(national: pl.Expr, default_region: str) -> pl.Expr:
    """Prefix a national number with the default region's code, unless it already carries it.

    Mirrors phonenumbers `_maybe_extract_country_code` for input without `+`: the leading code is taken as a
    country code when the whole number is not viable for the region but the rest is, or the whole is too long.
    """
    code = code_for_region(default_region)
    rules = region_rules(default_region)
    with_code = pl.lit(code) + national
    if rules.general is None:
        return with_code
    general = f"^(?:{rules.general.pattern})$"
    rest = national_prefix_stripped(national.str.slice(len(code)), rules)
    too_long = national.str.len_bytes() > max(rules.general_lengths)
    already_has_code = national.str.starts_with(code) & (
        (~national.str.contains(general) & rest.str.contains(general)) | too_long
    )
    return pl.when(already_has_code).then(national).otherwise(with_code)


def normalise_phones(
    frame: FrameT, column: str, *, default_region: str | None = None, numeric_source: bool = False
) -> FrameT:
    """Add the E.164 digits of a phone column (read as String) and one flag per unreadable kind of value.

    Stages are separate `with_columns` calls on purpose: polars does not share common sub-expressions
    reliably across a single large `select`, and the cleaned string feeds every later rule.

    Args:
        frame: a DataFrame or LazyFrame holding `column` as String.
        column: the raw phone column.
        default_region: ISO region for national numbers; None flags them as "no country code".
        numeric_source: the column came in as int/float (then cast to String): every value is spreadsheet
            damage, because a leading `+` or `00` cannot survive a numeric cell.

    Returns:
        The frame with the columns in `NORMALISED_COLUMNS` added: `_digits` (String, E.164 digits without
        `+`, calling code first, or null when the value cannot be read as a number) and Boolean flags
        `_empty`, `_letters`, `_invalid_characters`, `_damage`, `_no_country_code`. At most one flag is true
        per row, and `_digits` is null whenever one is.

    Example:
        >>> df = pl.DataFrame({"p": ["+852 6123 4567", "0044 (0)7911-123456", "4.47911E+11", None]})
        >>> normalise_phones(df, "p")["_digits"].to_list()
        ['85261234567', '447911123456', None, None]
    """
    if isinstance(frame, pl.LazyFrame) or numeric_source:
        return _normalise_all(frame, column, default_region, numeric_source)
    # Fast path for DataFrames: most lists are mostly clean E.164 (`+` and digits). Those rows need no
    # cleaning and can raise no flag, so only the other rows go through every rule (about 2x faster).
    clean = frame.select(pl.col(column).str.contains(_CLEAN_E164_RE).fill_null(False)).to_series()
    if clean.sum() < frame.height // 2:
        return _normalise_all(frame, column, default_region, numeric_source)
    others = clean.not_().arg_true()
    slow = _normalise_all(frame.select(column).filter(~clean), column, default_region, numeric_source)
    out = frame.with_columns(
        pl.when(clean).then(pl.col(column).str.slice(1)).alias("_digits"),
        *(pl.lit(False).alias(flag) for flag in NORMALISED_COLUMNS[1:]),
    )
    return out.with_columns(out.get_column(c).scatter(others, slow.get_column(c)) for c in NORMALISED_COLUMNS)


def _normalise_all(frame: FrameT, column: str, default_region: str | None, numeric_source: bool) -> FrameT:
    """Every normalisation rule on every row (the lazy path, and the slow part of the eager one)."""
    raw = pl.col(column)
    stripped, cleaned = pl.col("_stripped"), pl.col("_cleaned")
    unwrapped = raw.str.strip_chars().str.replace(TEXT_MARKER_RE, "${1}").str.strip_chars()
    out = frame.with_columns(unwrapped.alias("_stripped")).with_columns(
        stripped.str.replace_all(SEPARATORS_RE, "").alias("_cleaned")
    )
    empty = raw.is_null() | (cleaned.str.len_bytes() == 0)
    damage = pl.lit(numeric_source) | stripped.str.contains(_DAMAGE_RE)
    out = out.with_columns(empty.alias("_empty"), (~empty & damage).fill_null(False).alias("_damage"))
    out = out.with_columns(
        (~pl.col("_empty") & ~pl.col("_damage") & stripped.str.contains(LETTER_RE)).alias("_letters"),
        cleaned.str.contains(CLEAN_RE).fill_null(False).alias("_clean"),
    )
    out = out.with_columns(
        (~pl.col("_empty") & ~pl.col("_damage") & ~pl.col("_letters") & ~pl.col("_clean")).alias(
            "_invalid_characters"
        ),
    )
    readable = ~pl.col("_empty") & ~pl.col("_damage") & pl.col("_clean")

    plus = cleaned.str.starts_with("+")
    double_zero = cleaned.str.starts_with("00")
    digits: pl.Expr = pl.when(plus).then(cleaned.str.slice(1)).when(double_zero).then(cleaned.str.slice(2))
    idd = _idd_regex(default_region)
    if idd is None:
        out = out.with_columns((plus | double_zero).fill_null(False).alias("_international"))
    else:
        # The default region's IDD goes before `00`, so Australia's 0011 is not read as 00 + "11...".
        # phonenumbers `_parse_prefix_as_idd`: an IDD followed by 0 is a national number, not a prefix.
        after_idd = cleaned.str.replace(idd, "")
        is_idd = ~plus & cleaned.str.contains(idd) & ~after_idd.str.starts_with("0")
        out = out.with_columns(is_idd.fill_null(False).alias("_idd"))
        digits = pl.when(pl.col("_idd")).then(after_idd).otherwise(digits)
        out = out.with_columns((plus | double_zero | pl.col("_idd")).fill_null(False).alias("_international"))
    if default_region is not None:
        national = _national_to_digits(cleaned, default_region)
        digits = pl.when(pl.col("_international")).then(digits).otherwise(national)
        no_country_code = pl.lit(False)
    else:
        no_country_code = readable & ~pl.col("_international")
    out = out.with_columns(no_country_code.alias("_no_country_code"))
    out = out.with_columns(
        pl.when(readable & ~pl.col("_no_country_code")).then(digits).otherwise(None).alias("_digits")
    )
    original = [c for c in frame.collect_schema().names() if c not in NORMALISED_COLUMNS]
    return out.select(*original, *NORMALISED_COLUMNS)


def read_csv_as_strings(source: str | PathLike[str], **kwargs: Any) -> pl.DataFrame:
    """Read a CSV with every column as String, so phone numbers keep their `+`, `00` and leading zeros.

    CSV inference turns a digits-only phone column into Int64 (`00447911123456` -> 447911123456) and a column
    holding `4.47911E+11` into Float64; `infer_schema=False` prevents both. Cast other columns later.

    Args:
        source: path of the CSV file.
        **kwargs: passed on to `pl.read_csv` (e.g. `separator=";"`).

    Example:
        >>> frame = read_csv_as_strings("recipients.csv")  # doctest: +SKIP
    """
    return pl.read_csv(Path(source), infer_schema=False, **kwargs)


def scan_csv_as_strings(source: str | PathLike[str], **kwargs: Any) -> pl.LazyFrame:
    """The lazy twin of `read_csv_as_strings`, for sources too big to read at once."""
    return pl.scan_csv(Path(source), infer_schema=False, **kwargs)
