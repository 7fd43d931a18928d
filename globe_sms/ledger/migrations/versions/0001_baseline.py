"""Baseline: send_ledger, campaign_batches, campaign_runs, delivery_receipts (globe-sms 0.1).

Revision ID: 0001
Revises:
Create Date: 2026-05-01

A database created before migrations is compared with this schema and stamped 0001 instead of running it
(`globe_sms.ledger.migration`).
"""

from __future__ import annotations

from alembic import op

from globe_sms.ledger.migrations.baseline import baseline_metadata

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the four tables and their indexes."""
    baseline_metadata().create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    """Drop them (and every row in them)."""
    baseline_metadata().drop_all(op.get_bind(), checkfirst=False)
