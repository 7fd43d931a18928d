"""pandera models for recipient lists: the raw source, the validated recipients, and the rejects.

The phone rules themselves are polars expressions in `tasks/normalise.py` and `tasks/mobile_rules.py`, run
once over the whole list; these models are the contracts at the points where data is materialised
(`tasks/validate.py` validates collected DataFrames with `lazy=True`, never a bare LazyFrame, which pandera
would check for its schema only). Every model is non-strict: a recipient list carries the campaign's own
columns (names, codes, languages) next to the phone.

Regexes end in `$` because pandera's `str_matches` anchors only the start.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData

from schemas.dialing_codes import MAINLAND_CHINA_CODE, dialing_tables, known_regions

E164_DIGITS_RE = r"^[1-9][0-9]{6,14}$"
"""E.164 without the `+`: the form BatchSendMessageToGlobe takes in `To` (`85212345678`)."""


def each_value_once(data: PolarsData, key: pl.Expr) -> pl.LazyFrame | bool:
    """A uniqueness check that costs one cheap pass when it holds: True, or False at every repeat.

    pandera's built-in `unique` hashes the column and lists every copy. A strictly increasing column (row
    numbers in source order) needs no hashing at all, and otherwise one `n_unique` settles the usual case;
    only a column with repeats pays for `is_first_distinct`, which makes each repeat a failure case.
    """
    values = data.lazyframe.select(key).collect().to_series()
    increasing = values.null_count() == 0 and bool((values.diff() > 0).all())
    if increasing or values.n_unique() == values.len():
        return True
    return data.lazyframe.select(key.is_first_distinct())


class RawRecipients(pa.DataFrameModel):
    """A recipient list as read from its source: a String phone column, anything else alongside.

    The phone column's real name is a campaign setting; use `raw_recipients_schema(name)`.
    """

    phone: str = pa.Field(nullable=True, description="The phone number as typed, read as text.")

    class Config:
        strict = False
        coerce = False


class ValidRecipients(pa.DataFrameModel):
    """Recipients that passed every rule: one row per distinct E.164 number, never mainland China."""

    phone: str = pa.Field(str_matches=E164_DIGITS_RE, description="E.164 digits, no `+`.")
    country: str = pa.Field(description="ISO 3166-1 region, e.g. `HK`.")
    dialing_code: str = pa.Field(description="Calling code, e.g. `852`.")
    source_row: pl.Int64 = pa.Field(ge=1, description="1-based row in the source.")

    @pa.check("country", name="known_region")
    @classmethod
    def _known_region(cls, data: PolarsData) -> pl.LazyFrame:
        """A region phonenumbers knows (stricter and cheaper than a two-letter regex)."""
        return data.lazyframe.select(pl.col(data.key).is_in(sorted(known_regions())))

    @pa.check("dialing_code", name="known_dialing_code")
    @classmethod
    def _known_code(cls, data: PolarsData) -> pl.LazyFrame:
        """A geographic calling code from the metadata."""
        return data.lazyframe.select(pl.col(data.key).is_in(sorted(dialing_tables().codes)))

    # Uniqueness as vectorised checks: pandera's built-in `unique` hashes strings and lists every copy
    # (0.15-0.2 s per 1M phones); an E.164 number fits an Int64, and only the repeats need reporting.
    @pa.check("phone", name="one_row_per_number")
    @classmethod
    def _unique_phone(cls, data: PolarsData) -> pl.LazyFrame | bool:
        """Deduplication happened: each number appears once (repeats are the failure cases)."""
        return each_value_once(data, pl.col(data.key).cast(pl.Int64, strict=False))

    @pa.check("source_row", name="one_row_per_source_row")
    @classmethod
    def _unique_row(cls, data: PolarsData) -> pl.LazyFrame | bool:
        """Each source row appears once."""
        return each_value_once(data, pl.col(data.key))

    @pa.check("dialing_code", name="not_mainland_china")
    @classmethod
    def _not_mainland_china(cls, data: PolarsData) -> pl.LazyFrame:
        """BatchSendMessageToGlobe does not serve +86; 852, 853 and 886 are different codes."""
        return data.lazyframe.select(pl.col(data.key) != MAINLAND_CHINA_CODE)

    @pa.dataframe_check(name="phone_starts_with_dialing_code")
    @classmethod
    def _phone_starts_with_code(cls, data: PolarsData) -> pl.LazyFrame:
        """The dialing code is the start of the number, not a separate guess."""
        return data.lazyframe.select(pl.col("phone").str.starts_with(pl.col("dialing_code")))

    class Config:
        strict = False
        coerce = False


class RejectedRecipients(pa.DataFrameModel):
    """Every refused row, with its row number in the source and all of its reasons."""

    source_row: pl.Int64 = pa.Field(ge=1, description="1-based row in the source.")
    reasons: pl.List(pl.String) = pa.Field(description="Reason codes, e.g. `['too_short']`.")  # type: ignore[valid-type]
    reason_text: str = pa.Field(description="The reasons in words, e.g. `duplicate of row 3`.")

    @pa.check("source_row", name="one_row_per_source_row")
    @classmethod
    def _unique_row(cls, data: PolarsData) -> pl.LazyFrame | bool:
        """Each source row appears once."""
        return each_value_once(data, pl.col(data.key))

    @pa.check("reasons", name="at_least_one_reason")
    @classmethod
    def _has_reason(cls, data: PolarsData) -> pl.LazyFrame:
        """A row is never rejected without saying why."""
        return data.lazyframe.select(pl.col(data.key).list.len() > 0)

    class Config:
        strict = False
        coerce = False


def raw_recipients_schema(phone_column: str) -> pa.DataFrameSchema:
    """`RawRecipients` with its phone column renamed to the campaign's column name."""
    schema = RawRecipients.to_schema()
    if phone_column == "phone":
        return schema
    return schema.rename_columns({"phone": phone_column})


__all__ = [
    "E164_DIGITS_RE",
    "RawRecipients",
    "RejectedRecipients",
    "ValidRecipients",
    "raw_recipients_schema",
]
