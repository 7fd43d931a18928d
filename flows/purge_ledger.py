"""The `purge-ledger` flow: retention for the ledger database, on a schedule (prefect.yaml, `purge-ledger`).

Replaces the phone numbers of finished campaigns unchanged for `older_than` with a keyed hash
(`tasks/retention.py`, `globe_sms.ledger.purge`; the key from `GLOBE_SMS_RETENTION_KEY` or the Secret block
`GLOBE_SMS_RETENTION_KEY_BLOCK` names, on the worker: `globe_sms.retention`). The same as
`globe-sms ledger purge`; docs/retention.md.
"""

from __future__ import annotations

from prefect import flow

from globe_sms.ledger.url import LedgerLocation
from tasks.retention import PurgeSummary, purge_ledger_numbers


@flow(name="purge-ledger", log_prints=False)
def purge_ledger(
    ledger: LedgerLocation | None = None, older_than: str = "90d", dry_run: bool = False
) -> PurgeSummary:
    """Purge the phone numbers of finished campaigns older than `older_than` (e.g. 90d) from the ledger.

    Args:
        ledger: the ledger's URL without a password, or where it is kept ({env:} / {block:}); None: the
            default ledger.
        older_than: only campaigns with no row changed for this long: days or hours (90d, 36h).
        dry_run: list what would be purged; change nothing (no key needed).
    """
    return purge_ledger_numbers(ledger, older_than, dry_run)
