"""Reject reason codes: stable snake_case codes, the rule flag behind each, and a human sentence for each.

A row's reasons are kept as a bitmask while the whole list is processed (one UInt32 per row), and only the
rejected rows are turned into a list of codes (through a join on the few distinct masks) and a sentence.

| code | meaning |
|---|---|
| empty | no phone at all (null, blank, only separators) |
| letters | letters in the phone (`call me`, `ext. 12`, vanity numbers) |
| invalid_characters | anything else that is not a digit, a leading `+` or a separator |
| spreadsheet_damage | `4.47911E+11`, `447911123456.0`, or a numeric (int/float) phone column |
| no_country_code | digits only, no `+`/`00`, and no `default_region` |
| unknown_dialing_code | no ITU calling code starts the number |
| non_geographic_code | +800, +808, +870, +878, +881, +882, +883, +888, +979 (no country) |
| mainland_china | +86: BatchSendMessageToGlobe does not serve mainland China (852/853/886 are fine) |
| too_short / too_long | fewer / more national digits than any mobile number of that code |
| invalid_length | a length between the code's mobile lengths that none of them has |
| invalid_mobile_pattern | right length, but not in a mobile range of the region (strict mode) |
| country_not_allowed / country_denied | the campaign's allow / deny lists |
| duplicate | the same normalised number appeared on an earlier row (text: `duplicate of row N`) |
| suppressed | the number is on the opt-out list |
"""

from __future__ import annotations

import polars as pl

from schemas.dialing_codes import MAINLAND_CHINA_CODE, METADATA_VERSION, dialing_tables

EMPTY = "empty"
LETTERS = "letters"
INVALID_CHARACTERS = "invalid_characters"
SPREADSHEET_DAMAGE = "spreadsheet_damage"
NO_COUNTRY_CODE = "no_country_code"
UNKNOWN_DIALING_CODE = "unknown_dialing_code"
NON_GEOGRAPHIC_CODE = "non_geographic_code"
MAINLAND_CHINA = "mainland_china"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
INVALID_LENGTH = "invalid_length"
INVALID_MOBILE_PATTERN = "invalid_mobile_pattern"
COUNTRY_NOT_ALLOWED = "country_not_allowed"
COUNTRY_DENIED = "country_denied"
DUPLICATE = "duplicate"
SUPPRESSED = "suppressed"

REASON_CODES: tuple[str, ...] = (
    EMPTY,
    LETTERS,
    INVALID_CHARACTERS,
    SPREADSHEET_DAMAGE,
    NO_COUNTRY_CODE,
    UNKNOWN_DIALING_CODE,
    NON_GEOGRAPHIC_CODE,
    MAINLAND_CHINA,
    TOO_SHORT,
    TOO_LONG,
    INVALID_LENGTH,
    INVALID_MOBILE_PATTERN,
    COUNTRY_NOT_ALLOWED,
    COUNTRY_DENIED,
    DUPLICATE,
    SUPPRESSED,
)
"""Every reason code, in the order a row's reasons are listed."""

NOT_INVALID_CODES = frozenset({DUPLICATE, SUPPRESSED})
"""Reasons that say nothing about the quality of the source (`check_reject_share` ignores them)."""


def _length_text() -> dict[str, str]:
    """Calling code -> "8" / "10 or 11": the mobile lengths a length reason quotes."""
    out = {}
    for code, cc in dialing_tables().codes.items():
        lengths = [str(n) for n in cc.mobile_lengths] or ["no"]
        out[code] = lengths[0] if len(lengths) == 1 else ", ".join(lengths[:-1]) + " or " + lengths[-1]
    return out


