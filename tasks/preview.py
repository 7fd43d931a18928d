"""The pre-send preview: what a campaign will send, in which encodings, at what cost, and how long it takes.

It is built from the rendered messages before anything is sent, shown by `globe-sms send --dry-run` in the
terminal and published as a Prefect markdown artifact for every run. Numbers in samples are masked.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, Field

from globe_sms.masking import mask_number, mask_number_expr
from tasks.cost import CostEstimate

SAMPLE_SIZE = 5
TOP_CULPRITS = 10


class CountryCost(BaseModel):
    """One row of the cost table."""

    country: str
    messages: int
    segments: int
    price_per_segment: float | None
    cost: float | None


class LanePlan(BaseModel):
    """One lane of the plan: how many recipients, in how many calls, at what rate, how long, at what cost."""

    lane: str
    recipients: int
    calls: int
    rate: float = Field(description="Recipients per second the lane sends at.")
    eta_seconds: float
    cost: float | None = None


def plan_lanes(
    send_via: str,
    recipients: int,
    *,
    batch_size: int,
    calls_per_second: float,
    single_calls_per_second: float,
    cost_total: float | None = None,
) -> list[LanePlan]:
    """Split `recipients` between the lanes of `send_via` as the send loop does, with each lane's ETA.

    The batch lane sends `batch_size` recipients per call at `calls_per_second`; the single lane one per call
    at its pacer's rate (`single_calls_per_second` less its margin, wider beside the batch lane). With `both`
    the lanes share one queue and finish together, so each takes recipients in proportion to its rate. Cost is
    per segment in both lanes, so a lane's cost is its share of `cost_total`.
    """
    from globe_sms.single_pacing import lane_margin, lane_rate

    batch_rate = batch_size * calls_per_second
    single_rate = lane_rate(single_calls_per_second, lane_margin(send_via == "both"))
    if send_via == "single":
        shares = {"single": recipients}
    elif send_via == "both":
        to_batch = round(recipients * batch_rate / (batch_rate + single_rate))
        shares = {"batch": to_batch, "single": recipients - to_batch}
    else:
        shares = {"batch": recipients}
    lanes = []
    for lane, n in shares.items():
        if lane == "batch":
            calls = -(-n // batch_size)
            eta = max(calls - 1, 0) / calls_per_second if n else 0.0
            rate = batch_rate
        else:
            calls, eta, rate = n, n / single_rate, single_rate
        cost = None if cost_total is None or not recipients else cost_total * n / recipients
        lanes.append(LanePlan(lane=lane, recipients=n, calls=calls, rate=rate, eta_seconds=eta, cost=cost))
    return lanes


class Preview(BaseModel):
    """Encodings, segments, cost and ETA of the messages a run would send."""

    messages: int = 0
    encodings: dict[str, int] = Field(default_factory=dict)
    segments: int = 0
    segment_distribution: dict[int, int] = Field(default_factory=dict)
    ucs2_culprits: dict[str, int] = Field(default_factory=dict)
    cost_total: float | None = None
    currency: str | None = None
    cost_by_country: list[CountryCost] = Field(default_factory=list)
    unpriced: list[str] = Field(default_factory=list)
    samples: list[dict[str, str | int]] = Field(default_factory=list)
    batches: int = 0
    eta_seconds: float = 0.0
    send_via: str = "batch"
    lanes: list[LanePlan] = Field(default_factory=list)

    def with_lanes(
        self,
        send_via: str,
        recipients: int,
        *,
        batch_size: int,
        calls_per_second: float,
        single_calls_per_second: float,
    ) -> Preview:
        """This preview with the plan split between the lanes of `send_via`; the ETA is the longest lane's."""
        lanes = plan_lanes(
            send_via,
            recipients,
            batch_size=batch_size,
            calls_per_second=calls_per_second,
            single_calls_per_second=single_calls_per_second,
            cost_total=self.cost_total,
        )
        eta = max((lane.eta_seconds for lane in lanes), default=0.0)
        return self.model_copy(update={"send_via": send_via, "lanes": lanes, "eta_seconds": eta})

    def culprit_lines(self) -> list[str]:
        """Sentences like `’ (U+2019) turns 12,400 messages into UCS-2`."""
        return [
            f"{char!r} (U+{ord(char):04X}) turns {count:,} messages into UCS-2"
            for char, count in self.ucs2_culprits.items()
        ]

    def _lane_lines(self) -> list[str]:
        if self.send_via == "batch" or not self.lanes:
            return []
        lines = [
            "",
            f"Lanes (`send_via: {self.send_via}`):",
            "",
            "| lane | recipients | calls | recipients/s | ETA | est. cost |",
            "|---|---|---|---|---|---|",
        ]
        for lane in self.lanes:
            cost = "" if lane.cost is None else f"{lane.cost:,.4f} {self.currency or ''}"
            lines.append(
                f"| {lane.lane} | {lane.recipients:,} | {lane.calls:,} | {lane.rate:,.0f} | "
                f"{lane.eta_seconds:,.1f} s | {cost} |"
            )
        return lines

    def to_markdown(self) -> str:
        """The preview as a markdown artifact."""
        lines = [
            "## Preview",
            "",
            f"{self.messages:,} messages, {self.segments:,} segments, {self.batches} batches, "
            f"ETA {self.eta_seconds:,.0f} s at the account's rate.",
            *self._lane_lines(),
            "",
            "| encoding | messages |",
            "|---|---|",
            *[f"| {name} | {count:,} |" for name, count in sorted(self.encodings.items())],
            "",
            "| segments per message | messages |",
            "|---|---|",
            *[f"| {segments} | {count:,} |" for segments, count in sorted(self.segment_distribution.items())],
        ]
        if self.ucs2_culprits:
            lines += [
                "",
                "**Characters forcing UCS-2:**",
                "",
                *[f"- {line}" for line in self.culprit_lines()],
            ]
        if self.cost_by_country:
            lines += [
                "",
                f"**Estimated cost: {self.cost_total:,.4f} {self.currency}**",
                "",
                "| country | messages | segments | price/segment | cost |",
                "|---|---|---|---|---|",
            ]
            for row in self.cost_by_country:
                price = "—" if row.price_per_segment is None else f"{row.price_per_segment:g}"
                cost = "unpriced" if row.cost is None else f"{row.cost:,.4f}"
                lines.append(f"| {row.country} | {row.messages:,} | {row.segments:,} | {price} | {cost} |")
        if self.samples:
            lines += ["", "| to | country | encoding | segments | message |", "|---|---|---|---|---|"]
            for sample in self.samples:
                text = str(sample["message"]).replace("|", "\\|")
                lines.append(
                    f"| {sample['to']} | {sample['country']} | {sample['encoding']} | "
                    f"{sample['segments']} | {text} |"
                )
        return "\n".join(lines)


