"""The `reconcile_receipts` flow: settle overdue messages through QueryMessage, then report delivery.

Orchestration only; the tasks are in `tasks/reconcile.py`. `globe_sms.receipts.reconcile` asks QueryMessage
(≤ 300 calls/s, through `globe_sms.gateway.query_client`: the same timeouts as sending) about accepted
messages with no final receipt after `older_than_minutes`, and turns those unsettled after
`unknown_after_hours` into final `unknown`; `globe_sms.receipts.report` builds the campaign's delivery report,
published as a markdown artifact (`<campaign>-delivery`) and a table artifact by country
(`<campaign>-delivery-by-country`).

Run it on a schedule (e.g. every 30 minutes for three days after a campaign), or by hand with
`globe-sms receipts reconcile CAMPAIGN.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from globe_sms.campaign import GatewaySettings
from globe_sms.ledger import LedgerLocation
from globe_sms.ledger.url import check_plain_url
from globe_sms.paths import default_ledger_url, resolve_ledger_file
from globe_sms.receipts.reconcile import QUERY_CALLS_PER_SECOND, QUERY_CONCURRENCY
from globe_sms.receipts.report import DeliveryReport
from tasks.reconcile import publish_delivery_report, query_unsettled_messages


class ReconcileSummary(BaseModel):
    """What a reconciliation run did, and the delivery reports it published."""

    candidates: int = 0
    queried: int = 0
    settled: dict[str, int] = Field(default_factory=dict)
    still_sending: int = 0
    not_found: int = 0
    timed_out: int = 0
    errors: dict[str, int] = Field(default_factory=dict)
    queries_per_second: float = 0.0
    reports: list[DeliveryReport] = Field(default_factory=list)


@flow(name="reconcile-receipts", flow_run_name="reconcile-{campaign_id}", log_prints=False)
def reconcile_receipts(
    campaign_id: str | None = None,
    ledger: LedgerLocation | None = None,
    gateway: GatewaySettings | None = None,
    older_than_minutes: float = 30.0,
    unknown_after_hours: float = 72.0,
    queries_per_second: float = QUERY_CALLS_PER_SECOND,
    workers: int = QUERY_CONCURRENCY,
    limit: int | None = None,
) -> ReconcileSummary:
    """Settle accepted messages whose receipt is overdue, through QueryMessage, and report delivery.

    Args:
        campaign_id: one campaign, or None for every campaign in the ledger.
        ledger: the ledger's SQLAlchemy URL without a password, or where it is kept ({env:} / {block:}); a
            relative SQLite file is in the flow run's working directory. None: the default ledger,
            `sqlite:///<default data folder>/ledger.db` (see `globe_sms.paths`).
        gateway: endpoint and credentials of the account that sent the messages.
        older_than_minutes: query messages submitted at least this long ago with no final receipt.
        unknown_after_hours: a message still unsettled this long after submission becomes final `unknown`.
        queries_per_second: QueryMessage pace (the API allows 300/s per account).
        workers: queries in flight at once (300/s at 100 ms round trips needs 30).
        limit: at most this many queries in this run.

    Returns:
        Counts of what was queried and settled, and the delivery report of each campaign concerned.
    """
    logger = get_run_logger()
    if isinstance(ledger, str):
        check_plain_url(ledger, "ledger")  # a password here would be a flow parameter: refuse to use it
    gateway = gateway or GatewaySettings()
    if ledger is None:
        ledger = default_ledger_url()
    elif isinstance(ledger, str):
        ledger = resolve_ledger_file(ledger, Path.cwd())
    result = query_unsettled_messages(
        ledger,
        gateway,
        campaign_id,
        older_than_minutes,
        unknown_after_hours,
        queries_per_second,
        workers,
        limit,
    )
    logger.info(
        "reconcile %s: %s overdue, %s queried, settled %s, %s still sending, %s unknown, errors %s",
        campaign_id or "all campaigns",
        result.candidates,
        result.queried,
        result.settled,
        result.still_sending,
        result.timed_out,
        result.errors,
    )
    campaigns = [campaign_id] if campaign_id else result.campaigns
    reports = [publish_delivery_report(ledger, cid) for cid in campaigns]
    return ReconcileSummary(
        candidates=result.candidates,
        queried=result.queried,
        settled=result.settled,
        still_sending=result.still_sending,
        not_found=result.not_found,
        timed_out=result.timed_out,
        errors=result.errors,
        queries_per_second=result.queries_per_second,
        reports=reports,
    )


if __name__ == "__main__":
    import sys

    from globe_sms.campaign import Campaign

    campaign = Campaign.from_yaml(sys.argv[1] if len(sys.argv) > 1 else "examples/welcome.yaml")
    reconcile_receipts(campaign.campaign_id, campaign.ledger_location, campaign.gateway)
