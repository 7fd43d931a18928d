"""Recipient validation: normalise, check, dedupe, suppress and split a recipient list, without Prefect.

`validate_recipients(frame, phone_column, rules)` is the pure entry point the campaign flow wraps in a task.
It never drops a row silently: every input row ends up either in `ValidationResult.valid` (ready to render)
or in `ValidationResult.rejects` with its original values, its 1-based source row and *all* of its reasons.

Pipeline (one vectorised pass per stage over a narrow frame holding only the phone column):

    raw phone ─► normalise (tasks/normalise.py) ─► calling code, trunk prefix, region, lengths,
    strict mobile pattern (tasks/mobile_rules.py) ─► policy: mainland China, allow/deny lists
    ─► dedupe (first occurrence wins) ─► suppression ─► split ─► pandera contracts (schemas/recipients.py)

Errors:

    ValueError
    ├── RecipientSchemaError   the frame itself is unusable (phone column missing, wrong dtype, name clash)
    └── TooManyRejects         `check_reject_share`: the rejected share exceeds `max_reject_share`
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Annotated

import pandera.polars as pa
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.dialing_codes import MAINLAND_CHINA_CODE, METADATA_VERSION, dialing_tables, known_regions
from schemas.recipients import RejectedRecipients, ValidRecipients, raw_recipients_schema
from tasks.mobile_rules import check_mobile_numbers
from tasks.normalise import normalise_phones, read_csv_as_strings

# Reason codes, in the order they are listed for a row. Stable: reports and dashboards key on them.
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
"""Every reason code `validate_recipients` can give, in report order."""

NOT_INVALID_CODES = frozenset({DUPLICATE, SUPPRESSED})
"""Reasons that say nothing about the quality of the source; `check_reject_share` does not count them."""

OUTPUT_COLUMNS = ("phone", "country", "dialing_code", "source_row")
REJECT_COLUMNS = ("source_row", "reasons", "reason_text")
_RESERVED = frozenset({*OUTPUT_COLUMNS, *REJECT_COLUMNS})

RegionCode = Annotated[str, Field(min_length=2, max_length=2, pattern=r"^[A-Za-z]{2}$")]


class RecipientSchemaError(ValueError):
    """The recipient frame cannot be validated at all: the phone column is missing or of an unusable type."""


class TooManyRejects(ValueError):
    """More of the list was rejected than the campaign's `max_reject_share` allows; nothing was sent."""