def build_preview(
    messages: pl.DataFrame,
    ucs2_culprits: dict[str, int],
    cost: CostEstimate | None,
    *,
    batches: int,
    calls_per_second: float,
) -> Preview:
    """Summarise rendered messages (phone, country, message, encoding, segments) for the preview."""
    encodings = dict(messages.group_by("encoding").len().sort("encoding").iter_rows())
    distribution = dict(messages.group_by("segments").len().sort("segments").iter_rows())
    top = dict(sorted(ucs2_culprits.items(), key=lambda item: (-item[1], item[0]))[:TOP_CULPRITS])
    samples = _masked_samples(messages.head(SAMPLE_SIZE))
    preview = Preview(
        messages=messages.height,
        encodings={str(k): int(v) for k, v in encodings.items()},
        segments=int(messages["segments"].sum() or 0),
        segment_distribution={int(k): int(v) for k, v in distribution.items()},
        ucs2_culprits=top,
        samples=samples,
        batches=batches,
        eta_seconds=max(batches - 1, 0) / calls_per_second if calls_per_second else 0.0,
    )
    if cost is not None:
        preview.cost_total = float(cost.total)
        preview.currency = cost.currency
        preview.unpriced = list(cost.unpriced)
        preview.cost_by_country = [
            CountryCost(
                country=row["country"],
                messages=row["messages"],
                segments=row["segments"],
                price_per_segment=(
                    None if row["price_per_segment"] is None else float(row["price_per_segment"])
                ),
                cost=None if row["cost"] is None else float(row["cost"]),
            )
            for row in cost.per_country.to_dicts()
        ]
    return preview


def _masked_samples(head: pl.DataFrame) -> list[dict[str, str | int]]:
    """The sample rows, number masked, and masked inside the message too (a template may say `{phone}`)."""
    samples = head.select(
        "phone", mask_number_expr("phone").alias("to"), "country", "encoding", "segments", "message"
    ).to_dicts()
    for sample in samples:
        phone = sample.pop("phone")
        if phone:
            sample["message"] = str(sample["message"]).replace(phone, mask_number(phone))
    return samples
