"""The result of recipient validation and the reject-share check on it.

`tasks.validate.validate_recipients` returns a `ValidationResult`; the rules it follows and the errors are
`globe_sms.validation_rules`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from tasks.reasons import NOT_INVALID_CODES


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


__all__ = ["ValidationResult"]
