"""The plan table across all limits (tasks/plan_table.py): one row per limit, set or not, and the days."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from globe_sms.campaign import Campaign
from globe_sms.ledger.volume import Reservation, periods
from tasks.plan import PlannedBatches, SendPlan
from tasks.plan_table import build_plan_table

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def campaign(**overrides: object) -> Campaign:
    data: dict[str, object] = {
        "campaign_id": "c",
        "source": {"path": "x.csv"},
        "template": "Hi",
        "message_type": "MKT",
        "batch_size": 20,
    }
    data.update(overrides)
    return Campaign.parse(data)


def plan(recipients: int, **fields: object) -> SendPlan:
    phones = [str(6591000000 + i) for i in range(recipients)]
    part = pl.DataFrame({"phone": phones, "message": ["m"] * recipients})
    return SendPlan(PlannedBatches([part], 20, 1, recipients), **fields)  # type: ignore[arg-type]


def test_every_limit_has_a_row_even_when_not_set() -> None:
    table = build_plan_table(campaign(), plan(50), None, NOW)
    assert [row.limit for row in table.rows] == [
        "rate (batch lane)", "send window", "frequency cap", "daily limit", "monthly limit", "budget",
    ]
    assert table.rows[0].effect == "50 to send in 3 batches: about 2 s"
    assert [row.setting for row in table.rows[1:]] == ["not set"] * 5
    assert [d.messages for d in table.days] == [50]


def test_cap_and_daily_limit_effects_and_the_days_they_spread_over() -> None:
    chosen = campaign(
        frequency_cap={"max_messages": 1, "per": "24h", "message_types": ["MKT"]},
        gateway={"daily_limit": 200},
    )
    found = tuple(periods(NOW, "UTC", 200, None))
    volume = Reservation("a", 450, 50, {"day": 150, "month": 150}, found, "daily_limit", found[0].ends_at)
    table = build_plan_table(chosen, plan(50, frequency_capped=100, volume=volume), None, NOW)
    effects = {row.limit: row.effect for row in table.rows}
    assert effects["frequency cap"] == "skipped 100 (final for this campaign)"
    assert effects["daily limit"] == "50 left; deferred 400 until 2026-12-07 00:00 UTC"
    assert effects["monthly limit"] == "-"
    assert [(d.day, d.messages) for d in table.days] == [
        (date(2026, 12, 6), 50), (date(2026, 12, 7), 200), (date(2026, 12, 8), 200),
    ]
    markdown = table.to_markdown()
    assert "| frequency cap | 1 per 24h (MKT) | skipped 100 (final for this campaign) |" in markdown
    assert "| 2026-12-08 | 200 |" in markdown


def test_the_rate_row_and_eta_follow_send_via_like_the_lane_preview() -> None:
    """single: the single lane's rate (less its margin), one call per recipient; both: the two lanes' rates
    added, the ETA the longest lane's, split as `Preview.with_lanes` splits it."""
    from globe_sms.single_pacing import lane_rate
    from tasks.preview import Preview

    gateway = {"calls_per_second": 2, "single_calls_per_second": 100}
    single = build_plan_table(campaign(send_via="single", gateway=gateway), plan(970), None, NOW)
    row = single.rows[0]
    assert row.limit == "rate (single lane)"
    assert row.setting == f"100 single calls/s (about {lane_rate(100):,.0f} recipients/s)"
    assert single.eta_seconds == 970 / lane_rate(100) == 10.0
    assert row.effect == "970 to send in 970 calls: about 10 s"
    batch = build_plan_table(campaign(gateway=gateway), plan(970), None, NOW)
    assert batch.rows[0].limit == "rate (batch lane)" and batch.eta_seconds == 24.0  # 49 batches at 2/s

    both = build_plan_table(campaign(send_via="both", gateway=gateway), plan(970), None, NOW)
    preview = Preview().with_lanes(
        "both", 970, batch_size=20, calls_per_second=2, single_calls_per_second=100
    )
    lanes = {lane.lane: lane for lane in preview.lanes}
    assert both.eta_seconds == preview.eta_seconds < single.eta_seconds
    row = both.rows[0]
    assert row.limit == "rate (both lanes)"
    assert row.setting == "2 call/s x 20 numbers + 100 single calls/s (about 135 recipients/s)"
    assert row.effect == (
        f"970 to send: {lanes['batch'].recipients} in {lanes['batch'].calls} batches, "
        f"{lanes['single'].recipients} in single calls: about 7 s"
    )
    assert lanes["batch"].recipients + lanes["single"].recipients == 970
    assert "ETA of this run: about 7 s." in both.to_markdown()


def test_the_sending_text_counts_what_each_lane_counts() -> None:
    """The flow's log line: batches for the batch lane, calls for the single lane, both split for `both`."""
    from tasks.plan_table import sending_text

    gateway = {"calls_per_second": 2, "single_calls_per_second": 100}
    assert sending_text(campaign(gateway=gateway), plan(970)) == "970 to send in 49 batches"
    assert sending_text(campaign(send_via="single", gateway=gateway), plan(970)) == "970 to send in 970 calls"
    both = sending_text(campaign(send_via="both", gateway=gateway), plan(970))
    assert both == "970 to send: 287 in 15 batches, 683 in single calls"
