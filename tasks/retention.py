"""Retention, as a run does it: purge (or list) the finished campaigns' numbers, and report counts only.

The flow `flows/purge_ledger.py` (the nightly `purge-ledger` deployment) runs `purge_ledger_numbers`; the
command `globe-sms ledger purge` does the same from a terminal. `globe_sms.ledger.purge` holds the SQL and
docs/retention.md the whole story.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
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


@task(name="purge-ledger-numbers", cache_policy=NO_CACHE)
def purge_ledger_numbers(ledger: LedgerLocation | None, older_than: str, dry_run: bool) -> PurgeSummary:
    """Purge (a dry run: list) the finished campaigns unchanged for `older_than`; a markdown artifact of the
    campaign ids and counts.

    Raises:
        RetentionKeyMissing: not a dry run, and no retention key is configured.
        ValueError: `older_than` is not an age (90d, 36h), or the ledger URL holds a password.
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
