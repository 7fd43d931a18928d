"""The delivery report of a campaign: delivered, failed by error code, and pending, each by country.

Built from the ledger joined with `delivery_receipts` (`ReceiptStore.delivery_rows`). Each recipient the
gateway accepted counts once, under its current message:

| column | the current message's delivery state |
|---|---|
| delivered | `delivered` |
| failed | `undelivered` or `expired` (listed by error code, each marked retryable or not) |
| pending | no receipt yet, or only `sending` |
| unknown | still unsettled when reconciliation gave up (72 h by default) |

Recipients the gateway never accepted (ledger `failed`, `unknown`, `pending`) are counted apart. No phone
number appears in the report.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, Field

from globe_sms.receipts.retry import classify
from globe_sms.receipts.store import ReceiptStore

NO_COUNTRY = "??"


class CountryDelivery(BaseModel):
    """Delivery outcomes of one country's accepted recipients."""

    country: str
    accepted: int
    delivered: int
    failed: int
    pending: int
    unknown: int


class FailureCount(BaseModel):
    """Failed deliveries of one country with one error code."""

    country: str
    status: str = Field(description="`undelivered` or `expired`.")
    error_code: str
    recipients: int
    retry: str = Field(description="`retryable`, `permanent` or `unrecognised` under the default code lists.")


class FailureByCode(BaseModel):
    """Failed deliveries with one error code, all countries together."""

    status: str
    error_code: str
    recipients: int
    retry: str
    by_country: dict[str, int] = Field(description="Recipients per country, most first.")

    def countries_text(self) -> str:
        """`DE 10, GB 9, HK 5`."""
        return ", ".join(f"{country} {count:,}" for country, count in self.by_country.items())


class DeliveryReport(BaseModel):
    """What became of a campaign's accepted messages."""

    campaign_id: str
    accepted: int = 0
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    unknown: int = 0
    retryable_failed: int = 0
    not_accepted: dict[str, int] = Field(
        default_factory=dict, description="Ledger rows the gateway never accepted, by ledger status."
    )
    by_country: list[CountryDelivery] = Field(default_factory=list)
    failures: list[FailureCount] = Field(default_factory=list, description="By country and error code.")
    duplicates: int = Field(default=0, description="Receipts repeating a state already stored.")
    stale: int = Field(default=0, description="Receipts older than the stored state (out of order), ignored.")
    conflicts: int = Field(default=0, description="A second, different final state; the first was kept.")
    orphans: int = Field(default=0, description="Receipts with this campaign's TaskId but no ledger row.")

    def to_markdown(self) -> str:
        """Markdown tables: totals, by country, failures by error code; no number appears."""
        share = f" ({self.delivered / self.accepted:.1%})" if self.accepted else ""
        lines = [
            f"# Delivery of `{self.campaign_id}`",
            "",
            "| | recipients |",
            "|---|---|",
            f"| accepted by the gateway | {self.accepted:,} |",
            f"| delivered | {self.delivered:,}{share} |",
            f"| failed | {self.failed:,} ({self.retryable_failed:,} retryable) |",
            f"| pending (no final receipt yet) | {self.pending:,} |",
            f"| unknown (no final receipt in time) | {self.unknown:,} |",
        ]
        lines += [
            f"| not accepted: {status} | {count:,} |" for status, count in sorted(self.not_accepted.items())
        ]
        lines += [
            "",
            f"Receipts: {self.duplicates:,} duplicates, {self.stale:,} out of order, "
            f"{self.conflicts:,} conflicting, {self.orphans:,} orphans.",
        ]
        if self.by_country:
            lines += [
                "",
                "## By country",
                "",
                "| country | accepted | delivered | failed | pending | unknown |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {c.country} | {c.accepted:,} | {c.delivered:,} | {c.failed:,} | {c.pending:,} "
                f"| {c.unknown:,} |"
                for c in self.by_country
            ]
        if self.failures:
            lines += [
                "",
                "## Failed by error code",
                "",
                "| error code | status | recipients | retry | by country |",
            ]
            lines += ["|---|---|---|---|---|"]
            lines += [
                f"| {f.error_code} | {f.status} | {f.recipients:,} | {f.retry} | {f.countries_text()} |"
                for f in self.failures_by_code()
            ]
        return "\n".join(lines)

    def failures_by_code(self) -> list[FailureByCode]:
        """`failures` grouped by (status, error code), most recipients first."""
        groups: dict[tuple[str, str], FailureByCode] = {}
        for f in self.failures:
            group = groups.setdefault(
                (f.status, f.error_code),
                FailureByCode(
                    status=f.status, error_code=f.error_code, recipients=0, retry=f.retry, by_country={}
                ),
            )
            group.recipients += f.recipients
            group.by_country[f.country] = group.by_country.get(f.country, 0) + f.recipients
        ordered = sorted(groups.values(), key=lambda g: (-g.recipients, g.error_code, g.status))
        for group in ordered:
            group.by_country = dict(sorted(group.by_country.items(), key=lambda item: (-item[1], item[0])))
        return ordered