def reason_flags(allow_countries: list[str], deny_countries: list[str]) -> dict[str, tuple[pl.Expr, pl.Expr]]:
    """Reason code -> (Boolean flag, human text) over the helper frame built by `validate_recipients`.

    The helper frame has the normalisation flags (`tasks/normalise.py`), the mobile-rule columns
    (`tasks/mobile_rules.py`), `_duplicate`, `_first_row` and `_suppressed`.
    """
    # Flags compare the Enum columns as they are; only the sentences need them as text.
    code, country = pl.col("_cc"), pl.col("_region")
    cc, nsn, region = code.cast(pl.String), pl.col("_nsn"), country.cast(pl.String)
    expected = cc.replace_strict(_length_text(), default="no", return_dtype=pl.String)
    length_text = pl.format(
        "{} digits after +{}; mobile numbers there have {}", nsn.str.len_bytes().cast(pl.String), cc, expected
    )
    allowed = (~country.is_in(allow_countries)).fill_null(False) if allow_countries else pl.lit(False)
    denied = country.is_in(deny_countries).fill_null(False) if deny_countries else pl.lit(False)
    flags = {
        EMPTY: (pl.col("_empty"), pl.lit("the phone cell is empty")),
        LETTERS: (pl.col("_letters"), pl.lit("the phone contains letters")),
        INVALID_CHARACTERS: (
            pl.col("_invalid_characters"),
            pl.lit("the phone contains characters other than digits, a leading '+' and separators"),
        ),
        SPREADSHEET_DAMAGE: (
            pl.col("_damage"),
            pl.lit(
                "the value was stored as a spreadsheet number (scientific notation, a trailing '.0' or a "
                "numeric column), so digits or the leading '+'/'00' are lost; export the phone column as text"
            ),
        ),
        NO_COUNTRY_CODE: (
            pl.col("_no_country_code"),
            pl.lit("no country code ('+' or '00') and the campaign sets no default_region"),
        ),
        UNKNOWN_DIALING_CODE: (
            pl.col("_unknown_code"),
            pl.format("no known dialing code at the start of +{}", pl.col("_digits")),
        ),
        NON_GEOGRAPHIC_CODE: (
            pl.col("_non_geographic"),
            pl.format("+{} is a non-geographic code (satellite, freephone or IoT), not a country", cc),
        ),
        MAINLAND_CHINA: (
            (code == MAINLAND_CHINA_CODE).fill_null(False),
            pl.lit(
                "+86 is mainland China, which BatchSendMessageToGlobe does not serve (852, 853, 886 are fine)"
            ),
        ),
        TOO_SHORT: (pl.col("_too_short"), length_text),
        TOO_LONG: (pl.col("_too_long"), length_text),
        INVALID_LENGTH: (pl.col("_invalid_length"), length_text),
        INVALID_MOBILE_PATTERN: (
            pl.col("_bad_pattern"),
            pl.format(
                "+{} {} is not in a mobile number range of {} (phonenumbers {})",
                cc,
                nsn,
                region.fill_null(pl.lit("any region of +") + cc),
                pl.lit(METADATA_VERSION),
            ),
        ),
        COUNTRY_NOT_ALLOWED: (allowed, pl.format("{} is not in allow_countries", region)),
        COUNTRY_DENIED: (denied, pl.format("{} is in deny_countries", region)),
        DUPLICATE: (pl.col("_duplicate"), pl.format("duplicate of row {}", pl.col("_first_row"))),
        SUPPRESSED: (pl.col("_suppressed"), pl.lit("the number is on the suppression (opt-out) list")),
    }
    assert tuple(flags) == REASON_CODES
    return flags


def rejected(flags: dict[str, tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """True for a row with at least one reason (cheaper than `reason_mask` on the whole list)."""
    return pl.any_horizontal([flag.fill_null(False) for flag, _ in flags.values()]).alias("_rejected")


def reason_mask(flags: dict[str, tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """One UInt32 per row, bit i set when reason `REASON_CODES[i]` applies; 0 means the row is valid."""
    bits = [flag.fill_null(False).cast(pl.UInt32) * (1 << i) for i, (flag, _) in enumerate(flags.values())]
    return pl.sum_horizontal(bits).cast(pl.UInt32).alias("_mask")


def reason_lists(masks: pl.Series) -> pl.DataFrame:
    """A small table `_mask` -> `reasons` (list of codes) for the distinct masks of the rejected rows."""
    distinct = masks.unique().sort().to_list()
    lists = [[code for i, code in enumerate(REASON_CODES) if mask >> i & 1] for mask in distinct]
    return pl.DataFrame(
        {"_mask": distinct, "reasons": lists}, schema={"_mask": pl.UInt32, "reasons": pl.List(pl.String)}
    )


def reason_text(
    rejected: pl.DataFrame, flags: dict[str, tuple[pl.Expr, pl.Expr]], lists: pl.DataFrame
) -> pl.Series:
    """All of each rejected row's reasons as one sentence, joined with `; `, in `REASON_CODES` order.

    `lists` is the `reason_lists` table of those rows: only the reasons that occur get a text. A sentence that
    depends on the row (`duplicate of row 3`, a length) is formatted for the rows with that reason only.
    """
    present = set(lists.get_column("reasons").explode().drop_nulls().to_list())
    texts: list[pl.Expr | pl.Series] = []
    for code, (flag, text) in flags.items():
        if code not in present:
            continue
        if text.meta.is_literal():
            texts.append(pl.when(flag).then(text))
            continue
        at = rejected.select(flag.fill_null(False)).to_series().arg_true()
        formatted = rejected[at].select(text).to_series()
        texts.append(pl.repeat(None, rejected.height, dtype=pl.String, eager=True).scatter(at, formatted))
    if not texts:
        return pl.repeat("", rejected.height, dtype=pl.String, eager=True).alias("reason_text")
    return rejected.select(
        pl.concat_str(texts, separator="; ", ignore_nulls=True).alias("reason_text")
    ).to_series()
