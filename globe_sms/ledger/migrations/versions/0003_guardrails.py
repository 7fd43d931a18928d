"""Guardrails: send_ledger.message_type, .phone_key, status 'skipped', the cap indexes, account_volume.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

- `send_ledger.message_type` (NOTIFY / MKT): frequency caps count earlier messages by type. Rows written
  before this revision have none; a cap counts them whatever its `message_types` (they may have been MKT).
- `send_ledger.phone_key`: a purged row's keyed hash of its number (`globe-sms ledger purge`).
- status `skipped` (a frequency cap held the number back; final for the campaign).
- `ix_send_ledger_phone_submitted` and the partial `ix_send_ledger_phone_key_submitted`: a number's messages
  in a rolling window, across campaigns, without scanning the ledger.
- `account_volume`: messages reserved per account and calendar day / month (daily and monthly limits).
- `plan_claims`: when each campaign's run claimed its rows, so that runs planning at once see each other's
  pending rows in a fixed order (frequency caps across concurrent runs).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_STATUSES = "status IN ('pending', 'submitting', 'accepted', 'failed', 'unknown')"
_NEW_STATUSES = "status IN ('pending', 'submitting', 'accepted', 'failed', 'unknown', 'skipped')"


def upgrade() -> None:
    """Add the columns, the status, the indexes and the volume table."""
    with op.batch_alter_table("send_ledger") as batch:  # SQLite rebuilds the table to change a CHECK
        batch.add_column(sa.Column("message_type", sa.String(8)))
        batch.add_column(sa.Column("phone_key", sa.String(64)))
        batch.drop_constraint("ck_send_ledger_status", type_="check")
        batch.create_check_constraint("ck_send_ledger_status", _NEW_STATUSES)
    op.create_index("ix_send_ledger_phone_submitted", "send_ledger", ["phone", "submitted_at"])
    op.create_index(
        "ix_send_ledger_phone_key_submitted",
        "send_ledger",
        ["phone_key", "submitted_at"],
        sqlite_where=sa.text("phone_key IS NOT NULL"),
        postgresql_where=sa.text("phone_key IS NOT NULL"),
    )
    op.create_table(
        "account_volume",
        sa.Column("account", sa.String, nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("period_start", sa.String(10), nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "period", "period_start", name="pk_account_volume"),
    )
    op.create_table(
        "plan_claims",
        sa.Column("campaign_id", sa.String, primary_key=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop them; skipped rows become `failed` (error_code kept: `frequency_cap`) to fit the old CHECK."""
    op.drop_table("plan_claims")
    op.drop_table("account_volume")
    op.drop_index("ix_send_ledger_phone_key_submitted", table_name="send_ledger")
    op.drop_index("ix_send_ledger_phone_submitted", table_name="send_ledger")
    op.execute("UPDATE send_ledger SET status = 'failed' WHERE status = 'skipped'")
    with op.batch_alter_table("send_ledger") as batch:
        batch.drop_constraint("ck_send_ledger_status", type_="check")
        batch.create_check_constraint("ck_send_ledger_status", _OLD_STATUSES)
        batch.drop_column("phone_key")
        batch.drop_column("message_type")
