"""The `send_campaign` flow: load → validate → render → plan → send batch by batch → report.

Orchestration only: each step is a task over pure functions in `tasks/`. The whole campaign is validated and
rendered before the first batch goes out, so bad input never leaves a campaign half-sent. Recipients stream
from their source in chunks into a Parquet spool (`tasks/spool.py`) that planning and sending read back a
part at a time, so a list of millions runs in bounded memory; the spool is deleted when the run ends.
Each batch is its own task run (`<campaign>-batch-<n>`), sent one after another under the account's shared
rate limit, and every recipient's outcome is committed to the send ledger, which is what makes reruns, UI
retries and crash recovery safe. With a send window (quiet hours), recipients whose local time is outside it
stay pending and are counted as deferred (`tasks/deferral.py`); a later or hourly scheduled run sends them.
A run holds the campaign's run lease from its start to its end (not a dry
run: it writes nothing), so a second run of the same campaign stops at once with `CampaignBusy`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from alibaba_sms.errors import PermanentError, RetryableError
from globe_sms.campaign import Campaign
from globe_sms.gateway import open_gateway
from globe_sms.ledger import Ledger, RunLeaseLost, RunOwner
from globe_sms.pacing import RateLimitTimeout
from globe_sms.progress import SendProgress, announce
from globe_sms.scheduled_names import name_this_deployments_runs
from globe_sms.send_window import Clock, clock_at, utc_now
from tasks.cost import CostEstimate, check_budget, load_price_table
from tasks.plan import SendPlan, plan_batches
from tasks.preflight import preflight
from tasks.report import CampaignSummary, publish_report
from tasks.send import (
    SendContext,
    batch_report,
    emit_batch_event,
    publish_batch_table,
    send_batch_with_retries,
)
from tasks.spool import Spool, rejects_file, spool_campaign


class CampaignFailed(RuntimeError):
    """The run stopped before every planned batch was sent; the summary says where."""


@task(name="estimate-cost", cache_policy=NO_CACHE)
def estimate(spool: Spool, campaign: Campaign) -> CostEstimate | None:
    """Price every message from the campaign's price table; stop before sending if over the budget."""
    if campaign.price_table is None:
        return None
    cost = spool.estimate_cost(load_price_table(campaign.price_table))
    check_budget(cost, campaign.budget)
    return cost


def scheduled_start() -> datetime:
    """The flow run's scheduled start (kept by UI retries), or now outside a run."""
    from prefect.runtime import flow_run

    return datetime.fromisoformat(flow_run.scheduled_start_time.isoformat())


def run_name() -> str:
    """The flow run's name: the campaign id, with `{date}` resolved (see `Campaign.for_run`)."""
    from prefect.runtime import flow_run

    campaign = flow_run.parameters.get("campaign")
    if isinstance(campaign, Campaign):
        campaign_id = campaign.campaign_id
    else:
        campaign_id = dict(campaign or {}).get("campaign_id")
    try:
        return Campaign.model_construct(campaign_id=str(campaign_id)).for_run(scheduled_start()).campaign_id
    except ValueError:
        return str(campaign_id)


def run_owner() -> RunOwner:
    """This flow run as the holder of a campaign's run lease (a UI Retry keeps its id, so gets it back)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    label = f"flow run {flow_run.name!r} ({run_id}) of {flow_run.flow_name}" if run_id else None
    return RunOwner.this_process(run_id, label)


@contextmanager
def campaign_lease(ledger: Ledger, campaign: Campaign) -> Iterator[None]:
    """Hold the campaign's run lease for the block; a dry run changes no ledger row and needs none.

    Raises:
        CampaignBusy: another run of the campaign holds it; nothing was read, sent or changed.
    """
    if campaign.dry_run:
        yield
        return
    with ledger.run_lease_held(campaign.campaign_id, run_owner(), campaign.gateway.run_lease_seconds):
        yield


@flow(name="send-campaign", flow_run_name=run_name, log_prints=False)
def send_campaign(campaign: Campaign, window_checked_at: datetime | None = None) -> CampaignSummary:
    """Send an SMS campaign through Alibaba Cloud's BatchSendMessageToGlobe.

    Args:
        campaign: the campaign; see `globe_sms.campaign.Campaign` (or an example in `examples/`).
        window_checked_at: check the campaign's send window as if it were this moment (UTC), not the real
            clock: for tests and what-if dry runs. Leave it unset for real sends.

    Returns:
        The run's summary. Rejected, failed and unknown recipients are reported there, not raised.

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
    campaign = campaign.for_run(scheduled_start())  # `{date}` -> scheduled date: a campaign per occurrence
    campaign = campaign.resolve_paths(Path.cwd())  # no campaign file (UI, deployment): the run's directory
    preflight(campaign)  # again, for runs from the UI or a deployment (the CLI ran it before this run)
    name_this_deployments_runs()  # the scheduler's newer runs, named after their campaign (not for the CLI)
    # The lease first, so that a second run of the campaign stops before reading anything.
    with Ledger(campaign.ledger_location) as ledger, campaign_lease(ledger, campaign):
        summary = _run_campaign(campaign, ledger, started, clock_at(window_checked_at))
    if summary.error:
        raise CampaignFailed(f"campaign {campaign.campaign_id} stopped: {summary.error}")
    return summary


