"""The `retry_failed_deliveries` flow: send again, once, to the recipients whose receipts say they failed.

Orchestration only. Rows whose current message was reported `undelivered` with a retryable error code (or
`expired`: never handed to the carrier) move `accepted -> pending` in the ledger
(`globe_sms.receipts.retry.reopen_failed_deliveries`); then the ordinary `send_campaign` runs with the same
campaign id, so the ledger's rules still hold for everyone else: a delivered, pending-receipt, permanently
failed or unknown recipient is not sent again. Rows still `pending` from an interrupted run go out too, as
on any rerun: they were never sent.

A second run right after does nothing: a resent row carries a new MessageId, which has no failed receipt.
While another run of the campaign is sending, it stops at once with `CampaignBusy` and reopens nothing: it
holds the campaign's run lease while it reopens, then `send_campaign` takes the lease for itself.

For failed or unknown *send* outcomes (FailedList, timeouts), see `flows/resend.py` instead.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from globe_sms.receipts.retry import reopen_failed_deliveries
from globe_sms.receipts.store import ReceiptStore
from tasks.lease import campaign_lease
from tasks.report import CampaignSummary


class RetryDeliveriesSummary(BaseModel):
    """What a retry of failed deliveries did."""

    campaign_id: str
    failed: int = Field(description="Accepted recipients whose current message failed.")
    reopened: int = Field(description="Of those, reopened for sending (retryable code or expired).")
    dry_run: bool = Field(
        default=False, description="Nothing was reopened or sent; `reopened` would have been."
    )
    not_retried: dict[str, int] = Field(
        default_factory=dict, description="Failed but permanent, by error code."
    )
    send: CampaignSummary | None = Field(
        default=None, description="The send run, when anything was reopened."
    )


@flow(name="retry-failed-deliveries", flow_run_name="retry-failed-{campaign.campaign_id}", log_prints=False)
def retry_failed_deliveries(
    campaign: Campaign, retryable_codes: list[str] | None = None, include_expired: bool = True
) -> RetryDeliveriesSummary:
    """Resend to the recipients whose delivery receipts say they failed with a retryable code.

    Args:
        campaign: the campaign, as sent before (same campaign id, source and ledger).
        retryable_codes: receipt error codes worth a retry; None: `RETRYABLE_RECEIPT_CODES`.
        include_expired: also resend `expired` messages (validity period ran out before the carrier).

    Returns:
        How many failed, how many were reopened and the send run's summary.

    Raises:
        CampaignBusy: another run of the campaign is sending it; nothing was reopened.
    """
    logger = get_run_logger()
    campaign = campaign.resolve_paths(Path.cwd())  # no campaign file (UI, deployment): the run's directory
    with (
        ReceiptStore(campaign.ledger_location) as store,
        Ledger(campaign.ledger_location) as ledger,
        campaign_lease(ledger, campaign),  # released before send_campaign, a flow run of its own, takes it
    ):
        reopened = reopen_failed_deliveries(
            store,
            ledger,
            campaign.campaign_id,
            retryable_codes,
            include_expired=include_expired,
            dry_run=campaign.dry_run,
        )
    logger.info(
        "campaign %s: %s failed deliveries, %s reopened, not retried by code %s",
        campaign.campaign_id,
        reopened.failed,
        len(reopened.phones),
        reopened.skipped_codes,
    )
    summary = RetryDeliveriesSummary(
        campaign_id=campaign.campaign_id,
        failed=reopened.failed,
        reopened=len(reopened.phones),
        not_retried=reopened.skipped_codes,
        dry_run=campaign.dry_run,
    )
    if reopened.phones and not campaign.dry_run:
        summary.send = send_campaign(campaign)
    return summary


if __name__ == "__main__":
    import sys

    retry_failed_deliveries(Campaign.from_yaml(sys.argv[1] if len(sys.argv) > 1 else "examples/welcome.yaml"))
