"""Alembic's entry point for the ledger's migrations: run on the connection handed in, in its transaction.

`globe_sms.ledger.migration` puts an open connection, inside a transaction that holds the ledger's DDL lock,
in `config.attributes["connection"]` and calls `alembic.command.upgrade` / `stamp`. Run from the `alembic`
command line (which has no connection) it refuses: use `globe-sms ledger upgrade URL`.
"""

from __future__ import annotations

from alembic import context

from globe_sms.ledger.migration import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "the ledger's migrations run through `globe-sms ledger upgrade LEDGER_URL` (or when a ledger opens); "
        "the alembic command line only writes and lists revisions here"
    )
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE)
with context.begin_transaction():  # the caller's transaction: all revisions commit together, or none
    context.run_migrations()