class ValidationRules(BaseModel):
    """How a campaign validates its recipients (embedded in the Campaign model as `validation:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_region: RegionCode | None = Field(
        default=None,
        description=(
            "ISO region (e.g. 'GB') used to read numbers written without a country code, such as "
            "'07911 123456'. Leave empty to reject them with reason 'no_country_code'."
        ),
    )
    allow_countries: list[RegionCode] = Field(
        default_factory=list,
        description="ISO regions to send to (e.g. ['HK', 'SG']). Empty means every region except mainland China.",
    )
    deny_countries: list[RegionCode] = Field(
        default_factory=list,
        description="ISO regions never to send to; wins over allow_countries.",
    )
    strict_mobile: bool = Field(
        default=True,
        description=(
            "Check each number against its country's mobile number ranges (phonenumbers metadata), not only its "
            "length. Turning it off lets numbers such as '+1 380 0138000' (a Chinese mobile with '+1') through."
        ),
    )
    max_reject_share: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Largest share (0..1) of invalid rows before the campaign fails without sending anything. "
            "Duplicates and suppressed numbers do not count as invalid."
        ),
    )
    suppression_file: str | None = Field(
        default=None,
        description=(
            "Path of an opt-out list: a text file with one number per line, or a CSV with a 'phone' column. "
            "Its numbers are normalised like the recipients' (same default_region)."
        ),
    )

    @field_validator("default_region", "allow_countries", "deny_countries", mode="after")
    @classmethod
    def _known_regions(cls, value: str | list[str] | None) -> str | list[str] | None:
        """Upper-case region codes and refuse ones phonenumbers does not know."""
        if value is None:
            return None
        codes = [value] if isinstance(value, str) else value
        upper = [c.upper() for c in codes]
        unknown = sorted(set(upper) - known_regions())
        if unknown:
            raise ValueError(f"unknown ISO region(s) {unknown}")
        return upper[0] if isinstance(value, str) else upper

    @model_validator(mode="after")
    def _mainland_never_allowed(self) -> ValidationRules:
        """Mainland China is refused by policy, so allowing it would silently do nothing."""
        if "CN" in self.allow_countries:
            raise ValueError("allow_countries cannot contain 'CN': mainland China (+86) is always refused")
        return self


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of `validate_recipients`: every input row is in exactly one of `valid` and `rejects`.

    Attributes:
        valid: original columns plus `phone` (E.164 digits, no `+`), `country` (ISO region), `dialing_code`
            and `source_row` (1-based row in the source, header excluded). If the phone column is itself
            called `phone`, it holds the normalised number here and the raw value only in the source.
        rejects: original columns plus `source_row`, `reasons` (list of reason codes) and `reason_text`.
        suppressed: rows refused because their number is on the suppression list.
        duplicates: rows refused as repeats of an earlier row (reason text `duplicate of row N`).
        reasons: rejected rows per reason code (a row with two reasons counts under both).
        metadata_version: the phonenumbers release whose metadata decided validity.
    """

    valid: pl.DataFrame
    rejects: pl.DataFrame
    suppressed: int
    duplicates: int
    reasons: dict[str, int]
    metadata_version: str

    @property
    def total(self) -> int:
        """Rows in the source."""
        return self.valid.height + self.rejects.height

    @property
    def invalid(self) -> int:
        """Rejected rows with at least one reason other than `duplicate` and `suppressed`."""
        if self.rejects.is_empty():
            return 0
        other = pl.col("reasons").list.set_difference(pl.lit(sorted(NOT_INVALID_CODES)))
        return int(self.rejects.select((other.list.len() > 0).sum()).item())

    @property
    def invalid_share(self) -> float:
        """`invalid / total` (0.0 for an empty list)."""
        return self.invalid / self.total if self.total else 0.0


def _schema_check(frame: pl.DataFrame, phone_column: str) -> bool:
    """Raise `RecipientSchemaError` for an unusable frame; return True when the phone column is numeric."""
    if not isinstance(frame, pl.DataFrame):
        raise RecipientSchemaError(
            f"expected a materialised polars DataFrame, got {type(frame).__name__}; collect() a LazyFrame first"
        )
    if phone_column not in frame.columns:
        raise RecipientSchemaError(
            f"phone column {phone_column!r} is missing; the frame has columns {frame.columns}"
        )
    clash = sorted((_RESERVED - {phone_column}) & set(frame.columns) - {"source_row"})
    if clash:
        raise RecipientSchemaError(
            f"column(s) {clash} clash with the columns validation adds; rename them before validating"
        )
    if "source_row" in frame.columns and not frame.schema["source_row"].is_integer():
        raise RecipientSchemaError(
            f"column 'source_row' must hold integer row numbers, found {frame.schema['source_row']}"
        )
    dtype = frame.schema[phone_column]
    if dtype.is_numeric():
        return True
    if dtype in (pl.String, pl.Null, pl.Categorical) or isinstance(dtype, pl.Enum):
        return False
    raise RecipientSchemaError(
        f"phone column {phone_column!r} has dtype {dtype}; expected String (read sources with "
        "tasks.normalise.read_csv_as_strings or schema_overrides={column: pl.String})"
    )


