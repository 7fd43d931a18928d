"""The ledger database as globe-sms created it before it had migrations (revision 0001): frozen, never edit.

Revision 0001 creates these tables, and `globe_sms.ledger.migration` compares a database that has globe-sms
tables but no version table with them before it stamps the database as 0001. A change to the schema is a
new revision in `versions/`, never an edit here: these definitions must stay what the old code created.
Types are the plain ones the old code's DDL used (`UtcDateTime` was `DateTime(timezone=True)`, a status
column `String(16)`), and the CHECK lists are the literal ones of that time.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

REVISION = "0001"
TABLES = ("send_ledger", "campaign_batches", "campaign_runs", "delivery_receipts")


def _ts() -> DateTime:
    return DateTime(timezone=True)


def baseline_metadata() -> MetaData:
    """A fresh `MetaData` holding the four tables (and their indexes) of revision 0001."""
    metadata = MetaData()
    Table(
        "send_ledger",
        metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("campaign_id", String, nullable=False),
        Column("phone", String(15), nullable=False),
        Column("country", String),
        Column("status", String(16), nullable=False),
        Column("batch_no", Integer),
        Column("message_id", String),
        Column("error_code", String),
        Column("request_id", String),
        Column("attempts", Integer, nullable=False),
        Column("created_at", _ts(), nullable=False),
        Column("updated_at", _ts(), nullable=False),
        Column("submitted_at", _ts()),
        UniqueConstraint("campaign_id", "phone", name="uq_send_ledger_campaign_phone"),
        CheckConstraint(
            "status IN ('pending', 'submitting', 'accepted', 'failed', 'unknown')",
            name="ck_send_ledger_status",
        ),
        Index("ix_send_ledger_campaign_status", "campaign_id", "status"),
        Index("ix_send_ledger_campaign_batch", "campaign_id", "batch_no"),
        Index("ix_send_ledger_message_id", "message_id"),  # was created by the receipt store
    )
    Table(
        "campaign_batches",
        metadata,
        Column("campaign_id", String, nullable=False),
        Column("batch_no", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("recipients", Integer, nullable=False),
        Column("accepted", Integer, nullable=False),
        Column("failed", Integer, nullable=False),
        Column("unknown", Integer, nullable=False),
        Column("request_id", String),
        Column("error_code", String),
        Column("started_at", _ts(), nullable=False),
        Column("finished_at", _ts()),
        PrimaryKeyConstraint("campaign_id", "batch_no", name="pk_campaign_batches"),
        CheckConstraint(
            "status IN ('submitting', 'accepted', 'failed', 'released', 'unknown')",
            name="ck_campaign_batches_status",
        ),
    )
    Table(
        "campaign_runs",
        metadata,
        Column("campaign_id", String, primary_key=True),
        Column("owner", String, nullable=False),
        Column("owner_description", String, nullable=False),
        Column("token", String(32), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("pid_scope", String),
        Column("acquired_at", _ts(), nullable=False),
        Column("expires_at", _ts(), nullable=False),
    )
    Table(
        "delivery_receipts",
        metadata,
        Column("message_id", String, primary_key=True),
        Column("campaign_id", String),
        Column("phone", String),
        Column("batch_no", Integer),
        Column("task_id", String),
        Column("matched", Boolean, nullable=False),
        Column("delivery_status", String(16), nullable=False),
        Column("status_code", String(8)),
        Column("error_code", String),
        Column("error_description", String),
        Column("send_date", _ts()),
        Column("receive_date", _ts()),
        Column("segments", Integer),
        Column("source", String(16), nullable=False),
        Column("receipts", Integer, nullable=False),
        Column("duplicates", Integer, nullable=False),
        Column("stale", Integer, nullable=False),
        Column("conflicts", Integer, nullable=False),
        Column("first_seen", _ts(), nullable=False),
        Column("updated", _ts(), nullable=False),
        Column("settled_at", _ts()),
        CheckConstraint(
            "delivery_status IN ('sending', 'unknown', 'delivered', 'undelivered', 'expired')",
            name="ck_delivery_receipts_status",
        ),
        Index("ix_delivery_receipts_campaign_status", "campaign_id", "delivery_status"),
        Index("ix_delivery_receipts_matched", "matched"),
    )
    return metadata