def summarise(
    rows: pl.DataFrame, campaign_id: str, anomalies: dict[str, int] | None = None
) -> DeliveryReport:
    """The report from `ReceiptStore.delivery_rows` (pure: no database)."""
    accepted = rows.filter(pl.col("status") == "accepted").with_columns(
        pl.col("country").fill_null(NO_COUNTRY),
        pl.when(pl.col("delivery_status").is_null() | (pl.col("delivery_status") == "sending"))
        .then(pl.lit("pending"))
        .when(pl.col("delivery_status").is_in(["undelivered", "expired"]))
        .then(pl.lit("failed"))
        .otherwise(pl.col("delivery_status"))
        .alias("outcome"),
    )
    outcome = pl.col("outcome")
    by_country = (
        accepted.group_by("country")
        .agg(
            pl.len().alias("accepted"),
            *((outcome == name).sum().alias(name) for name in ("delivered", "failed", "pending", "unknown")),
        )
        .sort(["accepted", "country"], descending=[True, False])
    )
    failed = accepted.filter(outcome == "failed").with_columns(
        pl.col("error_code").fill_null(
            pl.when(pl.col("delivery_status") == "expired")
            .then(pl.lit("EXPIRED"))
            .otherwise(pl.lit("(none)"))
        )
    )
    failures_frame = (
        failed.group_by("country", "delivery_status", "error_code")
        .agg(pl.len().alias("recipients"))
        .sort(["recipients", "country", "error_code"], descending=[True, False, False])
    )
    failures = [
        FailureCount(
            country=row["country"],
            status=row["delivery_status"],
            error_code=row["error_code"],
            recipients=row["recipients"],
            retry=classify(row["delivery_status"], row["error_code"]),
        )
        for row in failures_frame.iter_rows(named=True)
    ]
    not_accepted = rows.filter(pl.col("status") != "accepted").group_by("status").len()
    totals = {
        name: int((accepted["outcome"] == name).sum())
        for name in ("delivered", "failed", "pending", "unknown")
    }
    return DeliveryReport(
        campaign_id=campaign_id,
        accepted=accepted.height,
        retryable_failed=sum(f.recipients for f in failures if f.retry == "retryable"),
        not_accepted=dict(zip(not_accepted["status"].to_list(), not_accepted["len"].to_list(), strict=True)),
        by_country=[CountryDelivery(**row) for row in by_country.iter_rows(named=True)],
        failures=failures,
        **totals,
        **(anomalies or {}),
    )


def build_report(store: ReceiptStore, campaign_id: str) -> DeliveryReport:
    """Join late orphans, then report the campaign's delivery outcomes."""
    store.adopt_orphans()
    return summarise(store.delivery_rows(campaign_id), campaign_id, store.anomalies(campaign_id))
