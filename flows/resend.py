"""The `resend_campaign` flow: send a campaign's failed and/or unknown recipients again, and nobody else.

Run it on purpose, for one campaign, once its cause is fixed: a top-up after `AMOUNT_NOT_ENOUGH`, a sender ID
approved after `INVALID_SENDERID`, or to resend the recipients whose outcome is unknown (they may receive the
message twice: the request may have gone through before the answer was lost).

It goes the same way as `send_campaign`: the source is read, validated and rendered again into a spool (the
ledger keeps outcomes, not texts), the chosen rows move `failed`/`unknown` -> `pending` a chunk of messages
at a time (`Ledger.reopen_for_resend`, one transaction per chunk), and exactly those numbers go out through
the same batch task, pacing, events and artifacts. Rows that are `pending` (never sent: a stopped run) or
`accepted` are left alone, and numbers the source no longer renders are not reopened. It holds the
campaign's run lease as `send_campaign` does, so it stops at once with `CampaignBusy` while another run of
the campaign is sending (and a run of the campaign started while it resends stops the same way).

With a send window (quiet hours), the chosen rows are reopened all the same, but only those inside their
window go out now; the others stay `pending`, counted as deferred, and the next run of the campaign sends
them when their window opens.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.send_campaign import CampaignFailed, _send_all, campaign_lease
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from globe_sms.send_window import Clock, clock_at, utc_now
from tasks.plan import Messages, SendPlan, chunk_batches, deferral_fields, message_chunks, window_check
from tasks.report import CampaignSummary, publish_report
from tasks.spool import spool_campaign

ResendStatus = Literal["failed", "unknown"]


def would_resend(
    rows: pl.DataFrame, statuses: list[ResendStatus], failed_codes: list[str], phones: list[str]
) -> list[str]:
    """The numbers `Ledger.reopen_for_resend` would reopen, from `Ledger.rows()` (read-only, for dry runs)."""
    chosen = pl.col("status").is_in([s for s in statuses if s == "unknown"])
    failed = pl.col("status") == "failed"
    if "failed" in statuses:
        chosen = chosen | (failed & pl.col("error_code").is_in(failed_codes) if failed_codes else failed)
    return rows.filter(chosen & pl.col("phone").is_in(phones))["phone"].to_list()


@task(name="plan-resend", cache_policy=NO_CACHE)
def plan_resend(
    ledger: Ledger,
    campaign: Campaign,
    messages: Messages,
    statuses: list[ResendStatus],
    failed_codes: list[str],
    clock: Clock = utc_now,
) -> SendPlan:
    """Reopen the chosen rows the source still renders (a dry run only reads them); cut them into batches.

    The messages are read a chunk at a time, as `plan_send` reads them; only the resent ones are kept, and of
    those, with a send window, only the ones inside it as of `clock()` (the others stay reopened: pending).
    """
    window = window_check(campaign, messages, clock)
    cid = campaign.campaign_id
    recovered = 0 if campaign.dry_run else ledger.recover_interrupted(cid)  # a crash's leftovers: unknown
    known = ledger.rows(cid, statuses=["unknown", "failed"]) if campaign.dry_run else None
    reopened = 0
    phones: list[str] = []
    texts: dict[str, str] = {}
    for chunk in message_chunks(messages, extra_columns=window.columns if window else ()):
        in_chunk = chunk["phone"].to_list()
        if known is not None:
            chosen = would_resend(known, statuses, failed_codes, in_chunk)
        else:
            chosen = ledger.reopen_for_resend(cid, statuses, phones=in_chunk, failed_codes=failed_codes)
        reopened += len(chosen)
        kept = chunk.filter(pl.col("phone").is_in(chosen)) if chosen else chunk.clear()
        if window is not None and kept.height:
            kept = window.sendable(kept)
        texts.update(zip(kept["phone"].to_list(), kept["message"].to_list(), strict=True))
        phones += kept["phone"].to_list()
    counts = ledger.counts(cid)
    final = {status: counts.get(status, 0) for status in ("accepted", "failed", "unknown")}
    batches = chunk_batches(phones, texts, ledger.next_batch_no(cid), campaign.batch_size)
    return SendPlan(
        batches,
        recovered_as_unknown=recovered,
        reopened=reopened,
        already_final=final,
        **deferral_fields(window),
    )


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
        The run's summary: `planned` is how many recipients were resent.

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
    # The lease before reading anything.
    with Ledger(campaign.ledger_location) as ledger, campaign_lease(ledger, campaign):
        spool = spool_campaign(campaign)  # the same reading, validation and rendering as a campaign run
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
                clock_at(window_checked_at),
            )
            summary.record_plan(plan)
            logger.info(
                "campaign %s: resending %s %s recipients in %s batches",
                campaign.campaign_id, summary.planned, " and ".join(statuses), summary.batches,
            )
            if not campaign.dry_run and plan.batches:
                _send_all(campaign, ledger, plan, summary)
            summary.record_ledger(ledger, campaign.campaign_id)
            summary.elapsed_seconds = time.monotonic() - started
            publish_report(summary, spool.rejects_head(0), campaign.source.phone_column)
        finally:
            spool.remove()  # it holds phone numbers
    if summary.error:
        raise CampaignFailed(f"resend of campaign {campaign.campaign_id} stopped: {summary.error}")
    return summary


if __name__ == "__main__":
    import sys

    statuses = sys.argv[2:] or ["failed", "unknown"]
    resend_campaign(Campaign.from_yaml(sys.argv[1]), statuses=statuses)  # type: ignore[arg-type]
