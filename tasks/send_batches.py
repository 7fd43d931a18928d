"""Send a run's planned batches one after another: the loop `send_campaign` and `resend_campaign` share.

Each batch is its own `send-batch` task run (`<campaign>-batch-<n>`, `tasks/send.py`), paced by the account's
shared rate limit, retried by Prefect only when nothing was processed. After each batch the run's summary,
its progress artifact (`<campaign>-progress`), the batch's event and the terminal's progress line are
updated; at the end the per-batch table (`<campaign>-batches`) is published. The batches are read from the
plan one at a time (`tasks.plan.PlannedBatches`), so the loop holds one batch, never the whole plan.

A permanent error, exhausted retries, a rate-limit slot that never came or a lost run lease stops the loop:
the summary's `error` says at which batch, and the batches not sent stay `pending` in the ledger for the next
run; the flow then raises `CampaignFailed`.

A stop request (`tasks/stop.py`: Ctrl-C or SIGTERM, Cancel or Suspend in Prefect) is looked for before every
batch, and ends the wait for a batch's rate-limit slot: the batch in flight finishes and is recorded, no new
batch leaves, and the summary's `stopped` says why and after which batch. The function returns the request,
and the flow ends the run as it asks (`tasks.stop.end_stopped_run`).
"""

from __future__ import annotations

import time
from typing import Any

from prefect.artifacts import create_progress_artifact
from prefect.exceptions import Abort, Pause
from prefect.utilities.annotations import quote

from alibaba_sms.errors import PermanentError, RetryableError
from globe_sms.campaign import Campaign
from globe_sms.gateway import open_gateway
from globe_sms.ledger import Ledger, RunLeaseLost
from globe_sms.pacing import RateLimitTimeout
from globe_sms.progress import SendProgress, announce
from tasks.plan import SendPlan
from tasks.progress_in_background import ProgressInBackground
from tasks.report import CampaignSummary
from tasks.send import (
    SendContext,
    batch_report,
    emit_batch_event,
    publish_batch_table,
    send_batch_with_retries,
)
from tasks.stop import STOP_REQUESTS, StopReason, StopWatch

STOPPING_ERRORS = (PermanentError, RetryableError, RateLimitTimeout, RunLeaseLost)
"""What stops the loop at a batch (anything else is a bug and propagates)."""


class CampaignFailed(RuntimeError):
    """The run stopped before every planned batch was sent; the summary says where."""


def send_batches(
    campaign: Campaign,
    ledger: Ledger,
    plan: SendPlan,
    summary: CampaignSummary,
    stop: StopWatch | None = None,
) -> StopReason | None:
    """Send the planned batches one after another, updating the summary and the progress artifact.

    Args:
        campaign: the campaign (its id, gateway settings and send options).
        ledger: the send ledger, holding the campaign's run lease.
        plan: this run's batches (`tasks.plan.plan_batches`, `tasks.plan.plan_resend`).
        summary: the run's summary: accepted, failed and unknown counts, the sending rate, `error` when a
            batch stopped the run, and `stopped`/`stopped_after_batch` when a stop request did, are filled in.
        stop: where stop requests come from (signals, the flow run's state); None: signals only.

    Returns:
        The stop request that ended the loop before its last batch, or None.
    """
    from prefect import get_run_logger

    logger = get_run_logger()
    total = len(plan.batches)
    progress_id = create_progress_artifact(
        0.0, key=f"{campaign.campaign_id}-progress", description=f"Batches sent of {total}"
    )
    done = recipients_done = 0
    first_call = last_call = None
    last_sent: int | None = None
    reason: StopReason | None = None
    send_with_retries = send_batch_with_retries(campaign.gateway)
    reports: list[dict[str, Any]] = []  # the per-batch table; each row is also the batch's event
    with (
        open_gateway(campaign.gateway, ledger_url=campaign.ledger_location) as gateway,
        ProgressInBackground(progress_id) as progress,
    ):
        context = SendContext(campaign, gateway.client, ledger, gateway.pacer)
        for batch in plan.batches:
            reason = stop.reason() if stop is not None else STOP_REQUESTS.requested
            if reason is not None:
                break
            try:
                # quote(): Prefect need not walk a thousand numbers to find task dependencies.
                outcome = send_with_retries(
                    quote(context), quote(batch), campaign.campaign_id, batch.batch_no
                )
            except (Abort, Pause):
                # Prefect refused to start the batch's task run: the flow run is no longer Running
                # (Cancelling, Suspended). Nothing of this batch ran.
                reason = (stop.state_reason() if stop is not None else None) or StopReason(
                    "cancel", "stopped by Prefect"
                )
                break
            except STOPPING_ERRORS as exc:
                summary.error = f"batch {batch.batch_no}: {exc}"
                reports.append(batch_report(campaign.campaign_id, batch, None, exc))
                emit_batch_event(campaign.campaign_id, reports[-1])
                break
            if outcome is None:  # held back while waiting for its slot: a stop request (signal)
                reason = (stop.reason() if stop is not None else None) or STOP_REQUESTS.requested
                reason = reason or StopReason("terminate", "stop requested")
                break
            reports.append(batch_report(campaign.campaign_id, batch, outcome))
            emit_batch_event(campaign.campaign_id, reports[-1])
            now = time.monotonic()
            first_call = first_call if first_call is not None else now
            last_call = now
            done += 1
            last_sent = batch.batch_no
            recipients_done += outcome.recipients
            summary.accepted += outcome.accepted
            summary.failed += outcome.failed
            summary.unknown += outcome.unknown
            progress.set(100.0 * done / total)
            announce(
                SendProgress(
                    campaign.campaign_id, total, done, plan.recipients, recipients_done,
                    campaign.gateway.calls_per_second,
                )
            )
    if reason is not None:
        summary.stopped, summary.stopped_after_batch = str(reason), last_sent
        logger.warning(
            "campaign %s: stop requested (%s): %s of %s batches sent this run, no further batch leaves",
            campaign.campaign_id, reason, done, total,
        )
    stopped = summary.stop_text(pending=plan.recipients - recipients_done) if reason is not None else None
    publish_batch_table(campaign.campaign_id, reports, total, stopped=stopped)
    summary.sending_seconds = (
        (last_call - first_call) if first_call is not None and last_call is not None else 0.0
    )
    # Rate over the gaps between calls: n calls span n - 1 intervals.
    if done > 1 and summary.sending_seconds > 0:
        summary.calls_per_second = (done - 1) / summary.sending_seconds
    return reason
