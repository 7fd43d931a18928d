"""The ledger's tables and statuses (batches are keyed as `globe_sms.ids.task_id` names them).

The tables as the code uses them. The database gets them through Alembic revisions
(`globe_sms/ledger/migrations/`): a change here needs a revision too, or
`tests/integration/test_ledger_migrations.py`
fails (docs/ledger-migrations.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import polars as pl
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
    text,
)


class Status(StrEnum):
    """Status of one recipient row in `send_ledger`."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    ACCEPTED = "accepted"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"  # final for this campaign, never sent: error_code says why (`frequency_cap`)


class BatchStatus(StrEnum):
    """Status of one batch row in `campaign_batches`."""

    SUBMITTING = "submitting"
    ACCEPTED = "accepted"  # a response arrived; how many numbers were accepted or failed is in the counts
    FAILED = "failed"  # the whole batch failed for good
    RELEASED = "released"  # not processed; its rows went back to pending
    UNKNOWN = "unknown"  # maybe processed; its rows are unknown


class Lane(StrEnum):
    """How a row or batch was sent: `campaign_batches.lane`, `send_ledger.lane`."""

    BATCH = "batch"  # BatchSendMessageToGlobe, up to 1,000 numbers per call
    SINGLE = "single"  # SendMessageToGlobe, one number per call; a "batch" row is then a chunk of calls


INTERRUPTED = "Interrupted"
"""The error_code `recover_interrupted` gives to rows and batches a crashed run left in `submitting`."""
PURGED_PREFIX = "#"
"""A purged row's `phone` starts with it (then 14 hex digits of its keyed hash): never an E.164 number."""


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps them as naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive values; store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StatusType(TypeDecorator[str]):
    """A status column: binds `Status` / `BatchStatus` members as plain strings (drivers differ on enums)."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """The member's value as a plain `str`."""
        return None if value is None else str(value)


def _one_of(enum: type[StrEnum]) -> str:
    return "status IN ({})".format(", ".join(f"'{member}'" for member in enum))


metadata = MetaData()

send_ledger = Table(
    "send_ledger",
    metadata,
    # The surrogate key gives registration order on both backends (SQLite rowid alias, Postgres bigserial).
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("campaign_id", String, nullable=False),
    Column("phone", String(15), nullable=False),
    Column("country", String),
    Column("status", StatusType, nullable=False),
    Column("batch_no", Integer),
    Column("message_id", String),
    Column("error_code", String),
    Column("request_id", String),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("submitted_at", UtcDateTime),
    # Revision 0002 (the single lane): the lane that last put the row in flight (`Lane`; NULL: never sent),
    # and what SendMessageToGlobe answered for it: billed `Segments` and `NumberDetail.Carrier`.
    Column("lane", String(8)),
    Column("segments", Integer),
    Column("carrier", String),
    # Revision 0003 (globe_sms.ledger.caps / .purge): NOTIFY or MKT, for frequency caps by message type; and
    # the number's keyed hash once a retention purge replaced `phone` with a marker (`PURGED_PREFIX`).
    Column("message_type", String(8)),
    Column("phone_key", String(64)),
    UniqueConstraint("campaign_id", "phone", name="uq_send_ledger_campaign_phone"),
    CheckConstraint(_one_of(Status), name="ck_send_ledger_status"),
    Index("ix_send_ledger_campaign_status", "campaign_id", "status"),
    Index("ix_send_ledger_campaign_batch", "campaign_id", "batch_no"),
    Index("ix_send_ledger_message_id", "message_id"),  # receipts find their row by MessageId
    # Frequency caps: a number's messages in a rolling window, across campaigns (globe_sms.ledger.caps).
    Index("ix_send_ledger_phone_submitted", "phone", "submitted_at"),
    # The same for purged rows, found by their keyed hash (only purged rows have one: a partial index).
    Index(
        "ix_send_ledger_phone_key_submitted",
        "phone_key",
        "submitted_at",
        sqlite_where=text("phone_key IS NOT NULL"),
        postgresql_where=text("phone_key IS NOT NULL"),
    ),
)

campaign_batches = Table(
    "campaign_batches",
    metadata,
    Column("campaign_id", String, nullable=False),
    Column("batch_no", Integer, nullable=False),
    Column("status", StatusType, nullable=False),
    Column("recipients", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("unknown", Integer, nullable=False),
    Column("request_id", String),
    Column("error_code", String),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("lane", String(8), nullable=False, server_default="batch"),  # revision 0002: `Lane`
    PrimaryKeyConstraint("campaign_id", "batch_no", name="pk_campaign_batches"),
    CheckConstraint(_one_of(BatchStatus), name="ck_campaign_batches_status"),
)

account_volume = Table(
    "account_volume",
    metadata,
    # Revision 0003: messages reserved per account and calendar day / month (globe_sms.ledger.volume). A run
    # reserves what it plans, in one write transaction with the row locked, before it sends; it gives back
    # what it did not send. Every run counts, with a limit or without.
    Column("account", String, nullable=False),
    Column("period", String(8), nullable=False),  # "day" or "month"
    Column("period_start", String(10), nullable=False),  # "2026-12-06" / "2026-12", in the limits' zone
    Column("used", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("account", "period", "period_start", name="pk_account_volume"),
)

plan_claims = Table(
    "plan_claims",
    metadata,
    # Revision 0003: when each campaign's current run registered its rows and claimed them for sending, in
    # the order frequency caps see each other's runs (globe_sms.ledger.caps): a run counts the pending rows
    # of runs that claimed before it and still hold their run lease.
    Column("campaign_id", String, primary_key=True),
    Column("claimed_at", UtcDateTime, nullable=False),
)

campaign_runs = Table(
    "campaign_runs",
    metadata,
    # One row per campaign being sent: the run lease (`globe_sms.ledger.lease`). No row: nobody holds it.
    Column("campaign_id", String, primary_key=True),
    Column("owner", String, nullable=False),  # the Prefect flow run id, else a uuid4
    Column("owner_description", String, nullable=False),  # flow run name, host, pid: for people
    Column("token", String(32), nullable=False),  # one per acquisition: renew and release match on it
    Column("pid", Integer, nullable=False),
    Column("pid_scope", String),  # where `pid` means something (Linux boot id / pid namespace), else NULL
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

_TS = pl.Datetime("us", "UTC")

ROW_SCHEMA: dict[str, Any] = {
    "campaign_id": pl.String,
    "phone": pl.String,
    "country": pl.String,
    "status": pl.String,
    "batch_no": pl.Int64,
    "message_id": pl.String,
    "error_code": pl.String,
    "request_id": pl.String,
    "attempts": pl.Int64,
    "created_at": _TS,
    "updated_at": _TS,
    "submitted_at": _TS,
    "lane": pl.String,
    "segments": pl.Int64,
    "carrier": pl.String,
    "message_type": pl.String,
    "phone_key": pl.String,
}
"""Columns and dtypes of `Ledger.rows()` (every `send_ledger` column but the surrogate `id`)."""

BATCH_SCHEMA: dict[str, Any] = {
    "campaign_id": pl.String,
    "batch_no": pl.Int64,
    "status": pl.String,
    "recipients": pl.Int64,
    "accepted": pl.Int64,
    "failed": pl.Int64,
    "unknown": pl.Int64,
    "request_id": pl.String,
    "error_code": pl.String,
    "started_at": _TS,
    "finished_at": _TS,
    "lane": pl.String,
}
"""Columns and dtypes of `Ledger.batches()`, which adds `task_id`."""
