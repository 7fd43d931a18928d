"""The run summary, the rejects file, and the Prefect artifacts that show them (numbers always masked)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from globe_sms.ids import task_id
from globe_sms.masking import mask_number_expr
from tasks.plan_table import PlanTable
from tasks.preview import Preview

ARTIFACT_TABLE_ROWS = 200


class UnknownRecipient(BaseModel):
    """A recipient whose outcome is unknown, as the summary shows it: number masked."""

    phone: str = Field(description="The number, masked (`8521234****`).")
    batch_no: int | None = Field(default=None, description="The batch it went out in (or was about to).")
    task_id: str | None = Field(default=None, description="That batch's TaskId, echoed in delivery receipts.")
    reason: str | None = Field(
        default=None,
        description="`Interrupted` (a crashed run left it submitting), or the ambiguous error: ReadTimeout, "
        "RemoteProtocolError, InternalError...",
    )


def unknown_recipients(rows: pl.DataFrame, limit: int = ARTIFACT_TABLE_ROWS) -> list[UnknownRecipient]:
    """The first `limit` rows of a campaign's ledger (`Ledger.rows()`) in `unknown`, numbers masked."""
    unknown = rows.filter(pl.col("status") == "unknown").head(limit)
    masked = unknown.select(
        mask_number_expr("phone").alias("phone"),
        "campaign_id",
        "batch_no",
        pl.col("error_code").alias("reason"),
    )
    return [
        UnknownRecipient(
            phone=row["phone"],
            batch_no=row["batch_no"],
            task_id=task_id(row["campaign_id"], row["batch_no"]) if row["batch_no"] is not None else None,
            reason=row["reason"],
        )
        for row in masked.iter_rows(named=True)
    ]


READING = "reading its recipients"
"""`CampaignSummary.stopped_while` of a run stopped while its source was read (tasks/spool.py)."""
REGISTERING = "registering its recipients"
"""`CampaignSummary.stopped_while` of a run stopped while it registered its recipients (tasks/plan.py)."""


class LaneSummary(BaseModel):
    """What one lane (`batch`: BatchSendMessageToGlobe, `single`: SendMessageToGlobe) did in a run."""

    lane: str
    recipients: int = 0
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    calls: int = 0
    seconds: float = 0.0
    segments: int = Field(default=0, description="Billed segments SendMessageToGlobe reported (single lane).")
    throttled: int = Field(
        default=0, description="Calls the gateway throttled (their recipients went again)."
    )
    requeued: int = Field(default=0, description="Recipients handed back to the queue and sent again.")
    limit_requests: int = Field(default=0, description="Requests to the Prefect server for slots (single).")
    limit_grants: int = Field(default=0, description="Of which granted (each many slots).")
    estimated_cost: float | None = None

    @property
    def recipients_per_second(self) -> float:
        return self.recipients / self.seconds if self.seconds > 0 else 0.0


