"""Turn rendered messages into numbered batches of recipients that the ledger says may still be sent.

Before planning, the ledger is brought up to date for this run:

* rows left `submitting` by a crashed run become `unknown` (they may have gone out). The run holds the
  campaign's run lease (`Ledger.acquire_run_lease`), so these are no other live run's batch in flight;
* new recipients are registered as `pending`;
* `unknown` rows go back to `pending` only when the campaign says `resend_unknown`;
* `failed` rows go back to `pending` when their code is transient, or listed in `retry_failed_codes`.

Then the limits across campaigns (`tasks/limits.py`): a `frequency_cap` turns the pending numbers other
campaigns already messaged enough into `skipped`; the planned rows are reserved in the account's daily and
monthly volume, and with a limit only what is left is planned (the rest stays `pending`, deferred). A
campaign whose numbers a retention purge replaced recognises them by keyed hash before registering.

Only `pending` rows are planned, so a rerun, a UI retry or a resumed crash never sends an accepted number
again. With a `send_window` (quiet hours), pending rows whose window is closed in their local time are
deferred (`tasks/deferral.py`): not planned, left `pending`, counted in the plan with the earliest moment
one of their windows opens. The window is checked at `clock()` (injected; default the real clock).
Batch numbers keep increasing across runs of a campaign, so every TaskId stays unique.

The messages may be a frame, a LazyFrame or Parquet files (a spool from `tasks/spool.py`): they are read
`PLAN_CHUNK_ROWS` at a time and registered, then joined with the ledger's pending numbers in one streaming
pass (a campaign's first run skips the lookup: everything it registered is pending). The rows to send go to
plan parts (Parquet files in `plan_dir`, or frames in memory without one), and `PlannedBatches` cuts the
batches from them one at a time while they are sent. So no step holds every message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, State

from alibaba_sms.errors import RETRYABLE_BUSINESS_CODES, RETRYABLE_GATEWAY_CODES, THROTTLING_BUSINESS_CODES
from globe_sms.campaign import Campaign
from globe_sms.clock import Clock, as_utc, utc_now
from globe_sms.ledger import Ledger, Status
from globe_sms.ledger.volume import Reservation
from tasks import limits
from tasks.deferral import WindowCheck
from tasks.send import Batch
from tasks.stop import StoppedBeforeSending, stop_if_requested

TRANSIENT_CODES = frozenset(
    RETRYABLE_BUSINESS_CODES
    | RETRYABLE_GATEWAY_CODES
    | THROTTLING_BUSINESS_CODES
    | {"Throttling", "Throttling.User", "Throttling.Api", "Throttling.Resource"}
)
PLAN_CHUNK_ROWS = 50_000
"""Messages read, registered and looked up in the ledger at a time."""

Messages = pl.DataFrame | pl.LazyFrame | Path
"""Rendered messages (`phone`, `country`, `message`): a frame, a LazyFrame, a Parquet file, glob or folder."""
PlanPart = pl.DataFrame | Path
ResendStatus = Literal["failed", "unknown"]
"""The outcomes a resend may send again."""


class PlannedBatches:
    """A run's batches, cut from the plan parts (`phone`, `message`) only while they are iterated.

    `len()` is known without reading anything; iterating reads one part at a time, so a 10,000-batch run never
    holds more than a part and a batch.
    """

    def __init__(
        self, parts: Sequence[PlanPart], batch_size: int, first_batch_no: int, recipients: int
    ) -> None:
        self.parts = list(parts)
        self.batch_size = batch_size
        self.first_batch_no = first_batch_no
        self.recipients = recipients

    def __len__(self) -> int:
        return -(-self.recipients // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        phones: list[str] = []
        texts: list[str] = []
        batch_no = self.first_batch_no
        for part in self.parts:
            if not isinstance(part, pl.DataFrame):
                part = pl.read_parquet(part, columns=["phone", "message"])
            frame = part
            phones += frame["phone"].to_list()
            texts += frame["message"].to_list()
            while len(phones) >= self.batch_size:
                yield Batch(batch_no, tuple(phones[: self.batch_size]), tuple(texts[: self.batch_size]))
                del phones[: self.batch_size], texts[: self.batch_size]
                batch_no += 1
        if phones:
            yield Batch(batch_no, tuple(phones), tuple(texts))

    def __repr__(self) -> str:
        return (
            f"PlannedBatches({len(self)} batches of up to {self.batch_size}, {self.recipients} recipients, "
            f"from batch {self.first_batch_no})"
        )


@dataclass(frozen=True)
class SendPlan:
    """The batches of one run and what the ledger looked like before it."""

    batches: Sequence[Batch] | PlannedBatches
    registered: int = 0
    recovered_as_unknown: int = 0
    reopened: int = 0
    already_final: dict[str, int] = field(default_factory=dict)
    deferred: int = 0
    """Pending rows left for a later run: their send window is closed (or closes before their batch)."""
    next_opening: datetime | None = None
    """The earliest moment (UTC) a deferred row's window opens; None without deferred rows, or when none
    opens in all its zones within `globe_sms.send_window.HORIZON_DAYS`."""
    window_checked_at: datetime | None = None
    """The moment the send window was checked at (None without a window)."""
    frequency_capped: int = 0
    """Pending rows this run's frequency cap made `skipped` (a dry run: would make)."""
    volume: Reservation | None = None
    """The account's day/month volume reserved for this run (a dry run: what is left); `tasks/limits.py`."""
    resend_held_by_cap: int = 0
    """A resend: chosen failed/unknown rows the frequency cap holds back (other campaigns' messages in the
    window; this campaign's own earlier attempt does not count). They stay failed/unknown, not skipped: a
    resend after the window may send them."""

    @property
    def recipients(self) -> int:
        if isinstance(self.batches, PlannedBatches):
            return self.batches.recipients
        return sum(len(batch) for batch in self.batches)