def _phones_as_text(frame: pl.DataFrame, phone_column: str, numeric: bool) -> pl.DataFrame:
    """The phone column alone, as String, checked against `RawRecipients`."""
    phones = frame.select(pl.col(phone_column).cast(pl.String))
    try:
        raw_recipients_schema(phone_column).validate(phones, lazy=True)
    except pa.errors.SchemaErrors as exc:  # pragma: no cover - _schema_check catches these first
        raise RecipientSchemaError(f"phone column {phone_column!r} failed the raw schema: {exc}") from exc
    return phones


def normalise_numbers(numbers: pl.Series, *, default_region: str | None = None) -> pl.Series:
    """Normalise a list of numbers to the E.164 digits validation compares with (the suppression hook).

    Unreadable entries (empty, letters, unknown codes) are dropped; lengths and patterns are not checked, so an
    opt-out stays effective whatever its format.

    Args:
        numbers: raw numbers, any dtype (cast to String).
        default_region: as in `ValidationRules.default_region`.

    Returns:
        A String Series named `phone` of distinct E.164 digit strings without `+`.
    """
    phones = pl.DataFrame({"_raw": numbers.cast(pl.String)})
    digits = normalise_phones(phones.with_row_index("_i"), "_raw", default_region=default_region)
    checked = check_mobile_numbers(digits, strict=False)
    return (
        checked.filter(pl.col("_region").is_not_null())
        .select((pl.col("_cc") + pl.col("_nsn")).alias("phone"))
        .unique(maintain_order=True)
        .to_series()
    )


