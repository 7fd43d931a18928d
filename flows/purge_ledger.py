"""The `purge-ledger` flow: retention for the ledger database, on a schedule (prefect.yaml, `purge-ledger`).

Replaces the phone numbers of finished campaigns unchanged for `older_than` with a keyed hash
(`globe_sms.ledger.purge`; the key from `GLOBE_SMS_RETENTION_KEY` or the Secret block
`GLOBE_SMS_RETENTION_KEY_BLOCK` names on the worker, `globe_sms.retention`). The same as
`globe-sms ledger purge`; docs/retention.md.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from globe_sms.ledger import Ledger
from globe_sms.ledger import purge as purging
from globe_sms.ledger.url import LedgerLocation, check_plain_url
from globe_sms.paths import default_ledger_url
from globe_sms.retention import parse_age, retention_key


class PurgedCampaign(BaseModel):
    campaign_id: str
    rows: int
    numbers: int


class PurgeSummary(BaseModel):
    """What a purge did (or would do, in a dry run): campaign ids and counts, never a number."""

    dry_run: bool
    older_than: str
    campaigns: list[PurgedCampaign] = Field(default_factory=list)
    orphan_receipts: int = 0

    @property
    def numbers(self) -> int:
        return sum(c.numbers for c in self.campaigns)

    def to_markdown(self) -> str:
        verb = "would purge" if self.dry_run else "purged"
        lines = [
            f"# Ledger retention: {verb} {len(self.campaigns)} campaign(s), {self.numbers:,} number(s)",
            "",
            f"Finished campaigns unchanged for {self.older_than}.",
        ]
        if self.campaigns:
            lines += ["", "| campaign | rows | numbers |", "|---|---|---|"]
            lines += [f"| {c.campaign_id} | {c.rows:,} | {c.numbers:,} |" for c in self.campaigns]
        return "\n".join(lines)


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
    if isinstance(ledger, str):
        check_plain_url(ledger, "ledger")
    age = parse_age(older_than)
    key = None if dry_run else retention_key()
    summary = PurgeSummary(dry_run=dry_run, older_than=older_than)
    with Ledger(ledger if ledger is not None else default_ledger_url()) as opened:
        cutoff = opened.now() - age
        if dry_run:
            found = purging.plan(opened, cutoff)
        else:
            assert key is not None
            found = purging.purge(opened, cutoff, key.phone_keys)
            summary.orphan_receipts = purging.purge_orphan_receipts(opened, cutoff, key.phone_keys)
    summary.campaigns = [
        PurgedCampaign(campaign_id=c.campaign_id, rows=c.rows, numbers=c.numbers) for c in found
    ]
    get_run_logger().info(
        "%s %s campaign(s), %s number(s)", "would purge" if dry_run else "purged", len(found), summary.numbers
    )
    create_markdown_artifact(summary.to_markdown(), key="ledger-retention", description="Ledger retention")
    return summary
