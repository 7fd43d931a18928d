"""One plan across every limit: what each limit does to this run, and the resulting ETA, day by day.

Built after planning (`tasks/plan.py`), for the dry-run preview and every run's summary (the markdown artifact
and the terminal): one row per limit, whether it is set or not, so that a reader sees at a glance which one
holds the campaign back.

| limit | setting | effect |
|---|---|---|
| rate (batch lane) | 1 call/s x 1,000 numbers | 250 to send in 1 batches: about 0 s |
| send window | 09:00-20:00 local | deferred 40 until 2026-06-15 13:00 UTC |
| frequency cap | 1 per 24h (MKT) | skipped 100 (final for this campaign) |
| daily limit | 200 per day (UTC) | 50 left today; deferred 100 until 2026-12-07 00:00 UTC |
| monthly limit | not set | - |
| budget | 12.00 USD | estimated 3.75 USD for the whole campaign: within |

The rate row follows `send_via`: `rate (single lane)` (the single lane's calls per second, one recipient each,
less the pacer's margin) or `rate (both lanes)` (the two rates added, the recipients split between the lanes
as the lane preview `tasks/preview.py` splits them); the run's ETA is then the longest lane's.

The day-by-day ETA assumes the other campaigns of the account send nothing more and that every later day's
run gets the whole daily limit: it is the earliest the campaign can finish.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from globe_sms.campaign import Campaign
from tasks.preview import plan_lanes


class LimitEffect(BaseModel):
    """One row of the plan table."""

    limit: str
    setting: str
    effect: str


class DayPlan(BaseModel):
    """How many messages go out on one day of the limits' time zone."""

    day: date
    messages: int


class PlanTable(BaseModel):
    """What each limit does to this run, the run's ETA, and the campaign's days when a limit spreads it."""

    rows: list[LimitEffect] = Field(default_factory=list)
    eta_seconds: float = 0.0
    days: list[DayPlan] = Field(default_factory=list)
    time_zone: str = "UTC"

    def to_markdown(self) -> str:
        lines = ["## Plan across all limits", "", "| limit | setting | effect |", "|---|---|---|"]
        lines += [f"| {row.limit} | {row.setting} | {row.effect} |" for row in self.rows]
        lines += ["", f"ETA of this run: {_duration(self.eta_seconds)}."]
        if len(self.days) > 1:
            lines += ["", f"| day ({self.time_zone}) | messages |", "|---|---|"]
            lines += [f"| {d.day.isoformat()} | {d.messages:,} |" for d in self.days]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {seconds:,.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:,.0f} min"
    return f"about {seconds / 3600:,.1f} h"


def _until(moment: datetime | None) -> str:
    return f" until {moment:%Y-%m-%d %H:%M} UTC" if moment else ""


def build_plan_table(campaign: Campaign, plan: Any, cost: Any, now: datetime) -> PlanTable:
    """The plan table of a run, from its campaign, its `SendPlan` and its cost estimate (or None)."""
    gateway = campaign.gateway
    rows = [_rate_row(campaign, plan)]
    eta = _eta(campaign, plan)
    window = campaign.send_window
    if window is None:
        rows.append(LimitEffect(limit="send window", setting="not set", effect="-"))
    else:
        effect = (
            f"deferred {plan.deferred:,}{_until(plan.next_opening)}" if plan.deferred else "none deferred"
        )
        setting = f"{window.start:%H:%M}-{window.end:%H:%M} local"
        rows.append(LimitEffect(limit="send window", setting=setting, effect=effect))
    cap = campaign.frequency_cap
    rows.append(
        LimitEffect(
            limit="frequency cap",
            setting=cap.describe() if cap else "not set",
            effect=(f"skipped {plan.frequency_capped:,} (final for this campaign)" if cap else "-"),
        )
    )
    volume = plan.volume
    for period, name, limit in (
        ("day", "daily limit", gateway.daily_limit),
        ("month", "monthly limit", gateway.monthly_limit),
    ):
        if limit is None:
            rows.append(LimitEffect(limit=name, setting="not set", effect="-"))
            continue
        setting = f"{limit:,} per {period} ({gateway.limit_time_zone})"
        left = volume.left(period) if volume is not None else None
        effect = f"{left:,} left" if left is not None else "nothing to reserve"
        held = volume is not None and volume.deferred and volume.held_back_by == f"{name.split()[0]}_limit"
        if held:
            effect += f"; deferred {volume.deferred:,}{_until(volume.until)}"
        rows.append(LimitEffect(limit=name, setting=setting, effect=effect))
    if campaign.budget is None:
        rows.append(LimitEffect(limit="budget", setting="not set", effect="-"))
    else:
        currency = getattr(cost, "currency", "") if cost is not None else ""
        total = getattr(cost, "total", None) if cost is not None else None
        effect = (
            "no estimate" if total is None else f"estimated {float(total):,.2f} {currency} for the campaign"
        )
        if total is not None:
            effect += ": within" if float(total) <= campaign.budget else ": over, nothing is sent"
        rows.append(
            LimitEffect(limit="budget", setting=f"{campaign.budget:,.2f} {currency}".strip(), effect=effect)
        )
    return PlanTable(
        rows=rows, eta_seconds=eta, days=_days(campaign, plan, now), time_zone=gateway.limit_time_zone
    )


