"""The public types of recipient validation: the campaign's rules, the result, and the errors.

    ValueError
    ├── RecipientSchemaError   the frame itself is unusable (phone column missing, wrong dtype, name clash)
    └── TooManyRejects         `tasks.spool.check_reject_share`: the invalid share exceeds `max_reject_share`

`tasks/validate.py` re-exports all of them next to `validate_recipients`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import polars as pl
from pydantic import ConfigDict, Field, field_validator, model_validator

from globe_sms.sources import Source
from globe_sms.strict_model import StrictModel
from schemas.dialing_codes import known_regions
from tasks.reasons import NOT_INVALID_CODES

RegionCode = Annotated[str, Field(min_length=2, max_length=2, pattern=r"^[A-Za-z]{2}$")]


class RecipientSchemaError(ValueError):
    """The recipient frame cannot be validated at all: the phone column is missing or of an unusable type."""


class TooManyRejects(ValueError):
    """More of the list was rejected than the campaign's `max_reject_share` allows; nothing was sent."""


class ValidationRules(StrictModel):
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
        description=(
            "ISO regions to send to (e.g. ['HK', 'SG']). Empty means every region except mainland China."
        ),
    )
    deny_countries: list[RegionCode] = Field(
        default_factory=list,
        description="ISO regions never to send to; wins over allow_countries.",
    )
    strict_mobile: bool = Field(
        default=True,
        description=(
            "Check each number against its country's mobile number ranges (phonenumbers metadata), not "
            "only its length. Turning it off lets numbers such as '+1 380 0138000' (a Chinese mobile with "
            "'+1') through."
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
            "Path of an opt-out file: plain text with one number per line, or a CSV with a 'phone' column "
            "(UTF-8; blank lines and lines starting with # are skipped). Relative paths resolve against the "
            "campaign file. Numbers are read like the recipients' (same default_region), without length or "
            "mobile checks; an extension (ext. 12, x12, ;ext=12) is dropped. A missing file stops the "
            "campaign. Can be given with `suppression`: both lists are suppressed."
        ),
    )
    suppression: Source | None = Field(
        default=None,
        description=(
            "An opt-out list read like recipients, from any source kind (csv, parquet, ndjson, postgres, "
            "http); its `phone_column` (default 'phone') holds the numbers. E.g. {kind: postgres, query: "
            "'SELECT phone FROM opt_outs', connection: {env: OPTOUTS_DB_URL}}. Can be given with "
            "`suppression_file`: both lists are suppressed."
        ),
    )
    suppression_unreadable: Literal["error", "ignore"] = Field(
        default="error",
        description=(
            "An opt-out entry that cannot be read as a number (a national number without default_region, "
            "spreadsheet damage such as 8.52983E+10, letters): 'error' stops the campaign before sending "
            "and lists every such line, masked; 'ignore' skips them and counts them in the run summary."
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


__all__ = [
    "RecipientSchemaError",
    "TooManyRejects",
    "ValidationResult",
    "ValidationRules",
]