def _run_campaign(
    campaign: Campaign, ledger: Ledger, started: float, clock: Clock = utc_now
) -> CampaignSummary:
    """Spool, estimate, plan, send and report: the run's work once it holds the campaign (or is a dry run)."""
    logger = get_run_logger()
    spool = spool_campaign(campaign)  # source -> validate -> render, chunk by chunk, into a Parquet spool
    try:
        cost = estimate(spool, campaign)
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

        plan: SendPlan = plan_batches(ledger, campaign, spool.scan_messages(), spool.folder / "plan", clock)
        summary.record_plan(plan)
        summary.preview = spool.preview(
            cost, batches=len(plan.batches), calls_per_second=campaign.gateway.calls_per_second
        )
        if cost is not None:
            summary.estimated_cost, summary.currency = float(cost.total), cost.currency
        logger.info(
            "campaign %s: %s valid, %s rejected, %s to send in %s batches",
            campaign.campaign_id, summary.valid, summary.rejected, summary.planned, summary.batches,
        )
        if summary.deferral_text:
            logger.info("campaign %s: %s (outside their send window)", campaign.campaign_id,
                        summary.deferral_text)
        if not campaign.dry_run and plan.batches:
            _send_all(campaign, ledger, plan, summary)
        summary.record_ledger(ledger, campaign.campaign_id)
        summary.elapsed_seconds = time.monotonic() - started
        publish_report(summary, spool.report_rejects(), campaign.source.phone_column)
    finally:
        spool.remove()  # it holds phone numbers
    return summary


def _send_all(campaign: Campaign, ledger: Ledger, plan: SendPlan, summary: CampaignSummary) -> None:
    """Send the planned batches one after another, updating the summary and the progress artifact."""
    progress_id = create_progress_artifact(
        0.0, key=f"{campaign.campaign_id}-progress", description=f"Batches sent of {len(plan.batches)}"
    )
    done = recipients_done = 0
    first_call = last_call = None
    send_with_retries = send_batch_with_retries(campaign.gateway)
    reports: list[dict[str, Any]] = []  # the per-batch table; each row is also the batch's event
    with open_gateway(campaign.gateway, ledger_url=campaign.ledger_location) as gateway:
        context = SendContext(campaign, gateway.client, ledger, gateway.pacer)
        for batch in plan.batches:
            try:
                # quote(): Prefect need not walk a thousand numbers to find task dependencies.
                outcome = send_with_retries(
                    quote(context), quote(batch), campaign.campaign_id, batch.batch_no
                )
            except (PermanentError, RetryableError, RateLimitTimeout, RunLeaseLost) as exc:
                summary.error = f"batch {batch.batch_no}: {exc}"
                reports.append(batch_report(campaign.campaign_id, batch, None, exc))
                emit_batch_event(campaign.campaign_id, reports[-1])
                break
            reports.append(batch_report(campaign.campaign_id, batch, outcome))
            emit_batch_event(campaign.campaign_id, reports[-1])
            now = time.monotonic()
            first_call = first_call if first_call is not None else now
            last_call = now
            done += 1
            recipients_done += outcome.recipients
            summary.accepted += outcome.accepted
            summary.failed += outcome.failed
            summary.unknown += outcome.unknown
            update_progress_artifact(progress_id, 100.0 * done / len(plan.batches))
            announce(
                SendProgress(
                    campaign.campaign_id, len(plan.batches), done, plan.recipients, recipients_done,
                    campaign.gateway.calls_per_second,
                )
            )
    publish_batch_table(campaign.campaign_id, reports, len(plan.batches))
    summary.sending_seconds = (
        (last_call - first_call) if first_call is not None and last_call is not None else 0.0
    )
    # Rate over the gaps between calls: n calls span n - 1 intervals.
    if done > 1 and summary.sending_seconds > 0:
        summary.calls_per_second = (done - 1) / summary.sending_seconds


if __name__ == "__main__":
    import sys

    send_campaign(Campaign.from_yaml(sys.argv[1] if len(sys.argv) > 1 else "examples/welcome.yaml"))