def _lanes(campaign: Campaign, plan: Any) -> list[Any]:
    """The plan split between the lanes of `send_via`, as the lane preview (`tasks/preview.py`) splits it."""
    return plan_lanes(
        campaign.send_via,
        plan.recipients,
        batch_size=campaign.batch_size,
        calls_per_second=campaign.gateway.calls_per_second,
        single_calls_per_second=campaign.gateway.single_calls_per_second,
    )


def _eta(campaign: Campaign, plan: Any) -> float:
    """The run's sending time: the batch lane's from its planned batches; with lanes, the longest lane's."""
    if campaign.send_via == "batch":
        rate = campaign.gateway.calls_per_second
        return max(len(plan.batches) - 1, 0) / rate if rate else 0.0
    return max((lane.eta_seconds for lane in _lanes(campaign, plan)), default=0.0)


def _rate_row(campaign: Campaign, plan: Any) -> LimitEffect:
    """The rate row of `send_via`: what the lane(s) send per second and how long this run takes."""
    gateway = campaign.gateway
    batch_setting = f"{gateway.calls_per_second:g} call/s x {campaign.batch_size:,} numbers"
    single_setting = f"{gateway.single_calls_per_second:g} single calls/s"
    effect = f"{sending_text(campaign, plan)}: {_duration(_eta(campaign, plan))}"
    if campaign.send_via == "batch":
        return LimitEffect(limit="rate (batch lane)", setting=batch_setting, effect=effect)
    per_second = sum(lane.rate for lane in _lanes(campaign, plan))
    if campaign.send_via == "single":
        setting = f"{single_setting} (about {per_second:,.0f} recipients/s)"
        return LimitEffect(limit="rate (single lane)", setting=setting, effect=effect)
    setting = f"{batch_setting} + {single_setting} (about {per_second:,.0f} recipients/s)"
    return LimitEffect(limit="rate (both lanes)", setting=setting, effect=effect)


def sending_text(campaign: Campaign, plan: Any) -> str:
    """What this run sends, counted as its lanes count: `970 to send in 49 batches`, `... in 970 calls`
    (single lane), `970 to send: 283 in 15 batches, 687 in single calls` (both)."""
    if campaign.send_via == "batch":
        return f"{plan.recipients:,} to send in {len(plan.batches):,} batches"
    if campaign.send_via == "single":
        return f"{plan.recipients:,} to send in {plan.recipients:,} calls"
    lanes = {lane.lane: lane for lane in _lanes(campaign, plan)}
    batch, single = lanes["batch"], lanes["single"]
    return (
        f"{plan.recipients:,} to send: {batch.recipients:,} in {batch.calls:,} batches, "
        f"{single.recipients:,} in single calls"
    )


def _days(campaign: Campaign, plan: Any, now: datetime) -> list[DayPlan]:
    """Today's messages, then the deferred ones spread over the next days at the daily limit."""
    zone = ZoneInfo(campaign.gateway.limit_time_zone)
    today = now.astimezone(zone).date()
    days = [DayPlan(day=today, messages=plan.recipients)]
    volume = plan.volume
    daily = campaign.gateway.daily_limit
    if volume is None or not volume.deferred or daily is None or volume.held_back_by != "daily_limit":
        return days
    left, day = volume.deferred, today
    while left > 0 and len(days) < 60:
        day += timedelta(days=1)
        days.append(DayPlan(day=day, messages=min(daily, left)))
        left -= min(daily, left)
    return days