class CampaignSummary(BaseModel):
    """What one run of a campaign did; the flow's return value and the CLI's printout."""

    campaign_id: str
    dry_run: bool
    source_rows: int = 0
    valid: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    opt_outs_ignored: int = Field(
        default=0,
        description="Opt-out entries that could not be read as numbers, skipped under "
        "`validation.suppression_unreadable: ignore`.",
    )
    planned: int = 0
    batches: int = 0
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    pending: int = 0
    already_sent: int = 0
    recovered_as_unknown: int = 0
    deferred: int = Field(
        default=0,
        description="Pending recipients left for a later run: outside their send window (quiet hours).",
    )
    next_window_opening: datetime | None = Field(
        default=None,
        description="The earliest moment (UTC) a deferred recipient's send window opens: run again then.",
    )
    skipped_frequency_cap: int = Field(
        default=0,
        description="Recipients the frequency cap skipped in this run (other campaigns messaged them enough "
        "within the window); final for this campaign.",
    )
    volume_deferred: int = Field(
        default=0,
        description="Pending recipients left for a later run by the account's daily or monthly limit.",
    )
    volume_held_back_by: str | None = Field(
        default=None, description="The limit that held them back: `daily_limit` or `monthly_limit`."
    )
    volume_until: datetime | None = Field(
        default=None, description="When that limit's day or month ends (UTC): run again then."
    )
    elapsed_seconds: float = 0.0
    sending_seconds: float = 0.0
    calls_per_second: float = 0.0
    allowed_calls_per_second: float = 1.0
    estimated_cost: float | None = None
    currency: str | None = None
    rejects_file: str | None = None
    skips_file: str | None = Field(
        default=None, description="The CSV of the campaign's skipped numbers (frequency cap), with reasons."
    )
    ledger_counts: dict[str, int] = Field(default_factory=dict)
    unknown_recipients: list[UnknownRecipient] = Field(
        default_factory=list,
        description="The campaign's unknown rows (all runs; first 200, masked): never resent unless asked.",
    )
    preview: Preview | None = None
    plan_table: PlanTable | None = Field(
        default=None, description="What each limit does to this run, and the ETA (tasks/plan_table.py)."
    )
    error: str | None = None
    send_via: str = "batch"
    lanes: list[LaneSummary] = Field(
        default_factory=list, description="Per lane: recipients, calls, time, rate and cost of this run."
    )
    stopped: str | None = Field(
        default=None,
        description="Why the run stopped on request before its last batch: `Ctrl-C (SIGINT)`, `SIGTERM`, "
        "`cancelled in Prefect`, `suspended in Prefect`. Its unsent batches stay pending for the next run.",
    )
    stopped_after_batch: int | None = Field(
        default=None, description="The last batch this run sent before it stopped (None: none was sent)."
    )
    stopped_while: str | None = Field(
        default=None,
        description=f"What the run was doing when it stopped before sending anything: `{READING}` (nobody "
        f"registered), `{REGISTERING}` (some registered `pending`); None: it stopped between batches.",
    )

    @classmethod
    def stopped_reading(cls, campaign_id: str, dry_run: bool, why: str) -> CampaignSummary:
        """The summary of a run stopped on request before its recipients were all read (nothing sent)."""
        return cls(campaign_id=campaign_id, dry_run=dry_run, stopped=why, stopped_while=READING)

    @property
    def stopped_while_reading(self) -> bool:
        """Stopped before its recipients were all read: nothing was counted, registered or sent."""
        return self.stopped_while == READING

    def stop_text(self, pending: int | None = None) -> str | None:
        """`stopped after batch 5 (Ctrl-C (SIGINT)); 50 pending`, or None for a run that was not stopped
        (`after chunk 5` for `send_via: single`, `after chunk or batch 5` for `both`).

        `pending` defaults to the ledger's pending count (`record_ledger`)."""
        if self.stopped is None:
            return None
        if self.stopped_while is not None:
            return f"stopped while {self.stopped_while} ({self.stopped}); nothing was sent"
        # the lanes number chunks and batches from one sequence: say what the number counts
        unit = {"batch": "batch", "single": "chunk"}.get(self.send_via, "chunk or batch")
        where = (
            f"after {unit} {self.stopped_after_batch}"
            if self.stopped_after_batch is not None
            else f"before its first {unit}"
        )
        return f"stopped {where} ({self.stopped}); {self.pending if pending is None else pending:,} pending"

    @property
    def rate_fraction(self) -> float:
        """Achieved calls per second as a fraction of the allowed rate."""
        return self.calls_per_second / self.allowed_calls_per_second if self.allowed_calls_per_second else 0.0

    def record_plan(self, plan: Any) -> None:
        """Take the planned batches and the ledger's state before sending from a `SendPlan`."""
        self.planned, self.batches = plan.recipients, len(plan.batches)
        self.already_sent = plan.already_final.get("accepted", 0)
        self.recovered_as_unknown = plan.recovered_as_unknown
        self.deferred, self.next_window_opening = plan.deferred, plan.next_opening
        self.skipped_frequency_cap = getattr(plan, "frequency_capped", 0)
        volume = getattr(plan, "volume", None)
        if volume is not None and volume.deferred:
            self.volume_deferred = volume.deferred
            self.volume_held_back_by, self.volume_until = volume.held_back_by, volume.until

    @property
    def volume_deferral_text(self) -> str | None:
        """`deferred 200 until 2026-12-07 00:00 UTC (daily_limit)`, or None."""
        if not self.volume_deferred:
            return None
        until = f" until {self.volume_until:%Y-%m-%d %H:%M} UTC" if self.volume_until else ""
        return f"deferred {self.volume_deferred:,}{until} ({self.volume_held_back_by})"

    @property
    def deferral_text(self) -> str | None:
        """`deferred 40 until 2026-06-15 13:00 UTC`, or None when no recipient was deferred."""
        if not self.deferred:
            return None
        if self.next_window_opening is None:
            return f"deferred {self.deferred:,}: their send window does not open in all their zones this week"
        return f"deferred {self.deferred:,} until {self.next_window_opening:%Y-%m-%d %H:%M} UTC"

    def record_ledger(self, ledger: Any, campaign_id: str) -> None:
        """Take the ledger's counts after sending; list (masked) the recipients whose outcome is unknown."""
        self.ledger_counts = ledger.counts(campaign_id)
        self.pending = self.ledger_counts.get("pending", 0)
        if self.ledger_counts.get("unknown"):
            unknown = ledger.rows(campaign_id, statuses=["unknown"], limit=ARTIFACT_TABLE_ROWS)
            self.unknown_recipients = unknown_recipients(unknown)

    def to_markdown(self) -> str:
        """A markdown report with counts only: no number appears in it."""
        lines = [
            f"# Campaign `{self.campaign_id}`{' (dry run)' if self.dry_run else ''}",
            "",
            "| | |",
            "|---|---|",
            f"| source rows | {self.source_rows:,} |",
            f"| valid | {self.valid:,} |",
            f"| rejected | {self.rejected:,} |",
            f"| planned this run | {self.planned:,} in {self.batches} batches |",
            f"| accepted | {self.accepted:,} |",
            f"| failed | {self.failed:,} |",
            f"| unknown | {self.unknown:,} |",
            f"| still pending | {self.pending:,} |",
            f"| deferred (outside their send window) | {self.deferral_text or 0} |",
            f"| deferred (account daily / monthly limit) | {self.volume_deferral_text or 0} |",
            f"| skipped (frequency cap) | {self.skipped_frequency_cap:,} |",
            f"| sent by earlier runs | {self.already_sent:,} |",
            f"| left submitting by a crashed run, now unknown | {self.recovered_as_unknown:,} |",
            f"| sending time | {self.sending_seconds:.1f} s |",
            f"| calls per second | {self.calls_per_second:.3f} of "
            f"{self.allowed_calls_per_second:g} allowed |",
        ]
        if self.opt_outs_ignored:
            lines.append(f"| opt-out entries unreadable, ignored | {self.opt_outs_ignored:,} |")
        if self.estimated_cost is not None:
            lines.append(f"| estimated cost | {self.estimated_cost:,.2f} {self.currency or ''} |")
        if self.rejected_by_reason:
            lines += ["", "## Rejected rows by reason", "", "| reason | rows |", "|---|---|"]
            lines += [
                f"| {reason} | {count:,} |" for reason, count in sorted(self.rejected_by_reason.items())
            ]
        lines += self._lanes_markdown()
        lines += self._unknown_markdown()
        if self.plan_table is not None:
            lines += ["", self.plan_table.to_markdown()]
        if self.preview is not None:
            lines += ["", self.preview.to_markdown()]
        if self.error:
            lines += ["", f"**Stopped:** {self.error}"]
        if self.stopped:
            lines += [
                "",
                f"**Stopped on request:** {self.stop_text()}. The batch in flight finished and was recorded; "
                "no later batch was sent. The pending recipients go out with the next run of this campaign "
                "(or Resume, for a suspended run); nobody is sent twice.",
            ]
        return "\n".join(lines)


    def price_lanes(self) -> None:
        """Share the estimated cost between the lanes by the recipients each one sent (both lanes bill per
        segment, at the same price)."""
        sent = sum(lane.recipients for lane in self.lanes)
        if self.estimated_cost is None or not sent or not self.planned:
            return
        per_recipient = self.estimated_cost / self.planned
        for lane in self.lanes:
            lane.estimated_cost = per_recipient * lane.recipients

    def _lanes_markdown(self) -> list[str]:
        """The lanes section: recipients, calls, time and rate of each lane (`send_via` single or both)."""
        if self.send_via == "batch" or not self.lanes:
            return []
        lines = [
            "",
            f"## Lanes (`send_via: {self.send_via}`)",
            "",
            "| lane | recipients | accepted | failed | unknown | calls | seconds | recipients/s | "
            "throttled | sent again | segments (single) | est. cost |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for lane in self.lanes:
            currency = self.currency or ""
            cost = "" if lane.estimated_cost is None else f"{lane.estimated_cost:,.2f} {currency}"
            rate = lane.recipients_per_second
            lines.append(
                f"| {lane.lane} | {lane.recipients:,} | {lane.accepted:,} | {lane.failed:,} | "
                f"{lane.unknown:,} | {lane.calls:,} | {lane.seconds:.1f} | {rate:,.0f} | "
                f"{lane.throttled:,} | {lane.requeued:,} | {lane.segments:,} | {cost} |"
            )
        return lines

    def _unknown_markdown(self) -> list[str]:
        """The unknown rows section: why they are not resent, and the masked list."""
        total = self.ledger_counts.get("unknown", len(self.unknown_recipients))
        if not total:
            return []
        shown = len(self.unknown_recipients)
        lines = [
            "",
            f"## Outcome unknown: {total:,} recipients",
            "",
            "The request for these may or may not have reached the gateway (a crash, a timeout or a dropped "
            "answer), so they are **not sent again**. Resend them only on purpose (`--resend-unknown`, or "
            "`resend_unknown: true`): some may then receive the message twice.",
        ]
        if shown:
            lines += ["", "| number | batch | TaskId | reason |", "|---|---|---|---|"]
            lines += [
                f"| {r.phone} | {r.batch_no if r.batch_no is not None else ''} | {r.task_id or ''} | "
                f"{r.reason or ''} |"
                for r in self.unknown_recipients
            ]
            if shown < total:
                lines.append(f"| ... {total - shown:,} more | | | |")
        return lines


def masked_rejects(
    rejects: pl.DataFrame, phone_column: str, limit: int = ARTIFACT_TABLE_ROWS
) -> pl.DataFrame:
    """The first rejected rows for display: row number, masked number and reasons only."""
    columns = [pl.col("source_row")] if "source_row" in rejects.columns else []
    if phone_column in rejects.columns:
        columns.append(mask_number_expr(phone_column).alias("phone"))
    columns.append(pl.col("reasons").list.join("; ").alias("reasons"))
    return rejects.head(limit).select(columns)


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(summary: CampaignSummary, rejects: pl.DataFrame, phone_column: str) -> None:
    """Create the summary markdown artifact and a masked rejects table artifact."""
    key = summary.campaign_id
    create_markdown_artifact(summary.to_markdown(), key=f"{key}-summary", description="Campaign run summary")
    if summary.unknown_recipients:
        create_table_artifact(
            [recipient.model_dump() for recipient in summary.unknown_recipients],
            key=f"{key}-unknown",
            description=(
                f"Recipients with an unknown outcome (first {len(summary.unknown_recipients)} of "
                f"{summary.ledger_counts.get('unknown', 0):,}; numbers masked); not resent unless asked"
            ),
        )
    if rejects.height:
        table = masked_rejects(rejects, phone_column)
        create_table_artifact(
            table.to_dicts(),
            key=f"{key}-rejects",
            description=(
                f"Rejected rows (first {table.height} of {max(summary.rejected, rejects.height):,}; "
                "numbers masked; every row is in the rejects file)"
            ),
        )
