"""The rendered-messages dataset: what `tasks.render.render_messages` hands to the planner and the sender.

One row per message to send. The recipient's data columns are kept next to these (the schema is not strict).
Validate a collected DataFrame, with ``lazy=True``, and report ``exc.failure_cases``
(`reference/validation-notes.md` §1.2, §1.4): a LazyFrame would only get its schema checked.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData

from schemas.segment_limits import SEGMENT_LIMITS

__all__ = ["RenderedMessages"]

# Alibaba wants "dialing code + number", digits only (reference/alibaba-sms-api.md §7). `str_matches` anchors
# only the start, hence the explicit `$`.
PHONE_DIGITS_RE = r"^[1-9][0-9]{6,14}$"


class RenderedMessages(pa.DataFrameModel):
    """Rendered messages, one per recipient, with their encoding and size."""

    phone: str = pa.Field(str_matches=PHONE_DIGITS_RE, description="Dialing code + number, digits only.")
    country: str = pa.Field(str_length={"min_value": 2, "max_value": 2}, description="ISO 3166-1 region.")
    # Integer widths differ between sources (UInt32 from with_row_index, Int64 from CSV); widening is safe.
    source_row: int = pa.Field(ge=0, coerce=True, description="Row of the recipient in its source.")
    message: str = pa.Field(description="The text to send: never null, empty or blank.")
    encoding: str = pa.Field(isin=list(SEGMENT_LIMITS), description="GSM7 or UCS2.")
    segments: int = pa.Field(ge=1, description="SMS parts billed for this message.")
    chars: int = pa.Field(ge=1, description="Length in septets (GSM7) or UTF-16 code units (UCS2).")
    ucs2_chars: str = pa.Field(description="Distinct characters forcing UCS-2; empty for GSM7.")

    class Config:
        strict = False  # the recipient's data columns travel with the message
        coerce = False

    @pa.check("message", name="not_blank")
    @classmethod
    def _not_blank(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).str.strip_chars().str.len_bytes() > 0)

    @pa.dataframe_check(name="ucs2_chars_iff_ucs2")
    @classmethod
    def _culprits_match_encoding(cls, data: PolarsData) -> pl.LazyFrame:
        is_ucs2 = pl.col("encoding") == "UCS2"
        has_culprits = pl.col("ucs2_chars").str.len_bytes() > 0
        return data.lazyframe.select(is_ucs2 == has_culprits)

    @pa.dataframe_check(name="segments_fit_chars")
    @classmethod
    def _segments_fit_chars(cls, data: PolarsData) -> pl.LazyFrame:
        # One segment can hold at most the single-part limit; a part never holds more than the per-part one.
        (gsm_single, gsm_multi), (ucs2_single, ucs2_multi) = SEGMENT_LIMITS["GSM7"], SEGMENT_LIMITS["UCS2"]
        gsm = pl.col("encoding") == "GSM7"
        single = pl.when(gsm).then(gsm_single).otherwise(ucs2_single)
        multi = pl.when(gsm).then(gsm_multi).otherwise(ucs2_multi)
        one = (pl.col("segments") == 1) & (pl.col("chars") <= single)
        many = (
            (pl.col("segments") > 1)
            & (pl.col("chars") > single)
            & (pl.col("chars") <= pl.col("segments") * multi)
        )
        return data.lazyframe.select(one | many)
