"""The errors of the source readers: every message names the campaign field and the problem.

ValueError
└── SourceError              a source that cannot be read; nothing was sent
    ├── MissingPhoneColumn   the phone column is not among the source's columns
    ├── SourceSecretError    the secret a source names is not where it says (unset variable, no such block)
    ├── SourceQueryError     the PostgreSQL connection or query failed
    └── SourceHttpError      an HTTP error status (after retries), a non-JSON page, records not found
"""

from __future__ import annotations


class SourceError(ValueError):
    """A recipient source that cannot be read, or lacks the phone column; raised before anything is sent."""


class MissingPhoneColumn(SourceError):
    """The source has no column named `phone_column`."""


class SourceSecretError(SourceError):
    """A Secret block or environment variable named by the source is missing or empty."""


class SourceQueryError(SourceError):
    """Connecting to PostgreSQL or running the query failed (the connection URL is masked)."""


class SourceHttpError(SourceError):
    """A page could not be read: an HTTP error status after retries, a body that is not JSON, no records."""


def missing_phone_column(phone_column: str, columns: list[str], where: str) -> MissingPhoneColumn:
    """The error for a source without its phone column, listing the columns it has."""
    listed = ", ".join(columns) if columns else "(none)"
    return MissingPhoneColumn(
        f"source.phone_column: column {phone_column!r} not in {where}; columns are {listed}"
    )
