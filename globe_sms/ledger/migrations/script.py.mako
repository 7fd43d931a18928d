"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Say what the revision changes, why, and what it does to existing rows (docs/ledger-migrations.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | None = ${repr(branch_labels)}
depends_on: str | None = ${repr(depends_on)}


def upgrade() -> None:
    """What it adds or changes. Existing rows must stay valid: a new NOT NULL column needs a default."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Undo `upgrade` (for tests and by hand: globe-sms never downgrades a ledger by itself)."""
    ${downgrades if downgrades else "pass"}
