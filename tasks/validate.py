"""Recipient validation: normalise, check, dedupe, suppress and split a recipient list, without Prefect.

`validate_recipients(frame, phone_column, rules)` is the pure entry point the campaign flow wraps in a task.
It never drops a row silently: every input row ends up either in `ValidationResult.valid` (ready to render)
or in `ValidationResult.rejects` with its original values, its 1-based source row and *all* of its reasons.

Pipeline (one vectorised pass per stage over a narrow frame holding only the phone column):

    raw phone ─► normalise (tasks/normalise.py) ─► calling code, trunk prefix, region, lengths,
    strict mobile pattern (tasks/mobile_rules.py) ─► policy: mainland China, allow/deny lists
    ─► dedupe (first occurrence wins) ─► suppression ─► split ─► pandera contracts (schemas/recipients.py)

The rules model and the errors are `globe_sms/validation_rules.py` (a campaign's `validation:`), the result
and the reject-share check `tasks/validation_result.py`:

    ValueError
    ├── RecipientSchemaError   the frame itself is unusable (phone column missing, wrong dtype, name clash)
    └── TooManyRejects         `tasks.spool.check_reject_share`: the invalid share exceeds `max_reject_share`
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandera.polars as pa
import polars as pl

from globe_sms.validation_rules import RecipientSchemaError, ValidationRules
from schemas.dialing_codes import METADATA_VERSION
from schemas.recipients import RejectedRecipients, ValidRecipients, raw_recipients_schema
from tasks.mobile_rules import check_mobile_numbers
from tasks.normalise import normalise_phones, read_csv_as_strings
from tasks.reasons import (
    DUPLICATE,
    REASON_CODES,
    SUPPRESSED,
    reason_flags,
    reason_lists,
    reason_mask,
    reason_text,
    rejected,
)
from tasks.suppression import (
    OptOuts,
    load_opt_outs,
    load_suppression_file,
    normalise_numbers,
    numbered_entries,
    read_opt_outs,
)
from tasks.validation_result import ValidationResult

OUTPUT_COLUMNS = ("phone", "country", "dialing_code", "source_row")
REJECT_COLUMNS = ("source_row", "reasons", "reason_text")
_RESERVED = frozenset({*OUTPUT_COLUMNS, *REJECT_COLUMNS})


def _schema_check(frame: pl.DataFrame, phone_column: str) -> bool:
    """Raise `RecipientSchemaError` for an unusable frame; return True when the phone column is numeric."""
    if not isinstance(frame, pl.DataFrame):
        raise RecipientSchemaError(
            f"expected a materialised polars DataFrame, got {type(frame).__name__}; "
            "collect() a LazyFrame first"
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
    if "source_row" in frame.columns:
        rows = frame.get_column("source_row")
        if (
            not rows.dtype.is_integer()
            or rows.null_count()
            or (rows < 1).any()
            or rows.n_unique() != len(rows)
        ):
            raise RecipientSchemaError(
                f"column 'source_row' must hold distinct integer row numbers >= 1, found {rows.dtype} "
                "with nulls, duplicates or values below 1; drop it to have rows numbered from 1"
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


def _suppression_keys(rules: ValidationRules, suppression: pl.Series | OptOuts | None) -> pl.Series | None:
    """Opt-out numbers from the rules' lists and the caller's as Int64 keys (None if there are none)."""
    keys = []
    opt_outs = load_opt_outs(rules)
    if opt_outs is not None:
        keys.append(opt_outs.keys)
    if isinstance(suppression, OptOuts):
        keys.append(suppression.keys)
    elif suppression is not None:
        keys.append(read_opt_outs(numbered_entries(suppression), rules, "suppression", "entry").keys)
    return pl.concat(keys) if keys else None


def _row_rules(
    phones: pl.DataFrame, phone_column: str, numeric: bool, rules: ValidationRules
) -> pl.DataFrame:
    """Normalisation and per-country rules, plus the Int64 key of each number with a region.

    (Running slices of the list in threads was tried: on the shared 2-core VM it was 10-30% slower.)
    """
    normalised = normalise_phones(
        phones, phone_column, default_region=rules.default_region, numeric_source=numeric
    ).drop(phone_column)
    checked = check_mobile_numbers(normalised, strict=rules.strict_mobile)
    # An E.164 number has at most 15 digits: an Int64 key makes dedupe and suppression integer hashing.
    key = pl.when(pl.col("_region").is_not_null()).then(pl.col("_digits").cast(pl.Int64))
    return checked.with_columns(key.alias("_key"))


def _helper_frame(
    frame: pl.DataFrame,
    phone_column: str,
    numeric: bool,
    rules: ValidationRules,
    suppressed: pl.Series | None,
) -> pl.DataFrame:
    """One row per input row: row number, normalised number and a Boolean column per rule."""
    helper = _row_rules(_phones_as_text(frame, phone_column, numeric), phone_column, numeric, rules)
    if "source_row" in frame.columns:
        rows = frame.get_column("source_row").cast(pl.Int64)
    else:
        rows = pl.int_range(1, frame.height + 1, dtype=pl.Int64, eager=True)
    key = pl.col("_key")
    suppressed_flag = (
        key.is_in(suppressed.implode()).fill_null(False) if suppressed is not None else pl.lit(False)
    )
    return helper.with_columns(
        rows.alias("source_row"),
        (key.is_not_null() & ~key.is_first_distinct()).alias("_duplicate"),
        suppressed_flag.alias("_suppressed"),
    )


def _with_first_rows(rejected: pl.DataFrame, helper: pl.DataFrame) -> pl.DataFrame:
    """Add `_first_row`: for duplicates, the source row of the number's first occurrence."""
    repeated = rejected.filter(pl.col("_duplicate")).get_column("_key").unique()
    if repeated.is_empty():
        return rejected.with_columns(pl.lit(None, pl.Int64).alias("_first_row"))
    firsts = (
        helper.select("_key", pl.col("source_row").alias("_first_row"), "_duplicate")
        .filter(pl.col("_key").is_in(repeated.implode()) & ~pl.col("_duplicate"))
        .drop("_duplicate")
    )
    return rejected.join(firsts, on="_key", how="left", maintain_order="left")