def message_chunks(
    messages: Messages,
    rows: int | None = None,
    *,
    only: pl.DataFrame | None = None,
    without: pl.DataFrame | None = None,
    extra_columns: Sequence[str] = (),
) -> Iterator[pl.DataFrame]:
    """`phone`, `country` and `message` of every message in order, `rows` (`PLAN_CHUNK_ROWS`) at a time.

    Args:
        messages: see `Messages`.
        rows: rows per chunk.
        only: keep only the numbers in this frame's `phone` column (one streaming semi-join).
        without: drop the numbers in this frame's `phone` column (one streaming anti-join).
        extra_columns: more columns of the messages to include (e.g. a send window's `timezone_column`).
    """
    rows = rows or PLAN_CHUNK_ROWS
    base = ["phone", "country", "message"]
    columns = base + [column for column in extra_columns if column not in base]
    if isinstance(messages, pl.DataFrame) and only is None and without is None:
        yield from messages.select(columns).iter_slices(rows)
        return
    if isinstance(messages, Path):
        messages = pl.scan_parquet(str(messages / "*.parquet") if messages.is_dir() else str(messages))
    lazy = messages.lazy().select(columns)
    if only is not None:
        lazy = lazy.join(only.lazy().select("phone"), on="phone", how="semi", maintain_order="left")
    if without is not None:
        lazy = lazy.join(without.lazy().select("phone"), on="phone", how="anti", maintain_order="left")
    yield from lazy.collect_batches(chunk_size=rows, maintain_order=True)


def _keep(frame: pl.DataFrame, plan_dir: Path | None, index: int) -> PlanPart:
    """A plan part: in memory without `plan_dir`, else written there."""
    if plan_dir is None:
        return frame
    plan_dir.mkdir(parents=True, exist_ok=True)
    path = plan_dir / f"part-{index:05d}.parquet"
    frame.write_parquet(path, compression="lz4")
    return path


def _final_counts(ledger: Ledger, campaign_id: str) -> dict[str, int]:
    counts = ledger.counts(campaign_id)
    return {status: counts.get(status, 0) for status in ("accepted", "failed", "unknown", "skipped")}


