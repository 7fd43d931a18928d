"""The `resend_campaign` flow: send a campaign's failed and/or unknown recipients again, and nobody else.

Run it on purpose, for one campaign, once its cause is fixed: a top-up after `AMOUNT_NOT_ENOUGH`, a sender ID
approved after `INVALID_SENDERID`, or to resend the recipients whose outcome is unknown (they may receive the
message twice: the request may have gone through before the answer was lost).

It goes the same way as `send_campaign`, in the same bounded memory: the source is read, validated and
rendered again into a spool (the ledger keeps outcomes, not texts), the chosen rows move `failed`/`unknown`
-> `pending` a chunk of messages at a time (`tasks.plan.plan_resend`: `Ledger.reopen_for_resend`, one
transaction per chunk) into plan parts on disk, and exactly those numbers go out through the same send loop,
in the campaign's lane(s) (`tasks/send_lanes.py`, `send_via`): task runs, pacing, events and artifacts. Rows
that are `pending` (never sent: a stopped run) or `accepted` are left alone, and numbers the source no longer
renders are not reopened. It holds the campaign's run lease as `send_campaign` does, so it stops at once with
`CampaignBusy` while another run of the campaign is sending (and a run of the campaign started while it
resends stops the same way).

With a send window (quiet hours), the chosen rows are reopened all the same, but only those inside their
window go out now; the others stay `pending`, counted as deferred, and the next run of the campaign sends
them when their window opens.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger

from globe_sms.campaign import Campaign
from globe_sms.clock import clock_at
from globe_sms.ledger import Ledger
from tasks.lease import campaign_lease
from tasks.limits import settle_limits
from tasks.plan import ResendStatus, plan_resend
from tasks.plan_table import sending_text
from tasks.report import CampaignSummary, publish_report
from tasks.send_batches import CampaignFailed
from tasks.send_lanes import send_lanes
from tasks.spool import spool_campaign
from tasks.stop import StopWatch, end_run_stopped_while_reading, end_stopped_run, stop_on_signals


@flow(name="resend-campaign", flow_run_name="resend-{campaign.campaign_id}", log_prints=False)
def resend_campaign(
    campaign: Campaign,
    statuses: list[ResendStatus] = ["failed", "unknown"],  # noqa: B006 - read only; shown in the UI form
    failed_codes: list[str] = [],  # noqa: B006
    window_checked_at: datetime | None = None,
) -> CampaignSummary:
    """Resend the failed and/or unknown recipients of a campaign through the same send path.

    Args:
        campaign: the campaign as it was sent, with its resolved `campaign_id` (`weekly-news-2026-05-04`,
            not `weekly-news-{date}`).
        statuses: which recipients: `failed`, `unknown` (may receive the message twice), or both.
        failed_codes: only failed recipients with one of these error codes (e.g. `AMOUNT_NOT_ENOUGH`);
            empty: every failed recipient.
        window_checked_at: check the campaign's send window as if it were this moment (UTC), not the real
            clock: for tests and what-if dry runs. Leave it unset for real sends.

    Returns:
        The run's summary: `planned` is how many recipients were resent. Stopped on request, a Cancelled
        state (or Suspended again) as `send_campaign` says; the reopened rows not sent stay pending.

    Raises:
        ValueError: a `{date}` placeholder in the campaign id, or no status chosen.
        CampaignFailed: a permanent error, exhausted retries or a lost run lease stopped the resend; the
            rows not sent yet stay pending (the next run of the campaign sends them).
        CampaignBusy: another run of the campaign is sending it; nothing was reopened or sent.
    """
    if campaign.is_template:
        raise ValueError(
            f"resend needs the campaign's own id, e.g. the name of its flow run, not {campaign.campaign_id!r}"
        )
    if not statuses:
        raise ValueError("choose the recipients to resend: failed, unknown, or both")
    logger = get_run_logger()
    started = time.monotonic()
    campaign = campaign.resolve_paths(Path.cwd())  # no campaign file (UI, deployment): the run's directory
    stopped = None
    # Stop requests (Ctrl-C, SIGTERM, Cancel or Suspend in Prefect) are looked for before every batch.
    # The lease before reading anything.
    with (
        stop_on_signals(),
        StopWatch.for_this_run() as stop,
        Ledger(campaign.ledger_location) as ledger,
        campaign_lease(ledger, campaign),
    ):
        # the same reading, validation and rendering as a campaign run
        read = spool_campaign(campaign, return_state=True)
        if read.is_cancelled():  # a stop request while the recipients were read: nothing registered or sent
            return end_run_stopped_while_reading(stop, campaign.campaign_id, campaign.dry_run)
        spool = read.result()
        try:
            summary = CampaignSummary(
                campaign_id=campaign.campaign_id,
                dry_run=campaign.dry_run,
                source_rows=spool.source_rows,
                valid=spool.valid,
                allowed_calls_per_second=campaign.gateway.calls_per_second,
            )
            plan = plan_resend(
                ledger,
                campaign,
                spool.scan_messages(),
                list(statuses),
                list(failed_codes),
                spool.folder / "plan",
                clock_at(window_checked_at),
            )
            summary.record_plan(plan)
            logger.info(
                "campaign %s: resending %s recipients: %s",
                campaign.campaign_id, " and ".join(statuses), sending_text(campaign, plan),
            )
            if plan.resend_held_by_cap:
                logger.info(
                    "campaign %s: %s of them held back by the frequency cap (messages from other campaigns "
                    "in its window); they stay as they were",
                    campaign.campaign_id, plan.resend_held_by_cap,
                )
            if not campaign.dry_run and plan.batches:
                stopped = send_lanes(campaign, ledger, plan, summary, stop)  # the campaign's `send_via`
            settle_limits(ledger, campaign, plan, summary)  # unsent reservation back; deferred events
            summary.record_ledger(ledger, campaign.campaign_id)
            summary.elapsed_seconds = time.monotonic() - started
            # A stopped run may be Cancelling or Suspended, where Prefect starts no task run: the report is
            # then published by the flow run itself.
            report = publish_report.fn if stopped is not None else publish_report
            report(summary, spool.rejects_head(0), campaign.source.phone_column)
        finally:
            spool.remove()  # it holds phone numbers
    if summary.error:
        raise CampaignFailed(f"resend of campaign {campaign.campaign_id} stopped: {summary.error}")
    if stopped is not None:  # Cancelled (the summary is its data), or Suspended again with a long timeout
        return end_stopped_run(stopped, summary)
    return summary


if __name__ == "__main__":
    import sys

    statuses = sys.argv[2:] or ["failed", "unknown"]
    resend_campaign(Campaign.from_yaml(sys.argv[1]), statuses=statuses)  # type: ignore[arg-type]
