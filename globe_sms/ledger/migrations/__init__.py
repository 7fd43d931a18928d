"""The ledger database's Alembic script directory: one migration history for every table in it.

`versions/` holds the revisions, oldest first by their four-digit ids; `env.py` runs them on the connection
`globe_sms.ledger.migration` hands it (there is no `alembic.ini`, and no database URL is configured here);
`baseline.py` is the frozen schema of revision 0001. How to add a revision: docs/ledger-migrations.md.
"""