def _plan_parts(
    messages: Messages,
    plan_dir: Path | None,
    *,
    only: pl.DataFrame | None = None,
    without: pl.DataFrame | None = None,
    window: WindowCheck | None = None,
    pick: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> tuple[list[PlanPart], int]:
    """The plan parts (`phone`, `message` of the messages kept) and how many rows they hold.

    Each chunk of messages is narrowed by `pick` (e.g. to the rows a resend reopened), then, with a `window`,
    to the rows it finds inside their send window (it counts the others).
    """
    parts: list[PlanPart] = []
    recipients = 0
    extra = window.columns if window else ()
    for index, chunk in enumerate(message_chunks(messages, only=only, without=without, extra_columns=extra)):
        if pick is not None:
            chunk = pick(chunk)
        if window is not None and chunk.height:
            chunk = window.sendable(chunk)
        if chunk.height:
            parts.append(_keep(chunk.select("phone", "message"), plan_dir, index))
            recipients += chunk.height
    return parts, recipients


def register_and_plan(
    ledger: Ledger,
    campaign: Campaign,
    messages: Messages,
    plan_dir: Path | None = None,
    clock: Clock = utc_now,
) -> SendPlan:
    """Update the ledger for this run and plan the batches (writes to the ledger).

    A campaign's first run registers every number as `pending` and plans them all, in the messages' order,
    without reading them back. A later run plans the numbers the ledger lists as `pending` (read once, then
    joined with the messages in one streaming pass); new numbers of the source are registered first.

    Args:
        ledger: the send ledger.
        campaign: the campaign (its id, batch size and resend options).
        messages: the rendered messages; see `Messages`.
        plan_dir: where to write the plan parts; None keeps them in memory (small campaigns, tests).
        clock: the moment the campaign's send window is checked at.

    Raises:
        ValueError: the send window's `timezone_column` is not a column of the messages; nothing changed.
        CampaignBusy: `ledger` holds no run lease for the campaign and another run does; nothing changed.
        RunLeaseLost: `ledger`'s run lease for the campaign was taken over; nothing changed.
    """
    window = window_check(campaign, messages, clock)
    cid = campaign.campaign_id
    first_run = sum(ledger.counts(cid).values()) == 0
    recovered = ledger.recover_interrupted(cid)
    registered = rows = 0
    purged = limits.has_purged_rows(ledger, cid)  # a retention purge: its numbers are known by keyed hash
    for chunk in message_chunks(messages):
        stop_if_requested("registering its recipients")  # the chunks before stay registered `pending`
        if purged:
            chunk = limits.without_purged(ledger, cid, chunk)
        registered += ledger.register(
            cid, chunk["phone"].to_list(), chunk["country"].to_list(), campaign.message_type
        )
        rows += chunk.height
    reopened = ledger.resend_unknown(cid) if campaign.resend_unknown else 0
    reopened += ledger.reopen_retryable_failures(cid, TRANSIENT_CODES | set(campaign.retry_failed_codes))
    capped = limits.cap_pending(ledger, campaign)  # frequency cap: pending -> skipped, final
    pending = None
    if capped or not (first_run and registered == rows):  # else every number was just registered pending
        pending = pl.DataFrame({"phone": ledger.pending(cid)}, schema={"phone": pl.String})
    parts, recipients = _plan_parts(messages, plan_dir, only=pending, window=window)
    parts, recipients, volume = _within_volume(ledger, campaign, parts, recipients)
    batches = PlannedBatches(parts, campaign.batch_size, ledger.next_batch_no(cid), recipients)
    final = _final_counts(ledger, cid)
    return SendPlan(
        batches, registered, recovered, reopened, final, **deferral_fields(window),
        frequency_capped=capped, volume=volume,
    )


def _within_volume(
    ledger: Ledger, campaign: Campaign, parts: list[PlanPart], recipients: int
) -> tuple[list[PlanPart], int, Reservation | None]:
    """Reserve the planned rows in the account's volume counters; keep only the rows granted."""
    if not recipients:
        return parts, recipients, None
    volume = limits.reserve_volume(ledger, campaign, recipients)
    if volume is not None and volume.granted < recipients:
        parts, recipients = limits.first_rows(parts, volume.granted), volume.granted
    return parts, recipients, volume


def plan_read_only(
    ledger: Ledger,
    campaign: Campaign,
    messages: Messages,
    plan_dir: Path | None = None,
    clock: Clock = utc_now,
) -> SendPlan:
    """What `register_and_plan` would plan, read-only (for dry runs), deferrals included."""
    window = window_check(campaign, messages, clock)
    cid = campaign.campaign_id
    blocked = None
    if sum(ledger.counts(cid).values()):  # a new campaign needs no lookup: every number would be pending
        # Rows left `submitting` by a crash would become unknown: only pending (and asked-for unknown) count.
        sendable = {"pending", *(["unknown", "submitting"] if campaign.resend_unknown else [])}
        blocked = ledger.rows(cid, statuses=[s for s in Status if s not in sendable], columns=["phone"])
    if blocked is not None and limits.has_purged_rows(ledger, cid):  # their numbers: by keyed hash
        had = [p for chunk in message_chunks(messages) for p in limits.purged_of(ledger, cid, chunk["phone"])]
        blocked = pl.concat([blocked, pl.DataFrame({"phone": had}, schema={"phone": pl.String})])
    capped = 0
    if campaign.frequency_cap is not None:
        candidates = [
            phone for chunk in message_chunks(messages, without=blocked) for phone in chunk["phone"].to_list()
        ]
        held = limits.capped_numbers(ledger, campaign, candidates)
        capped = len(held)
        if held:
            extra = pl.DataFrame({"phone": held}, schema={"phone": pl.String})
            blocked = extra if blocked is None else pl.concat([blocked, extra])
    parts, recipients = _plan_parts(messages, plan_dir, without=blocked, window=window)
    parts, recipients, volume = _within_volume(ledger, campaign, parts, recipients)
    batches = PlannedBatches(parts, campaign.batch_size, ledger.next_batch_no(cid), recipients)
    return SendPlan(
        batches, already_final=_final_counts(ledger, cid), **deferral_fields(window),
        frequency_capped=capped, volume=volume,
    )


def window_check(campaign: Campaign, messages: Messages, clock: Clock) -> WindowCheck | None:
    """The campaign's send-window check as of `clock()`, or None without a window.

    Raises:
        ValueError: the window's `timezone_column` is not a column of the messages.
    """
    window = campaign.send_window
    if window is None:
        return None
    column = window.timezone_column
    if column is not None and column not in _columns(messages):
        raise ValueError(
            f"send_window.timezone_column: the recipients have no column {column!r} (name a source column)"
        )
    return WindowCheck(window, as_utc(clock()), campaign.batch_size, campaign.gateway.calls_per_second)


def _columns(messages: Messages) -> list[str]:
    if isinstance(messages, Path):
        messages = pl.scan_parquet(str(messages / "*.parquet") if messages.is_dir() else str(messages))
    return messages.collect_schema().names()


def deferral_fields(window: WindowCheck | None) -> dict[str, object]:
    """The `SendPlan` fields a window check fills."""
    if window is None:
        return {}
    return {"deferred": window.deferred, "next_opening": window.next_opening, "window_checked_at": window.now}


@task(name="plan-batches", cache_policy=NO_CACHE)
def plan_batches(
    ledger: Ledger,
    campaign: Campaign,
    messages: Messages,
    plan_dir: Path | None = None,
    clock: Clock = utc_now,
) -> SendPlan | State:
    """Plan this run's batches from the ledger (read-only for a dry run); `clock` checks the send window.

    Returns:
        The plan; or a Cancelled state (the task run's final state; call with `return_state=True` to see it)
        when a stop request came while the recipients were registered (a long list): the chunks registered
        before it stay `pending`, nothing else changed, and the next run registers the rest.
    """
    if campaign.dry_run:
        return plan_read_only(ledger, campaign, messages, plan_dir, clock)
    try:
        return register_and_plan(ledger, campaign, messages, plan_dir, clock)
    except StoppedBeforeSending as stopped:
        get_run_logger().warning("%s: nothing was sent", stopped)
        return Cancelled(message=str(stopped))


def would_resend(
    rows: pl.DataFrame, statuses: Collection[ResendStatus], failed_codes: Collection[str]
) -> pl.DataFrame:
    """The `phone`s of `Ledger.rows()` that `Ledger.reopen_for_resend` would reopen (read-only, dry runs)."""
    chosen = pl.col("status").is_in([s for s in statuses if s == "unknown"])
    failed = pl.col("status") == "failed"
    if "failed" in statuses:
        codes = list(failed_codes)
        chosen = chosen | (failed & pl.col("error_code").is_in(codes) if codes else failed)
    return rows.filter(chosen).select("phone")


def reopen_and_plan(
    ledger: Ledger,
    campaign: Campaign,
    messages: Messages,
    statuses: Collection[ResendStatus],
    failed_codes: Collection[str] = (),
    plan_dir: Path | None = None,
    clock: Clock = utc_now,
) -> SendPlan:
    """Reopen the chosen rows the source still renders (a dry run only reads them), and plan their batches.

    The messages are read `PLAN_CHUNK_ROWS` at a time, as `register_and_plan` reads them; each chunk's chosen
    rows move `failed`/`unknown` -> `pending` in one transaction (`Ledger.reopen_for_resend`), and those
    rows, with a send window only the ones inside it as of `clock()` (the others stay reopened: pending), go
    to the plan parts. So a resend of millions holds a chunk and a part, never every resent message.

    Args:
        ledger: the send ledger.
        campaign: the campaign (its id and batch size; `dry_run` reads only).
        messages: the rendered messages; see `Messages`.
        statuses: `failed`, `unknown` or both.
        failed_codes: only failed rows with one of these error codes; empty: every failed row.
        plan_dir: where to write the plan parts; None keeps them in memory (small campaigns, tests).
        clock: the moment the campaign's send window is checked at.

    Raises:
        ValueError: no status, a status other than failed / unknown, or a send window's `timezone_column`
            that is not a column of the messages; nothing changed.
        CampaignBusy: `ledger` holds no run lease for the campaign and another run does; nothing changed.
    """
    if not statuses or not set(statuses) <= {"failed", "unknown"}:
        raise ValueError(f"only failed and unknown rows can be resent, not {sorted(statuses)}")
    window = window_check(campaign, messages, clock)
    cid = campaign.campaign_id
    reopened = held_by_cap = 0
    held: set[str] = set()  # chosen numbers the frequency cap holds back: they stay failed / unknown
    if campaign.dry_run:
        recovered = 0
        known = ledger.rows(cid, statuses=["unknown", "failed"], columns=["phone", "status", "error_code"])
        chosen = would_resend(known, statuses, failed_codes)
        if campaign.frequency_cap is not None:
            held = set(limits.capped_numbers(ledger, campaign, chosen["phone"].to_list()))

        def count(chunk: pl.DataFrame) -> pl.DataFrame:
            nonlocal reopened, held_by_cap
            if held:
                kept = chunk.filter(~pl.col("phone").is_in(held))
                held_by_cap += chunk.height - kept.height
                chunk = kept
            reopened += chunk.height
            return chunk

        parts, recipients = _plan_parts(messages, plan_dir, only=chosen, window=window, pick=count)
    else:
        recovered = ledger.recover_interrupted(cid)  # a crash's leftovers: unknown
        if campaign.frequency_cap is not None:  # the numbers it would reopen, counted as a campaign run does
            columns = ["phone", "status", "error_code"]
            known = ledger.rows(cid, statuses=["unknown", "failed"], columns=columns)
            chosen_phones = would_resend(known, statuses, failed_codes)["phone"].to_list()
            held = set(limits.capped_numbers(ledger, campaign, chosen_phones))

        def reopen(chunk: pl.DataFrame) -> pl.DataFrame:
            nonlocal reopened, held_by_cap
            phones = chunk["phone"].to_list()
            if held:
                kept = [p for p in phones if p not in held]
                held_by_cap += len(phones) - len(kept)  # (those the source still renders)
                phones = kept
            moved = ledger.reopen_for_resend(cid, statuses, phones, failed_codes)
            reopened += len(moved)
            if not moved:
                return chunk.clear()
            chosen = pl.DataFrame({"phone": moved}, schema={"phone": pl.String})
            return chunk.join(chosen, on="phone", how="semi", maintain_order="left")

        parts, recipients = _plan_parts(messages, plan_dir, window=window, pick=reopen)
    parts, recipients, volume = _within_volume(ledger, campaign, parts, recipients)
    batches = PlannedBatches(parts, campaign.batch_size, ledger.next_batch_no(cid), recipients)
    return SendPlan(
        batches,
        recovered_as_unknown=recovered,
        reopened=reopened,
        already_final=_final_counts(ledger, cid),
        **deferral_fields(window),
        volume=volume,
        resend_held_by_cap=held_by_cap,
    )


@task(name="plan-resend", cache_policy=NO_CACHE)
def plan_resend(
    ledger: Ledger,
    campaign: Campaign,
    messages: Messages,
    statuses: list[ResendStatus],
    failed_codes: list[str],
    plan_dir: Path | None = None,
    clock: Clock = utc_now,
) -> SendPlan:
    """Reopen the chosen failed/unknown rows and plan them (read-only for a dry run): `reopen_and_plan`."""
    return reopen_and_plan(ledger, campaign, messages, statuses, failed_codes, plan_dir, clock)
