"""The `send_campaign` flow: load → validate → render → plan → send batch by batch → report.

Orchestration only: each step is a task over pure functions in `tasks/` (the run lease `tasks/lease.py`,
spooling `tasks/spool.py`, pricing `tasks/cost.py`, planning `tasks/plan.py`, the send loop
`tasks/send_batches.py`, the report `tasks/report.py`). The whole campaign is validated and rendered
before the first batch goes out, so bad input never leaves a campaign half-sent. Recipients stream from their
source in chunks into a Parquet spool that planning and sending read back a part at a time, so a list of
millions runs in bounded memory; the spool is deleted when the run ends.
With `send_via: single` or `both` the recipients go (also) one SendMessageToGlobe call each, in chunks that
are task runs of their own (`<campaign>-single-<n>`, `tasks/send_lanes.py`, `tasks/send_single.py`).
Each batch is its own task run (`<campaign>-batch-<n>`), sent one after another under the account's shared
rate limit, and every recipient's outcome is committed to the send ledger, which is what makes reruns, UI
retries and crash recovery safe. With a send window (quiet hours), recipients whose local time is outside it
stay pending and are counted as deferred (`tasks/deferral.py`); a later or hourly scheduled run sends them.
A run holds the campaign's run lease from its start to its end (not a dry run: it writes nothing), so a
second run of the same campaign stops at once with `CampaignBusy`.
Ctrl-C, SIGTERM, and Cancel or Suspend in Prefect stop the run between batches (`tasks/stop.py`): the batch in
flight is recorded, the summary and batch table are published, and the rest stays pending for the next run.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from prefect import State, flow, get_run_logger
from pydantic.json_schema import SkipJsonSchema

from globe_sms.campaign import Campaign
from globe_sms.clock import clock_at
from globe_sms.ledger import Ledger
from globe_sms.scheduled_names import name_this_deployments_runs
from tasks.campaign_input import campaign_of_run
from tasks.cost import estimate_campaign_cost
from tasks.lease import campaign_lease
from tasks.limits import settle_limits
from tasks.plan import plan_batches
from tasks.plan_table import build_plan_table, sending_text
from tasks.preflight import preflight
from tasks.report import REGISTERING, CampaignSummary, publish_report
from tasks.run_names import campaign_run_name, scheduled_start
from tasks.send_batches import CampaignFailed
from tasks.send_lanes import send_lanes
from tasks.spool import rejects_file, spool_campaign
from tasks.stop import StopWatch, end_run_stopped_while_reading, end_stopped_run, stop_on_signals


# validate_parameters=False: the flow checks its campaign itself (`campaign_of_run`), so that a campaign the
# server's schema check let through fails in one line under the campaign's run name (tasks/campaign_input.py).
@flow(name="send-campaign", flow_run_name=campaign_run_name, log_prints=False, validate_parameters=False)
def send_campaign(
    campaign: Campaign, window_checked_at: SkipJsonSchema[datetime | None] = None
) -> CampaignSummary | State:
    """Send an SMS campaign through Alibaba Cloud's BatchSendMessageToGlobe and/or SendMessageToGlobe
    (`send_via`).

    Args:
        campaign: the campaign; see `globe_sms.campaign.Campaign` (or an example in `examples/`).
        window_checked_at: check the campaign's send window as if it were this moment (UTC), not the real
            clock: for tests and what-if dry runs. Leave it unset for real sends. Not in the UI's run form
            (`SkipJsonSchema`); a run created through the API may still set it.

    Returns:
        The run's summary. Rejected, failed and unknown recipients are reported there, not raised. A campaign
        the model refuses (a run created through the API) returns a Failed state, its message one line naming
        each bad field. A run stopped on request (Ctrl-C, SIGTERM, Cancel in Prefect; `tasks/stop.py`)
        returns a Cancelled state instead, "stopped after batch N (why); M pending", with the summary as its
        data; one suspended in Prefect suspends itself again for `SUSPEND_TIMEOUT_SECONDS` (7 days) and ends
        its process.

    Raises:
        CampaignFailed: a permanent error (balance, sender ID, credentials), exhausted retries or a lost run
            lease stopped the run; the batches not sent stay pending in the ledger for the next run.
        CampaignBusy: another run of the same campaign is sending it; this one did nothing.
        SuppressionError: an opt-out list is missing; nothing was done. (Unreadable entries are found when it
            is read, still before anything is sent.)
        SourceError: the source's files are missing, binary, or hold no recipient; nothing was done.
        PreflightError: the campaign cannot start (e.g. its ledger is unreachable); nothing was done.
    """
    started = time.monotonic()
    checked = campaign_of_run(campaign)  # a deployment run's campaign arrives as it was stored: check it
    if not isinstance(checked, Campaign):
        return checked  # Failed, in one line naming the bad fields
    campaign = checked.for_run(scheduled_start())  # `{date}` -> scheduled date: a campaign per occurrence
    campaign = campaign.resolve_paths(Path.cwd())  # no campaign file (UI, deployment): the run's directory
    preflight(campaign)  # again, for runs from the UI or a deployment (the CLI ran it before this run)
    name_this_deployments_runs()  # the scheduler's newer runs, named after their campaign (not for the CLI)
    logger = get_run_logger()
    clock = clock_at(window_checked_at)
    stopped = None
    # Stop requests (Ctrl-C, SIGTERM, Cancel or Suspend in Prefect) are looked for before every batch.
    # The lease first, so that a second run of the campaign stops before reading anything.
    with (
        stop_on_signals(),
        StopWatch.for_this_run() as stop,
        Ledger(campaign.ledger_location) as ledger,
        campaign_lease(ledger, campaign),
    ):
        # source -> validate -> render, chunk by chunk, into a Parquet spool
        read = spool_campaign(campaign, return_state=True)
        if read.is_cancelled():  # a stop request while the recipients were read: nothing registered or sent
            return end_run_stopped_while_reading(stop, campaign.campaign_id, campaign.dry_run)
        spool = read.result()
        try:
            cost = estimate_campaign_cost(spool.message_parts(), campaign.price_table, campaign.budget)
            summary = CampaignSummary(
                campaign_id=campaign.campaign_id,
                dry_run=campaign.dry_run,
                source_rows=spool.source_rows,
                valid=spool.valid,
                rejected=spool.rejected,
                rejected_by_reason=spool.rejected_by_reason,
                opt_outs_ignored=spool.opt_outs_ignored,
                allowed_calls_per_second=campaign.gateway.calls_per_second,
            )
            rejects_path = spool.write_rejects_csv(rejects_file(campaign.data_folder, campaign.campaign_id))
            summary.rejects_file = str(rejects_path) if rejects_path else None

            planned = plan_batches(
                ledger, campaign, spool.scan_messages(), spool.folder / "plan", clock, return_state=True
            )
            if planned.is_cancelled():  # a stop request while a long list was registered: nothing sent
                why = stop.reason_work_stopped()
                summary.stopped, summary.stopped_while = str(why), REGISTERING
                summary.record_ledger(ledger, campaign.campaign_id)
                return end_stopped_run(why, summary)
            plan = planned.result()
            summary.record_plan(plan)
            summary.preview = spool.preview(
                cost, batches=len(plan.batches), calls_per_second=campaign.gateway.calls_per_second
            ).with_lanes(
                campaign.send_via,
                plan.recipients,
                batch_size=campaign.batch_size,
                calls_per_second=campaign.gateway.calls_per_second,
                single_calls_per_second=campaign.gateway.single_calls_per_second,
            )
            summary.send_via = campaign.send_via
            if cost is not None:
                summary.estimated_cost, summary.currency = float(cost.total), cost.currency
            summary.plan_table = build_plan_table(campaign, plan, cost, clock())
            logger.info(
                "campaign %s: %s valid, %s rejected, %s",
                campaign.campaign_id, summary.valid, summary.rejected, sending_text(campaign, plan),
            )
            if summary.deferral_text:
                logger.info("campaign %s: %s (outside their send window)", campaign.campaign_id,
                            summary.deferral_text)
            if not campaign.dry_run and plan.batches:
                stopped = send_lanes(campaign, ledger, plan, summary, stop)  # batch, single or both
                summary.price_lanes()
            settle_limits(ledger, campaign, plan, summary)  # unsent reservation back; deferred events
            summary.record_ledger(ledger, campaign.campaign_id)
            summary.elapsed_seconds = time.monotonic() - started
            # A stopped run may be Cancelling or Suspended, where Prefect starts no task run: the report is
            # then published by the flow run itself.
            report = publish_report.fn if stopped is not None else publish_report
            report(summary, spool.report_rejects(), campaign.source.phone_column)
        finally:
            spool.remove()  # it holds phone numbers
    if summary.error:
        raise CampaignFailed(f"campaign {campaign.campaign_id} stopped: {summary.error}")
    if stopped is not None:  # Cancelled (the summary is its data), or Suspended again with a long timeout
        return end_stopped_run(stopped, summary)
    return summary


if __name__ == "__main__":
    import sys

    send_campaign(Campaign.from_yaml(sys.argv[1] if len(sys.argv) > 1 else "examples/welcome.yaml"))
