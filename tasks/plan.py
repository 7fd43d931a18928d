"""Turn rendered messages into numbered batches of recipients that the ledger says may still be sent.

Before planning, the ledger is brought up to date for this run:

* rows left `submitting` by a crashed run become `unknown` (they may have gone out);
* new recipients are registered as `pending`;
* `unknown` rows go back to `pending` only when the campaign says `resend_unknown`;
* `failed` rows go back to `pending` when their code is transient, or listed in `retry_failed_codes`.

Only `pending` rows are planned, so a rerun, a UI retry or a resumed crash never sends an accepted number again.
Batch numbers keep increasing across runs of a campaign, so every TaskId stays unique.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from alibaba_sms.errors import RETRYABLE_BUSINESS_CODES, RETRYABLE_GATEWAY_CODES, THROTTLING_BUSINESS_CODES
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from tasks.send import Batch

TRANSIENT_CODES = frozenset(
    RETRYABLE_BUSINESS_CODES
    | RETRYABLE_GATEWAY_CODES
    | THROTTLING_BUSINESS_CODES
    | {"Throttling", "Throttling.User", "Throttling.Api", "Throttling.Resource"}
)


@dataclass(frozen=True)
class SendPlan:
    """The batches of one run and what the ledger looked like before it."""

    batches: list[Batch]
    registered: int = 0
    recovered_as_unknown: int = 0
    reopened: int = 0
    already_final: dict[str, int] = field(default_factory=dict)

    @property
    def recipients(self) -> int:
        return sum(len(batch) for batch in self.batches)


def chunk_batches(phones: list[str], texts: dict[str, str], first_batch_no: int, batch_size: int) -> list[Batch]:
    """Cut the pending numbers into batches of at most `batch_size`, numbered from `first_batch_no`."""
    batches = []
    for offset in range(0, len(phones), batch_size):
        chunk = tuple(phones[offset : offset + batch_size])
        batches.append(Batch(first_batch_no + len(batches), chunk, tuple(texts[phone] for phone in chunk)))
    return batches


def plan_send(ledger: Ledger, campaign: Campaign, messages: pl.DataFrame) -> SendPlan:
    """Update the ledger for this run and plan the batches (writes to the ledger)."""
    cid = campaign.campaign_id
    recovered = ledger.recover_interrupted(cid)
    registered = ledger.register(cid, messages["phone"].to_list(), messages["country"].to_list())
    reopened = ledger.resend_unknown(cid) if campaign.resend_unknown else 0
    reopened += ledger.reopen_retryable_failures(cid, TRANSIENT_CODES | set(campaign.retry_failed_codes))
    texts = dict(zip(messages["phone"].to_list(), messages["message"].to_list(), strict=True))
    pending = [phone for phone in ledger.pending(cid) if phone in texts]
    counts = ledger.counts(cid)
    final = {status: counts.get(status, 0) for status in ("accepted", "failed", "unknown")}
    batches = chunk_batches(pending, texts, ledger.next_batch_no(cid), campaign.batch_size)
    return SendPlan(batches, registered, recovered, reopened, final)


def preview_plan(ledger: Ledger, campaign: Campaign, messages: pl.DataFrame) -> SendPlan:
    """What `plan_send` would plan, read-only (for dry runs)."""
    cid = campaign.campaign_id
    rows = ledger.rows(cid)
    known = dict(zip(rows["phone"].to_list(), rows["status"].to_list(), strict=True)) if rows.height else {}
    # Rows left `submitting` by a crash would become unknown, so only pending (and asked-for unknown) rows count.
    sendable = {"pending"} | ({"unknown", "submitting"} if campaign.resend_unknown else set())
    texts = dict(zip(messages["phone"].to_list(), messages["message"].to_list(), strict=True))
    phones = [phone for phone in texts if known.get(phone, "pending") in sendable]
    counts: dict[str, int] = {}
    for status in known.values():
        counts[status] = counts.get(status, 0) + 1
    final = {status: counts.get(status, 0) for status in ("accepted", "failed", "unknown")}
    first = (max(rows["batch_no"].drop_nulls().to_list(), default=0) + 1) if rows.height else 1
    return SendPlan(chunk_batches(phones, texts, first, campaign.batch_size), already_final=final)


@task(name="plan-batches", cache_policy=NO_CACHE)
def plan_batches(ledger: Ledger, campaign: Campaign, messages: pl.DataFrame) -> SendPlan:
    """Plan this run's batches from the ledger (read-only for a dry run)."""
    if campaign.dry_run:
        return preview_plan(ledger, campaign, messages)
    return plan_send(ledger, campaign, messages)
