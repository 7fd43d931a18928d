"""The single lane (issue #16): the lane each row and batch went through, and SendMessageToGlobe's answer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

* `send_ledger.lane`: `batch` or `single`, set when the row is put in flight (NULL: never sent). Rows a
  batch already took (`batch_no` set) are filled with `batch`: before this revision there was no other lane.
* `send_ledger.segments`: the billed segments SendMessageToGlobe reported (`Segments`); NULL for the batch
  lane, whose answer has no per-number count.
* `send_ledger.carrier`: the carrier SendMessageToGlobe named (`NumberDetail.Carrier`).
* `campaign_batches.lane`: `batch` (every existing batch) or `single` (a chunk of single calls).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the four columns; fill `send_ledger.lane` of rows the batch lane already took."""
    op.add_column("send_ledger", sa.Column("lane", sa.String(8), nullable=True))
    op.add_column("send_ledger", sa.Column("segments", sa.Integer(), nullable=True))
    op.add_column("send_ledger", sa.Column("carrier", sa.String(), nullable=True))
    op.add_column(
        "campaign_batches", sa.Column("lane", sa.String(8), nullable=False, server_default="batch")
    )
    op.execute("UPDATE send_ledger SET lane = 'batch' WHERE batch_no IS NOT NULL")


def downgrade() -> None:
    """Drop them (SQLite rebuilds the tables to drop a column)."""
    with op.batch_alter_table("campaign_batches") as batch:
        batch.drop_column("lane")
    with op.batch_alter_table("send_ledger") as batch:
        batch.drop_column("carrier")
        batch.drop_column("segments")
        batch.drop_column("lane")
