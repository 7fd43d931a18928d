"""How a campaign validates its recipients: the `ValidationRules` model (the campaign's `validation:`) and the
errors validation raises.

    ValueError
    ├── RecipientSchemaError   the frame itself is unusable (phone column missing, wrong dtype, name clash)
    └── TooManyRejects         the invalid share exceeds `max_reject_share`

What a campaign *is*; the validation itself (`tasks.validate.validate_recipients`) and its result
(`tasks.validation_result`) are what a run *does*.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from globe_sms.form_schema import AnyOfUnion
from globe_sms.sources import Source
from globe_sms.strict_model import StrictModel

__all__ = ["RecipientSchemaError", "RegionCode", "TooManyRejects", "ValidationRules"]

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
        json_schema_extra={"not": {"contains": {"pattern": "^[cC][nN]$"}}},  # `_mainland_never_allowed`
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
    suppression: Annotated[Source | None, AnyOfUnion()] = Field(
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
        if not codes:
            return value
        # Here, not at the top: phonenumbers' metadata takes a second to load, and only a campaign naming a
        # region needs it (importing the campaign model stays light).
        from schemas.dialing_codes import known_regions

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
