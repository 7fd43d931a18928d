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
