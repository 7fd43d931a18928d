"""Limits across campaigns, end to end: the send_campaign flow on a real Prefect server, the emulator on
loopback and one SQLite ledger shared by three campaigns (the acceptance of issue #17).

A (MKT) sends to 100 numbers; B (MKT, frequency cap 1 per 24h) to 150 numbers including A's 100 sends only
the 50 others and skips A's 100 for good; C (`gateway.daily_limit: 200`) the same day sends 50 (A's 100 and
B's 50 count) and defers the rest until the limit's day ends; C's rerun that day sends nothing more.
"""

from __future__ import annotations

import csv
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from alibaba_sms.emulator import EmulatorServer
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger
from tests.emulator_fixtures import FLOW_RATE
from tests.ledger_fixtures import numbers

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("prefect_server")

MakeCampaign = Callable[..., Campaign]


def noon_zone(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is about noon now, so that no test run crosses the limits' midnight."""
    hour = (now or datetime.now(UTC)).hour
    offset = (12 - hour + 12) % 24 - 12  # -12..11 hours ahead of UTC
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # POSIX names: the sign is inverted


def write_csv(path: Path, phones: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        writer.writerows([f"+{phone}", f"Name{i}"] for i, phone in enumerate(phones))
    return path


@pytest.fixture
def make_campaign(tmp_path: Path, gateway: EmulatorServer) -> MakeCampaign:
    """Campaigns of one account sending to the test's emulator, all in one SQLite ledger."""

    def make(campaign_id: str, phones: list[str], **overrides: Any) -> Campaign:
        data: dict[str, Any] = {
            "campaign_id": campaign_id,
            "source": {"path": str(write_csv(tmp_path / f"{campaign_id}.csv", phones))},
            "template": "Hi {first_name}, our sale starts today!",
            "message_type": "MKT",
            "sender_id": "GlobeSMS",
            "batch_size": 40,
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "gateway": {
                "endpoint": gateway.url,
                "calls_per_second": FLOW_RATE,
                "account": "guardrails-test",
                "limit_time_zone": noon_zone(),
            },
        }
        for key, value in overrides.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
        return Campaign.parse(data)

    return make


def test_caps_and_daily_limit_across_three_campaigns(
    make_campaign: MakeCampaign, gateway: EmulatorServer, tmp_path: Path, prefect_server: str
) -> None:
    a_numbers, others = numbers(100, 6_591_000_000), numbers(50, 6_592_000_000)
    c_numbers = numbers(150, 6_593_000_000)
    a = send_campaign(make_campaign("spring-a", a_numbers))
    assert a.accepted == 100

    cap = {"max_messages": 1, "per": "24h", "message_types": ["MKT"]}
    b_campaign = make_campaign("spring-b", a_numbers + others, frequency_cap=cap)
    b_preview = send_campaign(b_campaign.model_copy(update={"dry_run": True}))
    assert b_preview.planned == 50 and b_preview.skipped_frequency_cap == 100
    b = send_campaign(b_campaign)
    assert b.accepted == 50 and b.skipped_frequency_cap == 100
    assert b.ledger_counts["skipped"] == 100 and b.ledger_counts["pending"] == 0
    assert b.skips_file is not None  # the skips report: every skipped number with its reason
    skips = Path(b.skips_file).read_text().splitlines()
    assert skips[0] == "phone,reason" and sorted(skips[1:]) == sorted(f"{p},frequency_cap" for p in a_numbers)
    sent_to = gateway.state.accepted_numbers()
    assert all(sent_to[p] == 1 for p in a_numbers) and all(sent_to[p] == 1 for p in others)

    c_campaign = make_campaign("spring-c", c_numbers, gateway={"daily_limit": 200})
    preview = send_campaign(c_campaign.model_copy(update={"dry_run": True}))  # reserves nothing
    assert preview.planned == 50 and preview.volume_deferred == 100
    assert preview.plan_table is not None
    effects = {row.limit: row.effect for row in preview.plan_table.rows}
    assert effects["daily limit"].startswith("50 left; deferred 100 until ")
    assert [d.messages for d in preview.plan_table.days] == [50, 100]
    assert "| daily limit | 200 per day" in preview.to_markdown()

    c = send_campaign(c_campaign)
    assert c.accepted == 50 and c.volume_deferred == 100 and c.volume_held_back_by == "daily_limit"
    assert c.ledger_counts["pending"] == 100 and c.volume_until is not None
    assert c.volume_deferral_text and c.volume_deferral_text.startswith("deferred 100 until ")

    calls = len(gateway.state.requests("BatchSendMessageToGlobe"))
    again = send_campaign(c_campaign)
    assert again.accepted == 0 and again.planned == 0 and again.volume_deferred == 100
    assert len(gateway.state.requests("BatchSendMessageToGlobe")) == calls
    assert sum(gateway.state.accepted_numbers().values()) == 200

    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        skipped = ledger.rows("spring-b", statuses=["skipped"], columns=["phone", "error_code"])
    assert set(skipped["phone"]) == set(a_numbers) and set(skipped["error_code"]) == {"frequency_cap"}

    # Each run held back by the daily limit emitted `globe-sms.campaign.deferred`, with the limit and count.
    def deferred_events() -> list[dict[str, Any]]:
        body = {"filter": {"resource": {"id": ["globe-sms.campaign.spring-c"]}, "order": "ASC"}, "limit": 50}
        response = httpx.post(f"{prefect_server}/events/filter", json=body, timeout=10)
        response.raise_for_status()
        return [e for e in response.json()["events"] if e["event"] == "globe-sms.campaign.deferred"]

    deadline = time.monotonic() + 20
    while len(deferred_events()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    payloads = [event["payload"] for event in deferred_events()]
    assert [(p["limit"], p["count"]) for p in payloads] == [("daily_limit", 100), ("daily_limit", 100)]
    assert payloads[0]["until"] == c.volume_until.isoformat()
    assert not [p for p in payloads if "659" in str(p)]  # counts only, no number


@pytest.mark.postgres
def test_two_campaigns_at_once_never_exceed_the_daily_limit_together(
    make_campaign: MakeCampaign, gateway: EmulatorServer, pg_url: str
) -> None:
    """Two runs of two campaigns start together on one PostgreSQL ledger: 200 sent in all, not 300."""
    account = f"concurrent-{uuid.uuid4().hex[:8]}"
    gateway_settings = {"daily_limit": 200, "account": account}
    campaigns = [
        make_campaign(f"{account}-{i}", numbers(150, start), ledger=pg_url, gateway=gateway_settings)
        for i, start in enumerate((6_594_000_000, 6_595_000_000))
    ]
    start = threading.Barrier(2)
    summaries: list[Any] = []

    def run(campaign: Campaign) -> None:
        start.wait()
        summaries.append(send_campaign(campaign))

    threads = [threading.Thread(target=run, args=(campaign,)) for campaign in campaigns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(summaries) == 2
    assert sum(s.accepted for s in summaries) == 200 == sum(gateway.state.accepted_numbers().values())
    assert sum(s.volume_deferred for s in summaries) == 100
    with Ledger.open(pg_url) as ledger:
        assert sum(ledger.counts(c.campaign_id)["pending"] for c in campaigns) == 100


def test_the_guardrails_demo_runs_as_documented(
    tmp_path: Path, gateway: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/guardrails_demo.py: A 100; B 50 (100 capped); C 50 (100 deferred); C again 0; D capped."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("guardrails_demo", ROOT / "examples" / "guardrails_demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.setenv("GLOBE_SMS_RETENTION_KEY", "a-test-retention-key-0123456789")
    shown: list[str] = []
    results = demo.run_demo(tmp_path / "demo", endpoint=gateway.url, show=shown.append)
    sent = {name: results[name].accepted for name in ("A", "B", "C", "C again", "D")}
    assert sent == {"A": 100, "B": 50, "C": 50, "C again": 0, "D": 0}
    assert results["B"].skipped_frequency_cap == 100 and results["D"].skipped_frequency_cap == 100
    assert results["C again"].volume_deferred == 100
    assert "purged 2 finished campaign(s)" in " ".join(results["purge"].split())
    assert any("| frequency cap | 1 per 24h (MKT) | skipped 100" in text for text in shown)


@pytest.mark.postgres
def test_two_capped_campaigns_at_once_message_each_number_once(
    make_campaign: MakeCampaign, gateway: EmulatorServer, pg_url: str
) -> None:
    """Two capped MKT campaigns to the same 60 numbers start together: each number gets one message."""
    tag = uuid.uuid4().hex[:8]
    phones = numbers(60, 6_596_500_000 + int(tag[:3], 16) * 100)
    cap = {"max_messages": 1, "per": "24h", "message_types": ["MKT"]}
    campaigns = [
        make_campaign(f"capped-{tag}-{i}", phones, ledger=pg_url, frequency_cap=cap, gateway={"account": tag})
        for i in range(2)
    ]
    start = threading.Barrier(2)
    summaries: list[Any] = []

    def run(campaign: Campaign) -> None:
        start.wait()
        summaries.append(send_campaign(campaign))

    threads = [threading.Thread(target=run, args=(campaign,)) for campaign in campaigns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(summaries) == 2
    counts = [(s.valid, s.accepted, s.skipped_frequency_cap, s.planned, s.error) for s in summaries]
    assert sum(s.accepted for s in summaries) == 60, counts
    assert sum(s.skipped_frequency_cap for s in summaries) == 60, counts
    sent = gateway.state.accepted_numbers()
    assert sorted(sent) == sorted(phones) and set(sent.values()) == {1}