def _rejects(
    source: pl.DataFrame, helper: pl.DataFrame, keep: pl.Series, flags: dict[str, tuple[pl.Expr, pl.Expr]]
) -> tuple[pl.DataFrame, pl.Series]:
    """The rejected rows (original columns, `source_row`, `reasons` and `reason_text`) and their bitmasks."""
    refused = _with_first_rows(helper.filter(~keep).with_columns(reason_mask(flags)), helper)
    lists = reason_lists(refused.get_column("_mask"))
    refused = refused.join(lists, on="_mask", maintain_order="left")
    details = refused.select("source_row", "reasons", reason_text(refused, flags, lists))
    return source.filter(~keep).with_columns(details.get_columns()), refused.get_column("_mask")


def _count_reasons(masks: pl.Series) -> dict[str, int]:
    """Rejected rows per reason code, from the rejected rows' bitmasks."""
    by_reason = dict.fromkeys(REASON_CODES, 0)
    for mask, n in masks.value_counts().iter_rows():
        for i, code in enumerate(REASON_CODES):
            if mask >> i & 1:
                by_reason[code] += n
    return by_reason


def _contract(model: type[pa.DataFrameModel], frame: pl.DataFrame) -> None:
    """Validate an output frame against its pandera model; a failure here is a bug in this module."""
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        raise AssertionError(
            f"{model.__name__} contract broken by validate_recipients:\n{exc.failure_cases.head(20)}"
        ) from exc


def validate_recipients(
    frame: pl.DataFrame,
    phone_column: str,
    rules: ValidationRules | None = None,
    suppression: pl.Series | OptOuts | None = None,
) -> ValidationResult:
    """Validate, deduplicate and suppress a recipient list, and split it into valid rows and rejects.

    Args:
        frame: the recipient list, materialised. Read CSVs with `read_csv_as_strings` so the phone column is
            String; an int/float phone column is accepted, but every value is rejected as spreadsheet damage.
            An integer `source_row` column, if present, is used as the row number (for pre-split batches).
        phone_column: name of the phone column.
        rules: the campaign's `ValidationRules` (default: no default region, strict mobile patterns).
        suppression: extra opt-outs, added to the rules' lists: numbers in any format (read like
            `rules.suppression_file`'s entries), or an `OptOuts` already read by `load_opt_outs`.

    Returns:
        A `ValidationResult`; its `valid` and `rejects` frames partition the input rows, in source order.

    Raises:
        RecipientSchemaError: the phone column is missing or of an unusable type, or an input column clashes
            with an output column.
        SuppressionError: an opt-out list is missing or unreadable, or has entries that cannot be read as
            numbers (unless `rules.suppression_unreadable` is `ignore`).

    Example:
        >>> frame = pl.DataFrame({"name": ["Ann", "Bo"], "mobile": ["+852 6123 4567", "+86 138 0013 8000"]})
        >>> result = validate_recipients(frame, "mobile")
        >>> result.valid["phone"].to_list(), result.rejects["reasons"].to_list()
        (['85261234567'], [['mainland_china']])
    """
    rules = rules if rules is not None else ValidationRules()
    numeric = _schema_check(frame, phone_column)
    helper = _helper_frame(frame, phone_column, numeric, rules, _suppression_keys(rules, suppression))
    flags = reason_flags(rules.allow_countries, rules.deny_countries)
    keep = helper.select(rejected(flags).not_()).to_series()
    source = frame.drop("source_row", strict=False)

    added = helper.select(
        pl.col("_digits").alias("phone"),
        pl.col("_region").cast(pl.String).alias("country"),
        pl.col("_cc").cast(pl.String).alias("dialing_code"),
        "source_row",
    ).filter(keep)
    valid = source.filter(keep).with_columns(added.get_columns())

    # The valid frame's contract (the costliest pandera run) overlaps with building the rejects.
    with ThreadPoolExecutor(max_workers=1) as pool:
        valid_checked = pool.submit(_contract, ValidRecipients, valid)
        rejects, masks = _rejects(source, helper, keep, flags)
        _contract(RejectedRecipients, rejects)
        valid_checked.result()
    by_reason = _count_reasons(masks)
    return ValidationResult(
        valid=valid,
        rejects=rejects,
        suppressed=by_reason[SUPPRESSED],
        duplicates=by_reason[DUPLICATE],
        reasons={code: n for code, n in by_reason.items() if n},
        metadata_version=METADATA_VERSION,
    )


__all__ = [
    "REASON_CODES",
    "OptOuts",
    "ValidationResult",
    "load_opt_outs",
    "load_suppression_file",
    "normalise_numbers",
    "read_csv_as_strings",
    "validate_recipients",
]