def load_suppression_file(path: str | PathLike[str]) -> pl.Series:
    """Read an opt-out list: a CSV with a `phone` column, or plain text with one number per line.

    Blank lines and lines starting with `#` are skipped. Values are returned raw (as String); normalise them
    with `normalise_numbers`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a CSV file (several columns) has no `phone` column.
    """
    path = Path(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        return pl.Series("phone", [], dtype=pl.String)
    header = lines[0]
    if header.lower().strip("\"'") == "phone" or any(sep in header for sep in ",;\t"):
        separator = next((sep for sep in ",;\t" if sep in header), ",")
        table = read_csv_as_strings(path, separator=separator, comment_prefix="#")
        column = next((c for c in table.columns if c.strip().lower() == "phone"), None)
        if column is None:
            raise ValueError(f"suppression file {str(path)!r} has columns {table.columns} but no 'phone' column")
        return table.get_column(column).rename("phone")
    return pl.Series("phone", lines, dtype=pl.String)


def _suppression_numbers(rules: ValidationRules, suppression: pl.Series | None) -> pl.Series | None:
    """Normalised opt-out numbers from the rules' file and the caller's Series, or None when there are none."""
    sources = []
    if rules.suppression_file is not None:
        sources.append(load_suppression_file(rules.suppression_file))
    if suppression is not None:
        sources.append(suppression.cast(pl.String).rename("phone"))
    if not sources:
        return None
    return normalise_numbers(pl.concat(sources), default_region=rules.default_region)


_LENGTH_TEXT_CACHE: dict[str, str] = {}


def _length_text() -> dict[str, str]:
    """Calling code -> "8" / "10 or 11": the mobile lengths the reason text quotes."""
    if not _LENGTH_TEXT_CACHE:
        for code, cc in dialing_tables().codes.items():
            lengths = [str(n) for n in cc.mobile_lengths] or ["no"]
            text = lengths[0] if len(lengths) == 1 else ", ".join(lengths[:-1]) + " or " + lengths[-1]
            _LENGTH_TEXT_CACHE[code] = text
    return _LENGTH_TEXT_CACHE


def _reason_exprs(rules: ValidationRules) -> dict[str, tuple[pl.Expr, pl.Expr]]:
    """Reason code -> (flag, human text) over the narrow helper frame."""
    cc, nsn, region = pl.col("_cc"), pl.col("_nsn"), pl.col("_region")
    n_digits = nsn.str.len_bytes().cast(pl.String)
    expected = cc.replace_strict(_length_text(), default="no", return_dtype=pl.String)
    length_text = pl.format("{} digits after +{}; mobile numbers there have {}", n_digits, cc, expected)
    flags: dict[str, tuple[pl.Expr, pl.Expr]] = {
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
                "numeric column), so digits or the leading '+'/'00' are lost; re-export the phone column as text"
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
            (cc == MAINLAND_CHINA_CODE).fill_null(False),
            pl.lit("+86 is mainland China, which BatchSendMessageToGlobe does not serve (852, 853, 886 are fine)"),
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
    }
    allow, deny = rules.allow_countries, rules.deny_countries
    allowed_flag = (~region.is_in(allow)).fill_null(False) if allow else pl.lit(False)
    denied_flag = region.is_in(deny).fill_null(False) if deny else pl.lit(False)
    flags[COUNTRY_NOT_ALLOWED] = (allowed_flag, pl.format("{} is not in allow_countries", region))
    flags[COUNTRY_DENIED] = (denied_flag, pl.format("{} is in deny_countries", region))
    flags[DUPLICATE] = (pl.col("_duplicate"), pl.format("duplicate of row {}", pl.col("_first_row")))
    flags[SUPPRESSED] = (pl.col("_suppressed"), pl.lit("the number is on the suppression (opt-out) list"))
    return flags


def _helper_frame(
    frame: pl.DataFrame,
    phone_column: str,
    numeric: bool,
    rules: ValidationRules,
    suppressed_numbers: pl.Series | None,
) -> pl.DataFrame:
    """One row per input row: source_row, the normalised number and a Boolean column per rule."""
    phones = _phones_as_text(frame, phone_column, numeric)
    if "source_row" in frame.columns:
        rows = frame.get_column("source_row").cast(pl.Int64)
    else:
        rows = pl.int_range(1, frame.height + 1, dtype=pl.Int64, eager=True)
    normalised = normalise_phones(
        phones.lazy().with_row_index("_i"),
        phone_column,
        default_region=rules.default_region,
        numeric_source=numeric,
    ).drop(phone_column).collect()
    helper = check_mobile_numbers(normalised, strict=rules.strict_mobile).with_columns(rows.alias("source_row"))
    phone = pl.when(pl.col("_region").is_not_null()).then(pl.col("_cc") + pl.col("_nsn"))
    helper = helper.with_columns(phone.alias("_phone"))
    duplicate = pl.col("_phone").is_not_null() & ~pl.col("_phone").is_first_distinct()
    helper = helper.with_columns(duplicate.alias("_duplicate"))
    if suppressed_numbers is not None and suppressed_numbers.len():
        helper = helper.with_columns(pl.col("_phone").is_in(suppressed_numbers.implode()).fill_null(False).alias("_suppressed"))
    else:
        helper = helper.with_columns(pl.lit(False).alias("_suppressed"))
    return helper


def _first_rows(helper: pl.DataFrame) -> pl.DataFrame:
    """For duplicated numbers, the source row of their first occurrence (computed on the few repeats only)."""
    repeated = helper.filter(pl.col("_duplicate")).select("_phone").unique()
    return (
        helper.filter(pl.col("_phone").is_in(repeated.to_series().implode()) & ~pl.col("_duplicate"))
        .select("_phone", pl.col("source_row").alias("_first_row"))
    )


def validate_recipients(
    frame: pl.DataFrame,
    phone_column: str,
    rules: ValidationRules | None = None,
    suppression: pl.Series | None = None,
) -> ValidationResult:
    """Validate, deduplicate and suppress a recipient list, and split it into valid rows and rejects.

    Args:
        frame: the recipient list, materialised. Read CSVs with `read_csv_as_strings` so the phone column is
            String; an int/float phone column is accepted but every value is rejected as spreadsheet damage.
            A `source_row` integer column, if present, is kept as the row number (for pre-split batches).
        phone_column: name of the phone column.
        rules: the campaign's `ValidationRules` (defaults: no default region, strict mobile patterns).
        suppression: extra opt-out numbers (any format), added to `rules.suppression_file`.

    Returns:
        A `ValidationResult`; its `valid` and `rejects` frames partition the input rows.

    Raises:
        RecipientSchemaError: the phone column is missing or of an unusable type, or an input column clashes
            with an output column.

    Example:
        >>> frame = pl.DataFrame({"name": ["Ann", "Bo"], "mobile": ["+852 6123 4567", "+86 138 0013 8000"]})
        >>> result = validate_recipients(frame, "mobile")
        >>> result.valid["phone"].to_list(), result.rejects["reasons"].to_list()
        (['85261234567'], [['mainland_china']])
    """
    rules = rules if rules is not None else ValidationRules()
    numeric = _schema_check(frame, phone_column)
    suppressed_numbers = _suppression_numbers(rules, suppression)
    helper = _helper_frame(frame, phone_column, numeric, rules, suppressed_numbers)
    flags = _reason_exprs(rules)

    rejected = helper.select(pl.any_horizontal(flag for flag, _ in flags.values()).alias("_rejected")).to_series()
    keep = ~rejected

    valid = (
        frame.drop("source_row", strict=False)
        .filter(keep)
        .with_columns(
            helper.filter(keep)
            .select(
                pl.col("_phone").alias("phone"),
                pl.col("_region").alias("country"),
                pl.col("_cc").alias("dialing_code"),
                "source_row",
            )
            .get_columns()
        )
    )

    bad = helper.filter(rejected)
    if bad.filter(pl.col("_duplicate")).height:
        bad = bad.join(_first_rows(helper), on="_phone", how="left", maintain_order="left")
    else:
        bad = bad.with_columns(pl.lit(None, pl.Int64).alias("_first_row"))
    reasons = bad.select(
        pl.concat_list([pl.when(flag).then(pl.lit(code)) for code, (flag, _) in flags.items()])
        .list.drop_nulls()
        .alias("reasons"),
        pl.concat_str(
            [pl.when(flag).then(text) for flag, text in flags.values()], separator="; ", ignore_nulls=True
        ).alias("reason_text"),
        "source_row",
    )
    rejects = frame.drop("source_row", strict=False).filter(rejected).with_columns(reasons.get_columns())

    ValidRecipients.validate(valid, lazy=True)
    RejectedRecipients.validate(rejects, lazy=True)

    counts = (
        reasons.select(pl.col("reasons").explode().value_counts(sort=True)).unnest("reasons")
        if reasons.height
        else pl.DataFrame({"reasons": [], "count": []})
    )
    by_reason = dict(zip(counts["reasons"].to_list(), counts["count"].to_list(), strict=True))
    return ValidationResult(
        valid=valid,
        rejects=rejects,
        suppressed=by_reason.get(SUPPRESSED, 0),
        duplicates=by_reason.get(DUPLICATE, 0),
        reasons={code: by_reason[code] for code in REASON_CODES if code in by_reason},
        metadata_version=METADATA_VERSION,
    )


def check_reject_share(result: ValidationResult, rules: ValidationRules) -> None:
    """Fail the campaign before sending when too much of the list is invalid.

    The share counts rows rejected for data reasons; duplicates and suppressed numbers alone do not count.

    Raises:
        TooManyRejects: `result.invalid_share` exceeds `rules.max_reject_share`.
    """
    share = result.invalid_share
    if share > rules.max_reject_share:
        raise TooManyRejects(
            f"{share:.2%} of the recipients are invalid ({result.invalid} of {result.total} rows), "
            f"above max_reject_share {rules.max_reject_share:.2%}; nothing was sent"
        )


__all__ = [
    "REASON_CODES",
    "RecipientSchemaError",
    "TooManyRejects",
    "ValidationResult",
    "ValidationRules",
    "check_reject_share",
    "load_suppression_file",
    "normalise_numbers",
    "read_csv_as_strings",
    "validate_recipients",
]
